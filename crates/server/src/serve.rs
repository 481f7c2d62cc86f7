//! `sagaflow serve`: the engine behind the HTTP API, on embedded SQLite and the in-memory bus
//! by default. Until the reference systems land it serves the built-in order saga and its
//! participants, so there is something to run.

use std::sync::Arc;

use anyhow::Context;
use sagaflow_engine::{Engine, MemoryBus};

use crate::config::{ServeArgs, ServeConfig};

/// Starts the server and runs until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs, database_url: Option<&str>) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    let config = crate::config::resolve(&args, database_url, &env)?;
    config.check_exposure()?;
    serve(config).await
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another sagaflow running there? pick another address with --listen)",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let store = crate::store_url::open(&config.database_url).await?;
    crate::demo::prepare(&store).await?;
    let bus = Arc::new(MemoryBus::new());
    let mut participants = Vec::new();
    for p in crate::demo::participants() {
        participants.push(p.start(store.clone(), bus.clone()).await?);
    }
    let engine = Engine::builder(store, bus)
        .register(crate::demo::order_definition())
        .start()
        .await?;
    let app = sagaflow_api::app(sagaflow_api::ApiState {
        engine: engine.clone(),
        config: sagaflow_api::ApiConfig {
            body_limit_bytes: config.body_limit,
            keys: config.api_keys.clone(),
            read_open: config.read_open,
        },
    });
    let base = format!("http://{addr}");
    println!(
        "sagaflow listening on {base} (database {})",
        crate::store_url::redact(&config.database_url)
    );
    println!("  API:      {base}/api/v1");
    println!("  OpenAPI:  {base}/api/v1/openapi.json");
    println!("  docs:     {base}/api/docs");
    println!("  metrics:  {base}/metrics");
    println!("  health:   {base}/healthz");
    if config.api_keys.is_empty() {
        println!("  auth:     none (no API keys configured; everything is open)");
    } else {
        let reading = if config.read_open {
            "open"
        } else {
            "needs `read`"
        };
        println!(
            "  auth:     {} API key(s); operating needs `operate`, reading {reading}",
            config.api_keys.len()
        );
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::drill::shutdown_signal())
        .await
        .context("serving HTTP")?;
    // Stop taking work, finish the decisions in hand, then let the participants finish.
    engine.shutdown().await;
    for p in participants {
        p.shutdown().await;
    }
    println!("sagaflow stopped");
    Ok(())
}
