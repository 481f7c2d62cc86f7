//! `/healthz` (the process answers) and `/readyz` (the store answers too).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::Problem;
use crate::ApiState;

/// A health answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

/// Liveness: the process is up and serving.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "Up", body = Health))
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The store does not answer or the engine is shutting down", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn readyz(State(state): State<ApiState>) -> Result<Json<Health>, Problem> {
    match state.engine.ready().await {
        Ok(()) => Ok(Json(Health {
            status: "ready".into(),
        })),
        Err(error) => {
            let problem = Problem::from(error);
            // Whatever the cause, a load balancer should read "not ready", not "bad request".
            if problem.status == StatusCode::SERVICE_UNAVAILABLE.as_u16() {
                Err(problem)
            } else {
                Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    problem.detail,
                ))
            }
        }
    }
}
