//! `sagaflow drill`: a crash-recovery workload. It starts N sagas (idempotently: run it again
//! after a crash and it starts none twice) whose participants record every effect in
//! `drill_effects`, keyed by idempotency key, and runs until every saga has ended. The crash
//! test kills it with SIGKILL at random moments and checks the outcome.

use std::sync::Arc;
use std::time::Duration;

use sagaflow_core::{
    Definition, Outcome, ParticipantTx, Phase, RetryPolicy, Step, Store, StoreError,
};
use sagaflow_engine::{
    async_trait, CommandCall, Engine, EngineConfig, MemoryBus, Participant, StartSaga, TxHandler,
};
use serde_json::json;

/// Drill parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct DrillArgs {
    /// How many sagas.
    #[arg(long, default_value_t = 1000)]
    pub sagas: usize,
}

/// The drill's saga: two compensatable steps, a pivot, a retriable step.
pub fn definition() -> Definition {
    let retry = RetryPolicy {
        max_attempts: 3,
        initial_delay_ms: 20,
        multiplier: 2.0,
        max_delay_ms: 200,
        jitter: 0.2,
    };
    Definition::builder("drill", 1)
        .step(Step::compensatable("debit", "drill.debit", "drill.credit").retry(retry.clone()))
        .step(
            Step::compensatable("reserve", "drill.reserve", "drill.unreserve").retry(retry.clone()),
        )
        .step(Step::pivot("confirm", "drill.confirm").retry(retry.clone()))
        .step(Step::retriable("ship", "drill.ship").retry(retry))
        .build()
        .expect("the drill definition is valid")
}

/// What the drill expects of saga number `i`: sagas with `i % 10 == 3` are rejected at
/// `reserve` and compensate; the others complete (`i % 10 == 7` fail `ship` once first).
pub fn expected_to_complete(i: u64) -> bool {
    i % 10 != 3
}

struct Effects;

#[async_trait]
impl TxHandler for Effects {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let i = call.context["i"].as_u64().unwrap_or(0);
        if call.command == "reserve" && !expected_to_complete(i) {
            return Ok(Outcome::rejected("nothing left to reserve"));
        }
        if call.command == "ship" && i % 10 == 7 && call.attempt == 1 {
            return Ok(Outcome::failed("courier unavailable"));
        }
        let phase = match call.phase {
            Phase::Action => "action",
            Phase::Compensation => "compensation",
        };
        tx.execute(
            "INSERT INTO drill_effects (key, saga_id, step, phase) VALUES ($1, $2, $3, $4)",
            &[
                call.key.clone().into(),
                call.saga_id.clone().into(),
                call.step.clone().into(),
                phase.into(),
            ],
        )
        .await?;
        Ok(Outcome::ok(json!({ format!("{}_done", call.step): true })))
    }
}

/// Creates the effects table (no unique key: a second effect would show as a second row).
pub async fn prepare(store: &Arc<dyn Store>) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS drill_effects (key TEXT NOT NULL, saga_id TEXT NOT NULL, step TEXT NOT NULL, phase TEXT NOT NULL)",
        &[],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The drill's participant.
pub fn participant() -> Participant {
    ["debit", "credit", "reserve", "unreserve", "confirm", "ship"]
        .into_iter()
        .fold(Participant::new("drill").concurrency(32), |p, c| {
            p.on_tx(c, Effects)
        })
}

/// Runs the drill until every saga has ended.
pub async fn run(args: DrillArgs, database_url: &str) -> anyhow::Result<()> {
    let store = crate::store_url::open(database_url).await?;
    prepare(&store).await?;
    let bus = Arc::new(MemoryBus::new());
    let handle = participant().start(store.clone(), bus.clone()).await?;
    let engine = Engine::builder(store.clone(), bus.clone())
        .register(definition())
        .config(EngineConfig {
            // Recover lost in-memory messages quickly after a crash.
            redeliver_after_ms: 1_000,
            timer_lease_ms: 2_000,
            poll_ms: 200,
            ..EngineConfig::default()
        })
        .start()
        .await?;
    println!("drill started");
    // Starts run 64 at a time, so a crash finds many sagas in every state.
    let mut starter = Some({
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            for i in 0..args.sagas as u64 {
                if running.len() >= 64 {
                    if let Some(done) = running.join_next().await {
                        done??;
                    }
                }
                let engine = engine.clone();
                running.spawn(async move {
                    let req = StartSaga::new("drill", json!({ "i": i }))
                        .idempotency_key(format!("drill-{i}"));
                    engine
                        .start_saga(req)
                        .await
                        .map(|_| ())
                        .map_err(|e| anyhow::anyhow!("starting drill saga {i}: {e}"))
                });
            }
            while let Some(done) = running.join_next().await {
                done??;
            }
            Ok::<(), anyhow::Error>(())
        })
    });
    let mut starts_done = false;
    let mut stop = Box::pin(shutdown_signal());
    loop {
        if let Some(done) = starter.take_if(|s| s.is_finished()) {
            done.await??;
            starts_done = true;
            println!("all {} sagas started", args.sagas);
        }
        let in_flight: u64 = store
            .versions_in_flight()
            .await?
            .iter()
            .map(|(_, _, n)| n)
            .sum();
        println!("progress in_flight={in_flight}");
        if starts_done && in_flight == 0 {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = &mut stop => {
                // Graceful: stop taking work, finish the decisions in hand, then exit.
                if let Some(s) = starter.take() {
                    s.abort();
                }
                engine.shutdown().await;
                handle.shutdown().await;
                println!("drill stopped");
                return Ok(());
            }
        }
    }
    engine.shutdown().await;
    handle.shutdown().await;
    println!("drill done");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What a finished drill left behind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DrillReport {
    /// Sagas that completed.
    pub completed: usize,
    /// Sagas that compensated.
    pub compensated: usize,
}

/// Checks a finished drill of `sagas` sagas: every saga ended as expected; every effect
/// happened exactly once (no idempotency key twice, each step's action once, compensated
/// sagas' net effect zero); no step succeeded twice in a journal; each journal folds to its
/// snapshot. Returns the problems found, if any.
pub async fn verify(store: &Arc<dyn Store>, sagas: usize) -> Result<DrillReport, Vec<String>> {
    let def = definition();
    let mut problems = Vec::new();
    let mut report = DrillReport::default();
    let effects = match read_effects(store).await {
        Ok(rows) => rows,
        Err(e) => return Err(vec![format!("reading drill_effects: {e}")]),
    };
    let mut by_key = std::collections::HashMap::<&str, usize>::new();
    let mut by_saga = std::collections::HashMap::<&str, Vec<(String, String)>>::new();
    for (key, saga, step, phase) in &effects {
        *by_key.entry(key).or_default() += 1;
        by_saga
            .entry(saga)
            .or_default()
            .push((step.clone(), phase.clone()));
    }
    for (key, n) in &by_key {
        if *n > 1 {
            problems.push(format!("effect {key} happened {n} times"));
        }
    }
    for i in 0..sagas as u64 {
        let key = format!("drill-{i}");
        let id = match store.saga_by_idempotency_key(&key).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                problems.push(format!("saga {key} was never started"));
                continue;
            }
            Err(e) => return Err(vec![e.to_string()]),
        };
        let state = match store.load(std::slice::from_ref(&id)).await {
            Ok(mut s) if !s.is_empty() => s.remove(0),
            Ok(_) => {
                problems.push(format!("saga {key} ({id}) has no snapshot"));
                continue;
            }
            Err(e) => return Err(vec![e.to_string()]),
        };
        let completes = expected_to_complete(i);
        let (want_status, mut want) = if completes {
            report.completed += 1;
            (
                sagaflow_core::Status::Completed,
                vec![
                    "debit/action",
                    "reserve/action",
                    "confirm/action",
                    "ship/action",
                ],
            )
        } else {
            report.compensated += 1;
            (
                sagaflow_core::Status::Compensated,
                vec!["debit/action", "debit/compensation"],
            )
        };
        if state.status != want_status {
            problems.push(format!(
                "saga {key} ({id}) is {} ({:?}), expected {want_status}",
                state.status, state.reason
            ));
        }
        let mut got: Vec<String> = by_saga
            .get(id.0.as_str())
            .map(|v| v.iter().map(|(s, p)| format!("{s}/{p}")).collect())
            .unwrap_or_default();
        got.sort();
        want.sort();
        if got != want {
            problems.push(format!(
                "saga {key} ({id}) effects {got:?}, expected {want:?}"
            ));
        }
        let journal = match store.journal(&id).await {
            Ok(j) => j,
            Err(e) => return Err(vec![e.to_string()]),
        };
        let mut succeeded = std::collections::HashSet::new();
        for entry in &journal {
            if let sagaflow_core::Event::StepSucceeded { step, .. } = entry.event {
                if !succeeded.insert(step) {
                    problems.push(format!(
                        "saga {key} ({id}): step {step} succeeded twice in the journal"
                    ));
                }
            }
        }
        let folded = sagaflow_core::fold(id.clone(), &def, &journal);
        if (folded.status, &folded.context, folded.journal_version)
            != (state.status, &state.context, state.journal_version)
        {
            problems.push(format!(
                "saga {key} ({id}): journal does not fold to its snapshot"
            ));
        }
        if problems.len() > 20 {
            break;
        }
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(problems)
    }
}

async fn read_effects(
    store: &Arc<dyn Store>,
) -> Result<Vec<(String, String, String, String)>, StoreError> {
    let mut tx = store.begin().await?;
    let rows = tx
        .query("SELECT key, saga_id, step, phase FROM drill_effects", &[])
        .await?;
    tx.rollback().await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let text = |i: usize| {
                r.get(i)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            (text(0), text(1), text(2), text(3))
        })
        .collect())
}
