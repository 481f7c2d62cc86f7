//! HTTP participants end to end: a real engine on SQLite, the in-memory bus behind
//! `HttpParticipants`, and participants that are real HTTP servers on loopback (axum, or a
//! raw TCP socket for answers no framework would give).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use sagaflow_core::{
    CircuitState, Definition, Event, Outcome, RetryPolicy, SagaId, Status, Step, Transport,
};
use sagaflow_engine::{Engine, EngineConfig, MemoryBus, StartSaga};
use sagaflow_http::{HttpParticipants, HttpService};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request a participant received.
#[derive(Debug, Clone)]
struct Received {
    command: String,
    headers: HeaderMap,
    body: Value,
    at: Instant,
}

type Behaviour = Arc<dyn Fn(&Received, usize) -> Response + Send + Sync>;

#[derive(Clone)]
struct Participant {
    seen: Arc<Mutex<Vec<Received>>>,
    behaviour: Behaviour,
    running: Arc<AtomicUsize>,
    most_running: Arc<AtomicUsize>,
    work: Duration,
}

impl Participant {
    fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

/// An HTTP participant on a free loopback port; `behaviour` answers each request (it is
/// given the request and how many came before).
async fn participant(
    work: Duration,
    behaviour: impl Fn(&Received, usize) -> Response + Send + Sync + 'static,
) -> (String, Participant) {
    let p = Participant {
        seen: Arc::default(),
        behaviour: Arc::new(behaviour),
        running: Arc::default(),
        most_running: Arc::default(),
        work,
    };
    async fn handle(
        State(p): State<Participant>,
        Path(command): Path<String>,
        headers: HeaderMap,
        body: String,
    ) -> Response {
        let now = p.running.fetch_add(1, Ordering::SeqCst) + 1;
        p.most_running.fetch_max(now, Ordering::SeqCst);
        let received = Received {
            command,
            headers,
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
            at: Instant::now(),
        };
        let before = {
            let mut seen = p.seen.lock().unwrap();
            seen.push(received.clone());
            seen.len() - 1
        };
        if !p.work.is_zero() {
            tokio::time::sleep(p.work).await;
        }
        p.running.fetch_sub(1, Ordering::SeqCst);
        (p.behaviour)(&received, before)
    }
    let app = Router::new()
        .route("/{command}", post(handle))
        .with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, p)
}

/// A participant that reads the request and answers with `raw` bytes, then (for a slow
/// one) dribbles `trickle` one byte every 200 ms.
async fn raw_participant(raw: Vec<u8>, trickle: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let raw = raw.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                if trickle {
                    for b in raw {
                        if socket.write_all(&[b]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                } else {
                    let _ = socket.write_all(&raw).await;
                    let _ = socket.shutdown().await;
                }
            });
        }
    });
    url
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

struct Rig {
    engine: Engine,
    transport: Arc<HttpParticipants>,
    _dir: tempfile::TempDir,
    store: Arc<dyn sagaflow_core::Store>,
}

async fn rig(defs: Vec<Definition>, services: Vec<HttpService>, redeliver_ms: i64) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store: Arc<dyn sagaflow_core::Store> =
        Arc::new(sagaflow_sqlite::SqliteStore::open(&url).await.unwrap());
    let (engine, transport) = engine_on(store.clone(), defs, services, redeliver_ms).await;
    Rig {
        engine,
        transport,
        _dir: dir,
        store,
    }
}

async fn engine_on(
    store: Arc<dyn sagaflow_core::Store>,
    defs: Vec<Definition>,
    services: Vec<HttpService>,
    redeliver_ms: i64,
) -> (Engine, Arc<HttpParticipants>) {
    let bus: Arc<dyn Transport> = Arc::new(MemoryBus::new());
    let transport = Arc::new(
        HttpParticipants::new(bus, services)
            .unwrap()
            .answer_limit(64 * 1024),
    );
    let mut builder = Engine::builder(store, transport.clone()).config(EngineConfig {
        redeliver_after_ms: redeliver_ms,
        poll_ms: 50,
        ..EngineConfig::default()
    });
    for d in defs {
        builder = builder.register(d);
    }
    (builder.start().await.unwrap(), transport)
}

impl Rig {
    async fn start(&self, def: &str, input: Value) -> SagaId {
        self.engine
            .start_saga(
                StartSaga::new(def, input)
                    .request_id("req-42")
                    .traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            )
            .await
            .unwrap()
            .saga_id
    }
}

/// Waits until the saga ends (or `within` passes) and returns its status.
async fn ended(engine: &Engine, id: &SagaId, within: Duration) -> Status {
    let deadline = Instant::now() + within;
    loop {
        let status = engine.saga(id).await.unwrap().unwrap().status;
        if status.is_end() || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn events(engine: &Engine, id: &SagaId) -> Vec<Event> {
    engine
        .journal(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        initial_delay_ms: 10,
        max_delay_ms: 50,
        jitter: 0.0,
        ..RetryPolicy::default()
    }
}

fn order() -> Definition {
    Definition::builder("order", 1)
        .step(Step::compensatable("reserve", "stock.reserve", "stock.release").retry(quick(3)))
        .step(Step::compensatable("charge", "billing.charge", "billing.refund").retry(quick(3)))
        .step(Step::pivot("ship", "delivery.ship").retry(quick(3)))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_runs_over_http_with_the_protocol_on_every_call() {
    let ok = |r: &Received, _: usize| match r.command.as_str() {
        "charge" => json_response(
            StatusCode::OK,
            json!({"charged": r.body["context"]["amount"]}),
        ),
        "ship" => StatusCode::NO_CONTENT.into_response(),
        _ => json_response(StatusCode::OK, json!({"reserved": true})),
    };
    let (stock_url, stock) = participant(Duration::ZERO, ok).await;
    let (billing_url, billing) = participant(Duration::ZERO, ok).await;
    let (delivery_url, delivery) = participant(Duration::ZERO, ok).await;
    let rig = rig(
        vec![order()],
        vec![
            HttpService::new("stock", &stock_url).unwrap(),
            HttpService::new("billing", &format!("{billing_url}/")).unwrap(),
            HttpService::new("delivery", &delivery_url).unwrap(),
        ],
        10_000,
    )
    .await;
    let id = rig.start("order", json!({"amount": 30})).await;
    assert_eq!(
        ended(&rig.engine, &id, Duration::from_secs(20)).await,
        Status::Completed
    );
    let saga = rig.engine.saga(&id).await.unwrap().unwrap();
    assert_eq!(
        saga.context["charged"], 30,
        "the answer is the step's output"
    );
    assert_eq!(saga.context["reserved"], true);

    let calls = billing.received();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.command, "charge");
    let key = format!("{id}:charge:1:action");
    let h = |n: &str| {
        call.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    assert_eq!(h("idempotency-key"), key);
    assert_eq!(h("x-request-id"), "req-42");
    assert!(h("traceparent").starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    assert_eq!(h("ce-specversion"), "1.0");
    assert_eq!(h("ce-id"), key);
    assert_eq!(h("ce-type"), "io.sagaflow.command");
    assert_eq!(h("ce-subject"), "billing.charge");
    assert_eq!(h("content-type"), "application/json");
    let body = &call.body;
    assert_eq!(body["saga_id"], id.0.as_str());
    assert_eq!(body["definition"], "order");
    assert_eq!(body["version"], 1);
    assert_eq!(body["step"], 1);
    assert_eq!(body["step_name"], "charge");
    assert_eq!(body["attempt"], 1);
    assert_eq!(body["phase"], "action");
    assert_eq!(body["command"], "charge");
    assert_eq!(body["key"], key.as_str());
    assert_eq!(body["context"]["amount"], 30);
    assert_eq!(stock.received().len(), 1);
    assert_eq!(delivery.received().len(), 1);
    let health = rig.transport.endpoints();
    assert_eq!(health.len(), 3);
    assert!(health
        .iter()
        .all(|e| e.circuit == CircuitState::Closed && e.calls == 1));
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_rejects_and_compensates_newest_first_with_the_problem_detail() {
    let (url, p) = participant(Duration::ZERO, |r, _| match r.command.as_str() {
        "ship" => json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"type": "about:blank", "title": "No", "detail": "no courier goes there"}),
        ),
        _ => StatusCode::OK.into_response(),
    })
    .await;
    let services = ["stock", "billing", "delivery"]
        .iter()
        .map(|s| HttpService::new(s, &url).unwrap())
        .collect();
    let rig = rig(vec![order()], services, 10_000).await;
    let id = rig.start("order", json!({})).await;
    assert_eq!(
        ended(&rig.engine, &id, Duration::from_secs(20)).await,
        Status::Compensated
    );
    let commands: Vec<String> = p.received().iter().map(|r| r.command.clone()).collect();
    assert_eq!(commands, ["reserve", "charge", "ship", "refund", "release"]);
    let rejected = events(&rig.engine, &id)
        .await
        .into_iter()
        .find_map(|e| match e {
            Event::StepRejected { reason, .. } => Some(reason),
            _ => None,
        });
    assert_eq!(rejected.as_deref(), Some("no courier goes there"));
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_no_sooner_than_its_retry_after() {
    let (url, p) = participant(Duration::ZERO, |_, before| {
        if before == 0 {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "1")],
                "down for maintenance",
            )
                .into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let def = Definition::builder("one", 1)
        .step(Step::pivot("go", "svc.go").retry(quick(3)))
        .build()
        .unwrap();
    let rig = rig(
        vec![def],
        vec![HttpService::new("svc", &url).unwrap()],
        10_000,
    )
    .await;
    let id = rig.start("one", json!({})).await;
    assert_eq!(
        ended(&rig.engine, &id, Duration::from_secs(20)).await,
        Status::Completed
    );
    let calls = p.received();
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at - calls[0].at;
    // The policy alone would retry after 10 ms.
    assert!(gap >= Duration::from_millis(1000), "retried after {gap:?}");
    let failed = events(&rig.engine, &id)
        .await
        .into_iter()
        .find_map(|e| match e {
            Event::AttemptFailed { error, .. } => Some(error),
            _ => None,
        });
    let failed = failed.expect("the first attempt failed");
    assert!(
        failed.contains("503") && failed.contains("maintenance"),
        "{failed}"
    );
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_are_failed_attempts_with_the_reason_never_a_stuck_saga() {
    let big = {
        let mut r = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10485760\r\n\r\n".to_vec();
        r.extend(std::iter::repeat_n(b' ', 10 * 1024 * 1024));
        r
    };
    // (service, its URL, what the error says, whether the call may have taken effect)
    let cases: Vec<(&str, String, &str, bool)> = vec![
        (
            "garbage",
            raw_participant(b"\x00\x01not http at all\r\n\r\n".to_vec(), false).await,
            "cannot call garbage",
            true,
        ),
        ("big", raw_participant(big, false).await, "larger than 65536 bytes", true),
        (
            "slow",
            raw_participant(
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"a\": 1                          }".to_vec(),
                true,
            )
            .await,
            "no complete answer within 500 ms",
            true,
        ),
        (
            "redirect",
            raw_participant(
                b"HTTP/1.1 302 Found\r\nlocation: http://elsewhere.example/\r\ncontent-length: 0\r\n\r\n"
                    .to_vec(),
                false,
            )
            .await,
            "redirect to http://elsewhere.example/",
            false,
        ),
        (
            "html",
            raw_participant(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 17\r\n\r\n<html>oops</html>"
                    .to_vec(),
                false,
            )
            .await,
            "not JSON",
            true,
        ),
        (
            "refused",
            format!("http://127.0.0.1:{}", closed_port()),
            "cannot call refused",
            false,
        ),
    ];
    let mut defs = Vec::new();
    let mut services = Vec::new();
    for (name, url, _, _) in &cases {
        defs.push(
            Definition::builder(name, 1)
                .step(Step::pivot("go", &format!("{name}.go")).retry(quick(2)))
                .build()
                .unwrap(),
        );
        services.push(
            HttpService::new(name, url)
                .unwrap()
                .timeout_ms(500)
                .unwrap(),
        );
    }
    let rig = rig(defs, services, 10_000).await;
    for (name, _, says, maybe) in &cases {
        let id = rig.start(name, json!({})).await;
        let status = ended(&rig.engine, &id, Duration::from_secs(30)).await;
        // A pivot that may have happened cannot be undone: the saga waits for an operator
        // (failed) instead of claiming it compensated.
        let honest = if *maybe {
            Status::Failed
        } else {
            Status::Compensated
        };
        assert_eq!(status, honest, "{name}");
        let failed: Vec<(String, bool)> = events(&rig.engine, &id)
            .await
            .into_iter()
            .filter_map(|e| match e {
                Event::AttemptFailed {
                    error, maybe_done, ..
                } => Some((error, maybe_done)),
                _ => None,
            })
            .collect();
        assert!(
            failed.iter().all(|(_, m)| m == maybe),
            "{name}: maybe_done should be {maybe}: {failed:?}"
        );
        let errors: Vec<String> = failed.into_iter().map(|(e, _)| e).collect();
        assert!(
            !errors.is_empty(),
            "{name}: no failed attempt in the journal"
        );
        assert!(
            errors.iter().all(|e| e.contains(says)),
            "{name}: {errors:?} should say {says:?}"
        );
    }
    rig.engine.shutdown().await;
}

/// One pivot step, `svc.go`.
fn one_pivot() -> Definition {
    Definition::builder("one", 1)
        .step(Step::pivot("go", "svc.go"))
        .build()
        .unwrap()
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stay_within_max_in_flight() {
    let (url, p) = participant(Duration::from_millis(20), |_, _| {
        StatusCode::OK.into_response()
    })
    .await;
    let def = one_pivot();
    let service = HttpService::new("svc", &url)
        .unwrap()
        .max_in_flight(2)
        .unwrap();
    let rig = rig(vec![def], vec![service], 10_000).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(rig.start("one", json!({})).await);
    }
    for id in &ids {
        assert_eq!(
            ended(&rig.engine, id, Duration::from_secs(30)).await,
            Status::Completed
        );
    }
    assert_eq!(p.received().len(), 20);
    let most = p.most_running.load(Ordering::SeqCst);
    assert!((1..=2).contains(&most), "{most} calls ran at once");
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_service_opens_its_circuit_and_the_saga_finishes_once_it_is_back() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let (url, p) = participant(Duration::ZERO, move |_, _| {
        if flag.load(Ordering::SeqCst) {
            StatusCode::OK.into_response()
        } else {
            StatusCode::BAD_GATEWAY.into_response()
        }
    })
    .await;
    let def = Definition::builder("one", 1)
        .step(Step::pivot("go", "svc.go").retry(quick(1000)))
        .build()
        .unwrap();
    let rig = rig(vec![def], vec![HttpService::new("svc", &url).unwrap()], 300).await;
    let id = rig.start("one", json!({})).await;
    let t = rig.transport.clone();
    wait_for("the circuit to open", Duration::from_secs(20), || {
        t.endpoints()[0].circuit == CircuitState::Open
    })
    .await;
    let health = &rig.transport.endpoints()[0];
    assert!(health.consecutive_failures >= sagaflow_http::breaker::OPEN_AFTER);
    assert!(health.last_error.as_deref().unwrap_or("").contains("502"));
    // Calls so far; from here on only probes get through until one succeeds.
    let calls_when_open = p.received().len();
    healthy.store(true, Ordering::SeqCst);
    assert_eq!(
        ended(&rig.engine, &id, Duration::from_secs(30)).await,
        Status::Completed
    );
    assert_eq!(rig.transport.endpoints()[0].circuit, CircuitState::Closed);
    // After the circuit opened, only the probes reached the service (at most a few), while
    // the step had a thousand attempts to spend.
    assert!(
        p.received().len() <= calls_when_open + 3,
        "{} calls",
        p.received().len()
    );
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_is_asked_again_under_the_same_key_and_answered_by_key() {
    let (url, p) = participant(Duration::ZERO, |_, _| StatusCode::ACCEPTED.into_response()).await;
    let def = Definition::builder("one", 1)
        .step(Step::compensatable("hold", "svc.hold", "svc.unhold"))
        .step(Step::pivot("go", "other.go"))
        .build()
        .unwrap();
    let rig = rig(
        vec![def],
        vec![
            HttpService::new("svc", &url).unwrap(),
            HttpService::new("other", &url).unwrap(),
        ],
        300,
    )
    .await;
    let id = rig.start("one", json!({})).await;
    wait_for(
        "the command to be asked again",
        Duration::from_secs(20),
        || p.received().len() >= 2,
    )
    .await;
    let keys: Vec<String> = p
        .received()
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_string())
        .collect();
    let key = format!("{id}:hold:1:action");
    assert!(keys.iter().all(|k| *k == key), "{keys:?}");
    assert_eq!(
        rig.engine.saga(&id).await.unwrap().unwrap().status,
        Status::Running
    );
    // Unknown and superseded keys change nothing.
    let e = rig
        .engine
        .answer(&format!("{id}:nope:1:action"), Outcome::ok(Value::Null))
        .await
        .unwrap_err();
    assert!(
        matches!(e, sagaflow_engine::EngineError::UnknownKey { .. }),
        "{e}"
    );
    let e = rig
        .engine
        .answer(&format!("{id}:hold:2:action"), Outcome::ok(Value::Null))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("never sent"), "{e}");
    rig.engine
        .answer(&key, Outcome::ok(json!({"held": true})))
        .await
        .unwrap();
    let e = rig
        .engine
        .answer(&key, Outcome::ok(Value::Null))
        .await
        .unwrap_err();
    assert!(
        matches!(e, sagaflow_engine::EngineError::NotAwaited { .. }),
        "{e}"
    );
    // `other.go` answers 202 as well; reject it by key and the hold is undone.
    let go = format!("{id}:go:1:action");
    wait_for("the next command", Duration::from_secs(20), || {
        p.received().iter().any(|r| r.command == "go")
    })
    .await;
    rig.engine
        .answer(&go, Outcome::rejected("no"))
        .await
        .unwrap();
    wait_for("the compensation", Duration::from_secs(20), || {
        p.received().iter().any(|r| r.command == "unhold")
    })
    .await;
    rig.engine
        .answer(
            &format!("{id}:hold:1:compensation"),
            Outcome::ok(Value::Null),
        )
        .await
        .unwrap();
    assert_eq!(
        ended(&rig.engine, &id, Duration::from_secs(20)).await,
        Status::Compensated
    );
    assert_eq!(
        rig.engine.saga(&id).await.unwrap().unwrap().context["held"],
        true
    );
    rig.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_sends_the_same_key_again() {
    // The participant takes the command and never answers in time: the engine dies meanwhile.
    let (url, p) = participant(Duration::from_secs(30), |_, _| {
        StatusCode::OK.into_response()
    })
    .await;
    let def = one_pivot();
    let rig = rig(
        vec![def.clone()],
        vec![HttpService::new("svc", &url).unwrap()],
        300,
    )
    .await;
    let id = rig.start("one", json!({})).await;
    wait_for("the first call", Duration::from_secs(20), || {
        !p.received().is_empty()
    })
    .await;
    rig.engine.abort();
    drop(rig.transport);
    // A new process: its own transport, the same database.
    let (url2, p2) = participant(Duration::ZERO, |_, _| StatusCode::OK.into_response()).await;
    let (engine, _t) = engine_on(
        rig.store.clone(),
        vec![def],
        vec![HttpService::new("svc", &url2).unwrap()],
        300,
    )
    .await;
    assert_eq!(
        ended(&engine, &id, Duration::from_secs(30)).await,
        Status::Completed
    );
    let first = p.received()[0].headers["idempotency-key"].clone();
    let again = p2.received()[0].headers["idempotency-key"].clone();
    assert_eq!(first, again, "the same command, the same key");
    assert_eq!(first.to_str().unwrap(), format!("{id}:go:1:action"));
    engine.shutdown().await;
}
