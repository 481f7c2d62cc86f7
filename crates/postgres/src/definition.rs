//! Stored definitions: `(name, version)` → the definition as JSON, written once and shared
//! by every engine on the database.

use sagaflow_core::{
    check_same_definition, definition_json, parse_stored_definition, Definition, StoreError,
};
use sqlx::PgPool;

use crate::error::store_error;

/// Keeps a definition; an equal one already stored is fine, a different one refused.
///
/// The primary key settles a race between engines saving the same new `(name, version)`:
/// `ON CONFLICT DO NOTHING` waits for a concurrent insert of the same key to commit, so the
/// loser then reads the winner's row and compares against it; at most one content is ever
/// stored.
pub(crate) async fn save(pool: &PgPool, def: &Definition) -> Result<(), StoreError> {
    let body = definition_json(def)?;
    let version = i64::from(def.version);
    let inserted: Option<i32> = sqlx::query_scalar(
        "INSERT INTO definitions (name, version, body) VALUES ($1, $2, $3)
         ON CONFLICT (name, version) DO NOTHING RETURNING 1",
    )
    .bind(&def.name)
    .bind(version)
    .bind(&body)
    .fetch_optional(pool)
    .await
    .map_err(store_error)?;
    if inserted.is_some() {
        return Ok(());
    }
    let stored: Option<String> =
        sqlx::query_scalar("SELECT body FROM definitions WHERE name = $1 AND version = $2")
            .bind(&def.name)
            .bind(version)
            .fetch_optional(pool)
            .await
            .map_err(store_error)?;
    match stored {
        Some(stored) => check_same_definition(&def.name, version, &body, &stored),
        // Nothing deletes definitions, and the insert found the row committed.
        None => Err(StoreError::Unavailable(format!(
            "definition {} v{} was neither inserted nor found",
            def.name, def.version
        ))),
    }
}

/// Every stored definition, by name (bytewise) then version.
pub(crate) async fn list(pool: &PgPool) -> Result<Vec<Definition>, StoreError> {
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT name, version, body FROM definitions ORDER BY name, version")
            .fetch_all(pool)
            .await
            .map_err(store_error)?;
    rows.iter()
        .map(|(name, version, body)| parse_stored_definition(name, *version, body))
        .collect()
}
