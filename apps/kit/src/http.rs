//! What the apps' HTTP endpoints share: problem+json for store and engine failures and bad
//! requests, and query parameters that explain themselves when wrong.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use sagaflow_api::Problem;
use sagaflow_core::StoreError;
use sagaflow_engine::EngineError;
use serde::de::DeserializeOwned;
use serde::Deserialize;

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

/// `?limit=N&offset=M`: a page of a list endpoint.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// Rows to show.
    pub limit: Option<i64>,
    /// Rows to skip: 0 or more, default 0.
    pub offset: Option<i64>,
}

impl Page {
    /// `(limit, offset)`, for `LIMIT $n OFFSET $m`, with `limit` from 1 to `max` (`default`
    /// when not given); 400 `bad_parameter` naming the parameter when it is out of range
    /// (one that is not a number is refused by [`Params`]).
    pub fn bounds(&self, default: i64, max: i64) -> Result<(i64, i64), Problem> {
        let limit = self.limit.unwrap_or(default);
        if !(1..=max).contains(&limit) {
            return Err(bad_request(
                "bad_parameter",
                format!("limit must be from 1 to {max}, got {limit}"),
            ));
        }
        let offset = self.offset.unwrap_or(0);
        if offset < 0 {
            return Err(bad_request(
                "bad_parameter",
                format!("offset must be 0 or more, got {offset}"),
            ));
        }
        Ok((limit, offset))
    }
}
