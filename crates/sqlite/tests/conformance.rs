//! The Store conformance suite against SQLite files in temp directories.

use std::sync::Arc;

use sagaflow_core::Store;
use sagaflow_sqlite::SqliteStore;
use tempfile::TempDir;

/// A store on a fresh database file; the directory lives as long as the returned guard.
async fn fresh_store() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("sagaflow.db").display());
    let store = SqliteStore::open(&url).await.expect("open SQLite store");
    (Arc::new(store), dir)
}

sagaflow_testkit::store_conformance_tests!(fresh_store().await);
