//! Claiming outbox rows and timers with leases. Claims write (they take a lease), so they
//! run on the writer thread like commits: a claim and a commit never race for the lock.

use rusqlite::{params, Connection, Row};
use sagaflow_core::{Millis, OutboxRow, SagaId, StoreError, TimerKind, TimerRow, TimerSlot};

use crate::connection::db;

// The inner SELECT walks the lease index oldest first, so long-expired rows go first.
const CLAIM_OUTBOX: &str = "UPDATE outbox SET lease_owner = ?1, lease_until = ?2 \
     WHERE key IN (SELECT key FROM outbox WHERE lease_until <= ?3 ORDER BY lease_until LIMIT ?4) \
     RETURNING key, saga_id, topic, body, lease_owner, lease_until";

const CLAIM_TIMERS: &str = "UPDATE timers SET lease_owner = ?1, lease_until = ?2 \
     WHERE (saga_id, slot) IN (SELECT saga_id, slot FROM timers \
         WHERE fire_at <= ?3 AND (lease_until IS NULL OR lease_until <= ?3) \
         ORDER BY fire_at LIMIT ?4) \
     RETURNING saga_id, slot, fire_at, kind";

/// Leases up to `limit` outbox rows whose lease ended by `now` to `owner`.
pub(crate) fn claim_outbox(
    conn: &Connection,
    now: Millis,
    owner: &str,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(CLAIM_OUTBOX).map_err(db)?;
    let rows = stmt
        .query_map(
            params![owner, now.saturating_add(lease_ms), now, clamp(limit)],
            |row| {
                Ok(OutboxRow {
                    key: row.get(0)?,
                    saga_id: SagaId(row.get(1)?),
                    topic: row.get(2)?,
                    body: row.get(3)?,
                    lease_owner: row.get(4)?,
                    lease_until: row.get(5)?,
                })
            },
        )
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

/// Leases up to `limit` timers due by `now` whose lease is free or ended to `owner`.
pub(crate) fn claim_timers(
    conn: &Connection,
    now: Millis,
    owner: &str,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<TimerRow>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(CLAIM_TIMERS).map_err(db)?;
    let mut rows = stmt
        .query(params![
            owner,
            now.saturating_add(lease_ms),
            now,
            clamp(limit)
        ])
        .map_err(db)?;
    let mut claimed = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        claimed.push(timer_row(row)?);
    }
    Ok(claimed)
}

fn timer_row(row: &Row<'_>) -> Result<TimerRow, StoreError> {
    let saga_id: String = row.get(0).map_err(db)?;
    let slot = match row
        .get_ref(1)
        .map_err(db)?
        .as_str()
        .map_err(|e| db(e.into()))?
    {
        "step" => TimerSlot::Step,
        "deadline" => TimerSlot::Deadline,
        other => {
            return Err(StoreError::Corrupt(format!(
                "timer of saga {saga_id} has unknown slot {other:?}"
            )))
        }
    };
    let fire_at = row.get(2).map_err(db)?;
    let kind_json = row
        .get_ref(3)
        .map_err(db)?
        .as_str()
        .map_err(|e| db(e.into()))?;
    let kind: TimerKind = serde_json::from_str(kind_json).map_err(|e| {
        StoreError::Corrupt(format!(
            "timer {} of saga {saga_id} has an unreadable kind: {e}",
            slot.as_str()
        ))
    })?;
    Ok(TimerRow {
        saga_id: SagaId(saga_id),
        slot,
        fire_at,
        kind,
    })
}

/// A `usize` limit as SQLite's integer (a limit beyond i64 is no limit anyway).
pub(crate) fn clamp(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
