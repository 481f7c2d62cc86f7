//! `scripts/cluster`: `up` starts two engines, an API process, the demo participants and the
//! shop's, social network's and blog's services over PostgreSQL and NATS; a saga started
//! through the API completes, and so does a shop purchase and a social registration's
//! verification; `status` reports them; `down` stops exactly the processes `up` recorded.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use sagaflow_testkit::brokers::free_port;
use serde_json::{json, Value};

mod support;
use support::pg_url;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cluster(name: &str, ports: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/cluster"))
        .args(args)
        .env("SAGAFLOW_CLUSTER_NAME", name)
        .env("SAGAFLOW_CLUSTER_PORTS", ports)
        .env("SAGAFLOW_BIN", env!("CARGO_BIN_EXE_sagaflow"))
        .env("SAGAFLOW_CLUSTER_PG", pg_url())
        .env("SAGAFLOW_LOG", "warn")
        .output()
        .expect("run scripts/cluster");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs (a zombie waiting for its parent to reap it has stopped running).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        })
        .unwrap_or(false)
}

/// Waits (with a deadline) until the saga has completed across the cluster's processes.
async fn wait_completed(client: &reqwest::Client, base: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let saga: Value = client
            .get(format!("{base}/sagas/{id}"))
            .send()
            .await
            .expect("read the saga")
            .json()
            .await
            .expect("a JSON answer");
        if saga["status"] == "completed" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "saga {id} did not complete across the processes: {saga}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the cluster even when an assertion fails.
struct Down<'a>(&'a str, &'a str);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = cluster(self.0, self.1, &["down"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_saga_across_processes_and_down_stops_exactly_what_up_started() {
    let name = format!("cluster_test_{}", fastrand::u32(..));
    let api = free_port();
    let ports = format!("{api} {} {}", free_port(), free_port());
    let _down = Down(&name, &ports);

    let (ok, out) = cluster(&name, &ports, &["up"]);
    assert!(ok, "scripts/cluster up failed:\n{out}");
    let (_, status) = cluster(&name, &ports, &["status"]);
    for line in [
        "engine-1: ready",
        "engine-2: ready",
        "api: ready",
        "participants: running",
    ] {
        assert!(status.contains(line), "status lacks {line:?}:\n{status}");
    }

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api}/api/v1");
    let started: Value = client
        .post(format!("{base}/sagas"))
        .json(&json!({"definition": "order", "input": {"product": "book", "qty": 1, "amount": 30}}))
        .send()
        .await
        .expect("start a saga")
        .json()
        .await
        .expect("a JSON answer");
    let id = started["saga_id"].as_str().expect("saga_id").to_string();
    wait_completed(&client, &base, &id).await;

    // The shop, one process per role: its flow 2 purchase completes across the processes.
    let bought: Value = client
        .post(format!("http://127.0.0.1:{api}/api/v1/orders"))
        .json(&json!({"customer_id": "customer-123", "items": [{"product_id": "product-1", "quantity": 2, "price": 100.0}]}))
        .send()
        .await
        .expect("buy")
        .json()
        .await
        .expect("a JSON answer");
    let purchase = bought["saga_id"].as_str().expect("saga_id").to_string();
    wait_completed(&client, &base, &purchase).await;

    // The social network's verifier and users services, in a process of their own.
    let registered: Value = client
        .post(format!("http://127.0.0.1:{api}/user/register"))
        .json(&json!({"first_name": "Ann", "second_name": "Lee", "birthdate": "1990-05-01", "password": "pw"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("a JSON answer");
    let user = registered["user_id"].as_str().expect("user_id").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let profile: Value = client
            .get(format!("http://127.0.0.1:{api}/user/get/{user}"))
            .send()
            .await
            .expect("profile")
            .json()
            .await
            .expect("a JSON answer");
        if profile["user_status"] == 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never verified across the processes: {profile}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pids: Vec<String> = std::fs::read_dir(repo().join("target").join(&name))
        .expect("the cluster folder")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(pids.len(), 7, "seven processes recorded: {pids:?}");
    assert!(pids.iter().all(|p| alive(p)));

    let (ok, out) = cluster(&name, &ports, &["down"]);
    assert!(ok, "scripts/cluster down failed:\n{out}");
    assert_eq!(out.matches("stopped ").count(), 7, "{out}");
    assert!(pids.iter().all(|p| !alive(p)), "down left some running");
    let (_, status) = cluster(&name, &ports, &["status"]);
    assert!(status.contains("nothing recorded"), "{status}");
    let _ = sagaflow_postgres::drop_schema(&pg_url(), &name).await;
    let _ = std::fs::remove_dir_all(repo().join("target").join(&name));
}
