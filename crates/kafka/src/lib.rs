//! The Kafka transport.
//!
//! - **Topics.** Each sagaflow topic is a Kafka topic of the same name (under the namespace,
//!   `team-a.sagaflow.commands.billing`), created with [`KafkaConfig::partitions`]
//!   partitions when first used. A message's key is its saga id (an event's correlation id),
//!   so one saga's messages land on one partition and keep their order; a body that is not
//!   an envelope is keyed by its topic. Keys are hashed as Java clients hash them
//!   (`murmur2`), so a producer in any language puts a saga's messages on the same partition.
//! - **Groups.** Each (topic, group) is a Kafka consumer group (`billing:sagaflow.commands.billing`):
//!   its members share the topic's partitions, and when one leaves or dies (its session
//!   times out), the others take its partitions over.
//! - **Offsets** are committed only past messages that were settled (acked, or passed on to
//!   the retry topic) together with every message before them, so a consumer that dies
//!   holding a message leaves it to the next owner of its partition.
//! - **Publishing** uses the idempotent producer (`enable.idempotence`, `acks=all`) and
//!   returns once the broker has the message. A `sagaflow-message-id` header goes along;
//!   consumers drop a message whose id they settled within [`KafkaConfig::duplicate_window`]
//!   (or are handling now), as NATS de-duplicates on `Nats-Msg-Id`. CloudEvents attributes
//!   (`ce_id`, `ce_type`, …), `traceparent` and `x-request-id` are headers too.
//! - **Retries never block a partition** (Spring Kafka's non-blocking retries): a nacked
//!   message is copied to its group's retry topic (`…-retry-GROUP`) with the deliveries made
//!   and the time before which it is not due, and its offset settles. The group's retry
//!   consumer delivers it again once due. A message delivered [`KafkaConfig::max_deliver`]
//!   times goes to the dead-letter sink (sagaflow's store) with the reason, and a copy to
//!   the topic's dead-letter topic (`…-dlt`) for Kafka tooling.
//! - **Reconnection** is librdkafka's: it keeps trying the brokers, with back-off, and the
//!   log says why it cannot reach them (once per distinct reason). [`Transport::ready`] asks
//!   the broker for its metadata, so `/readyz` answers 503 while it is away.

mod context;
mod headers;
mod names;
mod offsets;
mod subscription;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use sagaflow_core::{DeadLetters, Subscription, Transport, TransportError};

pub use headers::KAFKA_CLOUD_EVENT_PREFIX;

use context::Logged;
use names::Names;

/// The default [`KafkaConfig::fetch_wait`].
const DEFAULT_FETCH_WAIT: Duration = Duration::from_millis(100);

/// How the transport uses the brokers.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]` (a `kafka://` in front is taken off).
    pub brokers: String,
    /// Put before every topic and group (`team-a` gives `team-a.sagaflow.…`), so several
    /// deployments share brokers without sharing messages.
    pub namespace: Option<String>,
    /// Partitions of the topics the transport creates: how many members of a group can
    /// consume a topic side by side.
    pub partitions: i32,
    /// Replicas of each partition the transport creates (1 for a single broker).
    pub replication: i32,
    /// Deliveries before a message goes to the dead letters.
    pub max_deliver: u32,
    /// A nacked message is delivered again after this.
    pub retry_delay: Duration,
    /// A member not heard from for this long is taken out of its group, and its partitions
    /// go to the others.
    pub session_timeout: Duration,
    /// How long `publish` waits for the broker to have the message.
    pub publish_timeout: Duration,
    /// A message whose id a consumer settled within this is dropped as a duplicate.
    pub duplicate_window: Duration,
    /// How long `subscribe` waits for the group to give the new member its partitions
    /// (while the brokers are away, it returns sooner and the member joins later).
    pub join_wait: Duration,
    /// How long a broker may hold a consumer's fetch while it has nothing new
    /// (`fetch.wait.max.ms`). Kafka answers as soon as a message arrives, whatever this is;
    /// Tansu 0.6 holds every fetch for about this long even when it has messages, so there
    /// it is the latency of each hop. `SAGAFLOW_KAFKA_FETCH_WAIT_MS` overrides the default.
    pub fetch_wait: Duration,
}

impl KafkaConfig {
    /// The defaults for brokers at `brokers`.
    pub fn new(brokers: &str) -> Self {
        KafkaConfig {
            brokers: brokers
                .strip_prefix("kafka://")
                .unwrap_or(brokers)
                .trim_end_matches('/')
                .to_string(),
            namespace: None,
            partitions: 6,
            replication: 1,
            max_deliver: 10,
            retry_delay: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(5),
            duplicate_window: Duration::from_secs(120),
            join_wait: Duration::from_secs(15),
            fetch_wait: std::env::var("SAGAFLOW_KAFKA_FETCH_WAIT_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_FETCH_WAIT),
        }
    }

    /// The librdkafka settings every client shares.
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "sagaflow")
            .set("socket.connection.setup.timeout.ms", "5000")
            .set("reconnect.backoff.max.ms", "2000")
            .set("topic.metadata.refresh.interval.ms", "5000");
        // Without a level set, librdkafka's follows the `log` crate's, which sagaflow does
        // not use: its warnings would never reach the log.
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        if let Ok(contexts) = std::env::var("SAGAFLOW_KAFKA_DEBUG") {
            // librdkafka's own debug contexts (`cgrp,topic,fetch`, `all`), logged at debug.
            c.set("debug", contexts)
                .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        }
        c
    }
}

/// A Kafka transport. Cheap to clone.
#[derive(Clone)]
pub struct KafkaTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    names: Names,
    /// Replaced when it fails for good (an idempotent producer fenced by the broker after
    /// an outage cannot send again).
    producer: Mutex<FutureProducer<Logged>>,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist.
    topics: Mutex<HashSet<String>>,
    /// Held while topics are created.
    creating: tokio::sync::Mutex<()>,
    dead_letters: DeadLetters,
}

/// The idempotent producer every publish goes through.
fn producer(config: &KafkaConfig) -> Result<FutureProducer<Logged>, KafkaError> {
    let mut c = config.client();
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "2")
        .set(
            "message.timeout.ms",
            config.publish_timeout.as_millis().to_string(),
        );
    c.create_with_context(Logged)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(format!("{what}: {e}"))
}

impl KafkaTransport {
    /// Makes the clients. Nothing is asked of the brokers yet: a transport made while they
    /// are away works once they are back (publishing fails meanwhile, `ready` says why).
    pub fn connect(config: KafkaConfig, dead_letters: DeadLetters) -> Result<Self, TransportError> {
        if config.brokers.is_empty() {
            return Err(TransportError::Invalid(
                "no Kafka brokers: give kafka://HOST:PORT".to_string(),
            ));
        }
        if config.partitions < 1 || config.max_deliver < 1 {
            return Err(TransportError::Invalid(
                "partitions and max_deliver must be at least 1".to_string(),
            ));
        }
        let invalid = |e: KafkaError| TransportError::Invalid(format!("Kafka client: {e}"));
        let producer = producer(&config).map_err(invalid)?;
        let admin = config.client().create().map_err(invalid)?;
        Ok(KafkaTransport {
            inner: Arc::new(Inner {
                names: Names::new(config.namespace.as_deref()),
                config,
                producer: Mutex::new(producer),
                admin,
                topics: Mutex::new(HashSet::new()),
                creating: tokio::sync::Mutex::new(()),
                dead_letters,
            }),
        })
    }

    /// Makes sure the Kafka topics exist, creating the missing ones.
    pub(crate) async fn ensure_topics(&self, names: &[&str]) -> Result<(), TransportError> {
        let missing: Vec<&str> = {
            let known = self.inner.topics.lock().unwrap_or_else(|p| p.into_inner());
            names
                .iter()
                .copied()
                .filter(|n| !known.contains(*n))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        // One creation at a time in this process, and only once the broker has said which
        // topics it lacks: while it is away this fails fast, and no CreateTopics requests
        // pile up in the client to reach it all at once when it is back (Tansu's memory
        // storage can give a topic created twice at once two ids, and consumers holding the
        // lost one fetch by an id the broker no longer knows).
        let _one_at_a_time = self.inner.creating.lock().await;
        let existing = self.existing_topics().await?;
        let missing: Vec<&str> = {
            let mut known = self.inner.topics.lock().unwrap_or_else(|p| p.into_inner());
            missing
                .into_iter()
                .filter(|n| {
                    if existing.contains(*n) {
                        known.insert(n.to_string());
                    }
                    !known.contains(*n)
                })
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let c = &self.inner.config;
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|n| NewTopic::new(n, c.partitions, TopicReplication::Fixed(c.replication)))
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(5)))
            .request_timeout(Some(Duration::from_secs(5)));
        let results = self
            .inner
            .admin
            .create_topics(&new, &options)
            .await
            .map_err(|e| unavailable("creating Kafka topics", e))?;
        let mut known = self.inner.topics.lock().unwrap_or_else(|p| p.into_inner());
        for result in results {
            match result {
                Ok(name) | Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    known.insert(name);
                }
                Err((name, code)) => {
                    return Err(unavailable(&format!("creating Kafka topic {name}"), code));
                }
            }
        }
        Ok(())
    }

    /// The topics the broker has.
    async fn existing_topics(&self) -> Result<HashSet<String>, TransportError> {
        let producer = self.producer();
        let brokers = self.inner.config.brokers.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|m| m.topics().iter().map(|t| t.name().to_string()).collect())
                .map_err(|e| unavailable(&format!("Kafka at {brokers}"), e))
        })
        .await
        .map_err(|e| unavailable("Kafka metadata", e))?
    }

    /// Forgets that a topic exists (a broker that lost its data answered "unknown topic"),
    /// so the next use creates it again.
    pub(crate) fn forget_topic(&self, name: &str) {
        self.inner
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Sends a record to a Kafka topic (created if missing) and waits for the broker to have it.
    pub(crate) async fn send(
        &self,
        kafka_topic: &str,
        key: &[u8],
        body: &[u8],
        headers: rdkafka::message::OwnedHeaders,
    ) -> Result<(), TransportError> {
        self.ensure_topics(&[kafka_topic]).await?;
        let record = FutureRecord::to(kafka_topic)
            .key(key)
            .payload(body)
            .headers(headers);
        let producer = self.producer();
        match producer
            .send(record, Timeout::After(self.inner.config.publish_timeout))
            .await
        {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                if let Some((_, why)) = producer.client().fatal_error() {
                    self.replace_producer(&producer, &why);
                } else if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::ProducerFenced
                            | RDKafkaErrorCode::InvalidProducerEpoch
                            | RDKafkaErrorCode::UnknownProducerId
                            | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    )
                ) {
                    // After an outage the client bumps its epoch, and a broker may answer
                    // that this producer is fenced from then on: a new one starts afresh.
                    self.replace_producer(&producer, &e.to_string());
                }
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
                    )
                ) {
                    self.forget_topic(kafka_topic);
                }
                Err(unavailable(&format!("publish to {kafka_topic}"), e))
            }
        }
    }

    fn producer(&self) -> FutureProducer<Logged> {
        self.inner
            .producer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new producer in the place of one that failed for good (unless another publish
    /// did so already).
    fn replace_producer(&self, failed: &FutureProducer<Logged>, why: &str) {
        let mut current = self
            .inner
            .producer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !std::ptr::eq(current.client().native_ptr(), failed.client().native_ptr()) {
            return;
        }
        match producer(&self.inner.config) {
            Ok(fresh) => {
                tracing::warn!(target: "sagaflow_kafka", reason = why, "the Kafka producer failed for good; using a new one");
                *current = fresh;
            }
            Err(e) => {
                tracing::error!(target: "sagaflow_kafka", error = %e, "cannot make a new Kafka producer")
            }
        }
    }

    pub(crate) fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    pub(crate) fn names(&self) -> &Names {
        &self.inner.names
    }

    pub(crate) fn dead_letters(&self) -> &DeadLetters {
        &self.inner.dead_letters
    }
}

#[async_trait]
impl Transport for KafkaTransport {
    async fn publish(
        &self,
        topic: &str,
        message_id: &str,
        body: Vec<u8>,
    ) -> Result<(), TransportError> {
        let kafka_topic = self.inner.names.topic(topic)?;
        let attributes = sagaflow_core::cloud_event_attributes(&body);
        let key = attributes
            .as_ref()
            .and_then(|a| a.ordering_key())
            .unwrap_or(topic)
            .to_string();
        let headers = headers::outgoing(message_id, attributes.as_ref());
        self.send(&kafka_topic, key.as_bytes(), &body, headers)
            .await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        if group.is_empty() {
            return Err(TransportError::Invalid(
                "topic and group must not be empty".to_string(),
            ));
        }
        let subscription =
            subscription::KafkaSubscription::open(self.clone(), topic, group).await?;
        Ok(Box::new(subscription))
    }

    async fn ready(&self) -> Result<(), TransportError> {
        let producer = self.producer();
        let brokers = self.inner.config.brokers.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|_| ())
                .map_err(|e| unavailable(&format!("Kafka at {brokers}"), e))
        })
        .await
        .map_err(|e| unavailable("Kafka readiness check", e))?
    }
}
