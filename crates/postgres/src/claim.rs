//! Leases on due timers and unanswered outbox rows. `FOR UPDATE SKIP LOCKED` lets several
//! engines claim at once without waiting on each other or claiming the same row: a row
//! another claim holds is skipped, and one it just leased fails the due check on recheck.

use sagaflow_core::{Millis, OutboxRow, SagaId, StoreError, TimerKind, TimerRow, TimerSlot};
use sqlx::PgPool;

use crate::error::{corrupt_json, store_error};

const CLAIM_TIMERS: &str = "UPDATE timers AS t SET lease_owner = $1, lease_until = $2
     FROM (SELECT saga_id, slot FROM timers
           WHERE fire_at <= $3 AND (lease_until IS NULL OR lease_until <= $3)
           ORDER BY fire_at LIMIT $4
           FOR UPDATE SKIP LOCKED) AS due
     WHERE t.saga_id = due.saga_id AND t.slot = due.slot
     RETURNING t.saga_id, t.slot, t.fire_at, t.kind";

const CLAIM_OUTBOX: &str = "UPDATE outbox AS o SET lease_owner = $1, lease_until = $2
     FROM (SELECT key, lease_until AS expired_at FROM outbox
           WHERE lease_until <= $3
           ORDER BY lease_until LIMIT $4
           FOR UPDATE SKIP LOCKED) AS due
     WHERE o.key = due.key
     RETURNING o.key, o.saga_id, o.topic, o.body, o.lease_owner, o.lease_until, due.expired_at";

/// Leases up to `limit` due timers to `owner`; earliest first.
pub(crate) async fn claim_timers(
    pool: &PgPool,
    now: Millis,
    owner: &str,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<TimerRow>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(CLAIM_TIMERS)
        .bind(owner)
        .bind(now.saturating_add(lease_ms))
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    let mut timers = rows
        .into_iter()
        .map(|(saga_id, slot, fire_at, kind)| {
            Ok(TimerRow {
                saga_id: SagaId(saga_id),
                slot: parse_slot(&slot)?,
                fire_at,
                kind: serde_json::from_str::<TimerKind>(&kind)
                    .map_err(|e| corrupt_json("timer kind", e))?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // RETURNING keeps no order.
    timers.sort_by(|a, b| {
        (a.fire_at, &a.saga_id, a.slot.as_str()).cmp(&(b.fire_at, &b.saga_id, b.slot.as_str()))
    });
    Ok(timers)
}

fn parse_slot(slot: &str) -> Result<TimerSlot, StoreError> {
    [TimerSlot::Step, TimerSlot::Deadline]
        .into_iter()
        .find(|s| s.as_str() == slot)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown timer slot {slot:?}")))
}

/// Leases up to `limit` outbox rows whose lease expired to `owner`; longest expired first.
pub(crate) async fn claim_outbox(
    pool: &PgPool,
    now: Millis,
    owner: &str,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    type Claimed = (String, String, String, Vec<u8>, String, i64, i64);
    let mut rows: Vec<Claimed> = sqlx::query_as(CLAIM_OUTBOX)
        .bind(owner)
        .bind(now.saturating_add(lease_ms))
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    rows.sort_by(|a, b| (a.6, &a.0).cmp(&(b.6, &b.0)));
    Ok(rows
        .into_iter()
        .map(
            |(key, saga_id, topic, body, lease_owner, lease_until, _)| OutboxRow {
                key,
                saga_id: SagaId(saga_id),
                topic,
                body,
                lease_until,
                lease_owner,
            },
        )
        .collect())
}
