//! The NATS JetStream transport passes the transport conformance suite: against the
//! machine's server (`SAGAFLOW_NATS_URL`, default `nats://127.0.0.1:4222`), and — for the
//! restart check — against a private server the test kills and starts again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sagaflow_core::{DeadLetters, Transport};
use sagaflow_nats::{NatsConfig, NatsTransport};
use sagaflow_testkit::brokers::NatsServer;
use sagaflow_testkit::transport_conformance::{self, TransportUnderTest};

const MAX_DELIVER: u32 = 3;
const ACK_WAIT: Duration = Duration::from_secs(2);

struct Nats {
    url: String,
    server: Option<Mutex<NatsServer>>,
}

impl Nats {
    fn shared() -> Nats {
        Nats {
            url: std::env::var("SAGAFLOW_NATS_URL")
                .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string()),
            server: None,
        }
    }
}

fn test_config(url: &str) -> NatsConfig {
    NatsConfig {
        ack_wait: ACK_WAIT,
        max_deliver: MAX_DELIVER,
        retry_delay: Duration::from_millis(50),
        consumer_inactive: Some(Duration::from_secs(300)),
        ..NatsConfig::new(url)
    }
}

#[async_trait::async_trait]
impl TransportUnderTest for Nats {
    async fn connect(&self, dead_letters: DeadLetters) -> Arc<dyn Transport> {
        Arc::new(
            NatsTransport::connect(test_config(&self.url), dead_letters)
                .await
                .unwrap_or_else(|e| panic!("{e} (scripts/test starts nats-server -js)")),
        )
    }

    fn max_deliver(&self) -> u32 {
        MAX_DELIVER
    }

    fn ack_timeout(&self) -> Option<Duration> {
        Some(ACK_WAIT)
    }

    async fn restart_broker(&self) -> bool {
        match &self.server {
            Some(server) => {
                tokio::task::block_in_place(|| server.lock().unwrap().restart());
                true
            }
            None => false,
        }
    }
}

sagaflow_testkit::transport_conformance_tests!(Nats::shared());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing() {
    let server = NatsServer::start();
    let under_test = Nats {
        url: server.url(),
        server: Some(Mutex::new(server)),
    };
    transport_conformance::broker_restart_loses_nothing(&under_test).await;
}

/// A published envelope carries its CloudEvents attributes, trace and request id as NATS
/// headers, so a consumer in any language can route and trace it without parsing the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_carry_cloud_event_headers() {
    let nats = Nats::shared();
    let transport = nats
        .connect(transport_conformance::RecordingSink::new())
        .await;
    let topic = transport_conformance::unique_topic("headers");
    let envelope = transport_conformance::traced_command("billing.charge");
    transport
        .publish(&topic, &envelope.message_id, envelope.to_bytes())
        .await
        .unwrap();

    let client = async_nats::connect(nats.url.as_str()).await.unwrap();
    let stored = async_nats::jetstream::new(client)
        .get_stream(NatsConfig::new(&nats.url).stream)
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&topic)
        .await
        .unwrap();
    let headers: Vec<(String, String)> = stored
        .headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.to_string()))
        })
        .collect();
    transport_conformance::assert_cloud_event_headers(&envelope, &headers, "ce-");
}
