//! examples/polyglot: services written in other languages take part in a sagaflow saga. A real
//! `sagaflow serve` (SQLite in a temporary directory, a private NATS JetStream server used
//! through a namespace) runs the `polyglot-order` definition from
//! `examples/polyglot/definitions/order.yaml`. Its `inventory` service is the Node.js process
//! `examples/polyglot/inventory/inventory.mjs`, a consumer on the broker; its `payments`
//! service is the Python process `examples/polyglot/payments/payments.py`, called over HTTP
//! (`--service payments=URL`). Neither has a line of sagaflow code: they speak the wire
//! protocol.
//!
//! - A saga completes: one reservation, one charge, one shipment, each output in the context.
//! - A shipment to "nowhere" is refused at the pivot: the saga compensates newest first, the
//!   refund before the release. A charge above the limit is declined (422 problem+json): the
//!   reservation alone is released, and the problem's detail is the saga's reason.
//! - payments is killed (SIGKILL) after committing a charge and before answering, then started
//!   again on the same port and database: the saga completes with exactly one charge.
//!
//! Needs python3, node with the inventory's packages (`npm ci --prefix
//! examples/polyglot/inventory`) and nats-server; scripts/test provides all three.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use sagaflow_testkit::brokers::{free_port, NatsServer};
use serde_json::{json, Value};

mod support;
use support::Serve;

/// How long a participant process may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// `examples/polyglot` at the workspace's root.
fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/polyglot")
}

/// A participant process. What it prints on stdout is passed on to the test's stderr, line by
/// line; it is killed (SIGKILL) when dropped.
struct Participant {
    child: Child,
}

impl Participant {
    /// Starts `command` and waits until it prints a line starting with `ready`.
    fn start(name: &'static str, mut command: Command, ready: &'static str) -> Participant {
        let what = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({what}): {e}"));
        let stdout = child.stdout.take().expect("a piped stdout");
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{name}] {line}");
                if line.starts_with(ready) {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            // Its stdout closed (it exited): a start still waiting hears so at once.
        });
        let mut participant = Participant { child };
        if ready_rx.recv_timeout(READY_WITHIN).is_err() {
            participant.kill();
            let status = participant.child.try_wait();
            panic!(
                "{name} did not print {ready:?} within {READY_WITHIN:?} (exit: {status:?}; its stderr is above): {what}"
            );
        }
        participant
    }

    /// SIGKILL, and wait until it is gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Python payments service on `port`, keeping its data in `db`.
fn start_payments(port: u16, db: &Path) -> Participant {
    let mut python = Command::new("python3");
    python
        .arg(example_dir().join("payments/payments.py"))
        .env("PAYMENTS_PORT", port.to_string())
        .env("PAYMENTS_DB", db)
        .env("PYTHONUNBUFFERED", "1");
    Participant::start("payments", python, "payments listening on")
}

/// Everything one test runs. Fields drop in order: the participants, the server, the broker,
/// and the directory last.
struct Rig {
    _inventory: Participant,
    payments: Participant,
    serve: Serve,
    _nats: NatsServer,
    payments_port: u16,
    payments_db: PathBuf,
    inventory_log: PathBuf,
    http: Client,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start() -> Rig {
        let example = example_dir();
        let inventory_dir = example.join("inventory");
        assert!(
            inventory_dir.join("node_modules/nats").is_dir(),
            "the inventory service's npm packages are missing from {}: run `npm ci --prefix examples/polyglot/inventory` (scripts/test does)",
            inventory_dir.display()
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let nats = NatsServer::start();
        // A namespace of the test's own: its stream is SAGAFLOW_<ns>, its subjects <ns>.sagaflow.…
        let namespace = format!("polyglot{}", fastrand::u32(..));

        let payments_port = free_port();
        let payments_db = dir.path().join("payments.db");
        let payments = start_payments(payments_port, &payments_db);

        let database_url = format!("sqlite://{}", dir.path().join("sagaflow.db").display());
        let transport = format!("{}?namespace={namespace}", nats.url());
        let definitions = example.join("definitions").display().to_string();
        let service = format!("payments=http://127.0.0.1:{payments_port}");
        let serve = Serve::start_with(
            &database_url,
            &[
                "--transport",
                &transport,
                "--definitions",
                &definitions,
                "--service",
                &service,
            ],
            &[],
        );

        let inventory_log = dir.path().join("inventory.jsonl");
        let mut node = Command::new("node");
        node.arg("inventory.mjs")
            .current_dir(inventory_dir)
            .env("NATS_URL", nats.url())
            .env("SAGAFLOW_NAMESPACE", namespace)
            .env("INVENTORY_LOG", &inventory_log);
        let inventory = Participant::start("inventory", node, "inventory ready");

        Rig {
            _inventory: inventory,
            payments,
            serve,
            _nats: nats,
            payments_port,
            payments_db,
            inventory_log,
            http: Client::new(),
            _dir: dir,
        }
    }

    /// Starts a `polyglot-order` saga through the API; its id.
    async fn start_saga(&self, input: Value) -> String {
        let resp = self
            .http
            .post(format!("{}/api/v1/sagas", self.serve.base))
            .json(&json!({ "definition": "polyglot-order", "input": input }))
            .send()
            .await
            .expect("POST /api/v1/sagas");
        let status = resp.status();
        let body: Value = resp.json().await.expect("a JSON answer");
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["saga_id"].as_str().expect("a saga id").to_string()
    }

    async fn get(&self, url: String) -> Value {
        let resp = self
            .http
            .get(url.as_str())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// The saga as `GET /api/v1/sagas/{id}` shows it.
    async fn saga(&self, saga: &str) -> Value {
        self.get(format!("{}/api/v1/sagas/{saga}", self.serve.base))
            .await
    }

    /// Waits (60 s at most) until the saga has ended; the saga then.
    async fn ended(&self, saga: &str) -> Value {
        support::wait_saga(&self.http, &self.serve.base, saga, |s| {
            matches!(s, "completed" | "compensated" | "failed")
        })
        .await;
        self.saga(saga).await
    }

    /// Every attempt of the saga, in the order they were sent.
    async fn history(&self, saga: &str) -> Vec<Value> {
        let v = self
            .get(format!("{}/api/v1/sagas/{saga}/history", self.serve.base))
            .await;
        v["history"].as_array().cloned().unwrap_or_default()
    }

    /// What payments did for the saga (`GET /effects`), in the order it did it.
    async fn payments_effects(&self, saga: &str) -> Vec<Value> {
        let v = self
            .get(format!(
                "http://127.0.0.1:{}/effects?saga_id={saga}",
                self.payments_port
            ))
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// What inventory did for the saga: its log's records that name an effect, in order.
    fn inventory_effects(&self, saga: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.inventory_log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|r| r["saga_id"] == saga && !r["effect"].is_null())
            .collect()
    }
}

/// The `field` of each effect, in order.
fn kinds(effects: &[Value], field: &str) -> Vec<String> {
    effects
        .iter()
        .map(|e| e[field].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_through_node_over_nats_and_python_over_http_completes_with_each_effect_once() {
    let rig = Rig::start();
    let saga = rig
        .start_saga(json!({
            "amount": 250, "address": "1 Main Street", "sku": "widget", "quantity": 2
        }))
        .await;
    let view = rig.ended(&saga).await;
    assert_eq!(view["status"], "completed", "{view}");

    // Each service's output was merged into the context.
    let context = &view["context"];
    assert_eq!(
        context["reservation_id"],
        format!("res-{saga}"),
        "{context}"
    );
    assert_eq!(context["payment_id"], format!("pay-{saga}"), "{context}");
    assert_eq!(context["charged"], 250, "{context}");
    assert_eq!(context["shipment_id"], format!("ship-{saga}"), "{context}");
    assert_eq!(context["shipped_to"], "1 Main Street", "{context}");

    let stock = rig.inventory_effects(&saga);
    assert_eq!(kinds(&stock, "effect"), ["reserve", "ship"], "{stock:?}");
    let money = rig.payments_effects(&saga).await;
    assert_eq!(kinds(&money, "kind"), ["charge"], "{money:?}");
    assert_eq!(money[0]["amount"], 250, "{money:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_shipment_compensates_newest_first_and_a_declined_charge_releases_the_stock() {
    let rig = Rig::start();
    let nowhere = rig
        .start_saga(json!({ "amount": 300, "address": "nowhere" }))
        .await;
    let declined = rig
        .start_saga(json!({ "amount": 5000, "address": "1 Main Street" }))
        .await;

    // The pivot (inventory.ship, over NATS) is rejected: refund, then release.
    let view = rig.ended(&nowhere).await;
    assert_eq!(view["status"], "compensated", "{view}");
    assert!(
        view["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot ship to nowhere")),
        "{view}"
    );
    let stock = rig.inventory_effects(&nowhere);
    assert_eq!(kinds(&stock, "effect"), ["reserve", "release"], "{stock:?}");
    let money = rig.payments_effects(&nowhere).await;
    assert_eq!(kinds(&money, "kind"), ["charge", "refund"], "{money:?}");
    assert_eq!(money[1]["amount"], 300, "the charge is refunded: {money:?}");
    // Compensations newest first: the engine sent the refund (step 2) before the release
    // (step 1), and sent the release only once payments had answered the refund.
    let history = rig.history(&nowhere).await;
    let undone: Vec<&str> = history
        .iter()
        .filter(|a| a["kind"] == "compensation")
        .map(|a| a["step_name"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(undone, ["charge", "reserve"], "{history:?}");
    let refunded_at = money[1]["recorded_at"].as_i64().expect("recorded_at");
    let released_at = stock[1]["at"].as_i64().expect("at");
    assert!(
        refunded_at <= released_at,
        "the refund ({refunded_at}) is recorded before the release ({released_at})"
    );

    // payments answers 422 with a problem+json detail: rejected, and the detail is the reason.
    let view = rig.ended(&declined).await;
    assert_eq!(view["status"], "compensated", "{view}");
    assert!(
        view["reason"]
            .as_str()
            .is_some_and(|r| r.contains("amount 5000 exceeds the limit of 1000")),
        "{view}"
    );
    let stock = rig.inventory_effects(&declined);
    assert_eq!(kinds(&stock, "effect"), ["reserve", "release"], "{stock:?}");
    let money = rig.payments_effects(&declined).await;
    assert!(
        money.is_empty(),
        "a declined charge neither charges nor refunds: {money:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_killed_mid_charge_comes_back_and_the_saga_completes_with_one_charge() {
    let mut rig = Rig::start();
    let saga = rig
        .start_saga(json!({ "amount": 120, "address": "1 Main Street", "slow_charge": true }))
        .await;

    // With slow_charge, payments commits the charge and then waits before answering: once
    // the charge is there, the answer has not gone out. Kill it right then.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.payments_effects(&saga).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "payments never recorded the charge of saga {saga}: {}",
            rig.saga(&saga).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.payments.kill();
    let view = rig.saga(&saga).await;
    assert_eq!(
        view["status"], "running",
        "nothing can answer the charge now: {view}"
    );

    // The same port and database: the engine's next attempt finds the charge done.
    let (port, db) = (rig.payments_port, rig.payments_db.clone());
    rig.payments = tokio::task::block_in_place(|| start_payments(port, &db));
    let view = rig.ended(&saga).await;
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(
        view["context"]["payment_id"],
        format!("pay-{saga}"),
        "{view}"
    );

    let money = rig.payments_effects(&saga).await;
    assert_eq!(kinds(&money, "kind"), ["charge"], "charged once: {money:?}");
    assert_eq!(money[0]["amount"], 120, "{money:?}");
    let stock = rig.inventory_effects(&saga);
    assert_eq!(kinds(&stock, "effect"), ["reserve", "ship"], "{stock:?}");
    let history = rig.history(&saga).await;
    let charges: Vec<&Value> = history
        .iter()
        .filter(|a| a["step_name"] == "charge" && a["kind"] == "action")
        .collect();
    assert!(
        charges.len() >= 2,
        "the killed attempt failed and a later one was answered: {history:?}"
    );
    assert_eq!(charges[0]["status"], "failed", "{history:?}");
    assert_eq!(
        charges[charges.len() - 1]["status"],
        "succeeded",
        "{history:?}"
    );
}
