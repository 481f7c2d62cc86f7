//! `X-Request-ID`: taken from the request (or made up), recorded on the saga a request
//! starts (through any route: the id and `traceparent` are the engine's
//! [`Caller`] while the request is served), and echoed on every response so a caller can
//! find its request in the logs.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use sagaflow_engine::caller::Caller;

/// The header's name.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id accepted from a caller; longer ones are replaced, not echoed.
const MAX_LEN: usize = 200;

/// This request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Middleware: puts a [`RequestId`] in the request's extensions and the header on the
/// response.
pub(crate) async fn propagate(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| acceptable(s))
        .map(str::to_string)
        .unwrap_or_else(fresh);
    req.extensions_mut().insert(RequestId(id.clone()));
    // A saga any route starts while serving it carries its ids in every message.
    let caller = Caller {
        request_id: Some(id.clone()),
        traceparent: crate::sagas::traceparent(req.headers()),
    };
    // Whatever is logged while serving it names the request, so a client's X-Request-ID
    // finds the cause of an error it was only told the id of.
    // At error level, so the id is on every error line whatever the log filter lets by.
    let span = tracing::error_span!("request", request_id = %id);
    let handled = tracing::Instrument::instrument(next.run(req), span);
    let mut response = sagaflow_engine::caller::serve_for(caller, handled).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// Visible ASCII only and not too long: the id goes into logs and every saga message.
fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn fresh() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        // Outside the middleware (a handler mounted elsewhere) there is still an id.
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(fresh())))
    }
}
