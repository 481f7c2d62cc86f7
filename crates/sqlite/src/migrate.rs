//! Schema migrations, embedded in the binary and applied on open, each exactly once.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, TransactionBehavior};
use sagaflow_core::StoreError;

use crate::connection::db;

/// Every migration, in order: (version, SQL).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_definitions.sql")),
    (3, include_str!("../migrations/0003_stats.sql")),
];

/// Applies the migrations this database has not had yet.
///
/// One IMMEDIATE transaction, so two processes opening a new database at once do not both
/// migrate it: the second waits, then finds the work done.
pub(crate) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(db)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(db)?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > newest {
        return Err(StoreError::Unavailable(format!(
            "the database schema is at version {current}, newer than this sagaflow knows \
             ({newest}): run a newer sagaflow"
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Unavailable(format!("migration {version} failed: {e}")))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            (version, now),
        )
        .map_err(db)?;
    }
    tx.commit().map_err(db)
}
