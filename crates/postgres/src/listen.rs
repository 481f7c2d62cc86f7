//! Waking engines in other processes. A commit that leaves timers or outbox rows behind
//! sends a NOTIFY (see `commit`); each store LISTENs on one dedicated connection, owned by
//! a background task started by the first `wakeup()` and kept until the store is dropped.
//!
//! A notification that arrives while nobody waits is kept as pending, so the next `wakeup()`
//! returns at once: waking needlessly costs one empty claim, missing a wakeup costs latency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::migrate::fnv1a;

/// The NOTIFY channel of stores without a schema of their own.
const CHANNEL: &str = "sagaflow_wakeup";

/// PostgreSQL refuses longer channel names.
const MAX_CHANNEL: usize = 63;

/// Reconnecting the listener waits this long at first, doubling up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The channel for a schema: stores in different schemas must not wake each other.
pub(crate) fn channel_name(schema: Option<&str>) -> String {
    match schema {
        None => CHANNEL.to_string(),
        Some(schema) => {
            let name = format!("{CHANNEL}.{schema}");
            if name.len() <= MAX_CHANNEL {
                name
            } else {
                format!("{CHANNEL}.{:016x}", fnv1a(schema.as_bytes()))
            }
        }
    }
}

/// A payload unique to this store instance, so its listener can skip its own notifications.
pub(crate) fn instance_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}-{nanos:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The waiting side of `Store::wakeup`.
#[derive(Default)]
pub(crate) struct Wakeup {
    signal: Arc<Signal>,
    listener: OnceLock<AbortOnDrop>,
}

/// What the listener task tells waiters.
#[derive(Default)]
struct Signal {
    notify: Notify,
    /// A notification arrived since a `wakeup()` last returned.
    pending: AtomicBool,
}

impl Signal {
    /// Another process committed something: wake the waiters, and the next one to come.
    fn wake(&self) {
        self.pending.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// Stops the listener task when the store goes away.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Wakeup {
    /// Resolves when another store committed timers or outbox rows on `channel`, or when the
    /// listener (re)connected and so may have missed some.
    pub(crate) async fn wait(&self, pool: &PgPool, channel: &str, instance: &str) {
        let notified = self.signal.notify.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before `pending` is checked, so a wake in between is not lost.
        notified.as_mut().enable();
        self.listener.get_or_init(|| {
            AbortOnDrop(tokio::spawn(listen(
                pool.clone(),
                channel.to_string(),
                instance.to_string(),
                Arc::clone(&self.signal),
            )))
        });
        if self.signal.pending.swap(false, Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}

/// The listener task: LISTEN, pass notifications on, reconnect when the connection drops.
async fn listen(pool: PgPool, channel: String, instance: String, signal: Arc<Signal>) {
    let mut backoff = MIN_BACKOFF;
    let mut first = true;
    loop {
        let mut listener = match subscribe(&pool, &channel).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "cannot LISTEN for wakeups; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        if first {
            // Whoever started the listener may have missed commits made before it listened;
            // nobody else was owed anything yet, so nothing stays pending.
            signal.notify.notify_waiters();
            first = false;
        } else {
            signal.wake();
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if notification.payload() != instance {
                        signal.wake();
                    }
                }
                // The connection dropped and sqlx listened again on a new one; whatever was
                // sent in between is lost, so assume something was.
                Ok(None) => signal.wake(),
                Err(e) => {
                    tracing::warn!(error = %e, "wakeup listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn subscribe(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}
