//! `GET /api/v1/participants`: the participant endpoints sagaflow calls itself (services
//! bound to an HTTP URL), each with its circuit breaker and counters.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ApiState;

/// One HTTP participant endpoint (the core's `EndpointHealth`, described for OpenAPI).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Participant)]
pub(crate) struct ParticipantDoc {
    /// The service (commands `service.*`).
    pub service: String,
    /// Its base URL.
    pub url: String,
    /// `closed` (calls go through), `open` (it kept failing: no calls until the cool-down
    /// ends) or `half_open` (one probe call decides).
    pub circuit: String,
    /// Calls under way now.
    pub in_flight: usize,
    /// Calls allowed at once.
    pub max_in_flight: usize,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Calls made since this process started.
    pub calls: u64,
    /// Of those, failures.
    pub failures: u64,
    /// The newest failure's reason.
    pub last_error: Option<String>,
}

/// The HTTP participants and their health.
#[utoipa::path(
    get,
    path = "/api/v1/participants",
    tag = "participants",
    responses((status = 200, description = "Every service bound to a URL, by name", body = [ParticipantDoc]))
)]
pub(crate) async fn list(State(state): State<ApiState>) -> Json<Vec<ParticipantDoc>> {
    Json(
        state
            .engine
            .transport()
            .endpoints()
            .into_iter()
            .map(|e| ParticipantDoc {
                service: e.service,
                url: e.url,
                circuit: e.circuit.as_str().to_string(),
                in_flight: e.in_flight,
                max_in_flight: e.max_in_flight,
                consecutive_failures: e.consecutive_failures,
                calls: e.calls,
                failures: e.failures,
                last_error: e.last_error,
            })
            .collect(),
    )
}
