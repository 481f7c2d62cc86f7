//! The caller a saga is started for: the request id and W3C trace context of the request
//! being served. The HTTP edge sets them around each request ([`serve_for`]), and
//! [`Engine::start_saga`](crate::Engine::start_saga) takes from them what a start leaves
//! unset. So every route that starts a saga — the API's and every app's — carries its
//! caller's `X-Request-ID` and `traceparent` into the saga's messages without passing them
//! by hand.

use std::future::Future;

/// Who a request is served for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The request's `X-Request-ID`.
    pub request_id: Option<String>,
    /// The request's W3C `traceparent`.
    pub traceparent: Option<String>,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Runs `work` (a request's handling) for `caller`. Tasks it spawns are on their own.
pub async fn serve_for<F: Future>(caller: Caller, work: F) -> F::Output {
    CALLER.scope(caller, work).await
}

/// The caller of the request being served here, if any.
pub(crate) fn current() -> Option<Caller> {
    CALLER.try_with(Caller::clone).ok()
}
