//! Every request's deadline: a request not answered within [`ApiConfig::request_timeout`]
//! (its body still trickling in, or its handler still waiting) is answered 408
//! `request_timeout` and its connection freed. With hyper's header-read timeout (the
//! headers, and an idle kept-alive connection) no client holds a connection for ever.
//!
//! [`ApiConfig::request_timeout`]: crate::ApiConfig::request_timeout

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;

/// Middleware: answers 408 once `limit` has passed. What the handler had committed by then
/// stays committed (a start with an `Idempotency-Key` can be asked again).
pub(crate) async fn bound(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request was not received and answered within {} s",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}
