//! The NATS JetStream transport.
//!
//! - One stream (`SAGAFLOW` by default) holds every `sagaflow.>` subject, on disk, with
//!   work-queue retention: a message stays until the group consuming its topic acks it, so
//!   nothing published before a consumer starts is lost. One group per topic (commands go to
//!   their service, replies to the engines); members of a group share its messages.
//! - Each (topic, group) is a durable pull consumer with explicit acks, created on start if
//!   missing. A message not acked within `ack_wait` (its consumer died) is delivered again; a
//!   nack asks for it again after `retry_delay`.
//! - `publish` waits for the stream's acknowledgement and sets `Nats-Msg-Id`, so the same
//!   message id published twice within the `duplicate_window` is stored once. An envelope's
//!   CloudEvents attributes (`ce-id`, `ce-type`, …), `traceparent` and `x-request-id` go
//!   along as headers (docs/protocol.md).
//! - A message delivered `max_deliver` times without an ack goes to the dead-letter sink
//!   with the reason, on its next delivery, and is terminated. The consumer's own
//!   `max_deliver` is set a little higher, as a backstop that leaves the message in the
//!   stream should the sink be down for long.
//! - The client reconnects by itself after the server restarts; a subscription whose pull
//!   stream broke opens a new one.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use async_trait::async_trait;
use futures_util::StreamExt;
use sagaflow_core::{Acker, DeadLetters, Delivery, Subscription, Transport, TransportError};

/// How the transport uses the server.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port`.
    pub url: String,
    /// The stream's name.
    pub stream: String,
    /// The subjects the stream holds (after the prefix); every topic must fall under one.
    pub subjects: Vec<String>,
    /// Put before every topic to make its subject (`""`, or e.g. `"team-a."`), so several
    /// deployments share one server without sharing messages: give each its own prefix and
    /// stream name.
    pub subject_prefix: String,
    /// A delivery not acked within this is delivered again.
    pub ack_wait: Duration,
    /// Deliveries before a message goes to the dead letters.
    pub max_deliver: u32,
    /// A nacked message is delivered again after this.
    pub retry_delay: Duration,
    /// Publishes of one message id within this window are stored once.
    pub duplicate_window: Duration,
    /// Deliveries a consumer holds unacked at most.
    pub max_ack_pending: i64,
    /// A consumer nobody pulled from for this long is removed by the server (its messages
    /// stay in the stream for the next one); `None` keeps it for ever.
    pub consumer_inactive: Option<Duration>,
    /// How long `publish` waits for the stream's acknowledgement.
    pub publish_timeout: Duration,
}

impl NatsConfig {
    /// The defaults for a server at `url`.
    pub fn new(url: &str) -> Self {
        NatsConfig {
            url: url.to_string(),
            stream: "SAGAFLOW".to_string(),
            subjects: vec!["sagaflow.>".to_string()],
            subject_prefix: String::new(),
            ack_wait: Duration::from_secs(15),
            max_deliver: 10,
            retry_delay: Duration::from_secs(1),
            duplicate_window: Duration::from_secs(120),
            max_ack_pending: 1024,
            consumer_inactive: None,
            publish_timeout: Duration::from_secs(5),
        }
    }
}

/// Extra deliveries the server allows past `max_deliver`, so a message is dead-lettered by
/// the transport (which needs one more delivery to do it) and retried if the sink is down.
const SERVER_DELIVER_HEADROOM: i64 = 10;

/// A JetStream transport. Cheap to clone.
#[derive(Clone)]
pub struct NatsTransport {
    client: async_nats::Client,
    js: jetstream::Context,
    config: Arc<NatsConfig>,
    dead_letters: DeadLetters,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(format!("{what}: {e}"))
}

impl NatsTransport {
    /// Connects and makes sure the stream exists.
    pub async fn connect(
        config: NatsConfig,
        dead_letters: DeadLetters,
    ) -> Result<Self, TransportError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name("sagaflow")
            .connect(config.url.as_str())
            .await
            .map_err(|e| unavailable(&format!("cannot reach NATS at {}", config.url), e))?;
        let js = jetstream::new(client.clone());
        let transport = NatsTransport {
            client,
            js,
            config: Arc::new(config),
            dead_letters,
        };
        transport.stream().await?;
        Ok(transport)
    }

    /// The stream, created if missing.
    async fn stream(&self) -> Result<stream::Stream, TransportError> {
        let c = &self.config;
        self.js
            .get_or_create_stream(stream::Config {
                name: c.stream.clone(),
                subjects: c
                    .subjects
                    .iter()
                    .map(|s| format!("{}{s}", c.subject_prefix))
                    .collect(),
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: c.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&format!("stream {}", c.stream), e))
    }

    /// The durable consumer for a group on a topic, created if missing.
    async fn consumer(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, TransportError> {
        let c = &self.config;
        let name = consumer_name(topic, group);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("sagaflow group {group} on {topic}")),
            filter_subject: self.subject(topic),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: c.ack_wait,
            max_deliver: i64::from(c.max_deliver) + SERVER_DELIVER_HEADROOM,
            max_ack_pending: c.max_ack_pending,
            inactive_threshold: c.consumer_inactive.unwrap_or_default(),
            ..Default::default()
        };
        let stream = self.stream().await?;
        stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("overlap") || text.contains("unique") {
                    TransportError::Invalid(format!(
                        "NATS allows one consumer group per topic on a work-queue stream: {topic} already has another group ({text})"
                    ))
                } else {
                    unavailable(&format!("consumer {name}"), text)
                }
            })
    }
}

impl NatsTransport {
    /// The subject a topic is published on.
    fn subject(&self, topic: &str) -> String {
        format!("{}{topic}", self.config.subject_prefix)
    }
}

/// The CloudEvents binary-mode headers of an envelope body (none for a body that is not
/// one), so a consumer in any language can route and trace a message without parsing it.
fn cloud_event_headers(body: &[u8]) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(attributes) = sagaflow_core::cloud_event_attributes(body) {
        for (name, value) in attributes.headers() {
            headers.insert(name, value.as_str());
        }
    }
    headers
}

/// A durable name for a group on a topic: only letters, digits, `-` and `_`.
fn consumer_name(topic: &str, group: &str) -> String {
    format!("{group}__{topic}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[async_trait]
impl Transport for NatsTransport {
    async fn publish(
        &self,
        topic: &str,
        message_id: &str,
        body: Vec<u8>,
    ) -> Result<(), TransportError> {
        let message = jetstream::message::PublishMessage::build()
            .headers(cloud_event_headers(&body))
            .payload(body.into())
            .message_id(message_id);
        let ack = self
            .js
            .send_publish(self.subject(topic), message)
            .await
            .map_err(|e| unavailable(&format!("publish to {topic}"), e))?;
        match tokio::time::timeout(self.config.publish_timeout, ack).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unavailable(&format!("publish to {topic}"), e)),
            Err(_) => Err(TransportError::Unavailable(format!(
                "publish to {topic}: no acknowledgement within {:?}",
                self.config.publish_timeout
            ))),
        }
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        if topic.is_empty() || group.is_empty() {
            return Err(TransportError::Invalid(
                "topic and group must not be empty".to_string(),
            ));
        }
        let consumer = self.consumer(topic, group).await?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable(&format!("pull from {topic}"), e))?;
        Ok(Box::new(NatsSubscription {
            transport: self.clone(),
            topic: topic.to_string(),
            group: group.to_string(),
            messages: Some(messages),
        }))
    }

    async fn ready(&self) -> Result<(), TransportError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(TransportError::Unavailable(format!(
                "NATS connection is {state:?}"
            ))),
        }
    }
}

struct NatsSubscription {
    transport: NatsTransport,
    topic: String,
    group: String,
    messages: Option<pull::Stream>,
}

impl NatsSubscription {
    /// Opens a new pull stream after the old one broke, waiting while the server is away.
    async fn reopen(&mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let opened = match self.transport.consumer(&self.topic, &self.group).await {
                Ok(consumer) => consumer
                    .messages()
                    .await
                    .map_err(|e| unavailable("pull", e)),
                Err(e) => Err(e),
            };
            match opened {
                Ok(messages) => {
                    self.messages = Some(messages);
                    return;
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, ?backoff, "cannot pull; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Dead-letters a message past its deliveries; true when it is settled for good.
    async fn exhausted(&self, message: &jetstream::Message, delivered: u32) -> bool {
        let max = self.transport.config.max_deliver;
        if delivered <= max {
            return false;
        }
        let reason = format!(
            "delivered {} times without an ack (max_deliver {max})",
            delivered - 1
        );
        match self
            .transport
            .dead_letters
            .dead_letter(&self.topic, &message.payload, &reason, delivered - 1)
            .await
        {
            Ok(()) => {
                tracing::warn!(topic = %self.topic, %reason, "message dead-lettered");
                if let Err(e) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %e, "terminating a dead-lettered message failed");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, topic = %self.topic, "could not keep a dead letter; retrying later");
                let _ = message
                    .ack_with(AckKind::Nak(Some(self.transport.config.retry_delay)))
                    .await;
            }
        }
        true
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                self.reopen().await;
                continue;
            };
            match messages.next().await {
                Some(Ok(message)) => {
                    let delivered = message
                        .info()
                        .map(|i| i.delivered.max(1) as u32)
                        .unwrap_or(1);
                    if self.exhausted(&message, delivered).await {
                        continue;
                    }
                    return Some(Delivery {
                        topic: self.topic.clone(),
                        body: message.payload.to_vec(),
                        redelivered: delivered - 1,
                        acker: Box::new(NatsAcker {
                            message,
                            retry_delay: self.transport.config.retry_delay,
                        }),
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!(topic = %self.topic, error = %e, "pull stream error; reopening");
                    self.messages = None;
                }
                None => self.messages = None,
            }
        }
    }
}

struct NatsAcker {
    message: jetstream::Message,
    retry_delay: Duration,
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) {
        // Lost acks mean a redelivery, which every consumer tolerates (inbox, stale replies).
        if let Err(e) = self.message.ack().await {
            tracing::warn!(error = %e, "ack failed; the message will come again");
        }
    }

    async fn nack(self: Box<Self>) {
        if let Err(e) = self
            .message
            .ack_with(AckKind::Nak(Some(self.retry_delay)))
            .await
        {
            tracing::warn!(error = %e, "nack failed; the message comes again after ack_wait");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn consumer_names_are_valid_durable_names() {
        assert_eq!(
            super::consumer_name("sagaflow.commands.billing", "billing"),
            "billing__sagaflow_commands_billing"
        );
        assert_eq!(super::consumer_name("a.*.>", "g g"), "g_g__a____");
    }
}
