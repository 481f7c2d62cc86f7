//! The Transport port: publish envelopes to topics; consume them with acknowledgement.

use async_trait::async_trait;
use thiserror::Error;

/// A transport failure.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The broker cannot be reached; trying again may help.
    #[error("transport unavailable: {0}")]
    Unavailable(String),
    /// The transport was closed.
    #[error("transport closed")]
    Closed,
}

/// Settles one delivery.
#[async_trait]
pub trait Acker: Send {
    /// Processed: do not deliver again.
    async fn ack(self: Box<Self>);
    /// Not processed: deliver again.
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

/// The Transport port.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Publishes a body to a topic.
    async fn publish(&self, topic: &str, body: Vec<u8>) -> Result<(), TransportError>;
    /// Consumes a topic as one member of `group`: each message goes to one member.
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, TransportError>;
}
