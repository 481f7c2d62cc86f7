//! A shop-like participant whose behaviour each saga's input controls, recording every effect
//! in a table keyed by idempotency key, and a harness that runs it on a real SQLite file.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use sagaflow_core::{
    Definition, Outcome, ParticipantTx, Phase, RetryPolicy, SagaId, SagaState, SqlValue, Status,
    Step, Store, StoreError,
};
use sagaflow_engine::{
    async_trait, CommandCall, Engine, EngineConfig, MemoryBus, Participant, ParticipantHandle,
    TxHandler,
};

/// reserve (compensatable) → charge (compensatable) → ship (pivot) → notify (retriable).
pub fn order(version: u32) -> Definition {
    let quick = RetryPolicy {
        max_attempts: 3,
        initial_delay_ms: 10,
        multiplier: 2.0,
        max_delay_ms: 100,
        jitter: 0.0,
    };
    Definition::builder("order", version)
        .step(Step::compensatable("reserve", "shop.reserve", "shop.release").retry(quick.clone()))
        .step(Step::compensatable("charge", "shop.charge", "shop.refund").retry(quick.clone()))
        .step(Step::pivot("ship", "shop.ship").retry(quick.clone()))
        .step(Step::retriable("notify", "shop.notify").retry(quick))
        .correlation_key("customer")
        .build()
        .expect("valid")
}

/// The shop participant. The saga input says what to do:
/// `reject`: step name to reject; `park`: step name that parks until signal `go` (for at
/// most `park_timeout_ms` when given);
/// `fail`: `{step: n}` fail the first n attempts. Compensations fail while the
/// `refund_broken` row is set.
pub struct Shop;

#[async_trait]
impl TxHandler for Shop {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let ctx = &call.context;
        let step = call.step.as_str();
        if call.phase == Phase::Action {
            if ctx["reject"].as_str() == Some(step) {
                return Ok(Outcome::rejected(format!("{step} says no")));
            }
            if ctx["park"].as_str() == Some(step) && ctx["go"].is_null() {
                return Ok(Outcome::Park {
                    until: Some("go".into()),
                    timeout_ms: ctx["park_timeout_ms"].as_u64(),
                });
            }
            if let Some(n) = ctx["fail"][step].as_u64() {
                if u64::from(call.attempt) <= n {
                    return Ok(Outcome::failed(format!(
                        "{step} attempt {} fails",
                        call.attempt
                    )));
                }
            }
        } else {
            let broken = tx
                .query("SELECT 1 FROM shop_flags WHERE name = 'refund_broken'", &[])
                .await?;
            if !broken.is_empty() {
                return Ok(Outcome::failed("refund service down"));
            }
        }
        let phase = if call.phase == Phase::Action {
            "action"
        } else {
            "compensation"
        };
        tx.execute(
            "INSERT INTO shop_effects (key, saga_id, step, phase) VALUES ($1, $2, $3, $4)",
            &[
                call.key.clone().into(),
                call.saga_id.clone().into(),
                step.into(),
                phase.into(),
            ],
        )
        .await?;
        Ok(Outcome::ok(
            serde_json::json!({ format!("{step}_{phase}"): true }),
        ))
    }
}

/// The shop participant: every command in a transaction with inbox de-duplication.
pub fn shop_participant() -> Participant {
    ["reserve", "release", "charge", "refund", "ship", "notify"]
        .into_iter()
        .fold(Participant::new("shop"), |p, cmd| p.on_tx(cmd, Shop))
}

/// A participant whose `charge` answers its first attempt only after a second — long after
/// the step's timeout (a plain handler: a slow handler must not sit inside a database
/// transaction).
pub fn slow_participant() -> Participant {
    Participant::new("slow").on("charge", |call: CommandCall| async move {
        if call.attempt == 1 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Outcome::ok(serde_json::Value::Null)
    })
}

pub async fn prepare(store: &Arc<dyn Store>) {
    let mut tx = store.begin().await.expect("begin");
    for sql in [
        "CREATE TABLE IF NOT EXISTS shop_effects (key TEXT NOT NULL, saga_id TEXT NOT NULL, step TEXT NOT NULL, phase TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS shop_flags (name TEXT PRIMARY KEY)",
    ] {
        tx.execute(sql, &[]).await.expect("create");
    }
    tx.commit().await.expect("commit");
}

pub async fn set_flag(store: &Arc<dyn Store>, name: &str, on: bool) {
    let mut tx = store.begin().await.expect("begin");
    let sql = if on {
        "INSERT INTO shop_flags (name) VALUES ($1)"
    } else {
        "DELETE FROM shop_flags WHERE name = $1"
    };
    tx.execute(sql, &[name.into()]).await.expect("flag");
    tx.commit().await.expect("commit");
}

/// `(step, phase)` effects of one saga, in the order they happened.
pub async fn effects_of(store: &Arc<dyn Store>, saga: &SagaId) -> Vec<(String, String)> {
    let mut tx = store.begin().await.expect("begin");
    let rows = tx
        .query(
            "SELECT step, phase FROM shop_effects WHERE saga_id = $1 ORDER BY rowid",
            &[saga.0.clone().into()],
        )
        .await
        .expect("query");
    tx.rollback().await.expect("rollback");
    rows.into_iter()
        .map(|r| {
            let text = |v: &SqlValue| v.as_str().unwrap_or_default().to_string();
            (text(&r[0]), text(&r[1]))
        })
        .collect()
}

/// Keys recorded more than once: must always be empty.
pub async fn duplicate_effects(store: &Arc<dyn Store>) -> Vec<String> {
    let mut tx = store.begin().await.expect("begin");
    let rows = tx
        .query(
            "SELECT key FROM shop_effects GROUP BY key HAVING COUNT(*) > 1",
            &[],
        )
        .await
        .expect("query");
    tx.rollback().await.expect("rollback");
    rows.into_iter()
        .filter_map(|r| r[0].as_str().map(str::to_string))
        .collect()
}

/// The in-memory bus, with a record of every publish made through it (the bus itself drops
/// duplicate message ids, so a test that wants to see a duplicate looks here).
#[derive(Default)]
pub struct Tap {
    inner: MemoryBus,
    published: std::sync::Mutex<Vec<(String, String, Vec<u8>)>>,
}

impl Tap {
    /// The (message id, body) pairs published to `topic`, in order.
    pub fn published_to(&self, topic: &str) -> Vec<(String, Vec<u8>)> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, id, body)| (id.clone(), body.clone()))
            .collect()
    }
}

#[sagaflow_engine::async_trait]
impl sagaflow_core::Transport for Tap {
    async fn publish(
        &self,
        topic: &str,
        message_id: &str,
        body: Vec<u8>,
    ) -> Result<(), sagaflow_core::TransportError> {
        self.published.lock().unwrap().push((
            topic.to_string(),
            message_id.to_string(),
            body.clone(),
        ));
        self.inner.publish(topic, message_id, body).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn sagaflow_core::Subscription>, sagaflow_core::TransportError> {
        self.inner.subscribe(topic, group).await
    }
}

pub struct Harness {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub bus: Arc<Tap>,
    pub participants: Vec<ParticipantHandle>,
    pub dir: Arc<tempfile::TempDir>,
}

pub fn fast_config() -> EngineConfig {
    EngineConfig {
        redeliver_after_ms: 500,
        timer_lease_ms: 500,
        poll_ms: 100,
        ..EngineConfig::default()
    }
}

pub async fn open_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let path = dir.path().join("engine.db");
    let url = format!("sqlite://{}", path.display());
    Arc::new(
        sagaflow_sqlite::SqliteStore::open(&url)
            .await
            .expect("open sqlite"),
    )
}

impl Harness {
    pub async fn new(defs: Vec<Definition>) -> Harness {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        Harness::on(dir, defs).await.expect("engine starts")
    }

    /// A new engine (and participant) on the store in `dir`, as after a restart.
    pub async fn on(
        dir: Arc<tempfile::TempDir>,
        defs: Vec<Definition>,
    ) -> Result<Harness, sagaflow_engine::EngineError> {
        let store = open_store(&dir).await;
        prepare(&store).await;
        let bus = Arc::new(Tap::default());
        let mut participants = Vec::new();
        for p in [shop_participant(), slow_participant()] {
            participants.push(
                p.start(store.clone(), bus.clone())
                    .await
                    .expect("participant"),
            );
        }
        let mut builder = Engine::builder(store.clone(), bus.clone()).config(fast_config());
        for d in defs {
            builder = builder.register(d);
        }
        let engine = builder.start().await?;
        Ok(Harness {
            engine,
            store,
            bus,
            participants,
            dir,
        })
    }

    /// Waits (with a deadline) until the saga's state satisfies `done`.
    pub async fn wait(
        &self,
        id: &SagaId,
        what: &str,
        done: impl Fn(&SagaState) -> bool,
    ) -> SagaState {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.engine.saga(id).await.expect("load") {
                if done(&s) {
                    return s;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!(
                        "saga {id} never became {what}; it is {:?}: {:?}",
                        s.status, s.reason
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn wait_status(&self, id: &SagaId, status: Status) -> SagaState {
        self.wait(id, status.as_str(), |s| s.status == status).await
    }

    pub async fn stop(self) -> Arc<tempfile::TempDir> {
        self.engine.shutdown().await;
        for p in self.participants {
            p.shutdown().await;
        }
        self.dir
    }

    pub fn crash(self) -> Arc<tempfile::TempDir> {
        self.engine.abort();
        for p in self.participants {
            p.abort();
        }
        self.dir
    }
}
