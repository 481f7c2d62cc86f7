//! Gauges for the metrics endpoint: one statement, so every number comes from the same
//! snapshot, in one round trip.

use sagaflow_core::{Millis, Status, StoreError, StoreStats};
use sqlx::PgPool;

use crate::error::{corrupt_number, store_error};

/// Sagas by definition and status (as three parallel arrays, NULL when there are none), the
/// oldest outbox lease end, the outbox rows, the earliest time a timer is claimable, and the
/// dead letters.
///
/// A timer is claimable from the later of its fire time and its lease end. Two index
/// lookups find the earliest, as in `next_timer_at`: among timers unleased or leased no
/// later than they fire (by fire time), and among timers leased past their fire time (by
/// lease end).
const STATS: &str = "WITH groups AS (
         SELECT definition, status, count(*) AS n FROM sagas GROUP BY definition, status
     )
     SELECT array_agg(definition), array_agg(status), array_agg(n),
         (SELECT min(lease_until) FROM outbox),
         (SELECT count(*) FROM outbox),
         (SELECT min(at) FROM (
             (SELECT fire_at AS at FROM timers
              WHERE lease_until IS NULL OR lease_until <= fire_at
              ORDER BY fire_at LIMIT 1)
             UNION ALL
             (SELECT lease_until AS at FROM timers
              WHERE lease_until IS NOT NULL AND lease_until > fire_at
              ORDER BY lease_until LIMIT 1)
         ) AS next),
         (SELECT count(*) FROM dead_letters)
     FROM groups";

type Row = (
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<i64>>,
    Option<i64>,
    i64,
    Option<i64>,
    i64,
);

/// The store's gauges at `now`.
pub(crate) async fn stats(pool: &PgPool, now: Millis) -> Result<StoreStats, StoreError> {
    let (definitions, statuses, counts, outbox_oldest, outbox_rows, timer_oldest, dead_letters): Row =
        sqlx::query_as(STATS)
            .fetch_one(pool)
            .await
            .map_err(store_error)?;
    let (definitions, statuses, counts) = (
        definitions.unwrap_or_default(),
        statuses.unwrap_or_default(),
        counts.unwrap_or_default(),
    );
    if definitions.len() != statuses.len() || definitions.len() != counts.len() {
        return Err(StoreError::Corrupt(
            "saga counts by definition and status do not line up".into(),
        ));
    }
    let mut sagas = definitions
        .into_iter()
        .zip(statuses)
        .zip(counts)
        .map(|((definition, status), count)| {
            let parsed = Status::parse(&status).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "sagas of definition {definition} have unknown status {status:?}"
                ))
            })?;
            Ok((definition, parsed, count_of("sagas", count)?))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // Bytewise, whatever the database's collation, like every store.
    sagas.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
    Ok(StoreStats {
        sagas,
        outbox_lag_ms: lag(now, outbox_oldest),
        outbox_rows: count_of("outbox rows", outbox_rows)?,
        timer_lag_ms: lag(now, timer_oldest),
        dead_letters: count_of("dead letters", dead_letters)?,
    })
}

/// How long ago `since` was at `now`; 0 if it was not yet, or there is nothing.
fn lag(now: Millis, since: Option<Millis>) -> i64 {
    since.map_or(0, |since| now.saturating_sub(since).max(0))
}

fn count_of(what: &str, count: i64) -> Result<u64, StoreError> {
    u64::try_from(count).map_err(|_| corrupt_number(what, count))
}
