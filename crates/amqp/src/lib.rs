//! The RabbitMQ (AMQP 0-9-1) transport, on `lapin`.
//!
//! - Every topic is published to one durable topic exchange (`sagaflow` by default) with the
//!   topic as routing key, as a persistent message (`delivery_mode` 2) whose `message_id` is
//!   the message id, `content_type` `application/json`, and the envelope's CloudEvents
//!   attributes (`cloudEvents_id`, `cloudEvents_type`, …), `traceparent` and `x-request-id`
//!   as headers
//!   (docs/protocol.md). The publishing channel is in confirm mode: `publish` returns `Ok` only
//!   once the broker has confirmed the message, and the message is `mandatory`, so one that no
//!   queue takes (no group has subscribed to its topic yet) is an error the caller retries
//!   rather than a silent loss.
//! - Each (topic, group) is a durable queue, `{exchange}:{group}:{topic}` (sanitized), bound
//!   to the exchange with the topic, declared on subscribe. Members of a group share its
//!   queue: each message goes to one of them. Every group of a topic gets each message.
//! - Consumers ack by hand, with at most `prefetch` unacked deliveries each, each
//!   subscription on a channel of its own. A delivery whose subscription is dropped (or whose
//!   connection dies) before it is settled goes back to its queue.
//! - A nack rejects the delivery without requeueing it, which starts the delayed-retry loop
//!   built from RabbitMQ itself (below). RabbitMQ counts the rounds in the `x-death` header,
//!   which is where `Delivery::redelivered` comes from.
//! - A message delivered `max_deliver` times without an ack goes to the dead-letter sink with
//!   the reason, on its next delivery, and is acked; if the sink fails it goes round the
//!   retry loop again. The count is the `rejected` deaths in `x-death` for the queue, plus one
//!   when RabbitMQ flags the delivery as redelivered (its consumer went away holding it).
//!   RabbitMQ keeps no count of those requeues, so a message that kills its consumer every
//!   time is counted once for all of them, not once per crash.
//! - RabbitMQ does not de-duplicate publishes. A subscription drops (and acks) a delivery
//!   whose message id was acked on its queue recently (the last 100 000 ids acked through
//!   this transport value), so a publish retried after an unanswered confirm is delivered
//!   once to a consumer in this process. A duplicate that reaches another process, or that
//!   arrives while the first copy is still unsettled, is delivered again: consumers tolerate
//!   that (the participant inbox and the engine's reply check make it harmless).
//! - `lapin` does not reconnect by itself. The transport keeps one connection and opens a new
//!   one when it is found dead, at most once per backoff step (100 ms doubling to 2 s), and
//!   re-declares the exchanges and queues on every channel it opens. `publish` while the
//!   broker is away fails fast with [`TransportError::Unavailable`] (the outbox publishes
//!   again); a subscription whose consumer ended opens a new channel and consumes again,
//!   waiting while the broker is away. Settling a delivery from a dead channel only logs: the
//!   broker delivers it again.
//! - `queue_expires` (RabbitMQ's `x-expires`) removes a queue, with its messages, once it has
//!   had no consumer for that long; meant for tests and throwaway deployments, as a retry
//!   queue (which never has a consumer) counts as unused from its last declaration.
//!
//! # The retry loop
//!
//! Each group's queue dead-letters what is rejected from it to the retry exchange, keyed by
//! its own name, into a retry queue of its own that nobody consumes; there the message waits
//! `retry_delay` (`x-message-ttl`), then expires back into its queue through the default
//! exchange, which routes by queue name. A retry therefore reaches only the group that
//! nacked, never the other groups of the topic.
//!
//! ```text
//!  publish(topic)
//!        │
//!        ▼
//!  [sagaflow] topic exchange
//!        │ key = topic
//!        ▼
//!  {exchange}:{group}:{topic} ───────► consumer
//!        │                    ▲
//!        │ nack: rejected,    │ retry_delay later: expired,
//!        │ key = queue name   │ back through the default
//!        ▼                    │ exchange, key = queue name
//!  [sagaflow.retry] direct    │
//!        │ key = queue name   │
//!        ▼                    │
//!  {exchange}:{group}:{topic}:retry
//!  no consumer; x-message-ttl = retry_delay
//! ```

#![warn(missing_docs)]

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind,
};
use sagaflow_core::{Acker, DeadLetters, Delivery, Subscription, Transport, TransportError};
use tokio::time::Instant;

/// How the transport uses the broker.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:port/vhost` (the vhost URL-encoded: `%2f` is `/`).
    pub url: String,
    /// The durable topic exchange every topic is published to. Queue names start with it, so
    /// deployments with exchanges of their own share a broker without sharing messages.
    pub exchange: String,
    /// The durable direct exchange nacked messages go through on their way to the retry
    /// queues.
    pub retry_exchange: String,
    /// Deliveries before a message goes to the dead letters.
    pub max_deliver: u32,
    /// A nacked message is delivered again after this (the retry queues' `x-message-ttl`).
    pub retry_delay: Duration,
    /// Deliveries a subscription holds unacked at most (`basic.qos`).
    pub prefetch: u16,
    /// A queue without a consumer for this long is deleted by the broker, with its messages
    /// (`x-expires`); `None` keeps queues for ever. For tests and throwaway deployments.
    pub queue_expires: Option<Duration>,
    /// How long `publish` waits for the broker's confirmation.
    pub publish_timeout: Duration,
}

impl AmqpConfig {
    /// The defaults for a broker at `url`.
    pub fn new(url: &str) -> Self {
        AmqpConfig {
            url: url.to_string(),
            exchange: "sagaflow".to_string(),
            retry_exchange: "sagaflow.retry".to_string(),
            max_deliver: 10,
            retry_delay: Duration::from_secs(1),
            prefetch: 256,
            queue_expires: None,
            publish_timeout: Duration::from_secs(5),
        }
    }
}

/// The first pause between connection attempts; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many acked message ids the transport remembers to drop a duplicate publish.
const DEDUPE_WINDOW: usize = 100_000;
/// AMQP names (exchanges, queues, routing keys, message ids) are at most this many bytes.
const MAX_NAME: usize = 255;
/// Ends a queue's retry queue name (`:` never occurs in a sanitized queue name part).
const RETRY_SUFFIX: &str = ":retry";

/// A RabbitMQ transport. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct AmqpTransport {
    shared: Arc<Shared>,
}

struct Shared {
    config: AmqpConfig,
    dead_letters: DeadLetters,
    link: tokio::sync::Mutex<Link>,
    acked: Mutex<RecentIds>,
}

/// The connection and the publishing channel, replaced when found dead.
struct Link {
    connection: Option<Arc<Connection>>,
    publisher: Option<Channel>,
    /// The pause after the next failed attempt.
    backoff: Duration,
    /// No new attempt before this, after a failed one.
    retry_at: Option<Instant>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(format!("{what}: {e}"))
}

/// A lapin error as a transport error: the broker refusing a declaration (a queue or
/// exchange that exists with other settings, a name it forbids) cannot work by trying again.
fn amqp_error(what: &str, e: lapin::Error) -> TransportError {
    if let lapin::ErrorKind::ProtocolError(err) = e.kind() {
        if matches!(
            err.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED | AMQPSoftError::ACCESSREFUSED)
        ) {
            return TransportError::Invalid(format!("{what}: {e}"));
        }
    }
    unavailable(what, e)
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    sagaflow_core::redact_url(url)
}

impl AmqpTransport {
    /// Connects, and declares the exchanges.
    pub async fn connect(
        config: AmqpConfig,
        dead_letters: DeadLetters,
    ) -> Result<Self, TransportError> {
        if let Err(e) = config.url.parse::<lapin::uri::AMQPUri>() {
            return Err(TransportError::Invalid(format!(
                "{} is not an AMQP URL: {e}",
                redact(&config.url)
            )));
        }
        for name in [&config.exchange, &config.retry_exchange] {
            if name.is_empty() || name.len() > MAX_NAME {
                return Err(TransportError::Invalid(format!(
                    "exchange name {name:?} must be 1 to {MAX_NAME} bytes"
                )));
            }
        }
        let transport = AmqpTransport {
            shared: Arc::new(Shared {
                config,
                dead_letters,
                link: tokio::sync::Mutex::new(Link {
                    connection: None,
                    publisher: None,
                    backoff: BACKOFF_MIN,
                    retry_at: None,
                }),
                acked: Mutex::new(RecentIds::new(DEDUPE_WINDOW)),
            }),
        };
        transport.shared.publisher().await?;
        Ok(transport)
    }
}

impl Shared {
    /// The live connection: the current one, or a new one unless the last attempt failed
    /// less than a backoff step ago.
    async fn connected(&self, link: &mut Link) -> Result<Arc<Connection>, TransportError> {
        if let Some(connection) = &link.connection {
            if connection.status().connected() {
                return Ok(connection.clone());
            }
            tracing::warn!(url = %redact(&self.config.url), "RabbitMQ connection lost; reconnecting");
            link.connection = None;
            link.publisher = None;
        }
        let now = Instant::now();
        if let Some(at) = link.retry_at.filter(|at| *at > now) {
            return Err(TransportError::Unavailable(format!(
                "RabbitMQ at {} is unreachable; next connection attempt in {:?}",
                redact(&self.config.url),
                at - now
            )));
        }
        let properties = ConnectionProperties::default().with_connection_name("sagaflow".into());
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(&self.config.url, properties),
        )
        .await;
        match attempt {
            Ok(Ok(connection)) => {
                if link.retry_at.is_some() {
                    tracing::info!(url = %redact(&self.config.url), "reconnected to RabbitMQ");
                }
                link.backoff = BACKOFF_MIN;
                link.retry_at = None;
                let connection = Arc::new(connection);
                link.connection = Some(connection.clone());
                Ok(connection)
            }
            failed => {
                link.retry_at = Some(Instant::now() + link.backoff);
                link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
                let what = format!("cannot reach RabbitMQ at {}", redact(&self.config.url));
                Err(match failed {
                    Ok(Err(e)) => unavailable(&what, e),
                    _ => unavailable(&what, format!("no answer within {CONNECT_TIMEOUT:?}")),
                })
            }
        }
    }

    /// The live connection (see [`Shared::connected`]).
    async fn connection(&self) -> Result<Arc<Connection>, TransportError> {
        let mut link = self.link.lock().await;
        self.connected(&mut link).await
    }

    /// The publishing channel, in confirm mode, opened (with the exchanges declared) if
    /// missing or dead.
    async fn publisher(&self) -> Result<Channel, TransportError> {
        let mut link = self.link.lock().await;
        let connection = self.connected(&mut link).await?;
        if let Some(channel) = &link.publisher {
            if channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| amqp_error("open a channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| amqp_error("enable publisher confirms", e))?;
        self.declare_exchanges(&channel).await?;
        link.publisher = Some(channel.clone());
        Ok(channel)
    }

    /// Declares the exchange topics are published to, and the retry exchange.
    async fn declare_exchanges(&self, channel: &Channel) -> Result<(), TransportError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in [
            (&self.config.exchange, ExchangeKind::Topic),
            (&self.config.retry_exchange, ExchangeKind::Direct),
        ] {
            channel
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await
                .map_err(|e| amqp_error(&format!("declare exchange {name}"), e))?;
        }
        Ok(())
    }

    /// Declares a group's queue on a topic and its retry queue, and binds them.
    async fn declare_queues(
        &self,
        channel: &Channel,
        topic: &str,
        queue: &str,
    ) -> Result<(), TransportError> {
        let c = &self.config;
        let retry_queue = format!("{queue}{RETRY_SUFFIX}");
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let text = |s: &str| AMQPValue::LongString(s.into());
        let millis = |d: Duration| AMQPValue::LongInt(d.as_millis().min(i32::MAX as u128) as i32);

        let mut main = FieldTable::default();
        main.insert("x-dead-letter-exchange".into(), text(&c.retry_exchange));
        main.insert("x-dead-letter-routing-key".into(), text(queue));
        let mut retry = FieldTable::default();
        retry.insert("x-message-ttl".into(), millis(c.retry_delay));
        // The default exchange routes by queue name: straight back to the queue that nacked.
        retry.insert("x-dead-letter-exchange".into(), text(""));
        retry.insert("x-dead-letter-routing-key".into(), text(queue));
        if let Some(expires) = c.queue_expires {
            let expires = millis(expires.max(Duration::from_millis(1)));
            main.insert("x-expires".into(), expires.clone());
            retry.insert("x-expires".into(), expires);
        }

        for (name, arguments) in [(queue, main), (retry_queue.as_str(), retry)] {
            channel
                .queue_declare(name.into(), durable, arguments)
                .await
                .map_err(|e| {
                    amqp_error(
                        &format!("declare queue {name} (a queue of that name with other settings exists?)"),
                        e,
                    )
                })?;
        }
        for (name, exchange, key) in [
            (queue, &c.exchange, topic),
            (retry_queue.as_str(), &c.retry_exchange, queue),
        ] {
            channel
                .queue_bind(
                    name.into(),
                    exchange.as_str().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| amqp_error(&format!("bind queue {name} to {exchange}"), e))?;
        }
        Ok(())
    }

    /// A channel of its own consuming a group's queue, the topology declared first.
    async fn open_consumer(
        &self,
        topic: &str,
        queue: &str,
    ) -> Result<(Channel, Consumer), TransportError> {
        let connection = self.connection().await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| amqp_error("open a channel", e))?;
        self.declare_exchanges(&channel).await?;
        self.declare_queues(&channel, topic, queue).await?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| amqp_error("set the prefetch", e))?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error(&format!("consume {queue}"), e))?;
        Ok((channel, consumer))
    }

    fn acked_recently(&self, key: &str) -> bool {
        self.acked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    fn remember_acked(&self, key: String) {
        self.acked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
    }
}

/// The queue of a group on a topic: `{exchange}:{group}:{topic}`, each part keeping letters,
/// digits, `.`, `-` and `_` (anything else becomes `_`), so `:` only separates them.
fn queue_name(exchange: &str, topic: &str, group: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}:{}:{}", clean(exchange), clean(group), clean(topic))
}

/// The key a delivery's message id is remembered under once acked on `queue`.
fn dedupe_key(queue: &str, message_id: &str) -> String {
    format!("{queue}\n{message_id}")
}

/// The CloudEvents headers of an envelope body (none for a body that is not one), so a
/// consumer in any language can route and trace a message without parsing it: the
/// attributes under the AMQP binding's names (`cloudEvents_id`, `cloudEvents_type`, …,
/// which RabbitMQ shows an AMQP 1.0 client as application properties), `traceparent` and
/// `x-request-id` as they are.
fn cloud_event_headers(body: &[u8]) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(attributes) = sagaflow_core::cloud_event_attributes(body) {
        for (name, value) in attributes.headers() {
            if name == "content-type" {
                continue; // a property of its own in AMQP
            }
            let name = match name.strip_prefix("ce-") {
                Some(attribute) => format!("{AMQP_CLOUD_EVENT_PREFIX}{attribute}"),
                None => name.to_string(),
            };
            headers.insert(name.into(), AMQPValue::LongString(value.into()));
        }
    }
    headers
}

/// The prefix of a CloudEvents attribute's header (the CloudEvents AMQP binding's).
pub const AMQP_CLOUD_EVENT_PREFIX: &str = "cloudEvents_";

/// How many times a message was rejected from `queue`: the `count` of its `rejected`
/// entries for that queue in the `x-death` header RabbitMQ keeps when it dead-letters.
fn rejections(headers: Option<&FieldTable>, queue: &str) -> u32 {
    let Some(AMQPValue::FieldArray(deaths)) = headers.and_then(|h| h.inner().get("x-death")) else {
        return 0;
    };
    let text = |v: Option<&AMQPValue>| -> Option<String> {
        match v? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            _ => None,
        }
    };
    let count = |v: Option<&AMQPValue>| -> u64 {
        match v {
            Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).unwrap_or(0),
            Some(AMQPValue::LongInt(n)) => u64::try_from(*n).unwrap_or(0),
            Some(AMQPValue::LongUInt(n)) => u64::from(*n),
            Some(AMQPValue::ShortInt(n)) => u64::try_from(*n).unwrap_or(0),
            Some(AMQPValue::ShortUInt(n)) => u64::from(*n),
            Some(AMQPValue::ShortShortInt(n)) => u64::try_from(*n).unwrap_or(0),
            Some(AMQPValue::ShortShortUInt(n)) => u64::from(*n),
            Some(AMQPValue::Timestamp(n)) => *n,
            _ => 0,
        }
    };
    let total: u64 = deaths
        .as_slice()
        .iter()
        .filter_map(|death| match death {
            AMQPValue::FieldTable(t) => Some(t.inner()),
            _ => None,
        })
        .filter(|death| {
            text(death.get("queue")).as_deref() == Some(queue)
                && text(death.get("reason")).as_deref() == Some("rejected")
        })
        .map(|death| count(death.get("count")))
        .sum();
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// Deliveries of a message before this one: its rejections, plus one if RabbitMQ flags it as
/// redelivered (a consumer went away holding it since it last entered the queue).
fn deliveries_before(rejections: u32, redelivered: bool) -> u32 {
    rejections.saturating_add(u32::from(redelivered))
}

/// The last `capacity` keys inserted.
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        RecentIds {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn contains(&self, key: &str) -> bool {
        self.set.contains(key)
    }

    fn insert(&mut self, key: String) {
        if !self.set.insert(key.clone()) {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

fn check_topic(topic: &str) -> Result<(), TransportError> {
    if topic.is_empty() || topic.len() > MAX_NAME {
        return Err(TransportError::Invalid(format!(
            "topic {topic:?} must be 1 to {MAX_NAME} bytes"
        )));
    }
    Ok(())
}

#[async_trait]
impl Transport for AmqpTransport {
    async fn publish(
        &self,
        topic: &str,
        message_id: &str,
        body: Vec<u8>,
    ) -> Result<(), TransportError> {
        check_topic(topic)?;
        let message_id = ShortString::try_new(message_id)
            .map_err(|e| TransportError::Invalid(format!("message id {message_id:?}: {e}")))?;
        let c = &self.shared.config;
        let confirmed = async {
            let channel = self.shared.publisher().await?;
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_headers(cloud_event_headers(&body))
                .with_message_id(message_id);
            let options = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            let confirm = channel
                .basic_publish(
                    c.exchange.as_str().into(),
                    topic.into(),
                    options,
                    &body,
                    properties,
                )
                .await
                .map_err(|e| amqp_error(&format!("publish to {topic}"), e))?;
            match confirm.await {
                Ok(Confirmation::Ack(None)) => Ok(()),
                Ok(Confirmation::Ack(Some(_))) => Err(TransportError::Unavailable(format!(
                    "publish to {topic}: no queue takes it yet (no group has subscribed to the topic)"
                ))),
                Ok(Confirmation::Nack(_)) => Err(TransportError::Unavailable(format!(
                    "publish to {topic}: the broker did not accept it"
                ))),
                Ok(Confirmation::NotRequested) => Err(TransportError::Unavailable(format!(
                    "publish to {topic}: the channel is not in confirm mode"
                ))),
                Err(e) => Err(unavailable(&format!("publish to {topic}"), e)),
            }
        };
        match tokio::time::timeout(c.publish_timeout, confirmed).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Unavailable(format!(
                "publish to {topic}: no confirmation within {:?}",
                c.publish_timeout
            ))),
        }
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        check_topic(topic)?;
        if group.is_empty() {
            return Err(TransportError::Invalid(
                "group must not be empty".to_string(),
            ));
        }
        if topic.contains(['*', '#']) {
            return Err(TransportError::Invalid(format!(
                "topic {topic:?}: topics are literal; '*' and '#' are not allowed"
            )));
        }
        let queue = queue_name(&self.shared.config.exchange, topic, group);
        if queue.len() + RETRY_SUFFIX.len() > MAX_NAME {
            return Err(TransportError::Invalid(format!(
                "queue name {queue:?} for group {group:?} on {topic:?} is too long (at most {} bytes)",
                MAX_NAME - RETRY_SUFFIX.len()
            )));
        }
        let (channel, consumer) = self.shared.open_consumer(topic, &queue).await?;
        Ok(Box::new(AmqpSubscription {
            shared: self.shared.clone(),
            topic: topic.to_string(),
            queue,
            open: Some((channel, consumer)),
        }))
    }

    async fn ready(&self) -> Result<(), TransportError> {
        // Reconnects if need be, so readiness comes back by itself after the broker does.
        self.shared.connection().await.map(|_| ())
    }
}

/// One consumer on a group's queue, on a channel of its own; dropping it closes the channel,
/// so the broker requeues what it had not settled.
struct AmqpSubscription {
    shared: Arc<Shared>,
    topic: String,
    queue: String,
    /// The channel and its consumer; `None` after they broke, until reopened.
    open: Option<(Channel, Consumer)>,
}

impl AmqpSubscription {
    /// Opens a new channel and consumer after the old ones broke, waiting while the broker is
    /// away.
    async fn reopen(&mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.shared.open_consumer(&self.topic, &self.queue).await {
                Ok(open) => {
                    tracing::info!(queue = %self.queue, "consuming again");
                    self.open = Some(open);
                    return;
                }
                Err(e) => {
                    tracing::warn!(queue = %self.queue, error = %e, ?backoff, "cannot consume; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// What to do with a delivery: hand it out, or settle it here (a duplicate, or a message
    /// past its deliveries) and return `None`.
    fn accept(&self, message: lapin::message::Delivery) -> Option<Delivery> {
        let shared = &self.shared;
        let before = deliveries_before(
            rejections(message.properties.headers().as_ref(), &self.queue),
            message.redelivered,
        );
        let key = message
            .properties
            .message_id()
            .as_ref()
            .map(|id| dedupe_key(&self.queue, id.as_str()));
        if key.as_deref().is_some_and(|k| shared.acked_recently(k)) {
            tracing::debug!(queue = %self.queue, "dropping a duplicate of an acked message");
            // Settled in a task of its own, so a caller that stops waiting cannot cut it short.
            tokio::spawn(async move { ack(&message.acker).await });
            return None;
        }
        let max = shared.config.max_deliver;
        if before >= max {
            let sink = shared.dead_letters.clone();
            let topic = self.topic.clone();
            tokio::spawn(async move {
                let reason = format!("delivered {before} times without an ack (max_deliver {max})");
                match sink
                    .dead_letter(&topic, &message.data, &reason, before)
                    .await
                {
                    Ok(()) => {
                        tracing::warn!(%topic, %reason, "message dead-lettered");
                        ack(&message.acker).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, %topic, "could not keep a dead letter; retrying later");
                        reject(&message.acker).await;
                    }
                }
            });
            return None;
        }
        Some(Delivery {
            topic: self.topic.clone(),
            body: message.data,
            redelivered: before,
            acker: Box::new(AmqpAcker {
                acker: message.acker,
                shared: shared.clone(),
                dedupe_key: key,
            }),
        })
    }
}

#[async_trait]
impl Subscription for AmqpSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let Some((_, consumer)) = self.open.as_mut() else {
                self.reopen().await;
                continue;
            };
            match consumer.next().await {
                Some(Ok(message)) => {
                    if let Some(delivery) = self.accept(message) {
                        return Some(delivery);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(queue = %self.queue, error = %e, "consumer broke; reopening");
                    self.open = None;
                }
                None => {
                    tracing::debug!(queue = %self.queue, "consumer cancelled; reopening");
                    self.open = None;
                }
            }
        }
    }
}

/// Acks; a failure (the channel died) only logs, as the broker delivers the message again.
async fn ack(acker: &lapin::Acker) {
    match acker.ack(BasicAckOptions::default()).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("ack on a closed channel; the message will come again")
        }
        Err(e) => tracing::warn!(error = %e, "ack failed; the message will come again"),
    }
}

/// Rejects without requeueing: the queue dead-letters the message into its retry queue.
async fn reject(acker: &lapin::Acker) {
    match acker.reject(BasicRejectOptions { requeue: false }).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                "nack on a closed channel; the message comes again without the retry delay"
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "nack failed; the message comes again without the retry delay")
        }
    }
}

struct AmqpAcker {
    acker: lapin::Acker,
    shared: Arc<Shared>,
    /// Remembered once acked, to drop a duplicate publish of the message.
    dedupe_key: Option<String>,
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(self: Box<Self>) {
        if let Some(key) = self.dedupe_key {
            self.shared.remember_acked(key);
        }
        ack(&self.acker).await
    }

    async fn nack(self: Box<Self>) {
        reject(&self.acker).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    #[test]
    fn queue_names_keep_their_parts_apart() {
        assert_eq!(
            queue_name("sagaflow", "sagaflow.commands.billing", "billing"),
            "sagaflow:billing:sagaflow.commands.billing"
        );
        assert_eq!(queue_name("ex", "a b:*", "g/h:"), "ex:g_h_:a_b__");
        assert_eq!(
            format!("{}{RETRY_SUFFIX}", queue_name("ex", "t", "g")),
            "ex:g:t:retry"
        );
    }

    fn death(queue: &str, reason: &str, count: i64) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert("queue".into(), AMQPValue::LongString(queue.into()));
        t.insert("reason".into(), AMQPValue::LongString(reason.into()));
        t.insert("count".into(), AMQPValue::LongLongInt(count));
        t.insert("exchange".into(), AMQPValue::LongString("sagaflow".into()));
        AMQPValue::FieldTable(t)
    }

    #[test]
    fn rejections_count_this_queues_rejected_deaths_only() {
        assert_eq!(rejections(None, "q"), 0);
        let mut headers = FieldTable::default();
        assert_eq!(rejections(Some(&headers), "q"), 0);
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                death("q:retry", "expired", 3),
                death("q", "rejected", 3),
                death("other", "rejected", 7),
                death("q", "expired", 1),
            ])),
        );
        assert_eq!(rejections(Some(&headers), "q"), 3);
        assert_eq!(rejections(Some(&headers), "other"), 7);
        assert_eq!(rejections(Some(&headers), "nobody"), 0);
        assert_eq!(deliveries_before(3, false), 3);
        assert_eq!(deliveries_before(0, true), 1);
        assert_eq!(deliveries_before(3, true), 4);
    }

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut ids = RecentIds::new(2);
        ids.insert("a".into());
        ids.insert("b".into());
        ids.insert("a".into());
        assert!(ids.contains("a") && ids.contains("b"));
        ids.insert("c".into());
        assert!(!ids.contains("a") && ids.contains("b") && ids.contains("c"));
    }

    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact("amqp://user@h/v"), "amqp://user@h/v");
    }
}
