//! RFC 9457 problem details: every error the API returns, with a stable `code` per kind so
//! clients branch on the code, never on the wording.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sagaflow_engine::core::{Refusal, StoreError};
use sagaflow_engine::EngineError;
use serde::Serialize;
use utoipa::ToSchema;

/// What a client is told of a database failure: the database's own words (table names,
/// values, server versions) stay in the server's log, under the request's id.
pub const HIDDEN_STORE_ERROR: &str = "the database failed while serving this request; the server's log has the cause under this request's X-Request-ID";

/// The media type of problem responses.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem: what went wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:sagaflow:problem:{code}`).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary of the kind of problem; the same for every occurrence of it.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What happened this time, and what to change.
    pub detail: String,
    /// The stable machine-readable code (snake_case), e.g. `saga_not_found`.
    pub code: String,
    /// Sent as `Retry-After` (seconds), not in the body.
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    /// A problem with this status, code and detail; the title comes from the status.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: format!("urn:sagaflow:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_string(),
            retry_after_secs: None,
        }
    }

    /// The same, telling the client to try again after `secs` seconds (`Retry-After`).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 400 `bad_filter`: a list parameter that cannot be used, named in the detail.
    pub fn bad_filter(parameter: &str, why: impl std::fmt::Display) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad_filter",
            format!("query parameter `{parameter}`: {why}"),
        )
    }

    /// 404 `saga_not_found`.
    pub fn saga_not_found(id: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "saga_not_found",
            format!("no saga has id {id:?}"),
        )
    }

    /// The HTTP status as a `StatusCode` (500 if it somehow is not one).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after_secs;
        let mut response = (status, axum::Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<Refusal> for Problem {
    fn from(refusal: Refusal) -> Self {
        let code = match &refusal {
            Refusal::AlreadyEnded { .. } => "already_ended",
            Refusal::PivotPassed { .. } => "pivot_passed",
            Refusal::NothingToResume { .. } => "nothing_to_resume",
            Refusal::NotWaiting { .. } => "not_waiting",
            Refusal::OtherSignal { .. } => "other_signal",
            Refusal::MalformedReply { .. } => "refused",
        };
        Problem::new(StatusCode::CONFLICT, code, refusal.to_string())
    }
}

impl From<EngineError> for Problem {
    fn from(error: EngineError) -> Self {
        let detail = error.to_string();
        match error {
            EngineError::UnknownDefinition { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "definition_not_found", detail)
            }
            EngineError::InvalidDefinition(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_definition",
                detail,
            ),
            EngineError::DefinitionChanged { .. } => {
                Problem::new(StatusCode::CONFLICT, "definition_conflict", detail)
            }
            EngineError::NotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "saga_not_found", detail)
            }
            EngineError::Refused(refusal) => refusal.into(),
            EngineError::UnknownKey { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "unknown_key", detail)
            }
            EngineError::NotAwaited { .. } => {
                Problem::new(StatusCode::CONFLICT, "not_awaited", detail)
            }
            EngineError::Store(StoreError::Unavailable(_)) => {
                tracing::error!(error = %detail, "the store is unavailable while serving a request");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    HIDDEN_STORE_ERROR,
                )
            }
            // The store refused the input itself: the message says what to change.
            EngineError::Store(StoreError::Invalid(_)) => {
                Problem::new(StatusCode::CONFLICT, "store_refused", detail)
            }
            EngineError::Store(_) => {
                tracing::error!(error = %detail, "store error while serving a request");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    HIDDEN_STORE_ERROR,
                )
            }
            EngineError::Transport(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transport_unavailable",
                detail,
            ),
            EngineError::Contended(_) => Problem::new(StatusCode::CONFLICT, "contended", detail),
            EngineError::ShuttingDown => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", detail)
            }
            EngineError::MissingDefinitions(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "missing_definitions",
                detail,
            ),
        }
    }
}

/// The router's fallback: a path no route matches.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no endpoint at {}; the API lives under /api/v1 (see /api/v1/openapi.json)",
            uri.path()
        ),
    )
}

/// A route that exists, asked with a method it does not take.
pub(crate) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not accept {method}; see /api/v1/openapi.json for the methods it takes",
            uri.path()
        ),
    )
}
