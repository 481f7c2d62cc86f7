//! Distributed mode under faults: 1 000 drill sagas run through two `sagaflow serve --role
//! engine` processes and a `sagaflow participant` process, over PostgreSQL and a real broker,
//! every connection going through a TCP fault proxy. Mid-run one engine is killed with
//! SIGKILL, the broker restarts, the connections to PostgreSQL and to the broker are cut and
//! restored, delayed, reset, and held (a partition: open but silent), and poison messages
//! are published. At the end every saga must have
//! ended as the drill expects, every effect exactly once (compensated sagas' net effect
//! zero), and the dead letters must hold exactly the poison.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sagaflow_core::{Envelope, MessageKind, Store, REPLY_TOPIC};
use sagaflow_engine::{Engine, EngineConfig, MemoryBus, StartSaga};
use sagaflow_testkit::brokers::{free_port, wait_for_port, KafkaBroker, NatsServer};
use sagaflow_testkit::fault_proxy::FaultProxy;
use serde_json::json;

mod support;
use support::{pg_url, Proc};

const SAGAS: usize = 1000;
const PG_PORT: u16 = 5432;

/// The same database through another port.
fn via_port(url: &str, from: u16, to: u16) -> String {
    url.replace(&format!(":{from}/"), &format!(":{to}/"))
}

/// A child process killed when dropped.
fn spawn(args: &[&str]) -> Proc {
    support::spawn(args, &[])
}

/// The broker a run uses, and how to restart it. The machine's RabbitMQ is shared with
/// other tests' runs, so a run there works in a namespace of its own.
enum Broker {
    Nats(NatsServer),
    Amqp {
        namespace: String,
    },
    /// A private Tansu on `port`, started behind the fault proxy (it must advertise the
    /// proxy's port, so that every connection a client makes goes through it).
    Kafka {
        port: u16,
        server: Option<KafkaBroker>,
    },
}

impl Broker {
    fn port(&self) -> u16 {
        match self {
            Broker::Nats(s) => s.port,
            Broker::Amqp { .. } => 5672,
            Broker::Kafka { port, .. } => *port,
        }
    }

    /// Starts a broker that must know the proxy in front of it.
    fn start_behind(&mut self, proxy_port: u16) {
        if let Broker::Kafka { port, server } = self {
            *server = Some(KafkaBroker::start_advertising(*port, proxy_port));
        }
    }

    fn url_via(&self, port: u16) -> String {
        match self {
            Broker::Nats(_) => format!("nats://127.0.0.1:{port}"),
            Broker::Amqp { namespace } => {
                format!("amqp://guest:guest@127.0.0.1:{port}/%2f?namespace={namespace}")
            }
            Broker::Kafka { .. } => format!("kafka://127.0.0.1:{port}"),
        }
    }

    fn restart(&mut self) {
        match self {
            Broker::Nats(s) => s.restart(),
            Broker::Amqp { .. } => {
                sagaflow_testkit::brokers::restart_rabbitmq().expect("restart RabbitMQ")
            }
            // Tansu keeps its data in memory only: a restart would lose what it holds, which
            // no broker configured for durability does. The network faults still apply.
            Broker::Kafka { .. } => eprintln!("(Tansu has memory storage only: not restarted)"),
        }
    }
}

/// Sagas that have ended so far.
async fn ended(store: &Arc<dyn Store>, started: usize) -> usize {
    let in_flight: u64 = match store.versions_in_flight().await {
        Ok(v) => v.iter().map(|(_, _, n)| n).sum(),
        Err(_) => return 0,
    };
    started.saturating_sub(in_flight as usize)
}

fn poison_envelope(command: &str) -> Vec<u8> {
    Envelope {
        protocol: sagaflow_core::PROTOCOL_VERSION,
        message_id: format!("poison-{command}"),
        kind: MessageKind::Command,
        subject: "drill.explode".into(),
        saga_id: Some("poison-saga".into()),
        correlation_id: None,
        causation_id: None,
        step: Some("explode".into()),
        attempt: Some(1),
        traceparent: None,
        request_id: None,
        payload: json!({
            "saga_id": "poison-saga", "definition": "drill", "version": 1, "step": 0,
            "step_name": "explode", "attempt": 1, "phase": "action", "command": command,
            "key": "poison-saga:0:1:action", "context": {}
        }),
    }
    .to_bytes()
}

async fn run(mut broker: Broker) {
    let schema = format!("distributed_{}", fastrand::u32(..));
    let pg_proxy = FaultProxy::start(PG_PORT);
    let broker_proxy = FaultProxy::start(broker.port());
    broker.start_behind(broker_proxy.port);
    let direct_pg = format!("{}?schema={schema}", pg_url());
    let proxied_pg = via_port(&direct_pg, PG_PORT, pg_proxy.port);
    let proxied_broker = broker.url_via(broker_proxy.port);

    // The test is the API side: it registers the definition and starts the sagas; engine
    // processes publish the commands (woken by NOTIFY), consume replies and fire timers.
    let store = sagaflow::store_url::open(&direct_pg)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required for this test: {e:#}"));
    let api = Engine::builder(store.clone(), Arc::new(MemoryBus::new()))
        .config(EngineConfig::api_only())
        .register(sagaflow::drill::definition())
        .start()
        .await
        .expect("API-side engine");
    sagaflow::drill::prepare(&store).await.unwrap();

    let mut participant = Some(spawn(&[
        "participant",
        "--app",
        "drill",
        "--transport",
        &proxied_broker,
        "--database-url",
        &proxied_pg,
    ]));
    let mut engines: Vec<Option<Proc>> = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        engines.push(Some(spawn(&[
            "serve",
            "--role",
            "engine",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--transport",
            &proxied_broker,
            "--database-url",
            &proxied_pg,
        ])));
        wait_for_port(port, Duration::from_secs(60)).expect("engine process listens");
    }

    // Poison, straight to the broker: garbage, a command nobody handles, a garbage reply.
    let poisoner = sagaflow::transport_url::open(&broker.url_via(broker.port()), store.clone())
        .await
        .expect("connect to the broker");
    let commands = sagaflow_core::command_topic("drill");
    // RabbitMQ refuses a message no queue takes yet: retry until the processes subscribed.
    let poison: [(&str, &str, Vec<u8>); 3] = [
        (&commands, "poison-1", b"poison: not an envelope".to_vec()),
        (&commands, "poison-2", poison_envelope("explode")),
        (REPLY_TOPIC, "poison-3", b"poison reply".to_vec()),
    ];
    for (topic, id, body) in poison {
        let until = Instant::now() + Duration::from_secs(60);
        while let Err(e) = poisoner.publish(topic, id, body.clone()).await {
            assert!(Instant::now() < until, "publishing {id}: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(poisoner);

    let started = Arc::new(AtomicUsize::new(0));
    let starter = {
        let api = api.clone();
        let started = started.clone();
        tokio::spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            for i in 0..SAGAS {
                if running.len() >= 64 {
                    running.join_next().await;
                }
                let api = api.clone();
                let started = started.clone();
                running.spawn(async move {
                    let req = StartSaga::new("drill", json!({ "i": i }))
                        .idempotency_key(format!("drill-{i}"));
                    // The test's own store connection is not proxied: starts do not fail.
                    api.start_saga(req).await.expect("start a drill saga");
                    started.fetch_add(1, Ordering::SeqCst);
                });
            }
            while running.join_next().await.is_some() {}
        })
    };

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut step = 0;
    loop {
        let n = ended(&store, started.load(Ordering::SeqCst)).await;
        if started.load(Ordering::SeqCst) == SAGAS && n == SAGAS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {SAGAS} sagas ended in time (fault step {step})"
        );
        match step {
            0 if n >= 100 => {
                eprintln!("{n} ended: SIGKILL engine 0");
                engines[0] = None;
                step += 1;
            }
            1 if n >= 200 => {
                eprintln!("{n} ended: restarting the broker");
                tokio::task::block_in_place(|| broker.restart());
                step += 1;
            }
            2 if n >= 300 => {
                eprintln!("{n} ended: cutting PostgreSQL for 2 s");
                pg_proxy.cut();
                tokio::time::sleep(Duration::from_secs(2)).await;
                pg_proxy.restore();
                step += 1;
            }
            3 if n >= 400 => {
                eprintln!("{n} ended: cutting the broker for 2 s, then 2 s of 50 ms delays");
                broker_proxy.cut();
                tokio::time::sleep(Duration::from_secs(2)).await;
                broker_proxy.restore();
                broker_proxy.delay(Duration::from_millis(50));
                tokio::time::sleep(Duration::from_secs(2)).await;
                broker_proxy.restore();
                step += 1;
            }
            4 if n >= 500 => {
                eprintln!("{n} ended: resetting every connection");
                pg_proxy.reset();
                broker_proxy.reset();
                step += 1;
            }
            5 if n >= 600 => {
                eprintln!(
                    "{n} ended: a 3 s partition from PostgreSQL and the broker (held, not closed)"
                );
                pg_proxy.hold();
                broker_proxy.hold();
                tokio::time::sleep(Duration::from_secs(3)).await;
                pg_proxy.restore();
                broker_proxy.restore();
                step += 1;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    starter.await.unwrap();
    assert_eq!(step, 6, "every fault was injected");

    let report = sagaflow::drill::verify(&store, SAGAS)
        .await
        .unwrap_or_else(|problems| {
            panic!("the drill's invariants broke:\n{}", problems.join("\n"))
        });
    assert_eq!(report.completed + report.compensated, SAGAS);

    // The poison, and only the poison, is in the dead letters, each with its reason.
    let letters = store.dead_letters(0, 100).await.unwrap();
    for l in &letters {
        eprintln!("dead letter on {}: {}", l.topic, l.reason);
    }
    assert!(
        letters
            .iter()
            .all(|l| String::from_utf8_lossy(&l.body).contains("poison")),
        "only poison is dead-lettered: {:?}",
        letters
            .iter()
            .map(|l| (&l.topic, &l.reason))
            .collect::<Vec<_>>()
    );
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not a sagaflow envelope") && !r.is_empty()),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("no handler for command explode")),
        "{reasons:?}"
    );
    assert!(
        letters
            .iter()
            .any(|l| l.topic == REPLY_TOPIC && l.body == b"poison reply"),
        "{reasons:?}"
    );

    drop(participant.take());
    engines.clear();
    api.shutdown().await;
    let _ = sagaflow_postgres::drop_schema(&pg_url(), &schema).await;
    if let Broker::Amqp { namespace } = &broker {
        let _ = sagaflow_testkit::brokers::delete_rabbitmq_queues(namespace);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_engines_die_the_broker_restarts_connections_break_and_every_saga_ends_exactly_once(
) {
    run(Broker::Nats(NatsServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_amqp_engines_die_the_broker_restarts_connections_break_and_every_saga_ends_exactly_once(
) {
    run(Broker::Amqp {
        namespace: format!("distributed{}", fastrand::u32(..)),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_kafka_engines_die_connections_break_and_every_saga_ends_exactly_once() {
    run(Broker::Kafka {
        port: free_port(),
        server: None,
    })
    .await;
}
