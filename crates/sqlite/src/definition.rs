//! Stored definitions: `(name, version)` → the definition as JSON, written once.

use rusqlite::{params, Connection};
use sagaflow_core::{check_same_definition, parse_stored_definition, Definition, StoreError};

use crate::commit::none_if_no_rows;
use crate::connection::db;

/// Keeps a definition (`body` is its JSON); an equal one already stored is fine, a
/// different one refused. Runs on the writer thread, so no other save interleaves between
/// the insert and the read back.
pub(crate) fn save(conn: &Connection, def: &Definition, body: &str) -> Result<(), StoreError> {
    let version = i64::from(def.version);
    let inserted = conn
        .prepare_cached(
            "INSERT INTO definitions (name, version, body) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name, version) DO NOTHING",
        )
        .map_err(db)?
        .execute(params![def.name, version, body])
        .map_err(db)?;
    if inserted == 1 {
        return Ok(());
    }
    let stored: Option<String> = conn
        .prepare_cached("SELECT body FROM definitions WHERE name = ?1 AND version = ?2")
        .map_err(db)?
        .query_row(params![def.name, version], |row| row.get(0))
        .map(Some)
        .or_else(none_if_no_rows)
        .map_err(db)?;
    match stored {
        Some(stored) => check_same_definition(&def.name, version, body, &stored),
        // Nothing deletes definitions, and this transaction saw the conflicting row.
        None => Err(StoreError::Unavailable(format!(
            "definition {} v{} was neither inserted nor found",
            def.name, def.version
        ))),
    }
}

/// Every stored definition, by name then version.
pub(crate) fn list(conn: &Connection) -> Result<Vec<Definition>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT name, version, body FROM definitions ORDER BY name, version")
        .map_err(db)?;
    let mut rows = stmt.query([]).map_err(db)?;
    let mut definitions = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let name: String = row.get(0).map_err(db)?;
        let version: i64 = row.get(1).map_err(db)?;
        let body = row.get_ref(2).map_err(db)?.as_str().map_err(|e| {
            StoreError::Corrupt(format!(
                "stored definition {name} v{version} is not text: {e}"
            ))
        })?;
        definitions.push(parse_stored_definition(&name, version, body)?);
    }
    Ok(definitions)
}
