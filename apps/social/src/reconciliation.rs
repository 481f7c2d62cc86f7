//! Reconciliation: recomputes every unread counter from the committed messages, repairs the
//! ones that drifted (an operator's manual increment, a bug), writes every counter to the
//! cache (newer versions only, so a cache write lost while Redis was unreachable is repaired
//! too), and reports the drift it found — exported as the metrics
//! `sagaflow_social_counter_drift` (the last run) and `sagaflow_social_counter_drift_total`.
//!
//! A counter whose dialog has something in flight to that user (a message not yet committed
//! or failed, a read not yet settled) is left for the next run: its count is legitimately
//! between two values. Each repair happens in a transaction of its own that first takes the
//! counter's row, so a concurrent increment or decrement queues behind it and lands on the
//! repaired value.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sagaflow_app_kit::sql::{in_tx, int, read, text};
use sagaflow_core::{Store, StoreError};
use serde::Serialize;

use crate::cache::UnreadCache;
use crate::counters::current;

/// What one run found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Counters looked at.
    pub checked: u64,
    /// Counters set to their recomputed value.
    pub repaired: u64,
    /// The sum of |counter − recomputed| over the repaired counters.
    pub drift: i64,
    /// Counters left for the next run because their dialog had something in flight.
    pub skipped: u64,
}

type Pair = (String, String);

/// Runs reconciliation once.
pub async fn reconcile(store: &Arc<dyn Store>, cache: &UnreadCache) -> Result<Report, StoreError> {
    let mut expected: BTreeMap<Pair, (String, i64)> = BTreeMap::new();
    for r in read(
        store,
        "SELECT recipient_id, dialog_id, sender_id, COUNT(*) FROM social_messages \
         WHERE state = 'committed' AND read_state IS NULL GROUP BY recipient_id, dialog_id, sender_id",
        &[],
    )
    .await?
    {
        expected.insert((text(&r, 0), text(&r, 1)), (text(&r, 2), int(&r, 3)));
    }
    let mut pairs: BTreeMap<Pair, (String, i64)> = BTreeMap::new();
    let mut by_user: BTreeMap<String, Vec<crate::cache::Counter>> = BTreeMap::new();
    for r in read(
        store,
        "SELECT user_id, dialog_id, partner_id, unread, version FROM social_counters_unread",
        &[],
    )
    .await?
    {
        pairs.insert((text(&r, 0), text(&r, 1)), (text(&r, 2), int(&r, 3)));
        by_user
            .entry(text(&r, 0))
            .or_default()
            .push(crate::cache::Counter {
                dialog_id: text(&r, 1),
                partner_id: text(&r, 2),
                unread: int(&r, 3),
                version: int(&r, 4),
            });
    }
    // The cache follows the database: entries that missed a write catch up (an older
    // version than the cached one changes nothing).
    for (user, counters) in &by_user {
        cache.merge(user, counters, false).await;
    }
    let mut report = Report::default();
    let mut keys: Vec<Pair> = pairs.keys().cloned().collect();
    keys.extend(expected.keys().filter(|k| !pairs.contains_key(*k)).cloned());
    for pair in keys {
        report.checked += 1;
        let have = pairs.get(&pair).map_or(0, |p| p.1);
        let want = expected.get(&pair).map_or(0, |e| e.1);
        if have == want {
            continue;
        }
        let partner = pairs
            .get(&pair)
            .or_else(|| expected.get(&pair))
            .map(|p| p.0.clone())
            .unwrap_or_default();
        match repair(store, &pair, &partner).await? {
            Repair::Skipped => report.skipped += 1,
            Repair::Agreed => {}
            Repair::Set { drift, counter } => {
                report.repaired += 1;
                report.drift += drift;
                cache.merge(&pair.0, &[counter], false).await;
            }
        }
    }
    Ok(report)
}

enum Repair {
    Skipped,
    Agreed,
    Set {
        drift: i64,
        counter: crate::cache::Counter,
    },
}

/// Recounts one counter with its row held, and sets it.
async fn repair(store: &Arc<dyn Store>, pair: &Pair, partner: &str) -> Result<Repair, StoreError> {
    let (user, dialog, partner) = (pair.0.clone(), pair.1.clone(), partner.to_string());
    in_tx(store, move |tx| {
        Box::pin(async move {
            // Takes the row (a no-op update) so changes to it wait for this transaction.
            tx.execute(
                "UPDATE social_counters_unread SET version = version WHERE user_id = $1 AND dialog_id = $2",
                &[user.as_str().into(), dialog.as_str().into()],
            )
            .await?;
            // One statement, one snapshot: what is in flight and what is committed are read
            // together, so nothing can move between the two.
            let rows = tx
                .query(
                    "SELECT COALESCE(SUM(CASE WHEN state = 'pending' OR read_state LIKE 'reading:%' THEN 1 ELSE 0 END), 0), \
                            COALESCE(SUM(CASE WHEN state = 'committed' AND read_state IS NULL THEN 1 ELSE 0 END), 0) \
                     FROM social_messages WHERE recipient_id = $1 AND dialog_id = $2",
                    &[user.as_str().into(), dialog.as_str().into()],
                )
                .await?;
            let (in_flight, want) = rows
                .first()
                .map_or((0, 0), |r| (int(r, 0), int(r, 1)));
            if in_flight > 0 {
                return Ok(Repair::Skipped);
            }
            let have = current(tx, &user, &dialog).await?.map_or(0, |c| c.unread);
            if have == want {
                return Ok(Repair::Agreed);
            }
            tx.execute(
                "INSERT INTO social_counters_unread (user_id, dialog_id, partner_id, unread, version) VALUES ($1, $2, $3, $4, 1) \
                 ON CONFLICT (user_id, dialog_id) DO UPDATE SET unread = $4, version = social_counters_unread.version + 1",
                &[user.as_str().into(), dialog.as_str().into(), partner.into(), want.into()],
            )
            .await?;
            let counter = current(tx, &user, &dialog).await?.unwrap_or_default();
            tracing::warn!(user, dialog, have, want, "unread counter drifted; repaired");
            Ok(Repair::Set {
                drift: (have - want).abs(),
                counter,
            })
        })
    })
    .await
}

/// The drift metrics, kept in the engine's registry.
pub struct DriftMetrics {
    last: Arc<std::sync::atomic::AtomicI64>,
    total: Arc<std::sync::atomic::AtomicI64>,
    repaired: Arc<std::sync::atomic::AtomicI64>,
}

impl DriftMetrics {
    /// Registers them with the engine's metrics.
    pub fn new(metrics: &sagaflow_engine::Metrics) -> Self {
        DriftMetrics {
            last: metrics.app_metric(
                "sagaflow_social_counter_drift",
                "Unread-counter drift the last reconciliation found (sum of |counter - recomputed|).",
                "gauge",
            ),
            total: metrics.app_metric(
                "sagaflow_social_counter_drift_total",
                "Unread-counter drift found by every reconciliation since start.",
                "counter",
            ),
            repaired: metrics.app_metric(
                "sagaflow_social_counters_repaired_total",
                "Unread counters reconciliation set to their recomputed value.",
                "counter",
            ),
        }
    }

    /// Records a run.
    pub fn record(&self, report: &Report) {
        self.last.store(report.drift, Ordering::Relaxed);
        self.total.fetch_add(report.drift, Ordering::Relaxed);
        self.repaired
            .fetch_add(report.repaired as i64, Ordering::Relaxed);
    }
}

/// Takes (or keeps) the lease on the background run for `lease_ms`: of the processes that
/// run the job, one at a time does. True when this process holds it.
async fn lease(store: &Arc<dyn Store>, owner: &str, lease_ms: i64) -> Result<bool, StoreError> {
    let (owner, now) = (owner.to_string(), sagaflow_app_kit::sql::now_ms());
    in_tx(store, move |tx| {
        Box::pin(async move {
            let held = tx
                .execute(
                    "INSERT INTO social_jobs (name, owner, until) VALUES ('reconciliation', $1, $2) \
                     ON CONFLICT (name) DO UPDATE SET owner = $1, until = $2 \
                     WHERE social_jobs.until < $3 OR social_jobs.owner = $1",
                    &[owner.into(), (now + lease_ms).into(), now.into()],
                )
                .await?;
            Ok(held > 0)
        })
    })
    .await
}

/// Runs reconciliation every `every` in the background — in one process at a time, which
/// holds a lease on it (renewed each run, lost when it stops renewing).
pub fn spawn(
    store: Arc<dyn Store>,
    cache: UnreadCache,
    metrics: DriftMetrics,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let owner = uuid::Uuid::new_v4().to_string();
    let lease_ms = (every.as_millis() as i64).saturating_mul(2).max(1_000);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match lease(&store, &owner, lease_ms).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reconciliation lease unavailable; trying at the next tick");
                    continue;
                }
            }
            match reconcile(&store, &cache).await {
                Ok(report) => metrics.record(&report),
                Err(e) => {
                    tracing::warn!(error = %e, "reconciliation failed; trying at the next tick")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_process_at_a_time_holds_the_lease_until_it_lapses() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store: Arc<dyn Store> =
            Arc::new(sagaflow_sqlite::SqliteStore::open(&url).await.unwrap());
        crate::prepare(&store, crate::SocialConfig::default())
            .await
            .unwrap();
        assert!(
            lease(&store, "a", 60_000).await.unwrap(),
            "the first takes it"
        );
        assert!(
            !lease(&store, "b", 60_000).await.unwrap(),
            "the second waits"
        );
        assert!(
            lease(&store, "a", -1).await.unwrap(),
            "the holder renews (here: into the past)"
        );
        assert!(
            lease(&store, "b", 60_000).await.unwrap(),
            "a lapsed lease is taken over"
        );
        assert!(!lease(&store, "a", 60_000).await.unwrap());
    }
}
