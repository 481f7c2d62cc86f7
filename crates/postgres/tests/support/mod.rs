//! Test support: a store in a fresh schema of the test database, dropped afterwards.

#![allow(dead_code)] // each test crate uses a different part of it

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sagaflow_core::Store;
use sagaflow_postgres::PgStore;

/// The test database unless `SAGAFLOW_TEST_PG_URL` names another.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The database URL tests use.
pub fn url() -> String {
    std::env::var("SAGAFLOW_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A schema name no other test (or test process) uses.
pub fn unique_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "sagaflow_test_{}_{nanos:x}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connects a store in `schema`, failing the test (never skipping it) when PostgreSQL is
/// unreachable.
pub async fn connect(schema: &str) -> PgStore {
    let url = url();
    match PgStore::connect_in_schema(&url, schema).await {
        Ok(store) => store,
        Err(e) => panic!(
            "PostgreSQL is required for these tests and {url} is unreachable: {e}\n\
             start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) \
             or point SAGAFLOW_TEST_PG_URL at one"
        ),
    }
}

/// Drops its schema when the test ends, so the test database does not fill up.
pub struct SchemaGuard(pub String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let schema = self.0.clone();
        // Drop may run inside a runtime, which cannot block on itself: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(sagaflow_postgres::drop_schema(&url(), &schema))
                .map_err(|e| e.to_string())
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.0);
        }
    }
}

/// A store in a fresh schema, and the guard that drops the schema.
pub async fn fresh() -> (PgStore, SchemaGuard) {
    let schema = unique_schema();
    let store = connect(&schema).await;
    (store, SchemaGuard(schema))
}

/// The same, as the conformance suite wants it.
pub async fn fresh_dyn() -> (Arc<dyn Store>, SchemaGuard) {
    let (store, guard) = fresh().await;
    (Arc::new(store), guard)
}

/// Waits until some backend is blocked by the backend `pid`: the point where a concurrent
/// statement is known to be waiting on a lock the test holds. Polls the server's own view
/// of its locks; gives up after ten seconds.
pub async fn wait_until_blocked_by(store: &PgStore, pid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(pid)
        .fetch_one(store.pool())
        .await
        .unwrap_or_else(|e| panic!("reading pg_stat_activity failed: {e}"));
        if blocked > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing blocked on backend {pid} within 10 s"
        );
        tokio::task::yield_now().await;
    }
}
