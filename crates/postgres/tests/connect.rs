//! Connecting: migrations applied once even by processes starting together, clear errors
//! when the database is not there, and data the model allows stored as given.

mod support;

use std::time::{Duration, Instant};

use sagaflow_core::{CommitOutcome, SagaFilter, Store, StoreError};
use sagaflow_postgres::PgStore;
use sagaflow_testkit::fixture::{order_definition, start_decision, T0};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_migrate_once() {
    let schema = support::unique_schema();
    let _guard = support::SchemaGuard(schema.clone());
    let starts = (0..4).map(|_| {
        let schema = schema.clone();
        tokio::spawn(async move { support::connect(&schema).await })
    });
    let mut stores = Vec::new();
    for start in starts {
        stores.push(start.await.expect("a connecting task panicked"));
    }
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM schema_migrations ORDER BY version")
            .fetch_all(stores[0].pool())
            .await
            .expect("reading schema_migrations");
    assert_eq!(
        applied,
        vec![
            (1, "init".to_string()),
            (2, "definitions".to_string()),
            (3, "stats".to_string())
        ]
    );
    // Connecting again finds nothing to do and the data in place.
    let def = order_definition(1);
    let d = start_decision(&def, "kept", json!({}), T0, None);
    stores[1].commit(vec![d.clone()]).await.expect("commit");
    let again = support::connect(&schema).await;
    assert_eq!(
        again
            .load(std::slice::from_ref(&d.saga_id))
            .await
            .expect("load"),
        vec![d.state]
    );
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let started = Instant::now();
    // Port 1 on localhost: nothing listens there.
    let result = PgStore::connect("postgres://postgres@127.0.0.1:1/test").await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "got {result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refusing took {:?}",
        started.elapsed()
    );
    let bad_url = PgStore::connect("not a url").await;
    assert!(matches!(bad_url, Err(StoreError::Unavailable(m)) if m.contains("url")));
}

#[tokio::test]
async fn unusable_schema_names_are_refused() {
    for schema in ["", &"s".repeat(64), "nul\0byte"] {
        let result = PgStore::connect_in_schema(&support::url(), schema).await;
        assert!(
            matches!(&result, Err(StoreError::Unavailable(m)) if m.contains("schema")),
            "{schema:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn schema_names_needing_quotes_work() {
    let schema = format!("{} \"Quoted\"", support::unique_schema());
    let _guard = support::SchemaGuard(schema.clone());
    let store = support::connect(&schema).await;
    let def = order_definition(1);
    let d = start_decision(&def, "q", json!({}), T0, None);
    assert_eq!(
        store.commit(vec![d]).await.expect("commit"),
        vec![CommitOutcome::Applied]
    );
}

#[tokio::test]
async fn connect_uses_the_search_path_the_url_gives() {
    let (scratch, guard) = support::fresh().await;
    drop(scratch);
    let url = format!("{}?options=-c%20search_path%3D{}", support::url(), guard.0);
    let store = PgStore::connect(&url).await.expect("connect");
    let def = order_definition(1);
    let d = start_decision(&def, "p", json!({}), T0, None);
    store.commit(vec![d.clone()]).await.expect("commit");
    let schema: String = sqlx::query_scalar(
        "SELECT schemaname::text FROM pg_tables WHERE tablename = 'sagas' AND schemaname = $1",
    )
    .bind(&guard.0)
    .fetch_one(store.pool())
    .await
    .expect("the tables are in the URL's schema");
    assert_eq!(schema, guard.0);
}

#[tokio::test]
async fn user_text_with_nul_round_trips() {
    let (store, _guard) = support::fresh().await;
    let def = order_definition(1);
    // PostgreSQL TEXT refuses NUL; users' correlation values and start keys may hold one.
    let user = "nul\u{0}inside \u{E000}0";
    let input = json!({
        "user_id": user,
        "emoji": "🦀 ünïcödé",
        "big": u64::MAX,
        "neg": i64::MIN,
        "float": 0.1,
        "nested": {"z": 1, "a": [true, null, "x\u{0}"]},
    });
    let d = start_decision(&def, "json", input, T0, Some("key\u{0}"));
    let plain = start_decision(&def, "plain", json!({"user_id": "nul"}), T0, Some("key"));
    assert_eq!(
        store
            .commit(vec![d.clone(), plain.clone()])
            .await
            .expect("commit"),
        vec![CommitOutcome::Applied, CommitOutcome::Applied],
        "a NUL in one saga's keys does not fail the batch"
    );
    assert_eq!(
        store
            .load(std::slice::from_ref(&d.saga_id))
            .await
            .expect("load"),
        vec![d.state.clone()]
    );
    assert_eq!(store.journal(&d.saga_id).await.expect("journal"), d.events);
    assert_eq!(
        store
            .saga_by_idempotency_key("key\u{0}")
            .await
            .expect("by key"),
        Some(d.saga_id.clone())
    );
    assert_eq!(
        store.saga_by_idempotency_key("key").await.expect("by key"),
        Some(plain.saga_id.clone())
    );
    let again = start_decision(&def, "again", json!({}), T0, Some("key\u{0}"));
    assert_eq!(
        store.commit(vec![again]).await.expect("commit"),
        vec![CommitOutcome::DuplicateStart {
            existing: d.saga_id.clone()
        }]
    );
    let listed = store
        .list(&SagaFilter {
            correlation_key: Some(user.to_string()),
            ..SagaFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed, vec![d.state.clone()]);
    assert!(store
        .waiting_by_correlation(user)
        .await
        .expect("waiting_by_correlation")
        .is_empty());

    let reason = "bad body: \u{0}\u{1}";
    let id = store
        .put_dead_letter("topic\u{0}", b"\0\xff", reason, 3, T0)
        .await
        .expect("put_dead_letter");
    let letters = store.dead_letters(0, 10).await.expect("dead_letters");
    assert_eq!(
        (
            letters[0].id,
            letters[0].topic.as_str(),
            letters[0].reason.as_str()
        ),
        (id, "topic\u{0}", reason)
    );
}

#[tokio::test]
async fn an_unreadable_stored_definition_is_corrupt_naming_it() {
    let (store, _guard) = support::fresh().await;
    store
        .save_definition(&order_definition(1))
        .await
        .expect("save_definition");
    // A foreign write (or a body from a sagaflow that knew other fields) must be reported,
    // not skipped: the engine checks on start that it has every version in flight.
    sqlx::query("INSERT INTO definitions (name, version, body) VALUES ('order', 2, '{\"name\":')")
        .execute(store.pool())
        .await
        .expect("a foreign write");
    let e = store.definitions().await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Corrupt(m) if m.contains("order v2")),
        "{e:?}"
    );
}
