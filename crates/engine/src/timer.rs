//! The timer loop: claims due timers (leased, so engines sharing a database never fire one
//! twice at once) and hands them to the decision loop. It sleeps until the next timer is due,
//! and wakes early when a decision sets an earlier one or another process signals.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sagaflow_core::Input;
use tokio::sync::{mpsc, watch};

use crate::applier::Work;
use crate::engine::Shared;

const CLAIM_BATCH: usize = 1000;
/// A due timer that is still leased (being handled) is looked at again this soon.
const LEASED_RECHECK_MS: i64 = 50;

pub(crate) async fn run(
    shared: Arc<Shared>,
    work: mpsc::Sender<Work>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        // Any timer set from here on wakes us (see `Shared::timer_set`).
        shared.next_timer_wake.store(i64::MAX, Ordering::Release);
        let now = shared.now();
        let claimed = shared
            .store
            .claim_timers(
                now,
                &shared.config.owner,
                shared.config.timer_lease_ms,
                CLAIM_BATCH,
            )
            .await;
        let mut full = false;
        match claimed {
            Ok(rows) => {
                full = rows.len() == CLAIM_BATCH;
                for row in rows {
                    let item = Work::Input {
                        saga_id: row.saga_id,
                        input: Input::Timer(row.kind),
                        fired: Some(row.slot),
                        origin: None,
                        respond: None,
                        retries: 0,
                    };
                    if work.send(item).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "claiming timers failed"),
        }
        if full {
            continue;
        }
        let poll = shared.config.poll_ms as i64;
        let next = shared.store.next_timer_at().await.ok().flatten();
        let now = shared.now();
        let wake = match next {
            Some(at) if at <= now => now + LEASED_RECHECK_MS,
            Some(at) => at.min(now + poll),
            None => now + poll,
        };
        shared.next_timer_wake.store(wake, Ordering::Release);
        let sleep = Duration::from_millis((wake - now).max(1) as u64);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shared.timer_wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}
