//! The sagaflow HTTP API under `/api/v1`: start, inspect and steer sagas, signals,
//! definitions and dead letters, plus `/healthz`, `/readyz` and the OpenAPI document.
//!
//! [`app`] builds the router; the server mounts it. Every error is an RFC 9457
//! `application/problem+json` body with a stable `code` ([`Problem`]).

mod auth;
mod dashboard;
mod dead_letters;
mod deadline;
mod definitions;
mod docs;
mod extract;
mod flows;
mod health;
mod metrics;
mod openapi;
mod origin;
mod participants;
mod problem;
mod replies;
mod request_id;
mod routes;
mod sagas;
mod signals;
mod times;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use sagaflow_engine::Engine;

pub use auth::{authorize, hash_key, parse_sha256_hex, to_hex, ApiKey, Right, Rights, X_API_KEY};
pub use extract::parse_json;
pub use openapi::openapi;
pub use origin::LOOPBACK_HOSTS;
pub use problem::{Problem, HIDDEN_STORE_ERROR, PROBLEM_JSON};
pub use request_id::{RequestId, X_REQUEST_ID};
pub use routes::{Access, AppRoutes, RouteRule, Routes};
pub use sagas::traceparent;
pub use times::{parse_utc, rfc3339, utc_time};

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Request bodies larger than this are refused with 413 `body_too_large`.
    pub body_limit_bytes: usize,
    /// API keys. Empty: everything is open. Otherwise GET needs `read`, other methods `operate`;
    /// health, readiness, metrics and the OpenAPI document stay open.
    pub keys: Vec<ApiKey>,
    /// With keys configured, leave GET endpoints open to anyone.
    pub read_open: bool,
    /// The host names requests may name; `None`: any. A server open on loopback without
    /// keys sets [`LOOPBACK_HOSTS`], so a page elsewhere cannot reach it through a DNS name
    /// it points at 127.0.0.1.
    pub allowed_hosts: Option<Vec<String>>,
    /// A request not received and answered within this is answered 408 (a body trickled
    /// in, a handler stuck); its connection is freed.
    pub request_timeout: std::time::Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            body_limit_bytes: 1024 * 1024,
            keys: Vec::new(),
            read_open: false,
            allowed_hosts: None,
            request_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// What the handlers share: the engine and the settings.
#[derive(Clone)]
pub struct ApiState {
    /// The engine requests are served by.
    pub engine: Engine,
    /// HTTP settings.
    pub config: ApiConfig,
}

impl ApiState {
    /// State with the default settings.
    pub fn new(engine: Engine) -> Self {
        ApiState {
            engine,
            config: ApiConfig::default(),
        }
    }
}

/// The router of a process without the API (an engine-only process): health, readiness and
/// metrics, for the supervisor and the scraper.
pub fn ops_app(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(axum::middleware::from_fn(request_id::propagate))
        .with_state(state)
}

/// The API router, ready to serve (e.g. `axum::serve(listener, app(state))`).
pub fn app(state: ApiState) -> Router {
    app_with(state, AppRoutes::none())
}

/// The API router with the apps' routes beside it, all behind one edge: request ids, the
/// body limit and the API-key check apply to every route, and an app route asks for no key
/// only where its table says so ([`Access`]).
pub fn app_with(state: ApiState, apps: AppRoutes) -> Router {
    let limit = state.config.body_limit_bytes;
    let auth = auth::Auth::new(
        state.config.keys.clone(),
        state.config.read_open,
        apps.table(),
    );
    let origins = origin::Origins::new(apps.table(), state.config.allowed_hosts.clone());
    let request_timeout = state.config.request_timeout;
    // Full paths rather than `nest`, so the 405 fallback below reaches every route.
    Router::new()
        .route("/api/v1/sagas", post(sagas::start).get(sagas::list))
        .route("/api/v1/sagas/{id}", get(sagas::show))
        .route("/api/v1/sagas/{id}/history", get(sagas::history))
        .route("/api/v1/sagas/{id}/journal", get(sagas::journal))
        .route("/api/v1/sagas/{id}/cancel", post(sagas::cancel))
        .route("/api/v1/sagas/{id}/resume", post(sagas::resume))
        .route("/api/v1/signals", post(signals::send))
        .route("/api/v1/replies", post(replies::answer))
        .route("/api/v1/participants", get(participants::list))
        .route(
            "/api/v1/definitions",
            get(definitions::list).post(definitions::register),
        )
        .route("/api/v1/definitions/{name}", get(definitions::versions))
        .route("/api/v1/flows/{correlation_id}", get(flows::show))
        .route("/api/v1/dead-letters", get(dead_letters::list))
        .route("/api/v1/dead-letters/{id}", delete(dead_letters::discard))
        .route(
            "/api/v1/dead-letters/{id}/replay",
            post(dead_letters::replay),
        )
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .merge(docs::routes())
        .merge(dashboard::routes())
        .with_state(state)
        .merge(apps.router)
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(extract::refuse_nul))
        .layer(axum::middleware::from_fn_with_state(auth, auth::require))
        .layer(axum::middleware::from_fn_with_state(origins, origin::guard))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            deadline::bound,
        ))
        .layer(axum::middleware::from_fn(request_id::propagate))
}
