//! `POST /api/v1/replies`: a participant's answer to one command, by its idempotency key —
//! for a participant that answered a command over HTTP with 202, or received it from a
//! broker and prefers to answer over HTTP.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sagaflow_engine::core::Outcome;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::extract::ApiJson;
use crate::problem::Problem;
use crate::ApiState;

/// What happened to the command. Unknown fields are ignored, as everywhere in the wire
/// protocol, so a newer participant does not break an older engine.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ReplyRequest {
    /// The command's idempotency key, as it came (`Idempotency-Key`, or the payload's `key`).
    #[schema(min_length = 1, example = "0192f3c1-…:charge:1:action")]
    pub key: String,
    /// `succeeded`, `failed`, `rejected` (a business "no": compensate now) or `park` (wait
    /// for a signal, then attempt again).
    pub outcome: ReplyOutcome,
    /// For `succeeded`: the step's output (an object's keys are merged into the context).
    #[serde(default)]
    pub output: Value,
    /// For `failed` and `rejected`: why (`error`, as the broker reply names it, is taken
    /// too).
    #[serde(default, alias = "error")]
    pub reason: Option<String>,
    /// For `failed`: whether trying again might help (default true).
    #[serde(default)]
    pub retryable: Option<bool>,
    /// For `failed`: do not retry sooner than this many milliseconds.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// For `failed`: the action may have taken effect all the same, so the step is
    /// compensated should it be given up (default false).
    #[serde(default)]
    pub maybe_done: bool,
    /// For `park`: the signal that wakes the step (any signal when absent).
    #[serde(default)]
    pub until: Option<String>,
    /// For `park`: give up waiting after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The four answers.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplyOutcome {
    /// Done.
    Succeeded,
    /// Not done because of an error.
    Failed,
    /// A business refusal.
    Rejected,
    /// Wait for a signal.
    Park,
}

/// The answer was taken.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplyResponse {
    /// The saga it answered.
    pub saga_id: String,
    /// The saga's status after the answer.
    pub status: String,
}

/// Answers one command.
#[utoipa::path(
    post,
    path = "/api/v1/replies",
    tag = "replies",
    request_body = ReplyRequest,
    responses(
        (status = 202, description = "The answer was decided on", body = ReplyResponse),
        (status = 400, description = "Malformed JSON, or a field that does not fit the outcome", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The key names no command sagaflow sent (`unknown_key`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The command's attempt no longer waits for an answer: answered, timed out, superseded or the saga ended (`not_awaited`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body does not fit", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn answer(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<ReplyRequest>,
) -> Result<(StatusCode, Json<ReplyResponse>), Problem> {
    let bad = |detail: &str| Problem::new(StatusCode::BAD_REQUEST, "bad_reply", detail);
    if body.key.is_empty() || body.key.contains('\0') {
        return Err(bad("key must be the command's idempotency key"));
    }
    let outcome = match body.outcome {
        ReplyOutcome::Succeeded => Outcome::ok(body.output),
        ReplyOutcome::Failed => Outcome::Failed {
            error: body.reason.unwrap_or_else(|| "no reason given".to_string()),
            retryable: body.retryable.unwrap_or(true),
            retry_after_ms: body.retry_after_ms,
            maybe_done: body.maybe_done,
        },
        ReplyOutcome::Rejected => Outcome::rejected(
            body.reason
                .ok_or_else(|| bad("a rejection needs a reason (compensations follow it)"))?,
        ),
        ReplyOutcome::Park => Outcome::Park {
            until: body.until,
            timeout_ms: body.timeout_ms,
        },
    };
    let saga = state.engine.answer(&body.key, outcome).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplyResponse {
            saga_id: saga.saga_id.0,
            status: saga.status.to_string(),
        }),
    ))
}
