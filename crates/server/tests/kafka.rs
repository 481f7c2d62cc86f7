//! `sagaflow serve --transport kafka://…` and `sagaflow participant --app demo` on
//! PostgreSQL when the broker is not there: started before their broker, the server says so
//! in its log and answers `/readyz` 503, a saga started meanwhile is accepted and waits; once
//! the broker is up the server turns ready and the saga completes. When the broker then goes
//! away mid-run (every connection to it cut and refused, through a fault proxy) the same
//! happens again: 503 and a log line while it is away, and every saga started before,
//! during and after ends completed — nothing lost, since the outbox, not the broker, holds
//! what is still to be sent. (Tansu keeps data in memory only, so the broker itself is not
//! restarted: it would come back without its topics.)

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sagaflow_testkit::brokers::{free_port, wait_for_port, KafkaBroker};
use sagaflow_testkit::fault_proxy::FaultProxy;
use serde_json::{json, Value};

mod support;
use support::{pg_url, spawn};

/// A `sagaflow serve` whose log goes to a file the test reads; killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: tempfile::NamedTempFile,
}

impl Server {
    fn start(transport: &str, database_url: &str) -> Server {
        let log = tempfile::NamedTempFile::new().unwrap();
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--transport", transport])
            .args(["--database-url", database_url])
            .env("SAGAFLOW_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(File::create(log.path()).unwrap())
            .spawn()
            .expect("spawn sagaflow serve");
        wait_for_port(port, Duration::from_secs(60)).expect("the server listens");
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the server ({:?}) logged:\n{}",
                self.child.try_wait(),
                self.log()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (deadline 60 s) until `/readyz` answers `status`; returns its body.
async fn wait_readyz(http: &reqwest::Client, base: &str, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = http.get(format!("{base}/readyz")).send().await {
            if resp.status().as_u16() == status {
                return resp.json().await.unwrap_or(Value::Null);
            }
        }
        assert!(Instant::now() < deadline, "/readyz never answered {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (deadline 60 s) until the log has a line that mentions all of `words`.
async fn wait_log_line(server: &Server, words: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = server.log();
        if let Some(line) = log
            .lines()
            .find(|line| words.iter().all(|w| line.contains(w)))
        {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line mentions {words:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_saga(http: &reqwest::Client, base: &str) -> String {
    let resp = http
        .post(format!("{base}/api/v1/sagas"))
        .json(&json!({"definition": "order", "input": {"product": "book", "qty": 1, "amount": 30}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        202,
        "a saga is accepted while the broker is away"
    );
    let v: Value = resp.json().await.unwrap();
    v["saga_id"].as_str().expect("saga_id").to_string()
}

async fn status_of(http: &reqwest::Client, base: &str, saga: &str) -> String {
    let v: Value = http
        .get(format!("{base}/api/v1/sagas/{saga}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["status"].as_str().unwrap_or_default().to_string()
}

/// Waits (deadline 90 s: a command published into the outage is sent again once its
/// 10 s lease runs out) until every saga has completed.
async fn wait_all_completed(http: &reqwest::Client, base: &str, sagas: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    for saga in sagas {
        loop {
            let status = status_of(http, base, saga).await;
            if status == "completed" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "saga {saga} is {status}, not completed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_or_gone_mid_run_gives_503_and_a_log_line_then_nothing_is_lost() {
    // Clients reach the broker only through the proxy, and the broker tells them so.
    let port = free_port();
    let proxy = FaultProxy::start(port);
    let brokers = format!("127.0.0.1:{}", proxy.port);
    let transport = format!("kafka://{brokers}");
    let schema = format!("kafka_outage_{}", fastrand::u32(..));
    let pg = format!("{}?schema={schema}", pg_url());
    let server = Server::start(&transport, &pg);
    let http = reqwest::Client::new();

    // No broker yet: not ready, and the log says which broker it cannot reach.
    let body = wait_readyz(&http, &server.base, 503).await;
    assert!(
        body.to_string().contains(&brokers),
        "/readyz says why: {body}"
    );
    wait_log_line(&server, &["Kafka", &brokers]).await;
    // The store is open (the transport is what is missing): the participants start too.
    let _participants = spawn(
        &[
            "participant",
            "--app",
            "demo",
            "--transport",
            &transport,
            "--database-url",
            &pg,
        ],
        &[],
    );
    let mut sagas = vec![start_saga(&http, &server.base).await];
    assert_eq!(status_of(&http, &server.base, &sagas[0]).await, "running");

    // The broker comes: ready, and the saga started during the outage completes.
    let _broker = KafkaBroker::start_advertising(port, proxy.port);
    wait_readyz(&http, &server.base, 200).await;
    sagas.push(start_saga(&http, &server.base).await);
    wait_all_completed(&http, &server.base, &sagas).await;

    // Mid-run it goes away: 503 again, with a log line, and sagas are still accepted.
    let lines_before = server.log().lines().count();
    proxy.cut();
    wait_readyz(&http, &server.base, 503).await;
    for _ in 0..3 {
        sagas.push(start_saga(&http, &server.base).await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.log().lines().count() == lines_before {
        assert!(
            Instant::now() < deadline,
            "nothing was logged while the broker was away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // It comes back: ready again, and every saga completes.
    proxy.restore();
    wait_readyz(&http, &server.base, 200).await;
    sagas.push(start_saga(&http, &server.base).await);
    wait_all_completed(&http, &server.base, &sagas).await;
    drop(server);
    let _ = sagaflow_postgres::drop_schema(&pg_url(), &schema).await;
}
