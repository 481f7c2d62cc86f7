//! The outbox relay: publishes committed outbox rows. Rows this engine just committed arrive
//! straight from the decision loop; rows whose lease expired (the reply never came, or their
//! engine died) and rows an API-only process committed for the engines to publish are
//! claimed from the store — when the store says another process committed some
//! (LISTEN/NOTIFY on PostgreSQL), and at least every `poll_ms` for expired leases.

use std::sync::Arc;
use std::time::Duration;

use sagaflow_core::OutboxRow;
use tokio::sync::{mpsc, watch};

use crate::engine::Shared;

const CLAIM_BATCH: usize = 1000;
/// Publishes awaiting the broker's acknowledgement at once.
const PUBLISH_CONCURRENCY: usize = 256;

pub(crate) async fn relay(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Vec<OutboxRow>>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = Duration::from_millis(
        shared
            .config
            .poll_ms
            .min((shared.config.redeliver_after_ms / 2).max(10) as u64),
    );
    let mut next_claim = tokio::time::Instant::now();
    let mut stopping = false;
    loop {
        tokio::select! {
            rows = rx.recv() => match rows {
                Some(rows) => publish(&shared, rows, None).await,
                // The decision loop has stopped: everything it committed is published.
                None => return,
            },
            _ = tokio::time::sleep_until(next_claim), if !stopping && shared.config.claims => {
                claim(&shared).await;
                next_claim = tokio::time::Instant::now() + interval;
            }
            _ = shared.outbox_wake.notified(), if !stopping && shared.config.claims => {
                claim(&shared).await;
            }
            _ = stop.changed(), if !stopping => stopping = true,
        }
    }
}

/// Publishes rows. A row first goes out under its idempotency key as message id; one claimed
/// again (at `claimed_at`) is meant as a second delivery, so it goes out under a fresh id
/// that a broker's de-duplication does not swallow.
async fn publish(shared: &Arc<Shared>, rows: Vec<OutboxRow>, claimed_at: Option<i64>) {
    use futures_util::StreamExt;
    // A broker acknowledges each publish after a round trip: keep many in flight at once
    // (on this task: no task per message).
    futures_util::stream::iter(rows)
        .for_each_concurrent(PUBLISH_CONCURRENCY, |row| async move {
            let id = match claimed_at {
                None => row.key.clone(),
                Some(at) => format!("{}#{at}", row.key),
            };
            if let Err(e) = shared.transport.publish(&row.topic, &id, row.body).await {
                // The row stays in the outbox; it is published again when its lease expires.
                tracing::warn!(key = %row.key, error = %e, "publish failed");
            }
        })
        .await;
}

async fn claim(shared: &Arc<Shared>) {
    loop {
        let now = shared.now();
        let rows = match shared
            .store
            .claim_outbox(
                now,
                &shared.config.owner,
                shared.config.redeliver_after_ms,
                CLAIM_BATCH,
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "claiming outbox rows failed");
                return;
            }
        };
        let full = rows.len() == CLAIM_BATCH;
        if !rows.is_empty() {
            tracing::debug!(count = rows.len(), "republishing unresolved outbox rows");
        }
        publish(shared, rows, Some(now)).await;
        if !full {
            return;
        }
    }
}
