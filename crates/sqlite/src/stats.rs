//! Gauges for the metrics endpoint, read on a pooled connection in one read transaction,
//! so every number comes from the same snapshot.

use rusqlite::Connection;
use sagaflow_core::{Millis, Status, StoreError, StoreStats};

use crate::connection::db;

/// Sagas by definition and status: a scan of `sagas_by_definition_status` alone.
const SAGAS: &str = "SELECT definition, status, COUNT(*) FROM sagas \
     GROUP BY definition, status ORDER BY definition, status";

/// The oldest outbox lease end (the lease index's first entry), the outbox rows, the
/// earliest time a timer is claimable, and the dead letters.
///
/// A timer is claimable from the later of its fire time and its lease end. Two index
/// lookups find the earliest: among timers unleased or leased no later than they fire (by
/// fire time), and among timers leased past their fire time (by lease end).
const GAUGES: &str = "SELECT \
     (SELECT MIN(lease_until) FROM outbox), \
     (SELECT COUNT(*) FROM outbox), \
     (SELECT MIN(at) FROM ( \
         SELECT at FROM (SELECT fire_at AS at FROM timers \
                         WHERE lease_until IS NULL OR lease_until <= fire_at \
                         ORDER BY fire_at LIMIT 1) \
         UNION ALL \
         SELECT at FROM (SELECT lease_until AS at FROM timers \
                         WHERE lease_until IS NOT NULL AND lease_until > fire_at \
                         ORDER BY lease_until LIMIT 1))), \
     (SELECT COUNT(*) FROM dead_letters)";

/// The store's gauges at `now`.
pub(crate) fn stats(conn: &Connection, now: Millis) -> Result<StoreStats, StoreError> {
    // Deferred: the snapshot is taken by the first SELECT and held until the end.
    let tx = conn.unchecked_transaction().map_err(db)?;
    let mut stmt = tx.prepare_cached(SAGAS).map_err(db)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
        .map_err(db)?;
    let mut sagas = Vec::new();
    for row in rows {
        let (definition, status, count) = row.map_err(db)?;
        let status = Status::parse(&status).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "sagas of definition {definition} have unknown status {status:?}"
            ))
        })?;
        sagas.push((definition, status, count_of("sagas", count)?));
    }
    drop(stmt);
    let (outbox_oldest, outbox_rows, timer_oldest, dead_letters) = tx
        .prepare_cached(GAUGES)
        .map_err(db)?
        .query_row([], |row| {
            Ok((
                row.get::<_, Option<i64>>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Option<i64>>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .map_err(db)?;
    tx.commit().map_err(db)?;
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
    u64::try_from(count).map_err(|_| StoreError::Corrupt(format!("{what}: count {count}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let steps = stmt
            .query_map([], |row| row.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("plan rows");
        steps
    }

    /// No statement scans a table or sorts: sagas, outbox and timers are read through
    /// indexes. (Dead letters are counted by a scan: no index would be smaller, and they
    /// are few.)
    #[test]
    fn the_gauges_read_indexes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = crate::connection::open(&dir.path().join("db")).expect("open");
        crate::migrate::apply(&mut conn).expect("migrate");
        for sql in [SAGAS, GAUGES] {
            let steps = plan(&conn, sql);
            for step in &steps {
                assert!(
                    !["SCAN sagas", "SCAN outbox", "SCAN timers"].contains(&step.as_str()),
                    "{sql}\nscans a table: {steps:#?}"
                );
                assert!(!step.contains("TEMP B-TREE"), "{sql}\nsorts: {steps:#?}");
            }
        }
        let steps = plan(&conn, SAGAS);
        assert!(
            steps
                .iter()
                .any(|s| s.contains("COVERING INDEX sagas_by_definition_status")),
            "sagas are counted from their index alone: {steps:#?}"
        );
    }
}
