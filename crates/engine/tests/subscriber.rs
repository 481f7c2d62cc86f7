//! The subscriber SDK on a real SQLite file and the in-memory bus: a choreographed flow runs
//! from service to service and reads back as one timeline; a failing handler is retried with
//! backoff from the retries table and succeeds; one that never succeeds ends in the dead
//! letters and its compensation hook runs; a redelivered event has no second effect.

use std::sync::Arc;
use std::time::Duration;

use sagaflow_core::{ParticipantTx, RetryPolicy, Store, StoreError, Transport};
use sagaflow_engine::{
    async_trait, emit, event_topic, flow::FlowEntry, Emitter, EventCall, EventHandler, EventRelay,
    HandlerError, MemoryBus, NewEvent, Subscriber,
};
use serde_json::json;

/// The database a scenario runs on: a SQLite file, or a fresh PostgreSQL schema.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Db {
    fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Db {
        Db::Postgres(format!("subscriber_{}", fastrand::u32(..)))
    }
}

fn pg_url() -> String {
    std::env::var("SAGAFLOW_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

async fn store(db: &Db) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = match db {
        Db::Sqlite(dir) => {
            let url = format!("sqlite://{}", dir.path().join("flows.db").display());
            Arc::new(sagaflow_sqlite::SqliteStore::open(&url).await.unwrap())
        }
        Db::Postgres(schema) => Arc::new(
            sagaflow_postgres::PgStore::connect_in_schema(&pg_url(), schema)
                .await
                .expect("PostgreSQL is required for this test"),
        ),
    };
    let mut tx = store.begin().await.unwrap();
    tx.execute(
        "CREATE TABLE effects (id TEXT PRIMARY KEY, what TEXT NOT NULL, correlation_id TEXT NOT NULL)",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sagaflow_engine::flow::prepare(&store).await.unwrap();
    store
}

async fn effects(store: &Arc<dyn Store>, correlation: &str) -> Vec<String> {
    let mut tx = store.begin().await.unwrap();
    let rows = tx
        .query(
            "SELECT what FROM effects WHERE correlation_id = $1 ORDER BY id",
            &[correlation.into()],
        )
        .await
        .unwrap();
    let _ = tx.rollback().await;
    rows.iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

async fn add_effect(
    tx: &mut dyn ParticipantTx,
    what: &str,
    correlation: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO effects (id, what, correlation_id) VALUES ($1, $2, $3)",
        &[
            uuid::Uuid::now_v7().to_string().into(),
            what.into(),
            correlation.into(),
        ],
    )
    .await
    .map(|_| ())
}

/// Records its effect; fails its first `fail_first` attempts (of every event); emits `next`.
struct Step {
    name: &'static str,
    fail_first: u32,
    next: Option<&'static str>,
}

#[async_trait]
impl EventHandler for Step {
    async fn handle(
        &self,
        event: &EventCall,
        tx: &mut dyn ParticipantTx,
        out: &mut Emitter,
    ) -> Result<(), HandlerError> {
        add_effect(tx, self.name, &event.correlation_id).await?;
        if event.attempt <= self.fail_first {
            return Err(HandlerError(format!(
                "{} is down (attempt {})",
                self.name, event.attempt
            )));
        }
        if let Some(next) = self.next {
            out.emit(event.follow(next, json!({ "after": self.name })));
        }
        Ok(())
    }

    async fn on_exhausted(
        &self,
        event: &EventCall,
        error: &str,
        tx: &mut dyn ParticipantTx,
        _out: &mut Emitter,
    ) -> Result<(), StoreError> {
        add_effect(
            tx,
            &format!("compensate {}: {error}", self.name),
            &event.correlation_id,
        )
        .await
    }
}

fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        initial_delay_ms: 50,
        multiplier: 2.0,
        max_delay_ms: 1_000,
        jitter: 0.0,
    }
}

async fn start_flow(store: &Arc<dyn Store>, relay: &EventRelay, correlation: &str) {
    let mut tx = store.begin().await.unwrap();
    emit(
        tx.as_mut(),
        "test-api",
        &NewEvent::new("t.started", correlation, json!({})),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    relay.wake();
}

async fn wait_for(
    store: &Arc<dyn Store>,
    correlation: &str,
    done: impl Fn(&[FlowEntry]) -> bool,
) -> Vec<FlowEntry> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let entries = sagaflow_engine::flow::entries(store, correlation)
            .await
            .unwrap();
        if done(&entries) {
            return entries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flow never got there: {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn outcomes(entries: &[FlowEntry]) -> Vec<(String, String, String)> {
    entries
        .iter()
        .map(|e| (e.service.clone(), e.event.clone(), e.outcome.clone()))
        .collect()
}

fn triple(service: &str, event: &str, outcome: &str) -> (String, String, String) {
    (service.into(), event.into(), outcome.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_flow_goes_service_to_service_with_retries_and_reads_as_one_timeline() {
    a_flow_goes_service_to_service_with_retries_and_reads_as_one_timeline(Db::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_flow_goes_service_to_service_with_retries_and_reads_as_one_timeline() {
    a_flow_goes_service_to_service_with_retries_and_reads_as_one_timeline(Db::postgres()).await;
}

async fn a_flow_goes_service_to_service_with_retries_and_reads_as_one_timeline(db: Db) {
    let store = store(&db).await;
    let bus = Arc::new(MemoryBus::new());
    let relay = EventRelay::start(store.clone(), bus.clone()).await.unwrap();
    let first = Subscriber::new("first")
        .on(
            "t.started",
            quick(3),
            Step {
                name: "first",
                fail_first: 0,
                next: Some("t.first_done"),
            },
        )
        .start(store.clone(), bus.clone(), Some(relay.waker()))
        .await
        .unwrap();
    // The second service is down for its first two attempts, then recovers (3 allowed).
    let second = Subscriber::new("second")
        .on(
            "t.first_done",
            quick(3),
            Step {
                name: "second",
                fail_first: 2,
                next: None,
            },
        )
        .start(store.clone(), bus.clone(), Some(relay.waker()))
        .await
        .unwrap();

    start_flow(&store, &relay, "flow-1").await;
    let entries = wait_for(&store, "flow-1", |e| {
        e.iter()
            .any(|x| x.service == "second" && x.outcome == "handled")
    })
    .await;
    assert_eq!(
        outcomes(&entries),
        vec![
            triple("test-api", "t.started", "emitted"),
            triple("first", "t.first_done", "emitted"),
            triple("first", "t.started", "handled"),
            triple("second", "t.first_done", "failed"),
            triple("second", "t.first_done", "failed"),
            triple("second", "t.first_done", "handled"),
        ]
    );
    assert_eq!(
        entries.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        vec![0, 0, 1, 1, 2, 3]
    );
    // The backoff grows: 50 ms then 100 ms between the attempts (the timeline's clock).
    let at: Vec<i64> = entries[3..].iter().map(|e| e.at).collect();
    assert!(at[1] - at[0] >= 50 && at[2] - at[1] >= 100, "{at:?}");
    // Failed attempts rolled back: one effect each (the failing ones left nothing).
    assert_eq!(effects(&store, "flow-1").await, vec!["first", "second"]);
    first.shutdown().await;
    second.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_exhausted_event_is_dead_lettered_and_compensated_and_a_redelivery_is_ignored() {
    an_exhausted_event_is_dead_lettered_and_compensated_and_a_redelivery_is_ignored(Db::sqlite())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_exhausted_event_is_dead_lettered_and_compensated_and_a_redelivery_is_ignored()
{
    an_exhausted_event_is_dead_lettered_and_compensated_and_a_redelivery_is_ignored(Db::postgres())
        .await;
}

async fn an_exhausted_event_is_dead_lettered_and_compensated_and_a_redelivery_is_ignored(db: Db) {
    let store = store(&db).await;
    let bus = Arc::new(MemoryBus::new());
    let relay = EventRelay::start(store.clone(), bus.clone()).await.unwrap();
    let broken = Subscriber::new("broken")
        .on(
            "t.started",
            quick(2),
            Step {
                name: "broken",
                fail_first: u32::MAX,
                next: None,
            },
        )
        .start(store.clone(), bus.clone(), None)
        .await
        .unwrap();
    start_flow(&store, &relay, "flow-2").await;
    let entries = wait_for(&store, "flow-2", |e| {
        e.iter().any(|x| x.outcome == "compensated")
    })
    .await;
    assert_eq!(
        outcomes(&entries)[1..],
        [
            triple("broken", "t.started", "failed"),
            triple("broken", "t.started", "dead_lettered"),
            triple("broken", "t.started", "compensated"),
        ]
    );
    assert_eq!(
        effects(&store, "flow-2").await,
        vec!["compensate broken: broken is down (attempt 2)"]
    );
    let dead = store.dead_letters(0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .reason
            .contains("gave up on t.started after 2 attempts"),
        "{}",
        dead[0].reason
    );
    broken.shutdown().await;

    // A service that handles it, and the same event delivered twice (two publishes of one
    // envelope under different transport ids, as a broker redelivery would be).
    let steady = Subscriber::new("steady")
        .on(
            "t.again",
            quick(3),
            Step {
                name: "steady",
                fail_first: 0,
                next: None,
            },
        )
        .start(store.clone(), bus.clone(), None)
        .await
        .unwrap();
    let envelope = sagaflow_core::Envelope {
        protocol: sagaflow_core::PROTOCOL_VERSION,
        message_id: "event-1".into(),
        kind: sagaflow_core::MessageKind::Event,
        subject: event_topic("t.again"),
        saga_id: None,
        correlation_id: Some("flow-3".into()),
        causation_id: None,
        step: None,
        attempt: None,
        traceparent: None,
        request_id: None,
        payload: json!({}),
    }
    .to_bytes();
    for id in ["delivery-1", "delivery-2"] {
        bus.publish(&event_topic("t.again"), id, envelope.clone())
            .await
            .unwrap();
    }
    let entries = wait_for(&store, "flow-3", |e| e.len() >= 2).await;
    assert_eq!(
        outcomes(&entries),
        vec![
            triple("steady", "t.again", "handled"),
            triple("steady", "t.again", "duplicate"),
        ]
    );
    assert_eq!(effects(&store, "flow-3").await, vec!["steady"]);
    steady.shutdown().await;
    relay.shutdown().await;
}

/// Always fails; its compensation hook fails the first time it runs.
struct Stubborn {
    calls: Arc<std::sync::atomic::AtomicU32>,
    hook_calls: Arc<std::sync::atomic::AtomicU32>,
}

#[async_trait]
impl EventHandler for Stubborn {
    async fn handle(
        &self,
        _event: &EventCall,
        _tx: &mut dyn ParticipantTx,
        _out: &mut Emitter,
    ) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(HandlerError("down".into()))
    }

    async fn on_exhausted(
        &self,
        event: &EventCall,
        _error: &str,
        tx: &mut dyn ParticipantTx,
        _out: &mut Emitter,
    ) -> Result<(), StoreError> {
        if self
            .hook_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            return Err(StoreError::Query("the hook's first try fails".into()));
        }
        add_effect(tx, "compensated", &event.correlation_id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_failing_compensation_hook_is_tried_again_alone_and_dead_letters_once() {
    a_failing_compensation_hook_is_tried_again_alone_and_dead_letters_once(Db::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_failing_compensation_hook_is_tried_again_alone_and_dead_letters_once() {
    a_failing_compensation_hook_is_tried_again_alone_and_dead_letters_once(Db::postgres()).await;
}

async fn a_failing_compensation_hook_is_tried_again_alone_and_dead_letters_once(db: Db) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let store = store(&db).await;
    let bus = Arc::new(MemoryBus::new());
    let relay = EventRelay::start(store.clone(), bus.clone()).await.unwrap();
    let (calls, hook_calls) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let sub = Subscriber::new("stubborn")
        .on(
            "t.started",
            quick(2),
            Stubborn {
                calls: calls.clone(),
                hook_calls: hook_calls.clone(),
            },
        )
        .start(store.clone(), bus.clone(), None)
        .await
        .unwrap();
    start_flow(&store, &relay, "flow-4").await;
    let entries = wait_for(&store, "flow-4", |e| {
        e.iter().any(|x| x.outcome == "compensated")
    })
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the handler ran its 2 attempts, no more"
    );
    assert_eq!(
        hook_calls.load(Ordering::SeqCst),
        2,
        "the hook ran again after failing"
    );
    assert_eq!(effects(&store, "flow-4").await, vec!["compensated"]);
    assert_eq!(
        store.dead_letters(0, 10).await.unwrap().len(),
        1,
        "one dead letter"
    );
    assert_eq!(
        outcomes(&entries)[1..],
        [
            triple("stubborn", "t.started", "failed"),
            triple("stubborn", "t.started", "dead_lettered"),
            triple("stubborn", "t.started", "compensated"),
        ]
    );
    sub.shutdown().await;
    relay.shutdown().await;
}
