//! SQLite-specific behaviour beyond the shared conformance suite: big group commits, the
//! throwaway database, reopening, migrations, and failures that must write nothing.

use std::sync::Arc;

use anyhow::Result;
use rusqlite::Connection;
use sagaflow_core::{CommitOutcome, Decision, SagaId, Store, StoreError};
use sagaflow_sqlite::SqliteStore;
use sagaflow_testkit::fixture::{
    next_decision, order_definition, order_input, start_decision, succeeded, T0,
};
use tempfile::TempDir;

fn temp_db() -> Result<(TempDir, String)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sagaflow.db").display().to_string();
    Ok((dir, path))
}

fn starts(n: usize, prefix: &str) -> Vec<Decision> {
    let def = order_definition(1);
    (0..n)
        .map(|i| {
            start_decision(
                &def,
                &format!("{prefix}-{i:05}"),
                order_input(&format!("u{}", i % 50)),
                T0 + i as i64,
                Some(&format!("{prefix}-key-{i}")),
            )
        })
        .collect()
}

#[tokio::test]
async fn two_thousand_decisions_commit_in_one_call_and_read_back() -> Result<()> {
    let (_dir, path) = temp_db()?;
    let store = SqliteStore::open(&path).await?;
    let first = starts(1_000, "big");
    let def = order_definition(1);
    let replies: Vec<Decision> = first
        .iter()
        .map(|d| next_decision(&def, &d.state, &succeeded(0, 1), T0 + 5_000))
        .collect();
    // 1 000 starts followed by a reply to each: 2 000 decisions, one call, applied in order.
    let mut batch = first.clone();
    batch.extend(replies.iter().cloned());
    let outcomes = store.commit(batch).await?;
    assert_eq!(outcomes, vec![CommitOutcome::Applied; 2_000]);

    let ids: Vec<SagaId> = first.iter().map(|d| d.saga_id.clone()).collect();
    let mut loaded = store.load(&ids).await?;
    loaded.sort_by(|a, b| a.saga_id.cmp(&b.saga_id));
    let want: Vec<_> = replies.iter().map(|d| d.state.clone()).collect();
    assert!(loaded == want, "all 1 000 snapshots read back as committed");
    for (start, reply) in first.iter().zip(&replies) {
        let mut events = start.events.clone();
        events.extend(reply.events.iter().cloned());
        assert_eq!(store.journal(&start.saga_id).await?, events);
    }
    Ok(())
}

#[tokio::test]
async fn a_failing_write_undoes_the_callers_whole_batch_only() -> Result<()> {
    let (_dir, path) = temp_db()?;
    let store = Arc::new(SqliteStore::open(&path).await?);
    let taken = starts(1, "taken");
    store.commit(taken.clone()).await?;

    // `ok` is fine; `bad` passes its version check and then fails half-way (its outbox key
    // is taken), after writing its snapshot and journal inside the shared transaction.
    let ok = starts(1, "ok");
    let mut bad = starts(1, "bad");
    bad[0].outbox[0].key = taken[0].outbox[0].key.clone();
    let other = starts(1, "other");
    let (failed, applied) = tokio::join!(
        store.commit(vec![ok[0].clone(), bad[0].clone()]),
        store.commit(other.clone())
    );
    assert!(
        matches!(failed, Err(StoreError::Unavailable(ref m)) if m.contains("outbox")),
        "{failed:?}"
    );
    assert_eq!(applied?, vec![CommitOutcome::Applied]);
    let ids = [&ok[0], &bad[0], &other[0]].map(|d| d.saga_id.clone());
    let found: Vec<SagaId> = store
        .load(&ids)
        .await?
        .into_iter()
        .map(|s| s.saga_id)
        .collect();
    assert_eq!(
        found,
        vec![other[0].saga_id.clone()],
        "nothing of the failed call"
    );
    assert!(store.journal(&bad[0].saga_id).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn an_inconsistent_decision_is_refused_before_writing() -> Result<()> {
    let (_dir, path) = temp_db()?;
    let store = SqliteStore::open(&path).await?;
    let mut d = starts(1, "x").remove(0);
    d.events[0].seq = 7;
    let e = store.commit(vec![d.clone()]).await.unwrap_err();
    assert!(e.to_string().contains("event number 7 should be 1"), "{e}");
    d.events[0].seq = 1;
    d.state.journal_version += 1;
    let e = store.commit(vec![d]).await.unwrap_err();
    assert!(e.to_string().contains("snapshot says"), "{e}");
    assert!(store.list(&Default::default()).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopening_and_migrations_run_once() -> Result<()> {
    let (_dir, path) = temp_db()?;
    let batch = starts(3, "keep");
    {
        let store = SqliteStore::open(&format!("sqlite://{path}")).await?;
        store.commit(batch.clone()).await?;
    }
    let store = SqliteStore::open(&format!("sqlite:{path}")).await?;
    let ids: Vec<SagaId> = batch.iter().map(|d| d.saga_id.clone()).collect();
    assert_eq!(store.load(&ids).await?.len(), 3);
    assert_eq!(
        store.saga_by_idempotency_key("keep-key-1").await?,
        Some(ids[1].clone())
    );
    let conn = Connection::open(&path)?;
    let migrations: i64 =
        conn.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))?;
    assert_eq!(migrations, 3);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    assert_eq!(mode, "wal");
    Ok(())
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_a_reason() -> Result<()> {
    let (_dir, path) = temp_db()?;
    drop(SqliteStore::open(&path).await?);
    let conn = Connection::open(&path)?;
    conn.execute("INSERT INTO schema_migrations VALUES (99, 0)", [])?;
    drop(conn);
    let e = SqliteStore::open(&path).await.unwrap_err().to_string();
    assert!(e.contains("version 99") && e.contains("newer"), "{e}");
    Ok(())
}

#[tokio::test]
async fn memory_databases_are_private_and_leave_no_file() -> Result<()> {
    let a = SqliteStore::open(":memory:").await?;
    let b = SqliteStore::open("sqlite::memory:").await?;
    a.commit(starts(2, "mem")).await?;
    // Reads go through other connections than the writer's: they must see the same data.
    assert_eq!(a.list(&Default::default()).await?.len(), 2);
    assert!(b.list(&Default::default()).await?.is_empty());
    let mut tx = a.begin().await?;
    let rows = tx.query("SELECT COUNT(*) FROM sagas", &[]).await?;
    tx.rollback().await?;
    assert_eq!(rows, vec![vec![2.into()]]);
    let before = sagaflow_files();
    drop(a);
    drop(b);
    let after = sagaflow_files();
    assert!(
        after.len() + 2 <= before.len(),
        "dropping two memory stores removes their files: {before:?} -> {after:?}"
    );
    Ok(())
}

fn sagaflow_files() -> Vec<String> {
    let prefix = format!("sagaflow-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".db"))
        .collect()
}

#[tokio::test]
async fn a_commit_waits_for_a_participant_transaction_then_lands() -> Result<()> {
    let (_dir, path) = temp_db()?;
    let store = Arc::new(SqliteStore::open(&path).await?);
    let mut tx = store.begin().await?;
    tx.inbox_put("billing", "k", b"r").await?;
    // The participant holds the write lock; the commit queues behind it on the writer.
    let committing = tokio::spawn({
        let store = store.clone();
        async move { store.commit(starts(1, "after")).await }
    });
    tx.commit().await?;
    assert_eq!(committing.await??, vec![CommitOutcome::Applied]);
    Ok(())
}

#[tokio::test]
async fn opening_a_bad_location_says_why() {
    let e = SqliteStore::open("postgres://x/y")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a SQLite URL"), "{e}");
    // Outside async code too.
    let e = SqliteStore::open_blocking("/no/such/dir/x.db")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot open SQLite database /no/such/dir/x.db"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_passes_on_a_multi_thread_runtime() {
    sagaflow_testkit::store_conformance::run_all(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("s.db").display().to_string())
            .await
            .expect("open SQLite store");
        (Arc::new(store) as Arc<dyn Store>, dir)
    })
    .await;
}

#[tokio::test]
async fn an_unreadable_stored_definition_is_corrupt_naming_it() -> Result<()> {
    let (_dir, path) = temp_db()?;
    let store = SqliteStore::open(&path).await?;
    store.save_definition(&order_definition(1)).await?;
    // A foreign write (or a body from a sagaflow that knew other fields) must be reported,
    // not skipped: the engine checks on start that it has every version in flight.
    let conn = Connection::open(&path)?;
    conn.execute(
        "INSERT INTO definitions (name, version, body) VALUES ('order', 2, '{\"name\":')",
        [],
    )?;
    drop(conn);
    let e = store.definitions().await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Corrupt(m) if m.contains("order v2")),
        "{e:?}"
    );
    Ok(())
}
