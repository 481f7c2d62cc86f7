//! Reads: snapshots, journals and the queries behind listing and routing.

use sagaflow_core::{JournalEntry, Millis, SagaFilter, SagaId, SagaState, Status, StoreError};
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::error::{corrupt_json, corrupt_number, store_error};
use crate::escape::escape;

/// A page of `list` when the filter asks for 0.
const DEFAULT_LIMIT: usize = 100;

/// The snapshots of the sagas that exist among `ids`.
pub(crate) async fn load(pool: &PgPool, ids: &[SagaId]) -> Result<Vec<SagaState>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT journal_version, state FROM sagas WHERE saga_id = ANY($1::text[])")
            .bind(&ids)
            .fetch_all(pool)
            .await
            .map_err(store_error)?;
    rows.into_iter().map(snapshot).collect()
}

/// A stored snapshot. The `journal_version` column is what commits check, so it is the
/// authority over the copy inside the JSON.
fn snapshot((journal_version, state): (i64, String)) -> Result<SagaState, StoreError> {
    let mut state: SagaState =
        serde_json::from_str(&state).map_err(|e| corrupt_json("saga state", e))?;
    state.journal_version = u64::try_from(journal_version)
        .map_err(|_| corrupt_number("journal_version", journal_version))?;
    Ok(state)
}

/// One saga's journal, in order.
pub(crate) async fn journal(pool: &PgPool, id: &SagaId) -> Result<Vec<JournalEntry>, StoreError> {
    let rows: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT seq, at, event FROM journal WHERE saga_id = $1 ORDER BY seq")
            .bind(&id.0)
            .fetch_all(pool)
            .await
            .map_err(store_error)?;
    rows.into_iter()
        .map(|(seq, at, event)| {
            Ok(JournalEntry {
                seq: u64::try_from(seq).map_err(|_| corrupt_number("journal seq", seq))?,
                at,
                event: serde_json::from_str(&event)
                    .map_err(|e| corrupt_json("journal event", e))?,
            })
        })
        .collect()
}

/// The saga started with this idempotency key.
pub(crate) async fn saga_by_idempotency_key(
    pool: &PgPool,
    key: &str,
) -> Result<Option<SagaId>, StoreError> {
    let id: Option<String> =
        sqlx::query_scalar("SELECT saga_id FROM sagas WHERE idempotency_key = $1")
            .bind(escape(key))
            .fetch_optional(pool)
            .await
            .map_err(store_error)?;
    Ok(id.map(SagaId))
}

/// Sagas matching the filter, newest first. The SQL names only the filters in use, so each
/// combination gets a plan that uses its index (a catch-all `$1 IS NULL OR …` would not).
pub(crate) async fn list(pool: &PgPool, filter: &SagaFilter) -> Result<Vec<SagaState>, StoreError> {
    let mut sql: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT journal_version, state FROM sagas WHERE TRUE");
    if let Some(status) = filter.status {
        sql.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(definition) = &filter.definition {
        sql.push(" AND definition = ").push_bind(definition);
    }
    if let Some(key) = &filter.correlation_key {
        sql.push(" AND correlation_key = ")
            .push_bind(escape(key).into_owned());
    }
    if let Some(after) = filter.created_after {
        sql.push(" AND created_at >= ").push_bind(after);
    }
    if let Some(before) = filter.created_before {
        sql.push(" AND created_at < ").push_bind(before);
    }
    if let Some((at, id)) = &filter.before {
        sql.push(" AND (created_at, saga_id) < (")
            .push_bind(*at)
            .push(", ")
            .push_bind(&id.0)
            .push(")");
    }
    let limit = if filter.limit == 0 {
        DEFAULT_LIMIT
    } else {
        filter.limit
    };
    sql.push(" ORDER BY created_at DESC, saga_id DESC LIMIT ")
        .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let rows: Vec<(i64, String)> = sql
        .build_query_as()
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    rows.into_iter().map(snapshot).collect()
}

/// Unfinished sagas untouched since before `updated_before`, the longest untouched first.
/// (No index on `updated_at`: every snapshot update changes it, and one would cost the hot
/// path its HOT updates; the unfinished sagas come from the status index.)
pub(crate) async fn stale(
    pool: &PgPool,
    updated_before: i64,
    limit: usize,
) -> Result<Vec<SagaState>, StoreError> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT journal_version, state FROM sagas
         WHERE status IN ('running', 'waiting', 'compensating') AND updated_at < $1
         ORDER BY updated_at, saga_id LIMIT $2",
    )
    .bind(updated_before)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    rows.into_iter().map(snapshot).collect()
}

/// Sagas started and ended per window since `since`.
pub(crate) async fn activity(
    pool: &PgPool,
    since: i64,
    bucket_ms: i64,
) -> Result<Vec<(i64, u64, u64)>, StoreError> {
    let bucket = bucket_ms.max(1);
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT w, SUM(s)::BIGINT, SUM(e)::BIGINT FROM (
             SELECT (created_at - $1) / $2 AS w, 1 AS s, 0 AS e FROM sagas WHERE created_at >= $1
             UNION ALL
             SELECT (ended_at - $1) / $2 AS w, 0 AS s, 1 AS e FROM sagas WHERE ended_at >= $1
         ) t GROUP BY w ORDER BY w",
    )
    .bind(since)
    .bind(bucket)
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    Ok(rows
        .into_iter()
        .map(|(w, s, e)| (since + w * bucket, s.max(0) as u64, e.max(0) as u64))
        .collect())
}

/// Unfinished sagas counted by definition and version.
pub(crate) async fn versions_in_flight(
    pool: &PgPool,
) -> Result<Vec<(String, u32, u64)>, StoreError> {
    let ends = [Status::Completed, Status::Compensated, Status::Failed].map(Status::as_str);
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT definition, version, count(*) FROM sagas
         WHERE status <> ALL($1::text[])
         GROUP BY definition, version ORDER BY definition, version",
    )
    .bind(&ends[..])
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    rows.into_iter()
        .map(|(definition, version, count)| {
            Ok((
                definition,
                u32::try_from(version).map_err(|_| corrupt_number("version", version))?,
                u64::try_from(count).map_err(|_| corrupt_number("count", count))?,
            ))
        })
        .collect()
}

/// Waiting sagas with this correlation key value, oldest first.
pub(crate) async fn waiting_by_correlation(
    pool: &PgPool,
    key: &str,
) -> Result<Vec<SagaId>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT saga_id FROM sagas WHERE correlation_key = $1 AND status = $2
         ORDER BY created_at, saga_id",
    )
    .bind(escape(key))
    .bind(Status::Waiting.as_str())
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    Ok(ids.into_iter().map(SagaId).collect())
}

/// When the earliest timer can be claimed: its `fire_at`, or, while another engine holds
/// it, when that lease runs out. Reporting a due but leased timer as due would make every
/// other engine spin on it until the lease holder commits (or, if it died, for the whole
/// lease).
pub(crate) async fn next_timer_at(pool: &PgPool) -> Result<Option<Millis>, StoreError> {
    sqlx::query_scalar(
        "SELECT min(at) FROM (
             (SELECT fire_at AS at FROM timers
              WHERE lease_until IS NULL OR lease_until <= fire_at
              ORDER BY fire_at LIMIT 1)
             UNION ALL
             (SELECT lease_until AS at FROM timers
              WHERE lease_until IS NOT NULL AND lease_until > fire_at
              ORDER BY lease_until LIMIT 1)
         ) AS next",
    )
    .fetch_one(pool)
    .await
    .map_err(store_error)
}
