//! The Kafka transport passes the transport conformance suite against the machine's
//! Kafka-protocol broker (`SAGAFLOW_KAFKA_BROKERS`, default `127.0.0.1:9092`; `scripts/test`
//! starts Tansu there). Tansu keeps its data in memory, so the broker-restart check cannot
//! keep messages across a restart and passes vacuously; `the_broker_going_away_loses_nothing`
//! instead cuts the network to a private broker (through a fault proxy it advertises) and
//! restores it.

use std::sync::Arc;
use std::time::Duration;

use sagaflow_core::{DeadLetters, Transport};
use sagaflow_kafka::{KafkaConfig, KafkaTransport};
use sagaflow_testkit::brokers::{free_port, KafkaBroker};
use sagaflow_testkit::fault_proxy::FaultProxy;
use sagaflow_testkit::transport_conformance::{
    self, next_within, RecordingSink, TransportUnderTest,
};

const MAX_DELIVER: u32 = 3;

struct Kafka {
    brokers: String,
}

impl Kafka {
    fn shared() -> Kafka {
        Kafka {
            brokers: std::env::var("SAGAFLOW_KAFKA_BROKERS")
                .unwrap_or_else(|_| "127.0.0.1:9092".to_string()),
        }
    }
}

fn test_config(brokers: &str) -> KafkaConfig {
    KafkaConfig {
        max_deliver: MAX_DELIVER,
        retry_delay: Duration::from_millis(50),
        session_timeout: Duration::from_secs(6),
        ..KafkaConfig::new(brokers)
    }
}

#[async_trait::async_trait]
impl TransportUnderTest for Kafka {
    async fn connect(&self, dead_letters: DeadLetters) -> Arc<dyn Transport> {
        let transport = KafkaTransport::connect(test_config(&self.brokers), dead_letters)
            .unwrap_or_else(|e| panic!("{e}"));
        transport
            .ready()
            .await
            .unwrap_or_else(|e| panic!("{e} (scripts/test starts Tansu on 127.0.0.1:9092)"));
        Arc::new(transport)
    }

    fn max_deliver(&self) -> u32 {
        MAX_DELIVER
    }

    async fn restart_broker(&self) -> bool {
        // Memory storage: a restarted Tansu has nothing left to deliver.
        false
    }
}

sagaflow_testkit::transport_conformance_tests!(Kafka::shared());

/// A published envelope carries its CloudEvents attributes (under the Kafka binding's `ce_`
/// prefix), trace and request id as record headers, and its saga id as the record key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_carry_cloud_event_headers_and_the_saga_as_key() {
    let kafka = Kafka::shared();
    let transport = kafka.connect(RecordingSink::new()).await;
    let topic = transport_conformance::unique_topic("headers");
    let envelope = transport_conformance::traced_command("billing.charge");
    let mut sub = transport.subscribe(&topic, "g").await.unwrap();
    transport
        .publish(&topic, &envelope.message_id, envelope.to_bytes())
        .await
        .unwrap();
    next_within(&mut sub, "the envelope").await.ack().await;

    // Read the record as any Kafka client would.
    use rdkafka::message::{Headers, Message};
    let reader = reader(&kafka.brokers, &topic);
    let record = tokio::time::timeout(Duration::from_secs(30), reader.recv())
        .await
        .expect("the record, read back")
        .unwrap();
    let headers: Vec<(String, String)> = record
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    transport_conformance::assert_cloud_event_headers(
        &envelope,
        &headers,
        sagaflow_kafka::KAFKA_CLOUD_EVENT_PREFIX,
    );
    assert_eq!(record.key(), envelope.saga_id.as_deref().map(str::as_bytes));
}

/// A plain client reading every partition of a topic from the start, outside any group.
fn reader(brokers: &str, topic: &str) -> rdkafka::consumer::StreamConsumer {
    use rdkafka::consumer::Consumer;
    let reader: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}"))
        .create()
        .unwrap();
    let mut partitions = rdkafka::TopicPartitionList::new();
    for p in 0..KafkaConfig::new(brokers).partitions {
        partitions
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    reader.assign(&partitions).unwrap();
    reader
}

/// A message nacked to exhaustion reaches the sink and, as a copy with the reason, the
/// topic's dead-letter topic (where Kafka tooling looks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_copied_to_the_dead_letter_topic() {
    let kafka = Kafka::shared();
    let sink = RecordingSink::new();
    let transport = kafka.connect(sink.clone()).await;
    let topic = transport_conformance::unique_topic("dlt");
    let mut sub = transport.subscribe(&topic, "g").await.unwrap();
    transport
        .publish(&topic, "poison-1", b"poison".to_vec())
        .await
        .unwrap();
    for _ in 0..MAX_DELIVER {
        next_within(&mut sub, "the poison").await.nack().await;
    }
    use rdkafka::message::{Headers, Message};
    // The copy is written once the next delivery attempt finds the poison exhausted: keep
    // the subscription consuming until the sink has it.
    let consume = tokio::spawn(async move {
        while let Some(d) = sub.next().await {
            d.ack().await;
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sink.received().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dlt = format!("{topic}-dlt");
    let reader = reader(&kafka.brokers, &dlt);
    let record = tokio::time::timeout(Duration::from_secs(30), reader.recv())
        .await
        .unwrap_or_else(|_| panic!("no copy on {dlt}"))
        .unwrap()
        .detach();
    consume.abort();
    assert_eq!(record.payload(), Some(&b"poison"[..]));
    let reason = record
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == "sagaflow-dead-letter-reason"))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("the reason header");
    assert!(reason.contains("max_deliver 3"), "{reason}");
    assert_eq!(sink.received().len(), 1, "the store's sink has it too");
}

/// The network to the broker goes away (every connection reset, new ones refused) and comes
/// back: publishes fail meanwhile and `ready` says so; afterwards both directions resume by
/// themselves, and every message published before and after is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_going_away_loses_nothing() {
    let broker_port = free_port();
    let proxy = FaultProxy::start(broker_port);
    let _broker = KafkaBroker::start_advertising(broker_port, proxy.port);
    let transport = KafkaTransport::connect(
        KafkaConfig {
            publish_timeout: Duration::from_secs(2),
            ..test_config(&format!("127.0.0.1:{}", proxy.port))
        },
        RecordingSink::new(),
    )
    .unwrap();
    let topic = transport_conformance::unique_topic("away");
    let mut sub = transport.subscribe(&topic, "g").await.unwrap();
    let mut sent = std::collections::BTreeSet::new();
    for i in 0..5 {
        let body = format!("before {i}");
        transport
            .publish(&topic, &body, body.clone().into_bytes())
            .await
            .unwrap();
        sent.insert(body);
    }
    proxy.cut();
    assert!(
        transport
            .publish(&topic, "during", b"during".to_vec())
            .await
            .is_err(),
        "a publish while the broker is away fails (the outbox keeps the message)"
    );
    assert!(transport.ready().await.is_err(), "not ready while away");
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while transport.ready().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ready again once back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..5 {
        let body = format!("after {i}");
        loop {
            match transport
                .publish(&topic, &body, body.clone().into_bytes())
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "publish after: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        sent.insert(body);
    }
    let mut got = std::collections::BTreeSet::new();
    while !sent.is_subset(&got) {
        let d = next_within(&mut sub, "messages across the outage").await;
        got.insert(String::from_utf8_lossy(&d.body).into_owned());
        d.ack().await;
    }
    got.remove("during");
    assert_eq!(got, sent);
}
