//! The README's example, compiled with every `cargo clippy --all-targets` so it stays true:
//! an order saga on an embedded SQLite file with in-process participants.
//!
//! Run it with `cargo run -p sagaflow-engine --example embedded`.

use std::sync::Arc;

use sagaflow_core::{Definition, Outcome, Step};
use sagaflow_engine::{Engine, MemoryBus, Participant, StartSaga};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let order = Definition::builder("order", 1)
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
        .step(Step::pivot("schedule_delivery", "delivery.schedule")) // the point of no return
        .step(Step::retriable("notify", "notifications.send")) // retried until it succeeds
        .build()?; // validated: says which step and why

    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("app.db").display());
    let store = Arc::new(sagaflow_sqlite::SqliteStore::open(&url).await?);
    let bus = Arc::new(MemoryBus::new());
    let ok = |_| async { Outcome::ok(Value::Null) };
    let participants = [
        Participant::new("stock")
            .on("reserve", ok)
            .on("release", ok),
        Participant::new("billing")
            .on("charge", |call| async move {
                Outcome::ok(json!({ "charged": call.context["amount"] }))
            })
            .on("refund", ok),
        Participant::new("delivery").on("schedule", ok),
        Participant::new("notifications").on("send", ok),
    ];
    let mut handles = Vec::new();
    for p in participants {
        handles.push(p.start(store.clone(), bus.clone()).await?);
    }

    let engine = Engine::builder(store, bus).register(order).start().await?;
    let mut ends = engine.watch_ends();
    let started = engine
        .start_saga(StartSaga::new("order", json!({ "amount": 30 })).idempotency_key("order-1234"))
        .await?;
    let end = ends
        .recv()
        .await
        .ok_or_else(|| anyhow::anyhow!("engine stopped"))?;
    println!("saga {} ended {}", started.saga_id, end.status);

    engine.shutdown().await;
    for h in handles {
        h.shutdown().await;
    }
    Ok(())
}
