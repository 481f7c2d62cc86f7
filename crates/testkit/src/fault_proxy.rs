//! A small TCP fault proxy for tests: clients connect to the proxy instead of the server (a
//! broker, PostgreSQL), and the test cuts, delays or resets what goes through.
//!
//! - [`FaultProxy::reset`] aborts every open connection with a TCP reset;
//! - [`FaultProxy::cut`] resets them and refuses new ones (each is reset at once) until
//!   [`FaultProxy::restore`];
//! - [`FaultProxy::delay`] holds every chunk of data, both ways, for a while before passing it on;
//! - [`FaultProxy::hold`] stops passing data on (a network partition, as TCP sees one: the
//!   connections stay open and nothing arrives) until [`FaultProxy::restore`], which lets
//!   what was held through.
//!
//! It runs on a thread of its own, so it keeps working whatever the test's runtime does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct State {
    cut: AtomicBool,
    held: AtomicBool,
    released: tokio::sync::Notify,
    delay_ms: AtomicU64,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, AbortHandle>>,
    accepted: AtomicU64,
}

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    /// The port clients connect to.
    pub port: u16,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> FaultProxy {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = std_listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                    tokio::select! {
                        _ = accept_loop(listener, target_port, thread_state) => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .expect("spawn the fault proxy thread");
        FaultProxy {
            port,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Aborts every open connection with a reset; new ones are let through.
    pub fn reset(&self) {
        let open: Vec<AbortHandle> = self
            .state
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in open {
            h.abort();
        }
    }

    /// Resets every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.reset();
    }

    /// Lets connections through again, without delay, and releases what was held.
    pub fn restore(&self) {
        self.state.delay_ms.store(0, Ordering::SeqCst);
        self.state.cut.store(false, Ordering::SeqCst);
        self.state.held.store(false, Ordering::SeqCst);
        self.state.released.notify_waiters();
    }

    /// Stops passing data on, both ways, keeping every connection open, until
    /// [`restore`](Self::restore).
    pub fn hold(&self) {
        self.state.held.store(true, Ordering::SeqCst);
    }

    /// Holds each chunk of data for `by` before passing it on (zero: no delay).
    pub fn delay(&self, by: Duration) {
        self.state
            .delay_ms
            .store(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// How many connections the proxy accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// How many connections are open now.
    pub fn open_connections(&self) -> usize {
        self.state
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, target_port: u16, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        // A reset rather than a polite close: that is what a dead peer looks like.
        let _ = client.set_zero_linger();
        if state.cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let id = state.next_id.fetch_add(1, Ordering::SeqCst);
        let conn_state = state.clone();
        let task = tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await {
                let _ = server.set_zero_linger();
                let _ = server.set_nodelay(true);
                let _ = client.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::select! {
                    _ = pump(cr, sw, &conn_state) => {}
                    _ = pump(sr, cw, &conn_state) => {}
                }
            }
            conn_state
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
        state
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, task.abort_handle());
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: &State,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while state.held.load(Ordering::SeqCst) {
            let released = state.released.notified();
            if !state.held.load(Ordering::SeqCst) {
                break;
            }
            released.await;
        }
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if state.cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn echo_server() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    fn round_trip(port: u16) -> std::io::Result<Vec<u8>> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    }

    #[test]
    fn passes_cuts_restores_and_resets() {
        let proxy = FaultProxy::start(echo_server());
        assert_eq!(round_trip(proxy.port).unwrap(), b"ping");

        let mut held = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        held.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        held.read_exact(&mut buf).unwrap();
        proxy.cut();
        assert!(
            round_trip(proxy.port).is_err(),
            "a new connection is refused while cut"
        );
        let after_cut = held.write_all(b"ping").and_then(|_| held.read(&mut buf));
        assert!(
            matches!(after_cut, Err(_) | Ok(0)),
            "an open connection is reset by a cut: {after_cut:?}"
        );

        proxy.restore();
        assert_eq!(round_trip(proxy.port).unwrap(), b"ping");

        proxy.delay(Duration::from_millis(200));
        let started = std::time::Instant::now();
        assert_eq!(round_trip(proxy.port).unwrap(), b"ping");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "both ways delayed"
        );
        proxy.delay(Duration::ZERO);
        assert!(proxy.accepted() >= 4);

        // Held: the connection stays open, nothing arrives; restored, it all comes through.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        proxy.hold();
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        assert!(s.read_exact(&mut buf).is_err(), "nothing passes while held");
        proxy.restore();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping", "what was held comes through");
    }
}
