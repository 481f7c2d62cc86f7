//! The dead-letter store: messages that could not be processed, kept with the reason.

use rusqlite::{params, Connection, Row};
use sagaflow_core::{DeadLetter, Millis, StoreError};

use crate::claim::clamp;
use crate::connection::db;

/// Keeps a message; returns its id. Runs on the writer thread.
pub(crate) fn put(
    conn: &Connection,
    topic: &str,
    body: &[u8],
    reason: &str,
    attempts: u32,
    at: Millis,
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO dead_letters (topic, body, reason, attempts, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
    )
    .map_err(db)?
    .query_row(params![topic, body, reason, attempts, at], |row| row.get(0))
    .map_err(db)
}

/// The oldest `limit` dead letters with an id above `after`.
pub(crate) fn list(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, topic, body, reason, attempts, created_at FROM dead_letters \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .map_err(db)?;
    let mut rows = stmt.query(params![after, clamp(limit)]).map_err(db)?;
    let mut letters = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        letters.push(letter(row)?);
    }
    Ok(letters)
}

/// Removes a dead letter and returns it. Runs on the writer thread.
pub(crate) fn take(conn: &Connection, id: i64) -> Result<Option<DeadLetter>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "DELETE FROM dead_letters WHERE id = ?1 \
             RETURNING id, topic, body, reason, attempts, created_at",
        )
        .map_err(db)?;
    let mut rows = stmt.query([id]).map_err(db)?;
    let taken = match rows.next().map_err(db)? {
        Some(row) => Some(letter(row)?),
        None => None,
    };
    // Step to the end so the DELETE statement completes before the savepoint is released.
    while rows.next().map_err(db)?.is_some() {}
    Ok(taken)
}

fn letter(row: &Row<'_>) -> Result<DeadLetter, StoreError> {
    let id: i64 = row.get(0).map_err(db)?;
    let attempts: i64 = row.get(4).map_err(db)?;
    Ok(DeadLetter {
        id,
        topic: row.get(1).map_err(db)?,
        body: row.get(2).map_err(db)?,
        reason: row.get(3).map_err(db)?,
        attempts: u32::try_from(attempts).map_err(|_| {
            StoreError::Corrupt(format!("dead letter {id} has {attempts} attempts"))
        })?,
        created_at: row.get(5).map_err(db)?,
    })
}
