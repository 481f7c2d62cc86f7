//! Opens the transport a `--transport` names: `memory` (the in-process bus, the default),
//! `nats://HOST:PORT` (NATS JetStream) or `amqp://USER:PASS@HOST:PORT/VHOST` (RabbitMQ).
//! Messages that exhaust their deliveries go to the store's dead letters.

use std::sync::Arc;

use anyhow::{bail, Context};
use sagaflow_core::{Store, Transport};
use sagaflow_engine::{MemoryBus, StoreDeadLetters};

/// The default transport.
pub const DEFAULT_TRANSPORT: &str = "memory";

/// Deliveries before a message goes to the dead letters, on every transport.
pub const MAX_DELIVER: u32 = 10;

/// What kind of transport a URL names, or why it names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The in-process bus.
    Memory,
    /// NATS JetStream.
    Nats,
    /// RabbitMQ.
    Amqp,
}

/// Classifies a transport URL.
pub fn kind(url: &str) -> Result<Kind, String> {
    if url == "memory" {
        Ok(Kind::Memory)
    } else if url.starts_with("nats://") {
        Ok(Kind::Nats)
    } else if url.starts_with("amqp://") {
        Ok(Kind::Amqp)
    } else {
        Err(format!(
            "{url:?} is not a transport; use memory, nats://HOST:PORT or amqp://USER:PASS@HOST:PORT/VHOST"
        ))
    }
}

/// Connects the transport `url` names.
pub async fn open(url: &str, store: Arc<dyn Store>) -> anyhow::Result<Arc<dyn Transport>> {
    let dead_letters = StoreDeadLetters::shared(store);
    match kind(url).map_err(anyhow::Error::msg)? {
        Kind::Memory => Ok(Arc::new(MemoryBus::with_dead_letters(
            dead_letters,
            MAX_DELIVER,
        ))),
        Kind::Nats => {
            let config = sagaflow_nats::NatsConfig {
                max_deliver: MAX_DELIVER,
                ..sagaflow_nats::NatsConfig::new(url)
            };
            let t = sagaflow_nats::NatsTransport::connect(config, dead_letters)
                .await
                .with_context(|| format!("connecting to {}", crate::store_url::redact(url)))?;
            Ok(Arc::new(t))
        }
        Kind::Amqp => bail!("the RabbitMQ transport is not built into this binary yet"),
    }
}
