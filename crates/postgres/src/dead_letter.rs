//! Dead letters: messages that could not be processed, kept with the reason until an
//! operator replays or discards them.

use sagaflow_core::{DeadLetter, Millis, StoreError};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::error::{corrupt_number, store_error};
use crate::escape::{escape, unescape};

const COLUMNS: &str = "id, topic, body, reason, attempts, created_at";

/// Keeps a message; returns its id.
pub(crate) async fn put(
    pool: &PgPool,
    topic: &str,
    body: &[u8],
    reason: &str,
    attempts: u32,
    at: Millis,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO dead_letters (topic, body, reason, attempts, created_at)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    // The reason often quotes the bad message itself, NULs included.
    .bind(escape(topic))
    .bind(body)
    .bind(escape(reason))
    .bind(i64::from(attempts))
    .bind(at)
    .fetch_one(pool)
    .await
    .map_err(store_error)
}

/// The oldest `limit` dead letters with an id above `after`.
pub(crate) async fn list(
    pool: &PgPool,
    after: i64,
    limit: usize,
) -> Result<Vec<DeadLetter>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    rows.iter().map(decode).collect()
}

/// Removes one and returns it.
pub(crate) async fn take(pool: &PgPool, id: i64) -> Result<Option<DeadLetter>, StoreError> {
    let row = sqlx::query(&format!(
        "DELETE FROM dead_letters WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(store_error)?;
    row.as_ref().map(decode).transpose()
}

fn decode(row: &PgRow) -> Result<DeadLetter, StoreError> {
    let attempts: i64 = row.try_get("attempts").map_err(store_error)?;
    let topic: String = row.try_get("topic").map_err(store_error)?;
    let reason: String = row.try_get("reason").map_err(store_error)?;
    Ok(DeadLetter {
        id: row.try_get("id").map_err(store_error)?,
        topic: unescape(&topic).into_owned(),
        body: row.try_get("body").map_err(store_error)?,
        reason: unescape(&reason).into_owned(),
        attempts: u32::try_from(attempts).map_err(|_| corrupt_number("attempts", attempts))?,
        created_at: row.try_get("created_at").map_err(store_error)?,
    })
}
