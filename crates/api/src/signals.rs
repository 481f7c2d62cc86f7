//! `POST /api/v1/signals`: wake parked sagas, one by id or every one with a correlation key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sagaflow_engine::core::SagaId;
use sagaflow_engine::SignalTarget;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::extract::ApiJson;
use crate::problem::Problem;
use crate::ApiState;

/// The body of `POST /signals`: exactly one of `saga_id` and `correlation_key`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// The signal's name (a parked step may wait for one name only).
    #[schema(min_length = 1)]
    pub name: String,
    /// The one saga to signal.
    #[serde(default)]
    pub saga_id: Option<String>,
    /// Signal every waiting saga with this correlation key.
    #[serde(default)]
    pub correlation_key: Option<String>,
    /// Merged into the saga context (an object's keys; any other value under the signal's
    /// name).
    #[serde(default)]
    pub payload: Value,
}

/// The sagas a signal woke.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignalResponse {
    /// Their ids.
    pub reached: Vec<String>,
}

/// Wakes parked sagas.
#[utoipa::path(
    post,
    path = "/api/v1/signals",
    tag = "signals",
    request_body = SignalRequest,
    responses(
        (status = 202, description = "The sagas woken (for a correlation key, possibly none)", body = SignalResponse),
        (status = 400, description = "Not exactly one of saga_id and correlation_key, or malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The saga is not waiting (`not_waiting`) or waits for another signal (`other_signal`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body does not fit", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn send(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<SignalRequest>,
) -> Result<(StatusCode, Json<SignalResponse>), Problem> {
    let target = match (body.saga_id, body.correlation_key) {
        (Some(id), None) => SignalTarget::Saga(SagaId(id)),
        (None, Some(key)) => SignalTarget::Correlation(key),
        _ => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "bad_signal_target",
                "give exactly one of saga_id (one saga) and correlation_key (every waiting saga with that key)",
            ))
        }
    };
    if body.name.is_empty() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "bad_signal_name",
            "the signal name must not be empty",
        ));
    }
    let reached = state
        .engine
        .signal(target, &body.name, body.payload)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SignalResponse {
            reached: reached.into_iter().map(|id| id.0).collect(),
        }),
    ))
}
