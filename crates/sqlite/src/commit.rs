//! Writing decisions: the hot path. Runs on the writer thread inside the group transaction.
//!
//! Each decision's first statement is its check: the snapshot UPDATE guarded by
//! `journal_version = expected_version`, or for a new saga the snapshot INSERT guarded by
//! the primary key and the idempotency key's UNIQUE constraint. A refused check writes
//! nothing (a statement is atomic), so a conflicting decision needs no rollback and the
//! decisions around it go on. A later statement failing is a real error: the job's savepoint
//! undoes the caller's whole batch and the caller gets the error.

use rusqlite::{params, Connection, ErrorCode};
use sagaflow_core::{CommitOutcome, Decision, SagaId, StoreError, TimerChange};

use crate::connection::db;
use crate::writer::Writer;

const INSERT_SAGA: &str = "INSERT INTO sagas (saga_id, definition, version, status, \
     correlation_key, idempotency_key, journal_version, state, created_at, updated_at, ended_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

// Only the columns a decision can change: SQLite then leaves the created_at, definition and
// correlation indexes alone, and touches the status index only when the status changed.
const UPDATE_SAGA: &str = "UPDATE sagas SET status = ?1, journal_version = ?2, state = ?3, \
     updated_at = ?4, ended_at = ?5 WHERE saga_id = ?6 AND journal_version = ?7";

const INSERT_EVENT: &str =
    "INSERT INTO journal (saga_id, seq, at, type, event) VALUES (?1, ?2, ?3, ?4, ?5)";

const INSERT_OUTBOX: &str = "INSERT INTO outbox (key, saga_id, topic, body, lease_owner, \
     lease_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const DELETE_OUTBOX: &str = "DELETE FROM outbox WHERE key = ?1";

// A (re)set timer is a new timer: it carries no lease, whoever claimed the old one.
const SET_TIMER: &str = "INSERT INTO timers (saga_id, slot, fire_at, kind, lease_owner, \
     lease_until) VALUES (?1, ?2, ?3, ?4, NULL, NULL) \
     ON CONFLICT (saga_id, slot) DO UPDATE SET fire_at = excluded.fire_at, \
     kind = excluded.kind, lease_owner = NULL, lease_until = NULL";

const CLEAR_TIMER: &str = "DELETE FROM timers WHERE saga_id = ?1 AND slot = ?2";

/// Writes a caller's decisions in order, each with its own outcome.
pub(crate) fn apply_all(
    writer: &mut Writer,
    decisions: &[Decision],
) -> Result<Vec<CommitOutcome>, StoreError> {
    writer.writes += decisions.len();
    let mut outcomes = Vec::with_capacity(decisions.len());
    for decision in decisions {
        outcomes.push(apply(writer, decision)?);
    }
    Ok(outcomes)
}

fn apply(writer: &mut Writer, d: &Decision) -> Result<CommitOutcome, StoreError> {
    check_shape(d)?;
    let Writer { conn, json, .. } = writer;
    let id = d.saga_id.0.as_str();
    let s = &d.state;
    let state = Writer::to_json(json, s)?;
    let version = to_i64(s.journal_version)?;
    if d.expected_version == 0 {
        let inserted = conn
            .prepare_cached(INSERT_SAGA)
            .map_err(db)?
            .execute(params![
                id,
                s.definition,
                s.version,
                s.status.as_str(),
                s.correlation_key,
                d.idempotency_key,
                version,
                state,
                s.created_at,
                s.updated_at,
                s.ended_at,
            ]);
        match inserted {
            Ok(_) => {}
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                return duplicate_start(conn, d, e);
            }
            Err(e) => return Err(db(e)),
        }
    } else {
        let changed = conn
            .prepare_cached(UPDATE_SAGA)
            .map_err(db)?
            .execute(params![
                s.status.as_str(),
                version,
                state,
                s.updated_at,
                s.ended_at,
                id,
                to_i64(d.expected_version)?,
            ])
            .map_err(db)?;
        if changed == 0 {
            return conflict(conn, &d.saga_id);
        }
    }

    if !d.events.is_empty() {
        let mut insert = conn.prepare_cached(INSERT_EVENT).map_err(db)?;
        for entry in &d.events {
            let event = Writer::to_json(json, &entry.event)?;
            insert
                .execute(params![
                    id,
                    to_i64(entry.seq)?,
                    entry.at,
                    entry.event.type_name(),
                    event
                ])
                .map_err(db)?;
        }
    }
    if !d.resolved.is_empty() {
        let mut delete = conn.prepare_cached(DELETE_OUTBOX).map_err(db)?;
        for key in &d.resolved {
            delete.execute([key]).map_err(db)?;
        }
    }
    if !d.outbox.is_empty() {
        let mut insert = conn.prepare_cached(INSERT_OUTBOX).map_err(db)?;
        for row in &d.outbox {
            insert
                .execute(params![
                    row.key,
                    row.saga_id.0,
                    row.topic,
                    row.body,
                    row.lease_owner,
                    row.lease_until
                ])
                .map_err(|e| StoreError::Unavailable(format!("outbox row {}: {e}", row.key)))?;
        }
    }
    for change in &d.timers {
        match change {
            TimerChange::Set {
                slot,
                fire_at,
                kind,
            } => {
                let kind = Writer::to_json(json, kind)?;
                conn.prepare_cached(SET_TIMER)
                    .map_err(db)?
                    .execute(params![id, slot.as_str(), fire_at, kind])
                    .map_err(db)?;
            }
            TimerChange::Clear { slot } => {
                conn.prepare_cached(CLEAR_TIMER)
                    .map_err(db)?
                    .execute(params![id, slot.as_str()])
                    .map_err(db)?;
            }
        }
    }
    Ok(CommitOutcome::Applied)
}

/// Refuses a decision whose parts disagree: writing it would leave a journal and snapshot
/// that every later decision conflicts with, or a snapshot filed under another saga.
fn check_shape(d: &Decision) -> Result<(), StoreError> {
    let bad = |why: String| {
        Err(StoreError::Corrupt(format!(
            "refusing to write an inconsistent decision for saga {}: {why}",
            d.saga_id
        )))
    };
    if d.state.saga_id != d.saga_id {
        return bad(format!("its snapshot is of saga {}", d.state.saga_id));
    }
    let after = d.expected_version + d.events.len() as u64;
    if d.state.journal_version != after {
        return bad(format!(
            "expected version {} plus {} events is {after}, but the snapshot says {}",
            d.expected_version,
            d.events.len(),
            d.state.journal_version
        ));
    }
    for (entry, seq) in d.events.iter().zip(d.expected_version + 1..) {
        if entry.seq != seq {
            return bad(format!("event number {} should be {seq}", entry.seq));
        }
    }
    Ok(())
}

/// The outcome of a decision whose guarded UPDATE matched nothing.
fn conflict(conn: &Connection, id: &SagaId) -> Result<CommitOutcome, StoreError> {
    let actual = stored_version(conn, id)?.unwrap_or(0);
    Ok(CommitOutcome::Conflict {
        actual_version: actual,
    })
}

/// The outcome of a new saga whose INSERT hit a uniqueness constraint.
fn duplicate_start(
    conn: &Connection,
    d: &Decision,
    error: rusqlite::Error,
) -> Result<CommitOutcome, StoreError> {
    if let Some(key) = &d.idempotency_key {
        let existing: Option<String> = conn
            .prepare_cached("SELECT saga_id FROM sagas WHERE idempotency_key = ?1")
            .map_err(db)?
            .query_row([key], |row| row.get(0))
            .map(Some)
            .or_else(none_if_no_rows)
            .map_err(db)?;
        if let Some(existing) = existing {
            return Ok(CommitOutcome::DuplicateStart {
                existing: SagaId(existing),
            });
        }
    }
    if stored_version(conn, &d.saga_id)?.is_some() {
        return Ok(CommitOutcome::DuplicateStart {
            existing: d.saga_id.clone(),
        });
    }
    Err(db(error))
}

fn stored_version(conn: &Connection, id: &SagaId) -> Result<Option<u64>, StoreError> {
    let version: Option<i64> = conn
        .prepare_cached("SELECT journal_version FROM sagas WHERE saga_id = ?1")
        .map_err(db)?
        .query_row([&id.0], |row| row.get(0))
        .map(Some)
        .or_else(none_if_no_rows)
        .map_err(db)?;
    version
        .map(|v| {
            u64::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("saga {id} has journal version {v}")))
        })
        .transpose()
}

/// Turns "no rows" into `None`, so an absent row is a value, not an error.
pub(crate) fn none_if_no_rows<T>(e: rusqlite::Error) -> Result<Option<T>, rusqlite::Error> {
    match e {
        rusqlite::Error::QueryReturnedNoRows => Ok(None),
        e => Err(e),
    }
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} does not fit a SQLite integer")))
}
