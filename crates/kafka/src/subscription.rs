//! One member of a consumer group on a topic: its main consumer, its retry consumer (the
//! group's retry topic, delivered once due), the offsets it may commit, and the ids it
//! de-duplicates on.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use sagaflow_core::{Acker, Delivery, Subscription, TransportError};
use tokio::sync::{mpsc, watch};

use crate::context::Member;
use crate::headers;
use crate::offsets::Offsets;
use crate::KafkaTransport;

/// Ids a member remembers having settled, at most.
const REMEMBERED_IDS: usize = 100_000;

type Consumer_ = StreamConsumer<Member>;

/// One of a member's two consumers, as its deliveries see it.
struct Source {
    /// The Kafka topic it reads.
    kafka_topic: String,
    offsets: Arc<Mutex<Offsets>>,
    /// Gone once the subscription is dropped: a late settlement then commits nothing, and
    /// the partition's next owner delivers the message again.
    consumer: Mutex<Weak<Consumer_>>,
}

impl Source {
    /// Is the message still this member's to deliver (its partition not taken away since)?
    fn holds(&self, partition: i32, offset: i64) -> bool {
        lock(&self.offsets).holds(partition, offset)
    }

    fn register(&self, partition: i32, offset: i64) {
        lock(&self.offsets).register(partition, offset);
    }

    fn settle(&self, partition: i32, offset: i64) {
        let Some(position) = lock(&self.offsets).settle(partition, offset) else {
            return;
        };
        if let Some(consumer) = lock(&self.consumer).upgrade() {
            // Stores "committed up to here"; the client commits stored offsets every
            // `auto.commit.interval.ms` and when it closes. An error means the partition is
            // no longer ours: its next owner delivers the message again.
            if let Err(e) = consumer.store_offset(&self.kafka_topic, partition, position - 1) {
                tracing::debug!(target: "sagaflow_kafka", topic = %self.kafka_topic, partition, error = %e, "offset not stored");
            }
        }
    }
}

/// Where one received message sits.
struct Position {
    source: Arc<Source>,
    partition: i32,
    offset: i64,
}

impl Position {
    fn settle(&self) {
        self.source.settle(self.partition, self.offset)
    }
}

/// The ids a member is handling now (with the positions of duplicates that arrived
/// meanwhile, settled with the original) and those it settled lately.
#[derive(Default)]
struct Seen {
    in_flight: HashMap<String, Vec<Position>>,
    settled: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
}

enum Admission {
    /// A new message: deliver it.
    Deliver,
    /// A duplicate of one being handled: settled when that one is.
    Attached,
    /// A duplicate of one settled lately: settle it now.
    Duplicate,
}

impl Seen {
    fn admit(
        &mut self,
        id: &str,
        position: Position,
        window: Duration,
    ) -> (Admission, Option<Position>) {
        if let Some(at) = self.settled.get(id) {
            if at.elapsed() < window {
                return (Admission::Duplicate, Some(position));
            }
        }
        match self.in_flight.get_mut(id) {
            Some(attached) => {
                attached.push(position);
                (Admission::Attached, None)
            }
            None => {
                self.in_flight.insert(id.to_string(), Vec::new());
                (Admission::Deliver, Some(position))
            }
        }
    }

    /// The message was acked: its duplicates are done with it, and later ones are dropped.
    fn acked(&mut self, id: &str, window: Duration) -> Vec<Position> {
        let attached = self.in_flight.remove(id).unwrap_or_default();
        let now = Instant::now();
        self.settled.insert(id.to_string(), now);
        self.order.push_back((id.to_string(), now));
        while let Some((old, at)) = self.order.front() {
            if self.order.len() <= REMEMBERED_IDS && at.elapsed() < window {
                break;
            }
            if self.settled.get(old) == Some(at) {
                self.settled.remove(old);
            }
            self.order.pop_front();
        }
        attached
    }

    /// The message was passed on to the retry topic: its duplicates go with it.
    fn passed_on(&mut self, id: &str) -> Vec<Position> {
        self.in_flight.remove(id).unwrap_or_default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How many received messages wait for `next` at most; beyond, the consumers stop fetching.
const PREFETCH: usize = 64;

/// A message a consumer received, on its way to `next`.
struct Received {
    from: From,
    source: Arc<Source>,
    message: OwnedMessage,
}

pub(crate) struct KafkaSubscription {
    transport: KafkaTransport,
    topic: String,
    group: String,
    kafka_topic: String,
    retry_topic: String,
    incoming: mpsc::Receiver<Received>,
    seen: Arc<Mutex<Seen>>,
    consumers: tokio::task::JoinHandle<()>,
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        // The consumers close, leave their groups, and the partitions go to other members;
        // what this member held unsettled is delivered again by them.
        self.consumers.abort();
    }
}

/// Where a received message came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    Main,
    Retry,
}

impl KafkaSubscription {
    /// Joins the group; waits (at most `join_wait`) until it has given this member its
    /// partitions, so a message published after `subscribe` returns is not delivered twice
    /// in a rebalance. With the brokers away, returns sooner: the member joins once they are back.
    pub(crate) async fn open(
        transport: KafkaTransport,
        topic: &str,
        group: &str,
    ) -> Result<KafkaSubscription, TransportError> {
        let names = transport.names();
        let kafka_topic = names.topic(topic)?;
        let retry_topic = names.retry_topic(topic, group)?;
        let (tx, incoming) = mpsc::channel(PREFETCH);
        let (assigned_tx, mut assigned) = watch::channel(false);
        let consumers = tokio::spawn(consume(
            transport.clone(),
            [
                (From::Main, kafka_topic.clone(), names.group(topic, group)),
                (
                    From::Retry,
                    retry_topic.clone(),
                    names.retry_group(topic, group),
                ),
            ],
            tx,
            assigned_tx,
        ));
        let join_wait = transport.config().join_wait;
        if !join_wait.is_zero()
            && tokio::time::timeout(join_wait, assigned.wait_for(|a| *a))
                .await
                .is_err()
        {
            tracing::warn!(target: "sagaflow_kafka", topic, group, "the consumer group gave this member no partitions within {join_wait:?}; it keeps trying");
        }
        Ok(KafkaSubscription {
            transport,
            topic: topic.to_string(),
            group: group.to_string(),
            kafka_topic,
            retry_topic,
            incoming,
            seen: Arc::default(),
            consumers,
        })
    }

    /// Delivers a received message — unless it is a duplicate, its partition went to another
    /// member meanwhile, or it has been delivered `max_deliver` times already (then it goes
    /// to the dead letters).
    async fn admit(&self, received: Received) -> Option<Delivery> {
        let Received {
            from,
            source,
            message,
        } = received;
        let position = Position {
            source,
            partition: message.partition(),
            offset: message.offset(),
        };
        if !position.source.holds(position.partition, position.offset) {
            return None;
        }
        let deliveries = match from {
            From::Main => 0,
            From::Retry => {
                headers::number(message.headers(), headers::DELIVERIES).unwrap_or(1) as u32
            }
        };
        if deliveries >= self.transport.config().max_deliver {
            self.dead_letter(message, position, deliveries).await;
            return None;
        }
        let id = headers::text(message.headers(), headers::MESSAGE_ID)
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "{}/{}/{}",
                    self.kafka_topic, position.partition, position.offset
                )
            });
        let window = self.transport.config().duplicate_window;
        let (admission, position) = lock(&self.seen).admit(&id, position, window);
        let position = match (admission, position) {
            (Admission::Deliver, Some(p)) => p,
            (Admission::Duplicate, Some(p)) => {
                p.settle();
                return None;
            }
            _ => return None,
        };
        Some(Delivery {
            topic: self.topic.clone(),
            body: message.payload().unwrap_or_default().to_vec(),
            redelivered: deliveries,
            acker: Box::new(KafkaAcker {
                transport: self.transport.clone(),
                retry_topic: self.retry_topic.clone(),
                id,
                message,
                position,
                deliveries,
                seen: self.seen.clone(),
            }),
        })
    }

    /// Hands a message past its deliveries to the sink (and a copy to the dead-letter topic);
    /// if the sink cannot keep it, passes it on to the retry topic to be tried again.
    async fn dead_letter(&self, message: OwnedMessage, position: Position, deliveries: u32) {
        let max = self.transport.config().max_deliver;
        let reason = format!("delivered {deliveries} times without an ack (max_deliver {max})");
        let body = message.payload().unwrap_or_default();
        let kept = self
            .transport
            .dead_letters()
            .dead_letter(&self.topic, body, &reason, deliveries)
            .await;
        if let Err(e) = kept {
            tracing::error!(target: "sagaflow_kafka", error = %e, topic = %self.topic, "could not keep a dead letter; retrying later");
            pass_on(&self.transport, &self.retry_topic, &message, deliveries).await;
            position.settle();
            return;
        }
        tracing::warn!(target: "sagaflow_kafka", topic = %self.topic, %reason, "message dead-lettered");
        let copy = headers::passed_on(
            message.headers(),
            &[
                (headers::ORIGIN_TOPIC, self.topic.clone()),
                (headers::ORIGIN_GROUP, self.group.clone()),
                (headers::REASON, reason),
            ],
        );
        let sent = match self.transport.names().dead_letter_topic(&self.topic) {
            Ok(dlt) => {
                self.transport
                    .send(&dlt, message.key().unwrap_or_default(), body, copy)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(target: "sagaflow_kafka", error = %e, "the dead-letter topic's copy was not written (the store has the dead letter)");
        }
        position.settle();
    }
}

/// Runs a member's two consumers: creates the topics (waiting while the brokers are away),
/// then receives from both until the subscription is dropped.
async fn consume(
    transport: KafkaTransport,
    consumers: [(From, String, String); 2],
    tx: mpsc::Sender<Received>,
    assigned: watch::Sender<bool>,
) {
    let topics: Vec<&str> = consumers.iter().map(|(_, t, _)| t.as_str()).collect();
    let mut backoff = Duration::from_millis(200);
    let mut failed = 0u32;
    while let Err(e) = transport.ensure_topics(&topics).await {
        if failed == 0 {
            tracing::warn!(target: "sagaflow_kafka", topics = ?topics, error = %e, "cannot create the topics yet; retrying until the broker answers");
        } else {
            tracing::debug!(target: "sagaflow_kafka", topics = ?topics, error = %e, ?backoff, "cannot create the topics yet");
        }
        failed += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    if failed > 0 {
        tracing::info!(target: "sagaflow_kafka", topics = ?topics, "the broker answered: consuming");
    }
    let [(main_from, main_topic, main_group), (retry_from, retry_topic, retry_group)] = consumers;
    let main = match consumer(
        &transport,
        main_from,
        &main_topic,
        &main_group,
        Some(assigned),
    ) {
        Ok(c) => c,
        Err(e) => return tracing::error!(target: "sagaflow_kafka", error = %e, "cannot consume"),
    };
    let retry = match consumer(&transport, retry_from, &retry_topic, &retry_group, None) {
        Ok(c) => c,
        Err(e) => return tracing::error!(target: "sagaflow_kafka", error = %e, "cannot consume"),
    };
    tokio::join!(
        receive(&transport, main_from, main, tx.clone()),
        receive(&transport, retry_from, retry, tx),
    );
}

/// A consumer and its view for deliveries.
struct Running {
    /// Taken out only when dropped.
    consumer: Option<Arc<Consumer_>>,
    source: Arc<Source>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Closing a consumer blocks until it left its group (up to the session timeout when
        // the brokers are away): on a thread of its own, never on the runtime's.
        self.source_gone();
        if let Some(consumer) = self.consumer.take() {
            let _ = std::thread::Builder::new()
                .name("sagaflow-kafka-close".to_string())
                .spawn(move || drop(consumer));
        }
    }
}

impl Running {
    /// Late settlements of this consumer's deliveries store no offsets from now on.
    fn source_gone(&self) {
        *lock(&self.source.consumer) = Weak::new();
    }
}

fn consumer(
    transport: &KafkaTransport,
    from: From,
    kafka_topic: &str,
    group_id: &str,
    assigned: Option<watch::Sender<bool>>,
) -> Result<Running, TransportError> {
    let c = transport.config();
    let offsets = Arc::new(Mutex::new(Offsets::default()));
    let member = Member::new(offsets.clone(), assigned);
    // A retried message waits out its delay anyway: its consumer may poll at half of it.
    let fetch_wait = match from {
        From::Main => c.fetch_wait,
        From::Retry => c.fetch_wait.max(c.retry_delay / 2),
    };
    let mut config = c.client();
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set(
            "fetch.wait.max.ms",
            fetch_wait.as_millis().max(1).to_string(),
        )
        .set(
            "session.timeout.ms",
            c.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (c.session_timeout.as_millis() / 4).max(100).to_string(),
        );
    let consumer: Consumer_ = config
        .create_with_context(member)
        .map_err(|e| TransportError::Invalid(format!("Kafka consumer: {e}")))?;
    consumer
        .subscribe(&[kafka_topic])
        .map_err(|e| TransportError::Unavailable(format!("subscribe to {kafka_topic}: {e}")))?;
    let consumer = Arc::new(consumer);
    Ok(Running {
        consumer: Some(consumer.clone()),
        source: Arc::new(Source {
            kafka_topic: kafka_topic.to_string(),
            offsets,
            consumer: Mutex::new(Arc::downgrade(&consumer)),
        }),
    })
}

/// Receives from one consumer, registering each message's offset; holds a retry message
/// back until it is due (all of a retry topic's messages wait the same delay, so they come
/// due in the order they arrive).
async fn receive(
    transport: &KafkaTransport,
    from: From,
    running: Running,
    tx: mpsc::Sender<Received>,
) {
    loop {
        let Some(consumer) = running.consumer.as_ref() else {
            return;
        };
        let message = match consumer.recv().await {
            Ok(m) => m.detach(),
            Err(e) => {
                consume_error(transport, &running.source.kafka_topic, e).await;
                continue;
            }
        };
        running
            .source
            .register(message.partition(), message.offset());
        if from == From::Retry {
            let not_before = headers::number(message.headers(), headers::NOT_BEFORE).unwrap_or(0);
            let wait = Duration::from_millis(not_before.saturating_sub(now_ms()));
            tokio::time::sleep(wait.min(transport.config().retry_delay)).await;
        }
        let received = Received {
            from,
            source: running.source.clone(),
            message,
        };
        if tx.send(received).await.is_err() {
            return;
        }
    }
}

async fn consume_error(transport: &KafkaTransport, kafka_topic: &str, e: KafkaError) {
    if matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
    ) {
        // A broker that lost its data: create the topic again.
        transport.forget_topic(kafka_topic);
        if let Err(e) = transport.ensure_topics(&[kafka_topic]).await {
            tracing::debug!(target: "sagaflow_kafka", error = %e, "topic not created yet");
        }
    } else {
        tracing::debug!(target: "sagaflow_kafka", topic = kafka_topic, error = %e, "consume error");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Copies a message to the retry topic with its deliveries so far, due after the retry
/// delay; keeps trying while the broker is away (the message's offset waits meanwhile).
async fn pass_on(
    transport: &KafkaTransport,
    retry_topic: &str,
    message: &OwnedMessage,
    deliveries: u32,
) {
    let due = now_ms() + transport.config().retry_delay.as_millis() as u64;
    let copy = headers::passed_on(
        message.headers(),
        &[
            (headers::DELIVERIES, deliveries.to_string()),
            (headers::NOT_BEFORE, due.to_string()),
        ],
    );
    let mut backoff = Duration::from_millis(100);
    loop {
        match transport
            .send(
                retry_topic,
                message.key().unwrap_or_default(),
                message.payload().unwrap_or_default(),
                copy.clone(),
            )
            .await
        {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(target: "sagaflow_kafka", topic = retry_topic, error = %e, "cannot pass a nacked message on for a retry; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let received = self.incoming.recv().await?;
            if let Some(d) = self.admit(received).await {
                return Some(d);
            }
        }
    }
}

struct KafkaAcker {
    transport: KafkaTransport,
    retry_topic: String,
    id: String,
    message: OwnedMessage,
    position: Position,
    deliveries: u32,
    seen: Arc<Mutex<Seen>>,
}

#[async_trait]
impl Acker for KafkaAcker {
    async fn ack(self: Box<Self>) {
        let window = self.transport.config().duplicate_window;
        let attached = lock(&self.seen).acked(&self.id, window);
        self.position.settle();
        for p in attached {
            p.settle();
        }
    }

    async fn nack(self: Box<Self>) {
        pass_on(
            &self.transport,
            &self.retry_topic,
            &self.message,
            self.deliveries + 1,
        )
        .await;
        let attached = lock(&self.seen).passed_on(&self.id);
        self.position.settle();
        for p in attached {
            p.settle();
        }
    }
}
