//! Reads, on pooled connections (WAL lets them run while the writer writes). Each is one
//! statement, so it sees one consistent snapshot of the database.

use rusqlite::types::Value as SqlParam;
use rusqlite::{params_from_iter, Connection};
use sagaflow_core::{
    Event, JournalEntry, Millis, SagaFilter, SagaId, SagaState, Status, StoreError,
};

use crate::claim::clamp;
use crate::commit::none_if_no_rows;
use crate::connection::db;

/// Page size when a filter says 0.
const DEFAULT_LIMIT: usize = 100;

/// The statuses that are not ends, as stored.
const UNFINISHED: &str = "('running', 'waiting', 'compensating')";

/// The snapshots of the sagas among `ids` that exist.
///
/// The ids travel as one JSON array expanded by `json_each`: one cached statement serves any
/// number of ids, with no limit on bound variables and no chunking.
pub(crate) fn load(conn: &Connection, ids: &[SagaId]) -> Result<Vec<SagaState>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids_json = serde_json::to_string(ids)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode saga ids: {e}")))?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT state FROM sagas WHERE saga_id IN (SELECT value FROM json_each(?1))",
        )
        .map_err(db)?;
    let rows = stmt.query([ids_json]).map_err(db)?;
    states(rows, ids.len())
}

/// One saga's journal, in order.
pub(crate) fn journal(conn: &Connection, id: &SagaId) -> Result<Vec<JournalEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT seq, at, event FROM journal WHERE saga_id = ?1 ORDER BY seq")
        .map_err(db)?;
    let mut rows = stmt.query([&id.0]).map_err(db)?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        let text = row
            .get_ref(2)
            .map_err(db)?
            .as_str()
            .map_err(|e| db(e.into()))?;
        let event: Event = serde_json::from_str(text).map_err(|e| {
            StoreError::Corrupt(format!("event {seq} of saga {id} is unreadable: {e}"))
        })?;
        entries.push(JournalEntry {
            seq: u64::try_from(seq).map_err(|_| {
                StoreError::Corrupt(format!("saga {id} has an event numbered {seq}"))
            })?,
            at: row.get(1).map_err(db)?,
            event,
        });
    }
    Ok(entries)
}

/// The saga started with this idempotency key.
pub(crate) fn saga_by_idempotency_key(
    conn: &Connection,
    key: &str,
) -> Result<Option<SagaId>, StoreError> {
    conn.prepare_cached("SELECT saga_id FROM sagas WHERE idempotency_key = ?1")
        .map_err(db)?
        .query_row([key], |row| row.get(0).map(SagaId))
        .map(Some)
        .or_else(none_if_no_rows)
        .map_err(db)
}

/// Sagas matching the filter, newest first.
pub(crate) fn list(conn: &Connection, filter: &SagaFilter) -> Result<Vec<SagaState>, StoreError> {
    let mut sql = String::from("SELECT state FROM sagas WHERE 1 = 1");
    let mut args: Vec<SqlParam> = Vec::new();
    if let Some(status) = filter.status {
        sql.push_str(" AND status = ?");
        args.push(text(status.as_str()));
    }
    if let Some(definition) = &filter.definition {
        sql.push_str(" AND definition = ?");
        args.push(text(definition));
    }
    if let Some(key) = &filter.correlation_key {
        sql.push_str(" AND correlation_key = ?");
        args.push(text(key));
    }
    if let Some(after) = filter.created_after {
        sql.push_str(" AND created_at >= ?");
        args.push(SqlParam::Integer(after));
    }
    if let Some(before) = filter.created_before {
        sql.push_str(" AND created_at < ?");
        args.push(SqlParam::Integer(before));
    }
    if let Some((at, id)) = &filter.before {
        // The plain bound lets the planner range-scan the index; the row value is the
        // exact keyset condition (ties on created_at ordered by saga_id).
        sql.push_str(" AND created_at <= ? AND (created_at, saga_id) < (?, ?)");
        args.extend([SqlParam::Integer(*at), SqlParam::Integer(*at), text(&id.0)]);
    }
    let limit = if filter.limit == 0 {
        DEFAULT_LIMIT
    } else {
        filter.limit
    };
    sql.push_str(" ORDER BY created_at DESC, saga_id DESC LIMIT ?");
    args.push(SqlParam::Integer(clamp(limit)));
    let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
    let rows = stmt.query(params_from_iter(args.iter())).map_err(db)?;
    states(rows, limit.min(DEFAULT_LIMIT))
}

/// Unfinished sagas untouched since before `updated_before`, the longest untouched first.
pub(crate) fn stale(
    conn: &Connection,
    updated_before: Millis,
    limit: usize,
) -> Result<Vec<SagaState>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT state FROM sagas WHERE status IN {UNFINISHED} AND updated_at < ? \
             ORDER BY updated_at, saga_id LIMIT ?"
        ))
        .map_err(db)?;
    let rows = stmt
        .query(rusqlite::params![updated_before, clamp(limit)])
        .map_err(db)?;
    states(rows, limit.min(DEFAULT_LIMIT))
}

/// Sagas started and ended per window since `since`.
pub(crate) fn activity(
    conn: &Connection,
    since: Millis,
    bucket_ms: i64,
) -> Result<Vec<(Millis, u64, u64)>, StoreError> {
    let bucket = bucket_ms.max(1);
    let mut counts: std::collections::BTreeMap<i64, (u64, u64)> = Default::default();
    for (column, started) in [("created_at", true), ("ended_at", false)] {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT ({column} - ?1) / ?2, COUNT(*) FROM sagas WHERE {column} >= ?1 GROUP BY 1"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(rusqlite::params![since, bucket], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(db)?;
        for row in rows {
            let (window, n) = row.map_err(db)?;
            let entry = counts.entry(since + window * bucket).or_default();
            if started {
                entry.0 += n.max(0) as u64;
            } else {
                entry.1 += n.max(0) as u64;
            }
        }
    }
    Ok(counts.into_iter().map(|(at, (s, e))| (at, s, e)).collect())
}

/// Unfinished sagas counted by definition and version.
pub(crate) fn versions_in_flight(conn: &Connection) -> Result<Vec<(String, u32, u64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT definition, version, COUNT(*) FROM sagas WHERE status IN {UNFINISHED} \
             GROUP BY definition, version ORDER BY definition, version"
        ))
        .map_err(db)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
        .map_err(db)?;
    let mut counts = Vec::new();
    for row in rows {
        let (definition, version, count) = row.map_err(db)?;
        let version = u32::try_from(version).map_err(|_| {
            StoreError::Corrupt(format!("definition {definition} has version {version}"))
        })?;
        counts.push((definition, version, count.max(0) as u64));
    }
    Ok(counts)
}

/// Waiting sagas with this correlation key value, oldest first.
pub(crate) fn waiting_by_correlation(
    conn: &Connection,
    key: &str,
) -> Result<Vec<SagaId>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT saga_id FROM sagas WHERE correlation_key = ?1 AND status = ?2 \
             ORDER BY created_at, saga_id",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([key, Status::Waiting.as_str()], |row| {
            row.get(0).map(SagaId)
        })
        .map_err(db)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db)
}

/// When the earliest timer can be claimed: an unleased timer's fire time, or a leased one's
/// lease end (so a claimed timer does not look overdue and spin the timer loop).
pub(crate) fn next_timer_at(conn: &Connection) -> Result<Option<Millis>, StoreError> {
    // Two index lookups instead of a MAX(fire_at, lease_until) scan of every timer; a lease
    // always ends after the fire time, since timers are claimed only once due.
    conn.prepare_cached(
        "SELECT MIN(at) FROM ( \
             SELECT at FROM (SELECT fire_at AS at FROM timers WHERE lease_until IS NULL \
                             ORDER BY fire_at LIMIT 1) \
             UNION ALL \
             SELECT at FROM (SELECT lease_until AS at FROM timers WHERE lease_until IS NOT NULL \
                             ORDER BY lease_until LIMIT 1))",
    )
    .map_err(db)?
    .query_row([], |row| row.get(0))
    .map_err(db)
}

fn text(s: &str) -> SqlParam {
    SqlParam::Text(s.to_string())
}

fn states(mut rows: rusqlite::Rows<'_>, capacity: usize) -> Result<Vec<SagaState>, StoreError> {
    let mut states = Vec::with_capacity(capacity);
    while let Some(row) = rows.next().map_err(db)? {
        let text = row
            .get_ref(0)
            .map_err(db)?
            .as_str()
            .map_err(|e| db(e.into()))?;
        let state: SagaState = serde_json::from_str(text)
            .map_err(|e| StoreError::Corrupt(format!("a saga snapshot is unreadable: {e}")))?;
        states.push(state);
    }
    Ok(states)
}
