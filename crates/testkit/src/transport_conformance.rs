//! The Transport conformance suite: the in-memory bus, NATS JetStream, RabbitMQ and Kafka
//! pass the same checks of what `sagaflow_core::transport` promises.
//!
//! An adapter's test file implements [`TransportUnderTest`] and expands one test per check:
//!
//! ```ignore
//! sagaflow_testkit::transport_conformance_tests!(MyHarness::new().await);
//! ```
//!
//! Every check works on topics and groups of its own (`sagaflow.conformance.<unique>`), so
//! checks may share one broker and run side by side — except
//! [`broker_restart_loses_nothing`], which restarts the broker and so must not share it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sagaflow_core::{DeadLetterSink, DeadLetters, Delivery, Subscription, Transport};

/// How long a check waits for something that should happen.
const WAIT: Duration = Duration::from_secs(30);

/// What an adapter's tests give the suite.
#[async_trait]
pub trait TransportUnderTest: Send + Sync {
    /// A transport connected to the broker, handing messages delivered
    /// [`max_deliver`](Self::max_deliver) times without an ack to `dead_letters`, and
    /// delivering an unsettled message again within seconds once its consumer is gone.
    async fn connect(&self, dead_letters: DeadLetters) -> Arc<dyn Transport>;
    /// The delivery limit of the transports `connect` makes.
    fn max_deliver(&self) -> u32;
    /// Stops the broker and starts it again, keeping its data; `false` when there is no
    /// broker to restart (the in-memory bus), and the restart check passes vacuously.
    async fn restart_broker(&self) -> bool;
    /// How long a delivery may stay unsettled, its consumer alive, before it is delivered
    /// again; `None` for a transport without such a timeout (RabbitMQ redelivers only when
    /// the consumer's channel goes; the in-memory bus when the delivery is dropped), and
    /// the ack-timeout check passes vacuously.
    fn ack_timeout(&self) -> Option<Duration> {
        None
    }
}

/// One dead letter a sink received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The topic.
    pub topic: String,
    /// The body.
    pub body: Vec<u8>,
    /// Why.
    pub reason: String,
    /// Deliveries made.
    pub attempts: u32,
}

/// A dead-letter sink that keeps what it gets, for tests.
#[derive(Debug, Default)]
pub struct RecordingSink {
    received: Mutex<Vec<Received>>,
}

impl RecordingSink {
    /// A new, empty sink.
    pub fn new() -> Arc<RecordingSink> {
        Arc::new(RecordingSink::default())
    }

    /// What it received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl DeadLetterSink for RecordingSink {
    async fn dead_letter(
        &self,
        topic: &str,
        body: &[u8],
        reason: &str,
        attempts: u32,
    ) -> Result<(), String> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Received {
                topic: topic.to_string(),
                body: body.to_vec(),
                reason: reason.to_string(),
                attempts,
            });
        Ok(())
    }
}

/// A topic no other check (or earlier run) uses.
pub fn unique_topic(check: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "sagaflow.conformance.{check}.{}x{nanos}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A command envelope with a trace and a request id, for checks of the headers a transport
/// puts on the wire.
pub fn traced_command(subject: &str) -> sagaflow_core::Envelope {
    sagaflow_core::Envelope {
        protocol: sagaflow_core::PROTOCOL_VERSION,
        message_id: format!("{}:charge:1:action", unique_topic("saga")),
        kind: sagaflow_core::MessageKind::Command,
        subject: subject.to_string(),
        saga_id: Some("saga-with-headers".to_string()),
        correlation_id: None,
        causation_id: None,
        step: Some("charge".to_string()),
        attempt: Some(1),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string()),
        request_id: Some("req-headers-1".to_string()),
        payload: serde_json::json!({"amount": 5}),
    }
}

/// Checks that `headers` (as read from the broker, names in any case) carry the envelope's
/// CloudEvents attributes, each named `{prefix}{attribute}` (`ce-` on HTTP and NATS), its
/// trace and its request id.
pub fn assert_cloud_event_headers(
    envelope: &sagaflow_core::Envelope,
    headers: &[(String, String)],
    prefix: &str,
) {
    let get = |name: &str| {
        let name = match name.strip_prefix("ce-") {
            Some(attribute) => format!("{prefix}{attribute}"),
            None => name.to_string(),
        };
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.as_str())
    };
    let expected = [
        ("ce-specversion", "1.0"),
        ("ce-id", envelope.message_id.as_str()),
        ("ce-type", envelope.kind.cloud_event_type()),
        ("ce-source", "sagaflow"),
        ("ce-subject", envelope.subject.as_str()),
        (
            "ce-sagaflowsagaid",
            envelope.saga_id.as_deref().unwrap_or_default(),
        ),
        (
            "traceparent",
            envelope.traceparent.as_deref().unwrap_or_default(),
        ),
        (
            "x-request-id",
            envelope.request_id.as_deref().unwrap_or_default(),
        ),
    ];
    for (name, value) in expected {
        assert_eq!(get(name), Some(value), "header {name} in {headers:?}");
    }
    let protocol = sagaflow_core::PROTOCOL_VERSION.to_string();
    assert_eq!(
        get("ce-sagaflowprotocol"),
        Some(protocol.as_str()),
        "{headers:?}"
    );
}

/// The next delivery, or a panic naming `what` if none comes in time.
pub async fn next_within(sub: &mut Box<dyn Subscription>, what: &str) -> Delivery {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("{what}: the subscription ended"),
        Err(_) => panic!("{what}: nothing delivered within {WAIT:?}"),
    }
}

/// Publishes under an id made unique by the topic (brokers de-duplicate across topics).
async fn publish(t: &dyn Transport, topic: &str, id: &str, body: &str) {
    let id = format!("{topic}/{id}");
    t.publish(topic, &id, body.as_bytes().to_vec())
        .await
        .unwrap_or_else(|e| panic!("publishing {id} to {topic}: {e}"));
}

/// Publishes, retrying while the broker is away (as the outbox does), until `WAIT` passes.
async fn publish_until_ok(t: &dyn Transport, topic: &str, id: &str, body: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let id = format!("{topic}/{id}");
    loop {
        match t.publish(topic, &id, body.as_bytes().to_vec()).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("[transport conformance] publish {id} failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("publishing {id} after the broker restart kept failing: {e}"),
        }
    }
}

fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.body).into_owned()
}

/// Reads deliveries, acking each, until one with body `marker` comes; returns the bodies
/// before it.
async fn until_marker(sub: &mut Box<dyn Subscription>, marker: &str, what: &str) -> Vec<String> {
    let mut before = Vec::new();
    loop {
        let d = next_within(sub, what).await;
        let body = text(&d);
        d.ack().await;
        if body == marker {
            return before;
        }
        before.push(body);
    }
}

/// Publish → consume → ack: each message once, and an acked message never again.
pub async fn publish_then_consume_and_ack(t: &dyn TransportUnderTest) {
    let bus = t.connect(RecordingSink::new()).await;
    let topic = unique_topic("ack");
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe");
    for i in 0..3 {
        publish(&*bus, &topic, &format!("m{i}"), &format!("body {i}")).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = next_within(&mut sub, "three published messages").await;
        got.push(text(&d));
        d.ack().await;
    }
    got.sort();
    assert_eq!(got, ["body 0", "body 1", "body 2"]);
    publish(&*bus, &topic, "marker", "marker").await;
    let extra = until_marker(&mut sub, "marker", "the marker after acked messages").await;
    assert!(extra.is_empty(), "acked messages came again: {extra:?}");
}

/// A subscriber that starts after a publish still gets the message.
pub async fn messages_wait_for_a_late_subscriber(t: &dyn TransportUnderTest) {
    let bus = t.connect(RecordingSink::new()).await;
    let topic = unique_topic("late");
    // Declares the group, then goes away: the message is kept for the group.
    drop(bus.subscribe(&topic, "g").await.expect("subscribe"));
    publish(&*bus, &topic, "early", "published before the subscriber").await;
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe again");
    let d = next_within(&mut sub, "a message published while nobody listened").await;
    assert_eq!(text(&d), "published before the subscriber");
    d.ack().await;
}

/// A nacked message is delivered again, counted as a redelivery.
pub async fn nack_delivers_again(t: &dyn TransportUnderTest) {
    let bus = t.connect(RecordingSink::new()).await;
    let topic = unique_topic("nack");
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe");
    publish(&*bus, &topic, "m", "again please").await;
    let first = next_within(&mut sub, "the message").await;
    assert_eq!(first.redelivered, 0, "a first delivery is not a redelivery");
    first.nack().await;
    let second = next_within(&mut sub, "the nacked message, again").await;
    assert_eq!(text(&second), "again please");
    assert!(second.redelivered >= 1, "a redelivery says so");
    second.ack().await;
    publish(&*bus, &topic, "marker", "marker").await;
    let extra = until_marker(&mut sub, "marker", "the marker").await;
    assert!(
        extra.is_empty(),
        "acked after a nack, yet it came again: {extra:?}"
    );
}

/// A message delivered to a consumer that went away without settling it (crashed, timed
/// out) is delivered again to another.
pub async fn unsettled_delivery_comes_back_when_its_consumer_goes_away(t: &dyn TransportUnderTest) {
    let bus = t.connect(RecordingSink::new()).await;
    let topic = unique_topic("unsettled");
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe");
    publish(&*bus, &topic, "m", "lost in a crash").await;
    let d = next_within(&mut sub, "the message").await;
    // The consumer dies holding it: neither ack nor nack.
    drop(d);
    drop(sub);
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe again");
    let again = next_within(&mut sub, "the unsettled message, after its consumer died").await;
    assert_eq!(text(&again), "lost in a crash");
    again.ack().await;
}

/// A delivery held unsettled past the ack timeout, its consumer still alive (stuck in a
/// handler), is delivered again.
pub async fn a_delivery_held_past_the_ack_timeout_comes_again(t: &dyn TransportUnderTest) {
    let Some(ack_timeout) = t.ack_timeout() else {
        return;
    };
    let bus = t.connect(RecordingSink::new()).await;
    let topic = unique_topic("ackwait");
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe");
    publish(&*bus, &topic, "m", "slow to handle").await;
    let held = next_within(&mut sub, "the message").await;
    let started = std::time::Instant::now();
    let again = next_within(&mut sub, "the message, after the ack timeout").await;
    assert_eq!(text(&again), "slow to handle");
    assert!(again.redelivered >= 1, "a redelivery says so");
    assert!(
        started.elapsed() + Duration::from_millis(200) >= ack_timeout,
        "delivered again before the ack timeout ({:?} < {ack_timeout:?})",
        started.elapsed()
    );
    again.ack().await;
    drop(held);
}

/// The same message id published twice is delivered once.
pub async fn duplicate_publish_is_delivered_once(t: &dyn TransportUnderTest) {
    let bus = t.connect(RecordingSink::new()).await;
    let topic = unique_topic("dup");
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe");
    publish(&*bus, &topic, "same-id", "once").await;
    publish(&*bus, &topic, "same-id", "once").await;
    publish(&*bus, &topic, "marker", "marker").await;
    let before = until_marker(&mut sub, "marker", "the marker after a duplicate").await;
    assert_eq!(before, ["once"], "a duplicate publish was delivered twice");
}

/// One consumer that settles each message before the next sees publish order.
pub async fn one_consumer_sees_publish_order(t: &dyn TransportUnderTest) {
    let bus = t.connect(RecordingSink::new()).await;
    let topic = unique_topic("order");
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe");
    let sent: Vec<String> = (0..25).map(|i| format!("{i:03}")).collect();
    for body in &sent {
        publish(&*bus, &topic, body, body).await;
    }
    let mut got = Vec::new();
    for _ in &sent {
        let d = next_within(&mut sub, "ordered messages").await;
        got.push(text(&d));
        d.ack().await;
    }
    assert_eq!(got, sent, "messages out of publish order");
}

/// A command envelope of saga `saga`, numbered `n` (its payload), as bytes.
fn saga_message(topic: &str, saga: &str, n: usize) -> (String, Vec<u8>) {
    let envelope = sagaflow_core::Envelope {
        message_id: format!("{topic}/{saga}/{n}"),
        saga_id: Some(saga.to_string()),
        payload: serde_json::json!({ "n": n }),
        ..traced_command("conformance.step")
    };
    (envelope.message_id.clone(), envelope.to_bytes())
}

/// The (saga, n) of a body [`saga_message`] made.
fn saga_and_number(d: &Delivery) -> (String, u64) {
    let envelope = sagaflow_core::Envelope::from_bytes(&d.body).expect("an envelope");
    (
        envelope.saga_id.unwrap_or_default(),
        envelope.payload["n"].as_u64().unwrap_or(u64::MAX),
    )
}

/// One saga's messages, interleaved with other sagas' on one topic, reach a consumer that
/// settles each before the next in the order they were published (on a partitioned
/// transport the saga id is what keeps them together).
pub async fn one_sagas_messages_keep_their_order(t: &dyn TransportUnderTest) {
    let bus = t.connect(RecordingSink::new()).await;
    let topic = unique_topic("saga-order");
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe");
    let sagas = ["saga-a", "saga-b", "saga-c", "saga-d"];
    let per_saga = 8;
    for n in 0..per_saga {
        for saga in sagas {
            let (id, body) = saga_message(&topic, saga, n);
            bus.publish(&topic, &id, body).await.expect("publish");
        }
    }
    let mut seen: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for _ in 0..sagas.len() * per_saga {
        let d = next_within(&mut sub, "the sagas' messages").await;
        let (saga, n) = saga_and_number(&d);
        seen.entry(saga).or_default().push(n);
        d.ack().await;
    }
    let expected: Vec<u64> = (0..per_saga as u64).collect();
    for saga in sagas {
        assert_eq!(
            seen.get(saga),
            Some(&expected),
            "{saga}'s messages out of order: {seen:?}"
        );
    }
}

/// Two members of a group; one dies holding deliveries it never settled: the other takes its
/// share over, and every message is delivered to it (a Kafka rebalance, a NATS ack timeout,
/// a RabbitMQ channel closing).
pub async fn a_member_that_dies_hands_its_messages_over(t: &dyn TransportUnderTest) {
    let bus = t.connect(RecordingSink::new()).await;
    let topic = unique_topic("rebalance");
    let mut dying = bus
        .subscribe(&topic, "g")
        .await
        .expect("subscribe the dying member");
    let mut survivor = bus
        .subscribe(&topic, "g")
        .await
        .expect("subscribe the survivor");
    let n = 24;
    let mut sent = BTreeSet::new();
    for i in 0..n {
        let (id, body) = saga_message(&topic, &format!("saga-{i}"), i);
        bus.publish(&topic, &id, body).await.expect("publish");
        sent.insert(i as u64);
    }
    // The dying member takes what comes to it within a moment, and dies holding it.
    let mut held = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(500), dying.next()).await {
        held.push(d);
        if held.len() == 4 {
            break;
        }
    }
    drop(held);
    drop(dying);
    let mut got = BTreeSet::new();
    while got.len() < sent.len() {
        let d = next_within(&mut survivor, "every message, the dead member's too").await;
        got.insert(saga_and_number(&d).1);
        d.ack().await;
    }
    assert_eq!(got, sent);
}

/// Members of one group share its messages: each goes to exactly one of them.
pub async fn a_group_shares_messages_among_its_members(t: &dyn TransportUnderTest) {
    let bus = t.connect(RecordingSink::new()).await;
    let topic = unique_topic("group");
    let a = bus.subscribe(&topic, "g").await.expect("subscribe a");
    let b = bus.subscribe(&topic, "g").await.expect("subscribe b");
    let n = 40;
    for i in 0..n {
        publish(&*bus, &topic, &format!("m{i}"), &format!("{i}")).await;
    }
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for mut sub in [a, b] {
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
                seen.lock().unwrap().push(text(&d));
                d.ack().await;
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.lock().unwrap().len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in tasks {
        let _ = task.await;
    }
    let seen = seen.lock().unwrap().clone();
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), n, "every message reaches the group: {seen:?}");
    assert_eq!(seen.len(), n, "no message reaches two members: {seen:?}");
}

/// A message nacked until its deliveries are exhausted goes to the dead letters with the
/// reason, and is not delivered again.
pub async fn exhausted_deliveries_go_to_the_dead_letters(t: &dyn TransportUnderTest) {
    let sink = RecordingSink::new();
    let bus = t.connect(sink.clone()).await;
    let topic = unique_topic("poison");
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe");
    publish(&*bus, &topic, "poison", "cannot be handled").await;
    let max = t.max_deliver();
    for n in 0..max {
        let d = next_within(&mut sub, &format!("delivery {} of {max}", n + 1)).await;
        assert_eq!(text(&d), "cannot be handled");
        d.nack().await;
    }
    // Keep consuming (as a real consumer does) until the marker came and the poison went to
    // the dead letters; the poison itself must not be delivered again.
    publish(&*bus, &topic, "marker", "marker").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut marker_seen = false;
    let letters = loop {
        let letters = sink.received();
        if (marker_seen && !letters.is_empty()) || tokio::time::Instant::now() > deadline {
            break letters;
        }
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            let body = text(&d);
            d.ack().await;
            assert_eq!(body, "marker", "delivered beyond max_deliver ({max})");
            marker_seen = true;
        }
    };
    assert!(marker_seen, "the marker after the poison was not delivered");
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    let letter = &letters[0];
    assert_eq!(
        (letter.topic.as_str(), letter.body.as_slice()),
        (topic.as_str(), &b"cannot be handled"[..])
    );
    assert!(
        letter.attempts >= max,
        "attempts {} below max_deliver {max}",
        letter.attempts
    );
    assert!(
        letter.reason.contains(&max.to_string()),
        "the reason says why: {:?}",
        letter.reason
    );
}

/// After the broker restarts, a subscription and the publisher carry on by themselves, and
/// every message published before or after is delivered.
pub async fn broker_restart_loses_nothing(t: &dyn TransportUnderTest) {
    let bus = t.connect(RecordingSink::new()).await;
    let topic = unique_topic("restart");
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe");
    let mut sent = BTreeSet::new();
    for i in 0..5 {
        let body = format!("before {i}");
        publish(&*bus, &topic, &body, &body).await;
        sent.insert(body);
    }
    if !t.restart_broker().await {
        return;
    }
    for i in 0..5 {
        let body = format!("after {i}");
        publish_until_ok(&*bus, &topic, &body, &body).await;
        sent.insert(body);
    }
    let mut got = BTreeSet::new();
    while got.len() < sent.len() {
        let d = next_within(&mut sub, "messages across a broker restart").await;
        got.insert(text(&d));
        d.ack().await;
    }
    assert_eq!(got, sent);
}

/// Expands to one `#[tokio::test]` per check (multi-thread runtime), each with the
/// [`TransportUnderTest`] the expression gives. The restart check is left out: an adapter
/// runs [`broker_restart_loses_nothing`] in a test of its own, on a broker nobody shares.
#[macro_export]
macro_rules! transport_conformance_tests {
    ($make:expr) => {
        $crate::transport_conformance_tests!(@each $make;
            publish_then_consume_and_ack,
            messages_wait_for_a_late_subscriber,
            nack_delivers_again,
            unsettled_delivery_comes_back_when_its_consumer_goes_away,
            a_delivery_held_past_the_ack_timeout_comes_again,
            duplicate_publish_is_delivered_once,
            one_consumer_sees_publish_order,
            a_group_shares_messages_among_its_members,
            one_sagas_messages_keep_their_order,
            a_member_that_dies_hands_its_messages_over,
            exhausted_deliveries_go_to_the_dead_letters
        );
    };
    (@each $make:expr; $($check:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let under_test = $make;
                $crate::transport_conformance::$check(&under_test).await;
            }
        )*
    };
}
