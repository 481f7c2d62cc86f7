//! Opens the transport a `--transport` names: `memory` (the in-process bus, the default),
//! `nats://HOST:PORT` (NATS JetStream), `amqp://USER:PASS@HOST:PORT/VHOST` (RabbitMQ) or
//! `kafka://HOST:PORT[,HOST:PORT…]` (Kafka), each with an optional `?namespace=NAME`. Messages that exhaust their deliveries go to the
//! store's dead letters.

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
    /// Kafka.
    Kafka,
}

/// Classifies a transport URL.
pub fn kind(url: &str) -> Result<Kind, String> {
    if url == "memory" {
        Ok(Kind::Memory)
    } else if url.starts_with("nats://") {
        Ok(Kind::Nats)
    } else if url.starts_with("amqp://") {
        Ok(Kind::Amqp)
    } else if url.starts_with("kafka://") {
        Ok(Kind::Kafka)
    } else {
        Err(format!(
            "{url:?} is not a transport; use memory, nats://HOST:PORT, amqp://USER:PASS@HOST:PORT/VHOST or kafka://HOST:PORT"
        ))
    }
}

/// Takes the `?namespace=NAME` parameter out of a broker URL: deployments with different
/// namespaces share a broker without sharing messages. Names are letters, digits, `-`, `_`.
pub fn split_namespace(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let Some(ns) = query.strip_prefix("namespace=") else {
        bail!("{url:?}: the only parameter a transport URL takes is ?namespace=NAME");
    };
    if ns.is_empty()
        || !ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("{url:?}: a namespace is letters, digits, '-' and '_'");
    }
    Ok((base.to_string(), Some(ns.to_string())))
}

/// Connects the transport `url` names.
pub async fn open(url: &str, store: Arc<dyn Store>) -> anyhow::Result<Arc<dyn Transport>> {
    open_with(url, store, false).await
}

/// How long a throwaway run's queues and consumers outlive their last consumer.
const EPHEMERAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Connects the transport `url` names; an `ephemeral` one (a bench run) lets the broker
/// remove its queues and consumers a minute after the run stops using them.
pub async fn open_with(
    url: &str,
    store: Arc<dyn Store>,
    ephemeral: bool,
) -> anyhow::Result<Arc<dyn Transport>> {
    let dead_letters = StoreDeadLetters::shared(store);
    match kind(url).map_err(anyhow::Error::msg)? {
        Kind::Memory => Ok(Arc::new(MemoryBus::with_dead_letters(
            dead_letters,
            MAX_DELIVER,
        ))),
        Kind::Nats => {
            let (server, namespace) = split_namespace(url)?;
            let mut config = sagaflow_nats::NatsConfig {
                max_deliver: MAX_DELIVER,
                ..sagaflow_nats::NatsConfig::new(&server)
            };
            if let Some(ns) = namespace {
                config.stream = format!("SAGAFLOW_{ns}");
                config.subject_prefix = format!("{ns}.");
            }
            if ephemeral {
                config.consumer_inactive = Some(EPHEMERAL);
            }
            let t = sagaflow_nats::NatsTransport::connect(config, dead_letters)
                .await
                .with_context(|| format!("connecting to {}", crate::store_url::redact(url)))?;
            Ok(Arc::new(t))
        }
        Kind::Amqp => {
            let (server, namespace) = split_namespace(url)?;
            let mut config = sagaflow_amqp::AmqpConfig {
                max_deliver: MAX_DELIVER,
                ..sagaflow_amqp::AmqpConfig::new(&server)
            };
            if let Some(ns) = namespace {
                config.exchange = format!("sagaflow.{ns}");
                config.retry_exchange = format!("sagaflow.{ns}.retry");
            }
            if ephemeral {
                config.queue_expires = Some(EPHEMERAL);
            }
            let t = sagaflow_amqp::AmqpTransport::connect(config, dead_letters)
                .await
                .with_context(|| format!("connecting to {}", crate::store_url::redact(url)))?;
            Ok(Arc::new(t))
        }
        Kind::Kafka => {
            let (brokers, namespace) = split_namespace(url)?;
            let config = sagaflow_kafka::KafkaConfig {
                max_deliver: MAX_DELIVER,
                namespace,
                // Members join their groups in the background: a process subscribes to many
                // topics and each join takes the broker's rebalance delay (3 s). A message
                // published meanwhile waits for the group; one delivered twice in the
                // first rebalance is handled once (the inbox). A bench run waits for its
                // groups instead, so that it measures sagas, not the first rebalance.
                join_wait: if ephemeral {
                    std::time::Duration::from_secs(15)
                } else {
                    std::time::Duration::ZERO
                },
                ..sagaflow_kafka::KafkaConfig::new(&brokers)
            };
            // No connection is made here: with the brokers away, the process starts, says
            // why in its log and answers /readyz 503 until they are back.
            let t = sagaflow_kafka::KafkaTransport::connect(config, dead_letters)
                .with_context(|| format!("Kafka at {}", crate::store_url::redact(url)))?;
            Ok(Arc::new(t))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_classified_and_namespaces_checked() {
        assert_eq!(kind("memory"), Ok(Kind::Memory));
        assert_eq!(kind("nats://127.0.0.1:4222"), Ok(Kind::Nats));
        assert_eq!(
            kind("amqp://guest:guest@127.0.0.1:5672/%2f"),
            Ok(Kind::Amqp)
        );
        assert_eq!(kind("kafka://127.0.0.1:9092"), Ok(Kind::Kafka));
        assert!(kind("kfk://x").unwrap_err().contains("kafka://"));
        let (server, ns) = split_namespace("nats://h:4222?namespace=team-a").unwrap();
        assert_eq!(
            (server.as_str(), ns.as_deref()),
            ("nats://h:4222", Some("team-a"))
        );
        assert_eq!(split_namespace("nats://h:4222").unwrap().1, None);
        assert!(split_namespace("nats://h?namespace=a.b").is_err());
        assert!(split_namespace("nats://h?stream=x").is_err());
    }
}
