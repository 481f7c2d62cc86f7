//! Two engines (two connection pools, as two processes would have) share one PostgreSQL
//! database: both work, one dies mid-run, the other finishes its sagas through the leases,
//! and no step is done twice.

use std::sync::Arc;
use std::time::Duration;

use sagaflow_core::Store;
use sagaflow_engine::{Engine, EngineConfig, MemoryBus, ParticipantHandle, StartSaga};
use serde_json::json;

mod support;
use support::pg_url;

const SAGAS: usize = 300;

async fn node(url: &str, schema: &str) -> (Engine, ParticipantHandle, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(
        sagaflow_postgres::PgStore::connect_in_schema(url, schema)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for this test: {e}")),
    );
    sagaflow::drill::prepare(&store).await.unwrap();
    let bus = Arc::new(MemoryBus::new());
    let participant = sagaflow::drill::participant()
        .start(store.clone(), bus.clone())
        .await
        .unwrap();
    let engine = Engine::builder(store.clone(), bus)
        .register(sagaflow::drill::definition())
        .config(EngineConfig {
            redeliver_after_ms: 1_000,
            timer_lease_ms: 1_000,
            poll_ms: 100,
            ..EngineConfig::default()
        })
        .start()
        .await
        .unwrap();
    (engine, participant, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_share_the_work_and_one_finishes_what_the_other_dropped() {
    let url = pg_url();
    let schema = format!("two_engines_{}", fastrand::u32(..));
    let (a, a_participant, _) = node(&url, &schema).await;
    let (b, b_participant, store) = node(&url, &schema).await;
    let mut a_ends = a.watch_ends();
    let mut b_ends = b.watch_ends();

    for i in 0..SAGAS {
        let engine = if i % 2 == 0 { &a } else { &b };
        engine
            .start_saga(
                StartSaga::new("drill", json!({ "i": i })).idempotency_key(format!("drill-{i}")),
            )
            .await
            .unwrap();
    }
    // Let both engines finish some sagas, then A dies without cleaning up.
    let (mut by_a, mut by_b) = (0, 0);
    while by_a < 20 || by_b < 20 {
        tokio::select! {
            Some(_) = a_ends.recv() => by_a += 1,
            Some(_) = b_ends.recv() => by_b += 1,
        }
    }
    a.abort();
    a_participant.abort();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let in_flight: u64 = store
            .versions_in_flight()
            .await
            .unwrap()
            .iter()
            .map(|v| v.2)
            .sum();
        if in_flight == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{in_flight} sagas never ended after engine A died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = sagaflow::drill::verify(&store, SAGAS)
        .await
        .unwrap_or_else(|problems| panic!("{}", problems.join("\n")));
    assert_eq!(report.completed + report.compensated, SAGAS);
    b.shutdown().await;
    b_participant.shutdown().await;
    sagaflow_postgres::drop_schema(&url, &schema).await.unwrap();
}
