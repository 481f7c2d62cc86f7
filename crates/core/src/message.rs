//! The one JSON envelope every message travels in, on every transport, and the CloudEvents
//! attributes that go beside it as headers. `docs/protocol.md` is the published form of
//! this module: change one, change the other.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Engine → participant: do (or undo) a step.
    Command,
    /// Participant → engine: what happened.
    Reply,
    /// Anyone → subscribers: something happened.
    Event,
}

/// The wire protocol's version, carried in every envelope (`protocol`). A reader accepts
/// any version and ignores fields it does not know; a field's meaning never changes within
/// a major version.
pub const PROTOCOL_VERSION: u32 = 1;

fn protocol_v1() -> u32 {
    1
}

/// The envelope: ids for tracing and de-duplication, and the payload. Readers ignore
/// unknown fields, so a newer writer does not break an older reader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The wire protocol's version ([`PROTOCOL_VERSION`]); 1 when absent.
    #[serde(default = "protocol_v1")]
    pub protocol: u32,
    /// Unique per message; a re-publish of the same message keeps it (transports de-duplicate on it).
    pub message_id: String,
    /// Command, reply or event.
    pub kind: MessageKind,
    /// The subject, e.g. `billing.charge`.
    pub subject: String,
    /// The saga it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga_id: Option<String>,
    /// Ties together the messages of one business flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The message that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The step name, for commands and replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The attempt, for commands and replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// W3C trace context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The request that started it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The body.
    pub payload: Value,
}

impl Envelope {
    /// The reply to `command` (whose payload is `payload`) saying `outcome`, under
    /// `message_id` (`{key}:reply` for a first answer): it names the same saga, step,
    /// attempt, trace and request, and is caused by the command.
    pub fn reply_to(
        command: &Envelope,
        payload: &CommandPayload,
        outcome: crate::input::Outcome,
        message_id: String,
    ) -> Envelope {
        let reply = crate::input::Reply {
            step: payload.step,
            attempt: payload.attempt,
            phase: payload.phase,
            outcome,
        };
        Envelope {
            protocol: PROTOCOL_VERSION,
            message_id,
            kind: MessageKind::Reply,
            subject: REPLY_TOPIC.to_string(),
            saga_id: command.saga_id.clone(),
            correlation_id: command.correlation_id.clone(),
            causation_id: Some(command.message_id.clone()),
            step: command.step.clone(),
            attempt: command.attempt,
            traceparent: command.traceparent.clone(),
            request_id: command.request_id.clone(),
            payload: serde_json::to_value(&reply).unwrap_or(Value::Null),
        }
    }

    /// Serialises to JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // An Envelope holds only strings, numbers and JSON values: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses JSON bytes, saying what is wrong when they are not an envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a sagaflow envelope: {e}"))
    }
}

/// The topic a participant service consumes its commands from.
pub fn command_topic(service: &str) -> String {
    format!("sagaflow.commands.{service}")
}

/// The topic the engine consumes replies from.
pub const REPLY_TOPIC: &str = "sagaflow.replies";

/// The payload of a command envelope: what a participant needs to perform (or undo) a step.
/// It is also the JSON body of a command delivered over HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandPayload {
    /// The saga.
    pub saga_id: String,
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub version: u32,
    /// Step index (echoed in the reply).
    pub step: usize,
    /// Step name.
    pub step_name: String,
    /// Attempt (echoed in the reply).
    pub attempt: u32,
    /// Action or compensation (echoed in the reply).
    pub phase: crate::event::Phase,
    /// The command's name within the participant service.
    pub command: String,
    /// The idempotency key: handle each key at most once.
    pub key: String,
    /// The saga context when the command was sent.
    pub context: Value,
}

/// `ce-source` of every message sagaflow sends.
pub const CLOUD_EVENT_SOURCE: &str = "sagaflow";

/// The CloudEvents 1.0 attributes of one message, for binary-mode headers (`ce-id`,
/// `ce-type`, …) on NATS, RabbitMQ and HTTP. The event's data is the envelope itself
/// (`application/json`), so CloudEvents SDKs read our messages and sagaflow readers need no
/// headers at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEventAttributes {
    /// `ce-id`: the message id.
    pub id: String,
    /// `ce-type`: `io.sagaflow.command`, `io.sagaflow.reply` or `io.sagaflow.event`.
    pub kind: &'static str,
    /// `ce-subject`: the envelope's subject (`billing.charge`, an event's name).
    pub subject: String,
    /// `traceparent` (the W3C trace context), when the message has one.
    pub traceparent: Option<String>,
    /// `X-Request-ID` of the request that started it all, when known.
    pub request_id: Option<String>,
    /// The saga, as the `sagaflowsagaid` extension attribute.
    pub saga_id: Option<String>,
    /// An event's correlation id (not a header; transports that partition use it as the key).
    pub correlation_id: Option<String>,
}

impl CloudEventAttributes {
    /// What keeps related messages in order on a partitioned transport: the saga id, or for
    /// an event outside a saga its correlation id.
    pub fn ordering_key(&self) -> Option<&str> {
        self.saga_id.as_deref().or(self.correlation_id.as_deref())
    }

    /// The attributes of an envelope.
    pub fn of(envelope: &Envelope) -> Self {
        CloudEventAttributes {
            id: envelope.message_id.clone(),
            kind: envelope.kind.cloud_event_type(),
            subject: envelope.subject.clone(),
            traceparent: envelope.traceparent.clone(),
            request_id: envelope.request_id.clone(),
            saga_id: envelope.saga_id.clone(),
            correlation_id: envelope.correlation_id.clone(),
        }
    }

    /// The attributes as `(header name, value)` pairs, in the CloudEvents binary mode's
    /// `ce-` spelling; `traceparent` and `x-request-id` under their own names.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("ce-specversion", "1.0".to_string()),
            ("ce-id", self.id.clone()),
            ("ce-type", self.kind.to_string()),
            ("ce-source", CLOUD_EVENT_SOURCE.to_string()),
            ("ce-subject", self.subject.clone()),
            ("ce-sagaflowprotocol", PROTOCOL_VERSION.to_string()),
            ("content-type", "application/json".to_string()),
        ];
        if let Some(id) = &self.saga_id {
            h.push(("ce-sagaflowsagaid", id.clone()));
        }
        if let Some(t) = &self.traceparent {
            h.push(("traceparent", t.clone()));
        }
        if let Some(r) = &self.request_id {
            h.push(("x-request-id", r.clone()));
        }
        h
    }
}

impl MessageKind {
    /// The CloudEvents `type` of this kind of message.
    pub fn cloud_event_type(self) -> &'static str {
        match self {
            MessageKind::Command => "io.sagaflow.command",
            MessageKind::Reply => "io.sagaflow.reply",
            MessageKind::Event => "io.sagaflow.event",
        }
    }
}

/// Only the envelope fields the headers need; the payload is skipped over, not copied.
#[derive(Deserialize)]
struct Head {
    message_id: String,
    kind: MessageKind,
    subject: String,
    #[serde(default)]
    saga_id: Option<String>,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
}

/// The CloudEvents attributes of an envelope's bytes; `None` for a body that is not an
/// envelope (a transport then sends it without them).
pub fn cloud_event_attributes(body: &[u8]) -> Option<CloudEventAttributes> {
    let head: Head = serde_json::from_slice(body).ok()?;
    Some(CloudEventAttributes {
        id: head.message_id,
        kind: head.kind.cloud_event_type(),
        subject: head.subject,
        traceparent: head.traceparent,
        request_id: head.request_id,
        saga_id: head.saga_id,
        correlation_id: head.correlation_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_ignore_unknown_fields_and_default_the_protocol() {
        let text = r#"{"message_id":"m1","kind":"reply","subject":"sagaflow.replies",
            "saga_id":"s1","payload":{"step":0,"attempt":1,"phase":"action",
            "outcome":"succeeded","output":{"a":1},"from_the_future":true},
            "added_in_v2":{"x":1}}"#;
        let env = Envelope::from_bytes(text.as_bytes()).expect("an envelope");
        assert_eq!(env.protocol, 1);
        let reply: crate::Reply = serde_json::from_value(env.payload).expect("a reply");
        assert_eq!(
            reply.outcome,
            crate::Outcome::ok(serde_json::json!({"a": 1}))
        );
    }

    #[test]
    fn cloud_event_headers_come_from_the_envelope() {
        let env = Envelope {
            protocol: PROTOCOL_VERSION,
            message_id: "s1:charge:1:action".into(),
            kind: MessageKind::Command,
            subject: "billing.charge".into(),
            saga_id: Some("s1".into()),
            correlation_id: None,
            causation_id: None,
            step: Some("charge".into()),
            attempt: Some(1),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            request_id: Some("req-1".into()),
            payload: serde_json::json!({"big": "x".repeat(1000)}),
        };
        let attrs = cloud_event_attributes(&env.to_bytes()).expect("attributes");
        let headers = attrs.headers();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("ce-id"), Some("s1:charge:1:action"));
        assert_eq!(get("ce-type"), Some("io.sagaflow.command"));
        assert_eq!(get("ce-subject"), Some("billing.charge"));
        assert_eq!(get("ce-specversion"), Some("1.0"));
        assert_eq!(get("x-request-id"), Some("req-1"));
        assert!(get("traceparent").is_some());
        assert_eq!(cloud_event_attributes(b"not json"), None);
    }
}
