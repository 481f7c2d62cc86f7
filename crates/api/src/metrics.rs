//! `/metrics`: the engine's counters and the store's gauges in the Prometheus text format.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;
use crate::ApiState;

/// The Prometheus text exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Sagas started and ended, step attempts by outcome, saga and step durations, sagas by status, outbox and timer lag, dead letters", content_type = "text/plain"),
        (status = 503, description = "The store does not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn metrics(State(state): State<ApiState>) -> Result<Response, Problem> {
    let text = state.engine.metrics_text().await.map_err(Problem::from)?;
    Ok(([(CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response())
}
