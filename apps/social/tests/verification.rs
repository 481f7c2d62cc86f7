//! Verification while the verifier is down, and status updates that only move up: with the
//! verifier away, the saga attempts `verify` again and again with backoff, the user stays
//! pending (and cannot log in); once the verifier is back the user is verified. Duplicate and
//! out-of-order status updates change nothing.

use std::sync::Arc;
use std::time::Duration;

use sagaflow_core::{AttemptStatus, Status, Store};
use sagaflow_engine::{Engine, EngineConfig, MemoryBus, StartSaga};
use sagaflow_social::registration::{raise_status, FAILED, PENDING, VERIFIED};
use sagaflow_social::SocialConfig;
use serde_json::json;

async fn status(store: &Arc<dyn Store>, user: &str) -> i64 {
    let rows = sagaflow_app_kit::sql::read(
        store,
        "SELECT status FROM social_users WHERE id = $1",
        &[user.into()],
    )
    .await
    .unwrap();
    rows[0][0].as_i64().unwrap()
}

async fn add_user(store: &Arc<dyn Store>, id: &str) {
    let mut tx = store.begin().await.unwrap();
    tx.execute(
        "INSERT INTO social_users (id, first_name, second_name, birthdate, password_hash, status, created_at) VALUES ($1, 'Ann', 'Lee', '1990-05-01', 'x', 0, 0)",
        &[id.into()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_verifier_is_down_verification_retries_then_completes_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("social.db").display());
    let store: Arc<dyn Store> = Arc::new(sagaflow_sqlite::SqliteStore::open(&url).await.unwrap());
    let config = SocialConfig {
        verify_timeout_ms: 150,
        ..SocialConfig::default()
    };
    let config = sagaflow_social::prepare(&store, config).await.unwrap();
    let bus = Arc::new(MemoryBus::new());
    // Only the users service runs: the verifier is down.
    let users = sagaflow_social::registration::participant()
        .start(store.clone(), bus.clone())
        .await
        .unwrap();
    let mut builder = Engine::builder(store.clone(), bus.clone()).config(EngineConfig {
        poll_ms: 50,
        ..EngineConfig::default()
    });
    for d in sagaflow_social::definitions(&config) {
        builder = builder.register(d);
    }
    let engine = builder.start().await.unwrap();
    add_user(&store, "u1").await;
    let saga = engine
        .start_saga(StartSaga::new(
            "social-registration",
            json!({"user_id": "u1", "first_name": "Ann", "second_name": "Lee", "birthdate": "1990-05-01"}),
        ))
        .await
        .unwrap()
        .saga_id;

    // Attempts time out and are tried again, with growing pauses; the user stays pending.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let journal = engine.journal(&saga).await.unwrap();
        let history = sagaflow_core::history(&sagaflow_social::definitions(&config)[0], &journal);
        let timed_out = history
            .iter()
            .filter(|a| a.step_name == "verify" && a.status == AttemptStatus::TimedOut)
            .count();
        if timed_out >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "verify was not retried: {history:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&store, "u1").await, PENDING);

    // The verifier comes back: the next attempt is answered and the user verified.
    let verifier = sagaflow_social::verifier::participant(&config, store.clone())
        .start(store.clone(), bus.clone())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = engine.saga(&saga).await.unwrap().unwrap();
        if s.status == Status::Completed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never verified: {:?}",
            s.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&store, "u1").await, VERIFIED);

    // Late and duplicate updates (a verdict that would lower it, the same one again) are no-ops.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        raise_status(tx.as_mut(), "u1", FAILED, "late")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        raise_status(tx.as_mut(), "u1", VERIFIED, "again")
            .await
            .unwrap(),
        0
    );
    tx.commit().await.unwrap();
    assert_eq!(status(&store, "u1").await, VERIFIED);
    // Out of order the other way: failed first, then passed, ends verified.
    add_user(&store, "u2").await;
    let mut tx = store.begin().await.unwrap();
    raise_status(tx.as_mut(), "u2", FAILED, "first")
        .await
        .unwrap();
    raise_status(tx.as_mut(), "u2", VERIFIED, "then")
        .await
        .unwrap();
    raise_status(tx.as_mut(), "u2", FAILED, "late")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(status(&store, "u2").await, VERIFIED);

    engine.shutdown().await;
    users.shutdown().await;
    verifier.shutdown().await;
}
