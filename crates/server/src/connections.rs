//! The HTTP connections `serve` accepts: HTTP/1.1 on hyper, with the limit a server facing
//! strangers needs — a client that does not finish its request headers in time, or keeps an
//! idle connection open past it, is disconnected (no slow-loris) — and a graceful stop that
//! lets requests in hand finish.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long a client has to send a request's headers (and how long a kept-alive connection
/// may sit idle before its next request).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long requests in hand may take to finish once the server is asked to stop.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` resolves, then waits (at most [`DRAIN`]) for the
/// connections to finish the requests they are in.
pub async fn serve(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) {
    serve_with(listener, app, stop, HEADER_READ_TIMEOUT).await
}

/// [`serve`] with a header timeout of its own (for tests).
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
    header_read_timeout: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still busy {DRAIN:?} after the stop was asked for; closing them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_disconnected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(
            listener,
            app,
            async {
                let _ = stop_rx.await;
            },
            Duration::from_millis(300),
        ));

        // A whole request is answered.
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        ok.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
            "{answer}"
        );

        // Half a request, then silence: the server hangs up (the read ends) within the
        // timeout and a margin, instead of holding the connection for ever.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        // Ok (closed) or a reset: either way it ended, rather than hitting the deadline.
        let _ended = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest))
            .await
            .expect("the server closed the slow connection");
        let shown = String::from_utf8_lossy(&rest);
        assert!(!shown.contains("hello"), "{shown}");

        // A kept-alive connection left idle after its request is closed too.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ended = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut got))
            .await
            .expect("the server closed the idle connection");
        assert!(String::from_utf8_lossy(&got).ends_with("hello"));

        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops")
            .unwrap();
    }
}
