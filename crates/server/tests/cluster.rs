//! `scripts/cluster`: `up` starts two engines, an API process, the demo participants and the
//! shop's, social network's and blog's services over PostgreSQL and NATS (or Kafka); a saga
//! started through the API completes, and so do a shop purchase, a social registration's
//! verification and a message with its unread counter; `status` reports them; `down` stops
//! exactly the processes `up` recorded. Over Kafka, as the original shop and social network
//! ran, the purchase's commands carry the caller's `X-Request-ID` in their record headers.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use sagaflow_testkit::brokers::{free_port, KafkaBroker};
use serde_json::{json, Value};

mod support;
use support::pg_url;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cluster(name: &str, ports: &str, args: &[&str]) -> (bool, String) {
    cluster_with(name, ports, args, &[])
}

fn cluster_with(name: &str, ports: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/cluster"))
        .args(args)
        .envs(env.iter().copied())
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

/// Polls a JSON GET until `done` accepts the answer (deadline 60 s).
async fn wait_json(client: &reqwest::Client, url: &str, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = client
            .get(url)
            .send()
            .await
            .expect("a GET")
            .json()
            .await
            .expect("a JSON answer");
        if done(&v) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Value {
    let mut req = client.post(url).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("a POST");
    let status = resp.status();
    let v: Value = resp.json().await.expect("a JSON answer");
    assert!(status.is_success(), "POST {url}: {status} {v}");
    v
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = cluster(self.0, self.1, &["down"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_saga_across_processes_and_down_stops_exactly_what_up_started() {
    let name = format!("cluster_test_{}", fastrand::u32(..));
    round_trip(&name, &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_kafka_the_shop_and_social_sagas_cross_processes_with_the_request_id_in_the_headers() {
    // A broker of the test's own, so that reading every topic back sees only this cluster.
    let kafka = KafkaBroker::start();
    let name = format!("cluster_kafka_{}", fastrand::u32(..));
    let brokers = kafka.brokers();
    let request_id = format!("req-{}", fastrand::u64(..));
    let trace = format!("{:032x}", fastrand::u128(1..));
    let traceparent = format!("00-{trace}-{:016x}-01", fastrand::u64(1..));
    let purchase = round_trip(
        &name,
        &["--transport", "kafka"],
        &[
            ("SAGAFLOW_CLUSTER_KAFKA", brokers.as_str()),
            ("x-request-id", request_id.as_str()),
            ("traceparent", traceparent.as_str()),
        ],
    )
    .await;
    let carried = records_with_request_id(&brokers, &name, &request_id);
    assert!(
        !carried.is_empty(),
        "no record under {name}.* carries x-request-id {request_id}"
    );
    for (topic, key, headers) in &carried {
        assert_eq!(key, &purchase, "{topic}: keyed by the saga id, {headers:?}");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "traceparent" && v.contains(&trace))
                && headers
                    .iter()
                    .any(|(k, v)| k == "ce_sagaflowsagaid" && *v == purchase),
            "{topic}: the caller's trace and the saga id: {headers:?}"
        );
    }
    assert!(
        carried
            .iter()
            .any(|(t, _, _)| t.starts_with(&format!("{name}.sagaflow.commands."))),
        "the purchase's commands carry it: {carried:?}"
    );
}

type Record = (String, String, Vec<(String, String)>);

/// Every record in the namespace's topics whose `x-request-id` header is `request_id`:
/// (topic, key, headers). Reads each partition from the beginning, without a group.
fn records_with_request_id(brokers: &str, namespace: &str, request_id: &str) -> Vec<Record> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "cluster-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka reader");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("the topics");
    let mut assignment = TopicPartitionList::new();
    let mut ends = Vec::new();
    for topic in metadata.topics() {
        if !topic.name().starts_with(&format!("{namespace}.")) {
            continue;
        }
        for p in topic.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic.name(), p.id(), Duration::from_secs(10))
                .expect("watermarks");
            if high > 0 {
                assignment
                    .add_partition_offset(topic.name(), p.id(), Offset::Beginning)
                    .unwrap();
                ends.push((topic.name().to_string(), p.id(), high));
            }
        }
    }
    consumer.assign(&assignment).expect("assign");
    let mut remaining: usize = ends.len();
    let mut read: std::collections::HashMap<(String, i32), i64> = Default::default();
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while remaining > 0 {
        assert!(
            Instant::now() < deadline,
            "the topics were not read to their end: {ends:?}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = message.expect("a record");
        let headers: Vec<(String, String)> = m
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
        if headers
            .iter()
            .any(|(k, v)| k == "x-request-id" && v == request_id)
        {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            found.push((m.topic().to_string(), key, headers));
        }
        let at = (m.topic().to_string(), m.partition());
        let high = ends
            .iter()
            .find(|(t, p, _)| *t == at.0 && *p == at.1)
            .map(|(_, _, h)| *h)
            .unwrap_or(0);
        let before = read.get(&at).copied().unwrap_or(0);
        if before < high && m.offset() + 1 >= high {
            remaining -= 1;
        }
        read.insert(at, m.offset() + 1);
    }
    found
}

/// What [`round_trip`] sends with the purchase rather than to the script.
const HEADERS: [&str; 2] = ["x-request-id", "traceparent"];

/// `up` with `args`, a saga of each reference system through the API, `status`, `down`.
/// `env` goes to the script, except [`HEADERS`], sent with the purchase. Returns the
/// purchase's saga id.
async fn round_trip(name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let api = free_port();
    let ports = format!("{api} {} {}", free_port(), free_port());
    let _down = Down(name, &ports);
    let script_env: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(k, _)| !HEADERS.contains(k))
        .collect();
    let headers: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(k, _)| HEADERS.contains(k))
        .collect();
    let mut up = vec!["up"];
    up.extend_from_slice(args);
    let (ok, out) = cluster_with(name, &ports, &up, &script_env);
    assert!(ok, "scripts/cluster up failed:\n{out}");
    let (_, status) = cluster(name, &ports, &["status"]);
    for line in [
        "engine-1: ready",
        "engine-2: ready",
        "api: ready",
        "participants: running",
    ] {
        assert!(status.contains(line), "status lacks {line:?}:\n{status}");
    }

    let client = reqwest::Client::new();
    let app = format!("http://127.0.0.1:{api}");
    let base = format!("{app}/api/v1");
    let started = post_json(
        &client,
        &format!("{base}/sagas"),
        json!({"definition": "order", "input": {"product": "book", "qty": 1, "amount": 30}}),
        &[],
    )
    .await;
    let id = started["saga_id"].as_str().expect("saga_id").to_string();
    wait_completed(&client, &base, &id).await;

    // The shop, one process per role: its flow 2 purchase completes across the processes.
    let bought = post_json(
        &client,
        &format!("{base}/orders"),
        json!({"customer_id": "customer-123", "items": [{"product_id": "product-1", "quantity": 2, "price": 100.0}]}),
        &headers,
    )
    .await;
    let purchase = bought["saga_id"].as_str().expect("saga_id").to_string();
    wait_completed(&client, &base, &purchase).await;

    // The social network's verifier and users services, in a process of their own.
    let register = |first: &str| json!({"first_name": first, "second_name": "Lee", "birthdate": "1990-05-01", "password": "pw"});
    let ann = post_json(
        &client,
        &format!("{app}/user/register"),
        register("Ann"),
        &[],
    )
    .await;
    let ann = ann["user_id"].as_str().expect("user_id").to_string();
    let bob = post_json(
        &client,
        &format!("{app}/user/register"),
        register("Bob"),
        &[],
    )
    .await;
    let bob = bob["user_id"].as_str().expect("user_id").to_string();
    for user in [&ann, &bob] {
        wait_json(
            &client,
            &format!("{app}/user/get/{user}"),
            "verification across the processes",
            |profile| profile["user_status"] == 100,
        )
        .await;
    }

    // The messages saga: Ann writes to Bob; the message and Bob's unread counter commit in
    // the social process, and the API process reads the counter from the database.
    let sent = post_json(
        &client,
        &format!("{app}/api/dialog/{bob}/send"),
        json!({"text": "hello across processes"}),
        &[("x-user-id", ann.as_str())],
    )
    .await;
    let message_saga = sent["saga_id"].as_str().expect("saga_id").to_string();
    wait_completed(&client, &base, &message_saga).await;
    wait_json(
        &client,
        &format!("{app}/counters/{bob}"),
        "Bob's unread counter",
        |c| c["total"] == 1,
    )
    .await;

    let pids: Vec<String> = std::fs::read_dir(repo().join("target").join(name))
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

    let (ok, out) = cluster(name, &ports, &["down"]);
    assert!(ok, "scripts/cluster down failed:\n{out}");
    assert_eq!(out.matches("stopped ").count(), 7, "{out}");
    assert!(pids.iter().all(|p| !alive(p)), "down left some running");
    let (_, status) = cluster(name, &ports, &["status"]);
    assert!(status.contains("nothing recorded"), "{status}");
    let _ = sagaflow_postgres::drop_schema(&pg_url(), name).await;
    let _ = std::fs::remove_dir_all(repo().join("target").join(name));
    purchase
}
