//! `GET /api/v1/flows/{correlation_id}`: a choreographed flow as one timeline.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiPath, ApiQuery};
use crate::problem::Problem;
use crate::ApiState;

/// One thing that happened in a flow.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlowEntryView {
    /// When (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub at: String,
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
    /// What happened, oldest first (one page).
    pub entries: Vec<FlowEntryView>,
    /// Pass as `offset` for the next page; null on the last page.
    pub next_offset: Option<u64>,
}

/// Most entries on one page, and the default.
const MAX_LIMIT: usize = 1000;

/// Paging of `GET /flows/{correlation_id}`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlowQuery {
    /// Entries on the page, 1 to 1000 (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Entries to skip: the previous page's `next_offset`.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub offset: Option<String>,
}

/// A choreographed flow: every event emitted and every handling, by correlation id.
#[utoipa::path(
    get,
    path = "/api/v1/flows/{correlation_id}",
    tag = "flows",
    params(("correlation_id" = String, Path, description = "The flow's correlation id"), FlowQuery),
    responses(
        (status = 200, description = "The flow's timeline, a page at a time (empty when nothing was recorded under this id)", body = FlowView),
        (status = 400, description = "Bad limit or offset", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store does not answer", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn show(
    State(state): State<ApiState>,
    ApiPath(correlation_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<FlowQuery>,
) -> Result<Json<FlowView>, Problem> {
    let limit = crate::extract::page_limit(query.limit.as_deref(), MAX_LIMIT, MAX_LIMIT)?;
    let offset = match &query.offset {
        None => 0,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n >= 0 => n as u64,
            _ => {
                return Err(Problem::bad_filter(
                    "offset",
                    format!("{text:?} is not a whole number from 0 to {}", i64::MAX),
                ))
            }
        },
    };
    let page = state
        .engine
        .flow_page(&correlation_id, offset, limit)
        .await?;
    let next_offset = (page.len() == limit).then(|| offset + limit as u64);
    let entries = page
        .into_iter()
        .map(|e| FlowEntryView {
            at: crate::times::rfc3339(e.at),
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
        next_offset,
    }))
}
