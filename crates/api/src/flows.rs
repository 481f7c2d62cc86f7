//! `GET /api/v1/flows/{correlation_id}`: a choreographed flow as one timeline.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::extract::ApiPath;
use crate::problem::Problem;
use crate::ApiState;

/// One thing that happened in a flow.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlowEntryView {
    /// When (unix ms).
    pub at: i64,
    /// The service that emitted or handled the event.
    pub service: String,
    /// The event's name.
    pub event: String,
    /// The event's message id.
    pub message_id: String,
    /// The message that caused it.
    pub causation_id: Option<String>,
    /// `emitted`, `handled`, `failed` (to be retried), `dead_lettered`, `compensated` or
    /// `duplicate`.
    pub outcome: String,
    /// The handler's attempt (0 for an emission).
    pub attempt: i64,
    /// The error, the next attempt, or what a compensation did.
    pub detail: Option<String>,
}

/// A flow's timeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlowView {
    /// The flow's correlation id.
    pub correlation_id: String,
    /// What happened, oldest first.
    pub entries: Vec<FlowEntryView>,
}

/// A choreographed flow: every event emitted and every handling, by correlation id.
#[utoipa::path(
    get,
    path = "/api/v1/flows/{correlation_id}",
    tag = "flows",
    params(("correlation_id" = String, Path, description = "The flow's correlation id")),
    responses(
        (status = 200, description = "The flow's timeline (empty when nothing was recorded under this id)", body = FlowView),
        (status = 503, description = "The store does not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn show(
    State(state): State<ApiState>,
    ApiPath(correlation_id): ApiPath<String>,
) -> Result<Json<FlowView>, Problem> {
    let entries = state
        .engine
        .flow(&correlation_id)
        .await?
        .into_iter()
        .map(|e| FlowEntryView {
            at: e.at,
            service: e.service,
            event: e.event,
            message_id: e.message_id,
            causation_id: e.causation_id,
            outcome: e.outcome,
            attempt: e.attempt,
            detail: e.detail,
        })
        .collect();
    Ok(Json(FlowView {
        correlation_id,
        entries,
    }))
}
