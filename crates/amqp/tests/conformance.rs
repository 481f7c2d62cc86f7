//! The RabbitMQ transport passes the transport conformance suite, against the machine's
//! broker (`SAGAFLOW_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`). The
//! restart check restarts that broker's application (`rabbitmqctl stop_app; start_app`), so
//! this package's tests run one at a time (see `.config/nextest.toml`).

use std::sync::Arc;
use std::time::Duration;

use sagaflow_amqp::{AmqpConfig, AmqpTransport};
use sagaflow_core::{DeadLetters, Transport};
use sagaflow_testkit::transport_conformance::{self, TransportUnderTest};

const MAX_DELIVER: u32 = 3;

struct Amqp {
    url: String,
}

impl Amqp {
    fn shared() -> Amqp {
        Amqp {
            url: std::env::var("SAGAFLOW_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string()),
        }
    }
}

fn test_config(url: &str) -> AmqpConfig {
    AmqpConfig {
        max_deliver: MAX_DELIVER,
        retry_delay: Duration::from_millis(50),
        // Every check declares queues of its own: let the broker remove them afterwards.
        queue_expires: Some(Duration::from_secs(600)),
        ..AmqpConfig::new(url)
    }
}

#[async_trait::async_trait]
impl TransportUnderTest for Amqp {
    async fn connect(&self, dead_letters: DeadLetters) -> Arc<dyn Transport> {
        Arc::new(
            AmqpTransport::connect(test_config(&self.url), dead_letters)
                .await
                .unwrap_or_else(|e| panic!("{e} (scripts/test starts rabbitmq-server)")),
        )
    }

    fn max_deliver(&self) -> u32 {
        MAX_DELIVER
    }

    async fn restart_broker(&self) -> bool {
        tokio::task::block_in_place(sagaflow_testkit::brokers::restart_rabbitmq)
            .unwrap_or_else(|e| panic!("restarting RabbitMQ: {e}"));
        true
    }
}

sagaflow_testkit::transport_conformance_tests!(Amqp::shared());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing() {
    transport_conformance::broker_restart_loses_nothing(&Amqp::shared()).await;
}

/// Runs `rabbitmqctl <step>`.
fn rabbitmqctl(step: &str) {
    let out = std::process::Command::new("rabbitmqctl")
        .arg(step)
        .output()
        .unwrap_or_else(|e| panic!("cannot run rabbitmqctl {step}: {e}"));
    assert!(
        out.status.success(),
        "rabbitmqctl {step} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The broker's application, stopped until this is dropped (even by a failing test).
struct StoppedBroker;

impl StoppedBroker {
    fn stop() -> StoppedBroker {
        tokio::task::block_in_place(|| rabbitmqctl("stop_app"));
        StoppedBroker
    }
}

impl Drop for StoppedBroker {
    fn drop(&mut self) {
        tokio::task::block_in_place(|| {
            rabbitmqctl("start_app");
            sagaflow_testkit::brokers::wait_for_port(5672, Duration::from_secs(30))
                .expect("RabbitMQ listens again");
        });
    }
}

/// While the broker is away, `publish` fails fast (well within `publish_timeout`) and
/// readiness says so; a subscription waits through the outage; once the broker is back,
/// publishing, readiness and the waiting subscription work again by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_fast_while_the_broker_is_away() {
    use sagaflow_testkit::transport_conformance::{next_within, unique_topic, RecordingSink};

    let bus = Amqp::shared().connect(RecordingSink::new()).await;
    let topic = unique_topic("away");
    let mut sub = bus.subscribe(&topic, "g").await.expect("subscribe");
    bus.ready().await.expect("ready while the broker runs");

    let stopped = StoppedBroker::stop();
    for attempt in 0..3 {
        let started = std::time::Instant::now();
        let result = bus
            .publish(&topic, &format!("{topic}/away"), b"x".to_vec())
            .await;
        assert!(
            matches!(result, Err(sagaflow_core::TransportError::Unavailable(_))),
            "publish {attempt} while the broker is away: {result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "publish {attempt} took {:?} to fail",
            started.elapsed()
        );
    }
    assert!(
        bus.ready().await.is_err(),
        "not ready while the broker is away"
    );
    let waiting = tokio::spawn(async move {
        let d = next_within(&mut sub, "a message published after the outage").await;
        let body = String::from_utf8_lossy(&d.body).into_owned();
        d.ack().await;
        body
    });
    drop(stopped);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match bus
            .publish(&topic, &format!("{topic}/back"), b"back".to_vec())
            .await
        {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("publish after the outage failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publishing after the broker came back kept failing: {e}"),
        }
    }
    assert_eq!(waiting.await.expect("the waiting consumer"), "back");
    bus.ready().await.expect("ready once the broker is back");
}

/// A published envelope carries its CloudEvents attributes, trace and request id as AMQP
/// headers (and `content-type` as the property), so a consumer in any language can route
/// and trace it without parsing the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_carry_cloud_event_headers() {
    let amqp = Amqp::shared();
    let transport = amqp
        .connect(transport_conformance::RecordingSink::new())
        .await;
    let topic = transport_conformance::unique_topic("headers");
    // Declares the group's queue, so the mandatory publish has somewhere to go; the
    // message is then read from the queue by a plain AMQP client.
    drop(transport.subscribe(&topic, "headers").await.unwrap());
    let envelope = transport_conformance::traced_command("billing.charge");
    transport
        .publish(&topic, &envelope.message_id, envelope.to_bytes())
        .await
        .unwrap();

    let connection = lapin::Connection::connect(&amqp.url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}:headers:{topic}", AmqpConfig::new(&amqp.url).exchange);
    // The dropped subscription's channel may still hold the message until the broker
    // requeues it: ask until it is there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let message = loop {
        let got = channel
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        match got {
            Some(message) => break message,
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            None => panic!("nothing in {queue}"),
        }
    };
    let properties = &message.delivery.properties;
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    let headers: Vec<(String, String)> = properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .filter_map(|(name, value)| match value {
                    lapin::types::AMQPValue::LongString(v) => {
                        Some((name.to_string(), v.to_string()))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    transport_conformance::assert_cloud_event_headers(
        &envelope,
        &headers,
        sagaflow_amqp::AMQP_CLOUD_EVENT_PREFIX,
    );
}
