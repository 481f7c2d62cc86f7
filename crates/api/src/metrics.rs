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
    let mut text = state.engine.metrics_text().await.map_err(Problem::from)?;
    endpoint_series(&mut text, &state.engine.transport().endpoints());
    Ok(([(CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response())
}

/// A series' name, type, help and value of one endpoint.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&sagaflow_engine::core::EndpointHealth) -> String,
);

/// The HTTP participants' series: calls, failures, calls under way, and whether the circuit
/// is open (1) — for an alert on a participant that keeps failing.
fn endpoint_series(text: &mut String, endpoints: &[sagaflow_engine::core::EndpointHealth]) {
    use std::fmt::Write;
    if endpoints.is_empty() {
        return;
    }
    let series: [Series; 4] = [
        (
            "sagaflow_http_participant_calls_total",
            "counter",
            "Calls made to an HTTP participant",
            |e| e.calls.to_string(),
        ),
        (
            "sagaflow_http_participant_failures_total",
            "counter",
            "Calls that failed: refused, timed out, 429, 5xx or an unreadable answer",
            |e| e.failures.to_string(),
        ),
        (
            "sagaflow_http_participant_in_flight",
            "gauge",
            "Calls under way",
            |e| e.in_flight.to_string(),
        ),
        (
            "sagaflow_http_participant_circuit_open",
            "gauge",
            "1 while the circuit breaker keeps calls away (open or half-open)",
            |e| u8::from(e.circuit != sagaflow_engine::core::CircuitState::Closed).to_string(),
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for e in endpoints {
            let service = e.service.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(text, "{name}{{service=\"{service}\"}} {}", value(e));
        }
    }
}
