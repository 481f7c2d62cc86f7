//! The Kafka record headers sagaflow writes and reads (docs/protocol.md, "Kafka").
//!
//! - CloudEvents binary mode under the Kafka binding's `ce_` prefix (`ce_id`, `ce_type`, …),
//!   `content-type`, `traceparent` and `x-request-id`, from the envelope;
//! - `sagaflow-message-id`: the id consumers de-duplicate on;
//! - on a retry topic: `sagaflow-deliveries` (deliveries made so far) and
//!   `sagaflow-not-before-ms` (Unix milliseconds before which it is not delivered again);
//! - on a dead-letter topic: `sagaflow-topic`, `sagaflow-group`, `sagaflow-dead-letter-reason`.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use sagaflow_core::CloudEventAttributes;

/// The prefix of CloudEvents attributes in Kafka headers (the CloudEvents Kafka binding).
pub const KAFKA_CLOUD_EVENT_PREFIX: &str = "ce_";

pub(crate) const MESSAGE_ID: &str = "sagaflow-message-id";
pub(crate) const DELIVERIES: &str = "sagaflow-deliveries";
pub(crate) const NOT_BEFORE: &str = "sagaflow-not-before-ms";
pub(crate) const ORIGIN_TOPIC: &str = "sagaflow-topic";
pub(crate) const ORIGIN_GROUP: &str = "sagaflow-group";
pub(crate) const REASON: &str = "sagaflow-dead-letter-reason";

/// The headers of a new message.
pub(crate) fn outgoing(
    message_id: &str,
    attributes: Option<&CloudEventAttributes>,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new().insert(Header {
        key: MESSAGE_ID,
        value: Some(message_id),
    });
    if let Some(attributes) = attributes {
        for (name, value) in attributes.headers() {
            let name = match name.strip_prefix("ce-") {
                Some(attribute) => format!("{KAFKA_CLOUD_EVENT_PREFIX}{attribute}"),
                None => name.to_string(),
            };
            headers = headers.insert(Header {
                key: &name,
                value: Some(&value),
            });
        }
    }
    headers
}

/// A received message's headers, with sagaflow's own replaced by `extra`: a message passed on
/// to a retry or dead-letter topic keeps its ids, trace and CloudEvents attributes.
pub(crate) fn passed_on(
    original: Option<&rdkafka::message::OwnedHeaders>,
    extra: &[(&str, String)],
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = original {
        for h in original.iter() {
            if extra.iter().any(|(name, _)| *name == h.key) {
                continue;
            }
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    for (name, value) in extra {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_str()),
        });
    }
    headers
}

/// A header's value as text.
pub(crate) fn text<'a>(headers: Option<&'a OwnedHeaders>, name: &str) -> Option<&'a str> {
    headers?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// A header's value as a number.
pub(crate) fn number(headers: Option<&OwnedHeaders>, name: &str) -> Option<u64> {
    text(headers, name)?.parse().ok()
}
