//! What the apps' HTTP endpoints share: problem+json for store and engine failures and bad
//! requests, and query parameters that explain themselves when wrong.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use sagaflow_api::Problem;
use sagaflow_core::StoreError;
use sagaflow_engine::EngineError;
use serde::de::DeserializeOwned;

/// A store failure as a 503 problem.
pub fn store_problem(e: StoreError) -> Problem {
    tracing::error!(error = %e, "the app's database failed while serving a request");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        sagaflow_api::HIDDEN_STORE_ERROR,
    )
}

/// An engine failure as a problem.
pub fn engine_problem(e: EngineError) -> Problem {
    match e {
        EngineError::Store(e) => store_problem(e),
        other => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "engine_error",
            other.to_string(),
        ),
    }
}

/// 400 with a code and a message.
pub fn bad_request(code: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, code, detail)
}

/// A query string read into `T`; anything wrong is 400 with what was expected.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|e| bad_request("bad_parameter", e.body_text()))
    }
}
