//! A real engine on a temporary SQLite file, an in-process `shop` participant whose
//! behaviour each saga's input controls, and helpers to call the router with `oneshot`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use sagaflow_api::{app, ApiConfig, ApiState};
use sagaflow_engine::core::{Definition, Outcome, Phase, RetryPolicy, Step, Store, Transport};
use sagaflow_engine::{
    CommandCall, Engine, EngineConfig, MemoryBus, Participant, ParticipantHandle,
};
use serde_json::Value;
use tower::ServiceExt;

/// reserve (compensatable) → charge (compensatable) → ship (pivot) → notify (retriable),
/// correlated by the input's `customer`.
pub fn order() -> Definition {
    let quick = RetryPolicy {
        max_attempts: 3,
        initial_delay_ms: 10,
        multiplier: 2.0,
        max_delay_ms: 100,
        jitter: 0.0,
    };
    Definition::builder("order", 1)
        .step(Step::compensatable("reserve", "shop.reserve", "shop.release").retry(quick.clone()))
        .step(Step::compensatable("charge", "shop.charge", "shop.refund").retry(quick.clone()))
        .step(Step::pivot("ship", "shop.ship").retry(quick.clone()))
        .step(Step::retriable("notify", "shop.notify").retry(quick))
        .correlation_key("customer")
        .build()
        .expect("a valid definition")
}

/// The input says what to do: `reject`: the step that says no; `park`: the step that waits
/// for signal `go` (until the context has `go`); otherwise every step succeeds.
async fn shop(call: CommandCall) -> Outcome {
    let ctx = &call.context;
    let step = call.step.as_str();
    if call.phase == Phase::Action {
        if ctx["reject"].as_str() == Some(step) {
            return Outcome::rejected(format!("{step} says no"));
        }
        if ctx["park"].as_str() == Some(step) && ctx["go"].is_null() {
            return Outcome::park("go");
        }
    }
    let phase = call.phase.as_str();
    Outcome::ok(serde_json::json!({ format!("{step}_{phase}"): true }))
}

fn shop_participant() -> Participant {
    ["reserve", "release", "charge", "refund", "ship", "notify"]
        .into_iter()
        .fold(Participant::new("shop"), |p, cmd| p.on(cmd, shop))
}

/// One response, its body read as JSON (`Value::Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The `code` of a problem response, checking it is one.
    pub fn code(&self) -> &str {
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "not a problem: {self:?}"
        );
        assert_eq!(
            self.body["status"].as_u64(),
            Some(u64::from(self.status.as_u16()))
        );
        self.body["code"].as_str().unwrap_or_default()
    }

    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }
}

pub struct Api {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub bus: Arc<MemoryBus>,
    pub app: Router,
    participant: Option<ParticipantHandle>,
    _dir: tempfile::TempDir,
}

impl Api {
    pub async fn start() -> Api {
        Api::with_config(ApiConfig::default()).await
    }

    pub async fn with_config(config: ApiConfig) -> Api {
        Api::with_transport(config, |bus| bus).await
    }

    /// The engine publishes through what `wrap` makes of the bus (the participant still
    /// consumes the bus itself).
    pub async fn with_transport(
        config: ApiConfig,
        wrap: impl FnOnce(Arc<dyn Transport>) -> Arc<dyn Transport>,
    ) -> Api {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("api.db");
        let store: Arc<dyn Store> = Arc::new(
            sagaflow_sqlite::SqliteStore::open(&format!("sqlite://{}", path.display()))
                .await
                .expect("open sqlite"),
        );
        let bus = Arc::new(MemoryBus::new());
        let participant = shop_participant()
            .start(store.clone(), bus.clone())
            .await
            .expect("participant starts");
        let engine = Engine::builder(store.clone(), wrap(bus.clone()))
            .config(EngineConfig {
                redeliver_after_ms: 500,
                timer_lease_ms: 500,
                poll_ms: 100,
                ..EngineConfig::default()
            })
            .register(order())
            .start()
            .await
            .expect("engine starts");
        let app = app(ApiState {
            engine: engine.clone(),
            config,
        });
        Api {
            engine,
            store,
            bus,
            app,
            participant: Some(participant),
            _dir: dir,
        }
    }

    /// The status, headers and raw body of the router's answer.
    pub async fn send_raw(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, headers, bytes.to_vec())
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let (status, headers, bytes) = self.send_raw(request).await;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(Request::get(uri).body(Body::empty()).expect("request"))
            .await
    }

    pub async fn post(&self, uri: &str, body: Value) -> Reply {
        self.send(json_request(Method::POST, uri, &body)).await
    }

    pub async fn post_empty(&self, uri: &str) -> Reply {
        self.send(Request::post(uri).body(Body::empty()).expect("request"))
            .await
    }

    pub async fn delete(&self, uri: &str) -> Reply {
        self.send(Request::delete(uri).body(Body::empty()).expect("request"))
            .await
    }

    /// Starts an `order` saga with this input; returns its id.
    pub async fn start_order(&self, input: Value) -> String {
        let reply = self
            .post(
                "/api/v1/sagas",
                serde_json::json!({"definition": "order", "input": input}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
        reply.body["saga_id"].as_str().expect("saga_id").to_string()
    }

    /// Polls `GET /sagas/{id}` until its status is `status` (deadline 10 s).
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_until(id, status, |s| s["status"] == status).await
    }

    /// Polls `GET /sagas/{id}` until `done` holds (deadline 10 s).
    pub async fn wait_until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let reply = self.get(&format!("/api/v1/sagas/{id}")).await;
            if reply.status == StatusCode::OK && done(&reply.body) {
                return reply.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "saga {id} never became {what}: {:?}",
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(mut self) {
        self.engine.shutdown().await;
        if let Some(p) = self.participant.take() {
            p.shutdown().await;
        }
    }
}

pub fn json_request(method: Method, uri: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("request")
}

pub fn raw_request(
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: &str,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    builder.body(Body::from(body.to_string())).expect("request")
}
