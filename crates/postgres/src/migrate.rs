//! Schema migrations, embedded in the binary and applied on connect. Several engine
//! processes may start at once, so the whole check-and-apply runs in one transaction under
//! a transaction-scoped advisory lock: the first applies, the others wait and find nothing
//! left to do.

use sagaflow_core::StoreError;
use sqlx::{Connection, Executor, PgConnection};

use crate::error::store_error;

/// Every migration, in order: (version, name, SQL). Append only; never edit a shipped one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "definitions",
        include_str!("../migrations/0002_definitions.sql"),
    ),
    (3, "stats", include_str!("../migrations/0003_stats.sql")),
];

/// PostgreSQL truncates identifiers longer than this (NAMEDATALEN - 1).
const MAX_IDENTIFIER: usize = 63;

/// Applies the migrations not applied yet. (Raw SQL goes through `Executor::execute`, whose
/// boxed future is `Send`; `RawSql::execute` is not, which would make `connect` unspawnable.) `schema` is already quoted; it is created here,
/// under the lock, because two concurrent `CREATE SCHEMA IF NOT EXISTS` can still collide.
pub(crate) async fn migrate(
    conn: &mut PgConnection,
    schema: Option<&str>,
) -> Result<(), StoreError> {
    let mut tx = conn.begin().await.map_err(store_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(schema.unwrap_or("")))
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    if let Some(schema) = schema {
        let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
        tx.execute(sqlx::raw_sql(&create))
            .await
            .map_err(store_error)?;
    }
    tx.execute(sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at BIGINT NOT NULL
         )",
    ))
    .await
    .map_err(store_error)?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.execute(sqlx::raw_sql(sql))
            .await
            .map_err(|e| migration_failed(*version, name, e))?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at)
             VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT)",
        )
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tracing::info!(version, name, "applied migration");
    }
    tx.commit().await.map_err(store_error)
}

/// Checks a schema name and quotes it as an identifier.
pub(crate) fn quote_schema(schema: &str) -> Result<String, StoreError> {
    if schema.is_empty() || schema.len() > MAX_IDENTIFIER || schema.contains('\0') {
        return Err(StoreError::Unavailable(format!(
            "invalid schema name {schema:?}: it must be 1 to {MAX_IDENTIFIER} bytes without NUL"
        )));
    }
    Ok(format!("\"{}\"", schema.replace('"', "\"\"")))
}

/// The advisory lock for migrating one schema: schemas migrate independently, so parallel
/// tests (one schema each) do not queue behind each other.
fn lock_key(schema: &str) -> i64 {
    i64::from_ne_bytes(fnv1a(format!("sagaflow.migrate:{schema}").as_bytes()).to_ne_bytes())
}

/// FNV-1a: a stable hash (std's hasher may change between releases, and every process must
/// agree on the key).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn migration_failed(version: i64, name: &str, e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("migration {version} ({name}) failed: {e}"))
}
