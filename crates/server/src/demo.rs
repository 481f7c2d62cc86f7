//! `sagaflow` with no command: a built-in order saga on embedded SQLite, run three ways —
//! one completes, one compensates, one waits for stock and is woken by a signal — with each
//! saga's journal printed as a timeline.

use std::sync::Arc;

use anyhow::Context;
use sagaflow_core::{
    Definition, Event, Outcome, ParticipantTx, RetryPolicy, SagaId, SqlValue, Status, Step, Store,
    StoreError,
};
use sagaflow_engine::{
    async_trait, CommandCall, Engine, MemoryBus, Participant, SignalTarget, StartSaga,
};
use serde_json::json;

/// The demo's order saga.
pub fn order_definition() -> Definition {
    Definition::builder("order", 1)
        .step(Step::compensatable(
            "reserve_stock",
            "stock.reserve",
            "stock.release",
        ))
        .step(Step::compensatable(
            "charge",
            "billing.charge",
            "billing.refund",
        ))
        .step(Step::pivot("schedule_delivery", "delivery.schedule"))
        .step(Step::retriable("notify", "notifications.send").retry(RetryPolicy::attempts(5, 50)))
        .correlation_key("product")
        .build()
        .expect("the demo definition is valid")
}

struct Stock;

#[async_trait]
impl sagaflow_engine::TxHandler for Stock {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let product = call.context["product"].as_str().unwrap_or("?").to_string();
        let qty = call.context["qty"].as_i64().unwrap_or(1);
        match call.command.as_str() {
            "reserve" => {
                let changed = tx
                    .execute(
                        "UPDATE demo_stock SET qty = qty - $1 WHERE product = $2 AND qty >= $1",
                        &[qty.into(), product.clone().into()],
                    )
                    .await?;
                Ok(if changed == 1 {
                    Outcome::ok(json!({"reserved": qty}))
                } else {
                    Outcome::park("stock_added")
                })
            }
            _ => {
                tx.execute(
                    "UPDATE demo_stock SET qty = qty + $1 WHERE product = $2",
                    &[qty.into(), product.into()],
                )
                .await?;
                Ok(Outcome::ok(json!(null)))
            }
        }
    }
}

/// Creates the demo participants' table if missing, with 1 000 books in stock the first time
/// (lamps are out of stock until someone adds some).
pub async fn prepare(store: &Arc<dyn Store>) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS demo_stock (product TEXT PRIMARY KEY, qty BIGINT NOT NULL)",
        &[],
    )
    .await?;
    tx.execute(
        "INSERT INTO demo_stock (product, qty) VALUES ('book', 1000) ON CONFLICT (product) DO NOTHING",
        &[],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Creates the table and sets the demo's stock levels.
async fn setup(store: &Arc<dyn Store>) -> anyhow::Result<()> {
    prepare(store).await?;
    let mut tx = store.begin().await?;
    for (product, qty) in [("book", 10), ("lamp", 0)] {
        tx.execute(
            "DELETE FROM demo_stock WHERE product = $1",
            &[product.into()],
        )
        .await?;
        tx.execute(
            "INSERT INTO demo_stock (product, qty) VALUES ($1, $2)",
            &[product.into(), SqlValue::Integer(qty)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The order saga's participants: stock (transactional, parks when out of stock), billing
/// (declines amounts over 100), delivery, notifications (fails its first attempt).
pub fn participants() -> Vec<Participant> {
    vec![
        Participant::new("stock")
            .on_tx("reserve", Stock)
            .on_tx("release", Stock),
        Participant::new("billing")
            .on("charge", |call| async move {
                let amount = call.context["amount"].as_i64().unwrap_or(0);
                if amount > 100 {
                    Outcome::rejected(format!("card declined for {amount}"))
                } else {
                    Outcome::ok(json!({"charged": amount}))
                }
            })
            .on("refund", |_| async { Outcome::ok(json!(null)) }),
        Participant::new("delivery").on("schedule", |_| async {
            Outcome::ok(json!({"courier": "bike-7"}))
        }),
        // Fails its first attempt to show a retry after the pivot.
        Participant::new("notifications").on("send", |call| async move {
            if call.attempt == 1 {
                Outcome::failed("mail server busy")
            } else {
                Outcome::ok(json!({"notified": true}))
            }
        }),
    ]
}

/// Runs the demo against the store at `url`.
pub async fn run(url: &str) -> anyhow::Result<()> {
    let store = crate::store_url::open(url).await?;
    setup(&store).await.context("preparing the demo's tables")?;
    let bus = Arc::new(MemoryBus::new());
    let mut handles = Vec::new();
    for p in participants() {
        handles.push(p.start(store.clone(), bus.clone()).await?);
    }
    let engine = Engine::builder(store.clone(), bus.clone())
        .register(order_definition())
        .start()
        .await?;
    let mut ends = engine.watch_ends();
    println!("sagaflow demo — embedded SQLite at {url}\n");

    let orders = [
        (
            "completes",
            json!({"product": "book", "qty": 1, "amount": 30}),
        ),
        (
            "compensates: the card is declined",
            json!({"product": "book", "qty": 2, "amount": 500}),
        ),
        (
            "waits for stock, then completes",
            json!({"product": "lamp", "qty": 1, "amount": 20}),
        ),
    ];
    let mut ids = Vec::new();
    for (what, input) in &orders {
        let started = engine
            .start_saga(StartSaga::new("order", input.clone()))
            .await?;
        println!("started order saga {} ({what})", started.saga_id);
        ids.push(started.saga_id);
    }
    // The lamp order parks until stock arrives; wait until it does, then signal.
    wait_for(&engine, &ids[2], Status::Waiting).await?;
    let mut tx = store.begin().await?;
    tx.execute(
        "UPDATE demo_stock SET qty = qty + 5 WHERE product = $1",
        &["lamp".into()],
    )
    .await?;
    tx.commit().await?;
    let woken = engine
        .signal(
            SignalTarget::Correlation("lamp".into()),
            "stock_added",
            json!({"restocked": 5}),
        )
        .await?;
    println!(
        "signalled stock_added for product lamp: woke {} saga(s)\n",
        woken.len()
    );

    let mut done = 0;
    while done < ids.len() {
        let end = tokio::time::timeout(std::time::Duration::from_secs(30), ends.recv())
            .await
            .context("the demo sagas did not end within 30 s")?;
        if end.is_some_and(|e| ids.contains(&e.saga_id)) {
            done += 1;
        }
    }
    for id in &ids {
        print_timeline(&engine, id).await?;
    }
    engine.shutdown().await;
    for h in handles {
        h.shutdown().await;
    }
    println!("The journal, outbox and inbox are in {url}. Run `sagaflow saga ls --database-url {url}` to list sagas.");
    Ok(())
}

async fn wait_for(engine: &Engine, id: &SagaId, status: Status) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if engine.saga(id).await?.is_some_and(|s| s.status == status) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "saga {id} never became {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Prints a saga's journal, one line per event.
pub async fn print_timeline(engine: &Engine, id: &SagaId) -> anyhow::Result<()> {
    let Some(state) = engine.saga(id).await? else {
        println!("saga {id}: not found");
        return Ok(());
    };
    let def = engine
        .registry()
        .get(&state.definition, Some(state.version))
        .ok();
    let step = |i: usize| {
        def.as_ref()
            .and_then(|d| d.steps.get(i))
            .map(|s| s.name.clone())
            .unwrap_or_else(|| format!("#{i}"))
    };
    println!(
        "saga {id} [{} v{}] → {}",
        state.definition, state.version, state.status
    );
    let journal = engine.journal(id).await?;
    let t0 = journal.first().map(|e| e.at).unwrap_or(0);
    for entry in journal {
        println!(
            "  +{:>5} ms  {}",
            entry.at - t0,
            describe(&entry.event, &step)
        );
    }
    if let Some(reason) = &state.reason {
        println!("  reason: {reason}");
    }
    println!("  context: {}\n", state.context);
    Ok(())
}

/// One line for an event.
pub fn describe(event: &Event, step: &dyn Fn(usize) -> String) -> String {
    match event {
        Event::Started { input, .. } => format!("started with {input}"),
        Event::AttemptDispatched {
            step: s,
            attempt,
            phase,
            ..
        } => {
            format!("{} {} attempt {attempt} sent", step(*s), phase.as_str())
        }
        Event::StepSucceeded {
            step: s, output, ..
        } => format!("{} succeeded {output}", step(*s)),
        Event::AttemptFailed {
            step: s,
            error,
            retry_at,
            ..
        } => format!(
            "{} failed: {error}{}",
            step(*s),
            if retry_at.is_some() {
                " (will retry)"
            } else {
                " (giving up)"
            }
        ),
        Event::AttemptTimedOut { step: s, phase, .. } => {
            format!(
                "{} {} timed out (may have happened)",
                step(*s),
                phase.as_str()
            )
        }
        Event::StepRejected {
            step: s, reason, ..
        } => format!("{} rejected: {reason}", step(*s)),
        Event::Parked {
            step: s, signal, ..
        } => format!(
            "{} waits for signal {}",
            step(*s),
            signal.as_deref().unwrap_or("(any)")
        ),
        Event::ParkTimedOut { step: s } => format!("{} waited too long", step(*s)),
        Event::Signalled { step: s, name, .. } => format!("{} woken by signal {name}", step(*s)),
        Event::SignalHeld { step: s, name, .. } => {
            format!(
                "signal {name} held for {} (still being attempted)",
                step(*s)
            )
        }
        Event::StepSkipped { step: s, reason } => {
            format!("{} skipped: guard {reason} is false", step(*s))
        }
        Event::GuardRefused { step: s, reason } => {
            format!("{} refused by guard {reason}", step(*s))
        }
        Event::CompensationSucceeded { step: s, .. } => format!("{} compensated", step(*s)),
        Event::CompensationFailed { step: s, error, .. } => {
            format!("{} compensation failed: {error}", step(*s))
        }
        Event::CancelRequested { reason } => format!("cancel requested: {reason}"),
        Event::CancelAbandoned { reason } => format!("cancel abandoned: {reason}"),
        Event::DeadlineExceeded => "saga deadline exceeded".into(),
        Event::Resumed => "resumed by an operator".into(),
        Event::ReplyIgnored {
            step: s,
            attempt,
            reason,
            ..
        } => {
            format!("reply for {} attempt {attempt} ignored: {reason}", step(*s))
        }
        Event::Ended { status, reason } => format!(
            "ended {status:?}{}",
            reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
    }
}
