//! The Transport port: publish messages to topics; consume them in consumer groups with
//! acknowledgement; hand a message that keeps failing to the dead letters.
//!
//! What every transport promises (the conformance suite in `sagaflow-testkit` checks it):
//! - `publish` returns `Ok` only once the message is safely with the broker;
//! - a message is delivered to one member of each group, and again until it is acked: after
//!   a nack, after its consumer went away without settling it, and — where the broker has
//!   an ack timeout (NATS's `ack_wait`) — after it stayed unsettled that long;
//! - the same `message_id` published twice (within the broker's de-duplication window) is
//!   delivered once;
//! - a single consumer that settles each message before taking the next sees one saga's
//!   messages (same saga id, or an event's correlation id) in the order they were published;
//!   a transport with one queue per topic orders the whole topic, a partitioned one (Kafka)
//!   orders each key, and a body that is not an envelope is ordered within its topic;
//! - a member of a group that dies holding deliveries it never settled hands them to the
//!   group's other members;
//! - a message delivered `max_deliver` times without an ack goes to the [`DeadLetterSink`]
//!   with the reason, and is not delivered again;
//! - after the broker restarts, publishing and consuming resume by themselves, and nothing
//!   published before is lost.

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

/// A transport failure.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The broker cannot be reached; trying again may help.
    #[error("transport unavailable: {0}")]
    Unavailable(String),
    /// The request cannot work as asked (a bad topic or group name, a bad URL).
    #[error("transport refused: {0}")]
    Invalid(String),
    /// The transport was closed.
    #[error("transport closed")]
    Closed,
}

/// Settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Processed: do not deliver again.
    async fn ack(self: Box<Self>);
    /// Not processed: deliver again (after the transport's retry delay), or hand it to the
    /// dead letters once it has been delivered `max_deliver` times.
    async fn nack(self: Box<Self>);
}

/// One delivered message.
pub struct Delivery {
    /// The topic it came from.
    pub topic: String,
    /// The raw body (an envelope, unless someone sent garbage).
    pub body: Vec<u8>,
    /// How many times it was delivered before.
    pub redelivered: u32,
    /// Settles it.
    pub acker: Box<dyn Acker>,
}

impl Delivery {
    /// Acknowledges it.
    pub async fn ack(self) {
        self.acker.ack().await
    }

    /// Asks for it to be delivered again.
    pub async fn nack(self) {
        self.acker.nack().await
    }
}

/// A stream of deliveries for one consumer group.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the transport is closed.
    async fn next(&mut self) -> Option<Delivery>;
}

/// Where a transport puts a message that exhausted its deliveries.
#[async_trait]
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Keeps the message with the reason; an error leaves it with the broker, to be tried again.
    async fn dead_letter(
        &self,
        topic: &str,
        body: &[u8],
        reason: &str,
        attempts: u32,
    ) -> Result<(), String>;
}

/// A shared dead-letter sink.
pub type DeadLetters = Arc<dyn DeadLetterSink>;

/// The Transport port.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Publishes a body to a topic. `message_id` identifies the message among all topics:
    /// publishing the same id again (a retry after an unanswered publish) delivers it once.
    async fn publish(
        &self,
        topic: &str,
        message_id: &str,
        body: Vec<u8>,
    ) -> Result<(), TransportError>;
    /// Consumes a topic as one member of `group`: each message goes to one member.
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, TransportError>;
    /// Is the broker reachable now? (For readiness checks.)
    async fn ready(&self) -> Result<(), TransportError> {
        Ok(())
    }
    /// The participant endpoints this transport calls itself (services bound to an HTTP URL),
    /// with their health; none for a broker, whose consumers come to it.
    fn endpoints(&self) -> Vec<EndpointHealth> {
        Vec::new()
    }
}

/// Whether calls to an endpoint are let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// The endpoint kept failing: no calls until the cool-down ends.
    Open,
    /// The cool-down ended: one probe call decides between closed and open.
    HalfOpen,
}

impl CircuitState {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// One participant endpoint a transport calls, as operators see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EndpointHealth {
    /// The service name (commands `service.*`).
    pub service: String,
    /// Its base URL.
    pub url: String,
    /// The circuit breaker's state.
    pub circuit: CircuitState,
    /// Calls under way now.
    pub in_flight: usize,
    /// Calls allowed at once.
    pub max_in_flight: usize,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Calls made since start.
    pub calls: u64,
    /// Of those, failures (a refused connection, a timeout, 429, 5xx, an unreadable answer).
    pub failures: u64,
    /// The newest failure's reason.
    pub last_error: Option<String>,
}
