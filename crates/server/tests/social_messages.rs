//! The social network's messages and unread counters, and its verifier outage over RabbitMQ,
//! through HTTP against real processes: `sagaflow serve` and `sagaflow participant --app
//! social` on PostgreSQL, a real broker, and a Redis of the test's own.
//!
//! Messages: with a constraint allowing at most 2 unread per counter, 5 messages between two
//! users give 4 committed and 1 failed (kept, flagged, left out of the dialog), both counters
//! at 2; a counter knocked off by hand is repaired by reconciliation, which reports the drift;
//! a read brings a counter to 0; and after Redis is killed (a write happening while it is
//! away) and started again empty, the counters read through the cache equal the database's.
//!
//! Verifier outage over RabbitMQ: while the verification authority is down the verifier
//! nacks, the command goes round the broker's retry loop (seen in the `:retry` queue), and
//! once the authority is back the redelivered command verifies the user.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Client;
use sagaflow_core::Store;
use sagaflow_testkit::brokers::{free_port, NatsServer, RedisServer};
use serde_json::{json, Value};

mod support;
use support::{pg_url, spawn, Serve};

const KEY: &str = "social-test-key-0123456789";

fn keys_env() -> String {
    let digest = sagaflow_api::to_hex(&sagaflow_api::hash_key(KEY));
    format!("ops:{digest}:operate+read")
}

fn client() -> Client {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static(KEY));
    Client::builder().default_headers(headers).build().unwrap()
}

async fn register(http: &Client, base: &str, name: &str) -> String {
    let v = json_of(http.post(format!("{base}/user/register")).json(&json!({"first_name": name, "second_name": "Test", "birthdate": "1990-05-01", "password": "pw"})), None).await;
    v["user_id"].as_str().expect("a user id").to_string()
}

/// Sends a request (as `user`, by `X-User-Id`, when given) and reads its JSON answer.
async fn json_of(req: reqwest::RequestBuilder, user: Option<&str>) -> Value {
    let req = match user {
        Some(u) => req.header("x-user-id", u),
        None => req,
    };
    req.send().await.unwrap().json().await.unwrap()
}

async fn wait_saga_end(http: &Client, base: &str, saga: &str) -> String {
    support::wait_saga(http, base, saga, |s| {
        matches!(s, "completed" | "compensated" | "failed")
    })
    .await
}

async fn counters(http: &Client, base: &str, user: &str) -> Value {
    let resp = http
        .get(format!("{base}/counters/{user}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn db_unread(store: &Arc<dyn Store>, user: &str) -> i64 {
    let mut tx = store.begin().await.unwrap();
    let rows = tx
        .query(
            "SELECT COALESCE(SUM(unread), 0) FROM social_counters_unread WHERE user_id = $1",
            &[user.into()],
        )
        .await
        .unwrap();
    let _ = tx.rollback().await;
    rows[0][0].as_i64().unwrap_or(0)
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn execute(store: &Arc<dyn Store>, sql: &str) {
    let mut tx = store.begin().await.unwrap();
    tx.execute(sql, &[]).await.unwrap();
    tx.commit().await.unwrap();
}

/// Two users; 5 messages, B receiving 3 and A 2, with at most 2 unread allowed: 4 committed,
/// 1 (B's third) failed, both counters at 2. Returns (A, B).
async fn five_messages_under_a_cap(http: &Client, base: &str) -> (String, String) {
    let a = register(http, base, "Ann").await;
    let b = register(http, base, "Bob").await;
    let missing = http
        .post(format!("{base}/api/dialog/{b}/send"))
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert!(missing
        .text()
        .await
        .unwrap()
        .contains("missing X-User-Id header"));

    // 5 messages: B receives 3 (the third would make 3 unread), A receives 2.
    let mut sagas = Vec::new();
    for (i, (from, to)) in [(&a, &b), (&b, &a), (&a, &b), (&b, &a), (&a, &b)]
        .into_iter()
        .enumerate()
    {
        let v = json_of(
            http.post(format!("{base}/api/dialog/{to}/send"))
                .json(&json!({ "text": format!("message {i}") })),
            Some(from.as_str()),
        )
        .await;
        assert!(v["message_id"].is_string(), "{v}");
        sagas.push(v["saga_id"].as_str().unwrap().to_string());
    }
    let mut ends = Vec::new();
    for saga in &sagas {
        ends.push(wait_saga_end(http, base, saga).await);
    }
    ends.sort();
    assert_eq!(
        ends,
        [
            "compensated",
            "completed",
            "completed",
            "completed",
            "completed"
        ]
    );
    assert_eq!(counters(http, base, &a).await["total"], 2);
    assert_eq!(counters(http, base, &b).await["total"], 2);
    (a, b)
}

/// With keys configured a user's own token cannot be overridden by X-User-Id: only a service
/// holding an `operate` key speaks for a user by header.
async fn impostors_are_refused(base: &str, a: &str, b: &str) {
    let login: Value = Client::new()
        .post(format!("{base}/login"))
        .json(&json!({"id": a, "password": "pw"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("a token").to_string();
    let own = Client::new()
        .get(format!("{base}/api/dialog"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200, "a user reads their own dialogs by token");
    for impostor in [
        Client::new()
            .get(format!("{base}/api/dialog"))
            .bearer_auth(&token)
            .header("x-user-id", b),
        Client::new()
            .get(format!("{base}/api/dialog"))
            .header("x-user-id", b),
    ] {
        let resp = impostor.send().await.unwrap();
        assert_eq!(resp.status(), 401, "acting as {b} without a service key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_with_a_counter_cap_commit_four_fail_one_and_reconcile_through_a_redis_restart() {
    let mut redis = RedisServer::start();
    // Redis is away when the processes start: they start anyway, and use it once it is back.
    redis.kill();
    let nats = NatsServer::start();
    let pg = format!("{}?schema=social_msgs_{}", pg_url(), fastrand::u32(..));
    let keys = keys_env();
    let env = [
        ("SAGAFLOW_API_KEYS", keys.as_str()),
        ("SAGAFLOW_SOCIAL_RECONCILE_SECS", "0"),
    ];
    let serve = Serve::start_with(
        &pg,
        &["--transport", &nats.url(), "--redis-url", &redis.url()],
        &env,
    );
    let _services = spawn(
        &[
            "participant",
            "--app",
            "social",
            "--transport",
            &nats.url(),
            "--database-url",
            &pg,
            "--redis-url",
            &redis.url(),
        ],
        &env,
    );
    let base = serve.base.clone();
    redis.start_again();
    let http = client();
    let store = sagaflow::store_url::open(&pg).await.unwrap();
    // The forced failure: the counters table allows at most 2 unread.
    execute(
        &store,
        "ALTER TABLE social_counters_unread ADD CONSTRAINT at_most_two CHECK (unread <= 2)",
    )
    .await;

    let (a, b) = five_messages_under_a_cap(&http, &base).await;
    impostors_are_refused(&base, &a, &b).await;
    assert_eq!(
        (db_unread(&store, &a).await, db_unread(&store, &b).await),
        (2, 2)
    );
    let list = json_of(
        http.get(format!("{base}/api/dialog/{a}/list")),
        Some(b.as_str()),
    )
    .await;
    assert_eq!(list["messages"].as_array().unwrap().len(), 4, "{list}");
    let mut tx = store.begin().await.unwrap();
    let failed = tx
        .query(
            "SELECT recipient_id, reason FROM social_messages WHERE state = 'failed'",
            &[],
        )
        .await
        .unwrap();
    let _ = tx.rollback().await;
    assert_eq!(failed.len(), 1, "one message kept, flagged failed");
    assert_eq!(failed[0][0].as_str(), Some(b.as_str()));
    let dialogs = json_of(http.get(format!("{base}/api/dialog")), Some(b.as_str())).await;
    assert_eq!(dialogs["dialogs"][0]["unread"], 2, "{dialogs}");
    assert_eq!(dialogs["dialogs"][0]["partner_id"], a.as_str());
    // The cache (connected once Redis came back) holds what the database holds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert_eq!(counters(&http, &base, &b).await["total"], 2);
        let cached = redis_cli(redis.port, &["HGETALL", &format!("social:unread:{b}")]);
        if cached.contains(":2:") && cached.contains("_loaded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache was never filled: {cached}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Drift: a counter reset by hand (internal endpoint: the API key is required)...
    let dialog = counters(&http, &base, &b).await["dialogs"][0]["dialog_id"]
        .as_str()
        .unwrap()
        .to_string();
    let anonymous = Client::new()
        .post(format!("{base}/counters/{dialog}/reset"))
        .json(&json!({ "user_id": b }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let reset = http
        .post(format!("{base}/counters/{dialog}/reset"))
        .json(&json!({ "user_id": b }))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(counters(&http, &base, &b).await["total"], 0);
    // ...is repaired from the committed messages, and the drift is reported.
    let report = json_of(http.post(format!("{base}/counters/reconcile")), None).await;
    assert_eq!(
        (report["repaired"].as_i64(), report["drift"].as_i64()),
        (Some(1), Some(2)),
        "{report}"
    );
    assert_eq!(counters(&http, &base, &b).await["total"], 2);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sagaflow_social_counter_drift 2"),
        "{metrics}"
    );
    let again = json_of(http.post(format!("{base}/counters/reconcile")), None).await;
    assert_eq!(
        again["drift"], 0,
        "consistent after reconciliation: {again}"
    );

    // B reads the dialog: B's counter goes to 0 by a saga; A's stays.
    let read = json_of(
        http.post(format!("{base}/api/dialog/{a}/read")),
        Some(b.as_str()),
    )
    .await;
    assert_eq!(
        wait_saga_end(&http, &base, read["saga_id"].as_str().unwrap()).await,
        "completed"
    );
    assert_eq!(counters(&http, &base, &b).await["total"], 0);
    assert_eq!(counters(&http, &base, &a).await["total"], 2);

    // Redis goes away; A reads meanwhile (the cache write fails; the database has it);
    // counters are still served, from the database.
    redis.kill();
    let read = json_of(
        http.post(format!("{base}/api/dialog/{b}/read")),
        Some(a.as_str()),
    )
    .await;
    assert_eq!(
        wait_saga_end(&http, &base, read["saga_id"].as_str().unwrap()).await,
        "completed"
    );
    assert_eq!(counters(&http, &base, &a).await["total"], 0);
    // Redis comes back empty: reads refill it from the database, and the two agree.
    redis.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    for user in [&a, &b] {
        loop {
            let cached = counters(&http, &base, user).await;
            let in_redis = redis_cli(
                redis.port,
                &["HEXISTS", &format!("social:unread:{user}"), "_loaded"],
            );
            if in_redis.trim() == "1" {
                assert_eq!(
                    cached["total"].as_i64(),
                    Some(db_unread(&store, user).await)
                );
                break;
            }
            assert!(Instant::now() < deadline, "the cache was never refilled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(counters(&http, &base, &a).await["total"], 0);
    assert_eq!(counters(&http, &base, &b).await["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sqlite_messages_fail_under_a_trigger_cap_and_reads_clear_the_in_process_cache() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("social.db").display());
    let serve = Serve::start(&url, &[("SAGAFLOW_SOCIAL_RECONCILE_SECS", "0")]);
    let (base, http) = (serve.base.clone(), Client::new());
    let store = sagaflow::store_url::open(&url).await.unwrap();
    execute(
        &store,
        "CREATE TRIGGER at_most_two BEFORE UPDATE ON social_counters_unread WHEN NEW.unread > 2 \
         BEGIN SELECT RAISE(ABORT, 'at most 2 unread'); END",
    )
    .await;
    let (a, b) = five_messages_under_a_cap(&http, &base).await;
    assert_eq!(
        (db_unread(&store, &a).await, db_unread(&store, &b).await),
        (2, 2)
    );
    let read = json_of(
        http.post(format!("{base}/api/dialog/{b}/read")),
        Some(a.as_str()),
    )
    .await;
    let saga = read["saga_id"].as_str().unwrap();
    assert_eq!(wait_saga_end(&http, &base, saga).await, "completed");
    assert_eq!(counters(&http, &base, &a).await["total"], 0);
    assert_eq!(counters(&http, &base, &b).await["total"], 2);
    assert_eq!(
        (db_unread(&store, &a).await, db_unread(&store, &b).await),
        (0, 2)
    );
    let report = json_of(http.post(format!("{base}/counters/reconcile")), None).await;
    assert_eq!(report["drift"], 0, "{report}");
}

/// `GET /api/dialog` is paged by `limit` and `offset`: three dialogs read two at a time give
/// pages of 2 and 1, in the order of the whole list, never overlapping; bad values are 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sqlite_dialogs_are_paged() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("social.db").display());
    let serve = Serve::start(&url, &[("SAGAFLOW_SOCIAL_RECONCILE_SECS", "0")]);
    let (base, http) = (serve.base.clone(), Client::new());
    let a = register(&http, &base, "Ann").await;
    let mut partners = Vec::new();
    for name in ["Bob", "Cid", "Dan"] {
        let to = register(&http, &base, name).await;
        let v = json_of(
            http.post(format!("{base}/api/dialog/{to}/send"))
                .json(&json!({ "text": format!("hello {name}") })),
            Some(a.as_str()),
        )
        .await;
        let saga = v["saga_id"].as_str().expect("a saga id").to_string();
        assert_eq!(wait_saga_end(&http, &base, &saga).await, "completed");
        partners.push(to);
    }
    let page = |query: &'static str| {
        let (http, base, a) = (http.clone(), base.clone(), a.clone());
        async move {
            let v = json_of(
                http.get(format!("{base}/api/dialog{query}")),
                Some(a.as_str()),
            )
            .await;
            v["dialogs"]
                .as_array()
                .unwrap_or_else(|| panic!("{query}: dialogs, got {v}"))
                .iter()
                .map(|d| d["partner_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let all = page("").await;
    let mut sorted = all.clone();
    sorted.sort();
    partners.sort();
    assert_eq!(sorted, partners, "one dialog per partner");
    let first = page("?limit=2").await;
    let second = page("?limit=2&offset=2").await;
    support::assert_pages_of_three(first, second, &all);
    assert!(page("?offset=3").await.is_empty());
    for (query, names) in support::BAD_PAGES {
        let resp = http
            .get(format!("{base}/api/dialog?{query}"))
            .header("x-user-id", a.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "bad_parameter", "{query}: {v}");
        assert!(
            v["detail"].as_str().unwrap_or_default().contains(names),
            "{query} names {names}: {v}"
        );
    }
}

/// Every request the authority received: the `x-sagaflow-redelivered` header of each.
type Seen = Arc<Mutex<Vec<u32>>>;

async fn authority(port: u16, seen: Seen) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        "/check",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let n = headers
                    .get("x-sagaflow-redelivered")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                seen.lock().unwrap().push(n);
                axum::Json(json!({ "passed": true }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

fn retry_queue_holds(namespace: &str) -> bool {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "name",
            "messages",
            "-q",
            "--no-table-headers",
        ])
        .output()
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&out.stdout).lines().any(|line| {
        let mut parts = line.split_whitespace();
        let (name, count) = (parts.next().unwrap_or(""), parts.next().unwrap_or("0"));
        name.contains(namespace)
            && name.contains("social-verifier")
            && name.ends_with(":retry")
            && count != "0"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifier_outage_over_amqp_rides_the_broker_retry_loop_then_verifies() {
    let namespace = format!("socialout{}", fastrand::u32(..));
    let amqp = format!("amqp://guest:guest@127.0.0.1:5672/%2f?namespace={namespace}");
    let pg = format!("{}?schema=social_out_{}", pg_url(), fastrand::u32(..));
    let authority_port = free_port();
    let authority_url = format!("http://127.0.0.1:{authority_port}/check");
    // A long attempt timeout: the broker's loop, not a new attempt, does the retrying.
    let env = [
        ("SAGAFLOW_SOCIAL_VERIFIER_AUTHORITY", authority_url.as_str()),
        ("SAGAFLOW_SOCIAL_VERIFY_TIMEOUT_MS", "120000"),
    ];
    let serve = Serve::start_with(&pg, &["--transport", &amqp], &env);
    let _services = spawn(
        &[
            "participant",
            "--app",
            "social",
            "--transport",
            &amqp,
            "--database-url",
            &pg,
        ],
        &env,
    );
    let base = serve.base.clone();
    let http = Client::new();
    let user = register(&http, &base, "Cleo").await;

    // The authority is down: the command is nacked and waits in the retry queue.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !retry_queue_holds(&namespace) {
        assert!(
            Instant::now() < deadline,
            "the command never went round the retry loop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = json_of(http.get(format!("{base}/user/get/{user}")), None).await;
    assert_eq!(profile["user_status"], 0, "still pending: {profile}");

    // It comes back: the redelivered command verifies the user.
    let seen: Seen = Arc::default();
    let server = authority(authority_port, seen.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = json_of(http.get(format!("{base}/user/get/{user}")), None).await;
        if v["user_status"] == 100 {
            break;
        }
        assert!(Instant::now() < deadline, "never verified: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|n| *n >= 1),
        "the authority saw only first deliveries: {seen:?}"
    );
    server.abort();
    drop(serve);
    let _ = sagaflow_testkit::brokers::delete_rabbitmq_queues(&namespace);
}
