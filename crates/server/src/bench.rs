//! `sagaflow bench`: N sagas of K in-process no-op steps, a fraction of which is rejected at
//! the last step and compensates; reports throughput and start-to-end latency as one JSON line.
//! The participant is the Rust SDK on the bench's transport (`--participants sdk`), or an
//! HTTP endpoint on loopback that sagaflow calls (`--participants http`), as a service in
//! another language would be.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sagaflow_core::{Definition, Outcome, Status, Step, Store};
use sagaflow_engine::{Engine, EngineConfig, Participant, StartSaga};
use serde_json::json;

/// Bench parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Which store: sqlite or postgres.
    #[arg(long, default_value = "sqlite")]
    pub store: String,
    /// How many sagas.
    #[arg(long, default_value_t = 10_000)]
    pub sagas: usize,
    /// Steps per saga.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Sagas in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Fraction of sagas rejected at their last step (they compensate).
    #[arg(long, default_value_t = 0.1)]
    pub fail_rate: f64,
    /// Inputs per group commit.
    #[arg(long, default_value_t = 1024)]
    pub batch_max: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// How engine and participant talk: memory, nats://HOST:PORT, amqp://… or kafka://HOST:PORT (a broker run
    /// gets a namespace of its own unless the URL names one).
    #[arg(long, default_value = "memory")]
    pub transport: String,
    /// The participant: `sdk` (the Rust participant on the transport) or `http` (an HTTP
    /// endpoint on loopback, called as `--service bench=URL` would be).
    #[arg(long, default_value = "sdk")]
    pub participants: String,
}

/// How the bench's participant answers: rejects the last step of a saga whose input says
/// `fail`, accepts everything else.
fn bench_outcome(context: &serde_json::Value, step_name: &str, last: usize) -> Outcome {
    let fail = context["fail"].as_bool().unwrap_or(false);
    if fail && step_name == format!("s{last}") {
        Outcome::rejected("bench failure")
    } else {
        Outcome::ok(serde_json::Value::Null)
    }
}

/// The bench's participant as an HTTP endpoint on a loopback port: `POST /step` answers 200
/// (empty body) or 422, `POST /undo` 200. Returns its base URL; it serves until the runtime ends.
async fn http_participant(last: usize) -> anyhow::Result<String> {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let answer = move |axum::Json(command): axum::Json<sagaflow_core::CommandPayload>| async move {
        match bench_outcome(&command.context, &command.step_name, last) {
            Outcome::Rejected { reason } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                [("content-type", "application/problem+json")],
                json!({ "title": "rejected", "detail": reason }).to_string(),
            )
                .into_response(),
            _ => StatusCode::OK.into_response(),
        }
    };
    let router = axum::Router::new()
        .route("/step", axum::routing::post(answer))
        .route("/undo", axum::routing::post(|| async { StatusCode::OK }));
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    // Answers go out at once, as from any service tuned for small requests.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("bench participant stopped: {e}");
        }
    });
    Ok(url)
}

fn definition(steps: usize) -> anyhow::Result<Definition> {
    let mut b = Definition::builder("bench", 1);
    for i in 0..steps {
        b = b.step(Step::compensatable(
            &format!("s{i}"),
            "bench.step",
            "bench.undo",
        ));
    }
    Ok(b.build()?)
}

/// Runs the bench and prints the result line. Without a database URL SQLite uses a fresh
/// temporary file and PostgreSQL the local `test` database; PostgreSQL always works in a fresh
/// schema, dropped afterwards.
pub async fn run(args: BenchArgs, database_url: Option<String>) -> anyhow::Result<()> {
    if args.steps == 0 || args.sagas == 0 || args.concurrency == 0 {
        bail!("--sagas, --steps and --concurrency must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.fail_rate) {
        bail!(
            "--fail-rate must be between 0 and 1, got {}",
            args.fail_rate
        );
    }
    let kind = crate::transport_url::kind(&args.transport).map_err(anyhow::Error::msg)?;
    let (store, cleanup) = open(&args, database_url).await?;
    let transport_url =
        if kind != crate::transport_url::Kind::Memory && !args.transport.contains("namespace=") {
            format!(
                "{}?namespace=bench{}x{}",
                args.transport,
                std::process::id(),
                fastrand::u32(..)
            )
        } else {
            args.transport.clone()
        };
    let bus = crate::transport_url::open_with(&transport_url, store.clone(), true).await?;
    let last = args.steps - 1;
    let (handle, transport) = match args.participants.as_str() {
        "sdk" => {
            let participant = Participant::new("bench")
                .concurrency(args.concurrency.max(64))
                .on("step", move |call| async move {
                    bench_outcome(&call.context, &call.step, last)
                })
                .on("undo", |_| async { Outcome::ok(serde_json::Value::Null) });
            (
                Some(participant.start(store.clone(), bus.clone()).await?),
                bus.clone(),
            )
        }
        "http" => {
            let url = http_participant(last).await?;
            let service = sagaflow_http::HttpService::new("bench", &url)
                .and_then(|s| s.max_in_flight(args.concurrency.max(64)))
                .map_err(anyhow::Error::msg)?;
            let http = sagaflow_http::HttpParticipants::new(bus.clone(), vec![service])
                .map_err(anyhow::Error::msg)?;
            (None, Arc::new(http) as Arc<dyn sagaflow_core::Transport>)
        }
        other => bail!("--participants must be sdk or http, got {other:?}"),
    };
    let engine = Engine::builder(store.clone(), transport)
        .register(definition(args.steps)?)
        .config(EngineConfig {
            batch_max: args.batch_max,
            ..EngineConfig::default()
        })
        .start()
        .await?;
    let mut ends = engine.watch_ends();

    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.sagas as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} sagas {per_sec} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );

    let mut rng = fastrand::Rng::with_seed(42);
    let mut started_at: HashMap<sagaflow_core::SagaId, Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(args.sagas);
    let (mut completed, mut compensated, mut failed) = (0usize, 0usize, 0usize);
    let (start_tx, mut start_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut launched = 0usize;
    let begin = Instant::now();
    let launch = |engine: &Engine, fail: bool| {
        let engine = engine.clone();
        let tx = start_tx.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = engine
                .start_saga(StartSaga::new("bench", json!({ "fail": fail })))
                .await;
            let _ = tx.send((r, t));
        });
    };
    while launched < args.concurrency.min(args.sagas) {
        launch(&engine, rng.f64() < args.fail_rate);
        launched += 1;
    }
    let mut early_ends: HashMap<sagaflow_core::SagaId, (Status, Instant)> = HashMap::new();
    let mut finished = 0usize;
    while finished < args.sagas {
        // A saga is done when both its start's answer and its end have arrived, in either order.
        let done: Option<(Status, Duration)> = tokio::select! {
            started = start_rx.recv() => {
                let Some((result, t)) = started else { break };
                let started = result.context("starting a saga")?;
                match early_ends.remove(&started.saga_id) {
                    Some((status, end)) => Some((status, end - t)),
                    None => {
                        started_at.insert(started.saga_id, t);
                        None
                    }
                }
            }
            end = ends.recv() => {
                let Some(end) = end else { break };
                let now = Instant::now();
                match started_at.remove(&end.saga_id) {
                    Some(t) => Some((end.status, now - t)),
                    None => {
                        early_ends.insert(end.saga_id, (end.status, now));
                        None
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(60)) => {
                bail!("no saga ended for 60 s ({finished} of {} ended)", args.sagas);
            }
        };
        let Some((status, latency)) = done else {
            continue;
        };
        latencies.push(latency);
        count(status, &mut completed, &mut compensated, &mut failed);
        finished += 1;
        bar.inc(1);
        if launched < args.sagas {
            launch(&engine, rng.f64() < args.fail_rate);
            launched += 1;
        }
    }
    let elapsed = begin.elapsed();
    bar.finish_and_clear();
    engine.shutdown().await;
    if let Some(handle) = handle {
        handle.shutdown().await;
    }
    cleanup.run().await;

    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        (latencies[i].as_secs_f64() * 1000.0 * 10.0).round() / 10.0
    };
    let line = json!({
        "store": args.store,
        "transport": args.transport,
        "participants": args.participants,
        "sagas": args.sagas,
        "steps": args.steps,
        "concurrency": args.concurrency,
        "fail_rate": args.fail_rate,
        "completed": completed,
        "compensated": compensated,
        "failed": failed,
        "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "sagas_per_sec": (args.sagas as f64 / elapsed.as_secs_f64()).round(),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
    });
    println!("{line}");
    Ok(())
}

fn count(status: Status, completed: &mut usize, compensated: &mut usize, failed: &mut usize) {
    match status {
        Status::Completed => *completed += 1,
        Status::Compensated => *compensated += 1,
        _ => *failed += 1,
    }
}

/// Removes what the bench created.
enum Cleanup {
    None,
    File(std::path::PathBuf),
    Schema(String, String),
}

impl Cleanup {
    async fn run(self) {
        match self {
            Cleanup::None => {}
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::Schema(url, schema) => {
                if let Err(e) = sagaflow_postgres::drop_schema(&url, &schema).await {
                    eprintln!("could not drop bench schema {schema}: {e}");
                }
            }
        }
    }
}

async fn open(
    args: &BenchArgs,
    database_url: Option<String>,
) -> anyhow::Result<(Arc<dyn Store>, Cleanup)> {
    let is_pg = |u: &str| u.starts_with("postgres://") || u.starts_with("postgresql://");
    if let Some(url) = &database_url {
        if is_pg(url) != (args.store == "postgres") {
            bail!(
                "--store {} does not match --database-url {}",
                args.store,
                crate::store_url::redact(url)
            );
        }
    }
    match args.store.as_str() {
        "sqlite" => match &database_url {
            Some(url) => Ok((crate::store_url::open(url).await?, Cleanup::None)),
            None => {
                let path = std::env::temp_dir().join(format!(
                    "sagaflow-bench-{}-{}.db",
                    std::process::id(),
                    fastrand::u32(..)
                ));
                let store = sagaflow_sqlite::SqliteStore::open(&path.to_string_lossy()).await?;
                Ok((Arc::new(store), Cleanup::File(path)))
            }
        },
        "postgres" => {
            let url = database_url
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_string());
            let schema = format!(
                "sagaflow_bench_{}_{}",
                std::process::id(),
                fastrand::u32(..)
            );
            let store = sagaflow_postgres::PgStore::connect_in_schema(&url, &schema)
                .await
                .with_context(|| format!("connecting to {}", crate::store_url::redact(&url)))?;
            Ok((Arc::new(store), Cleanup::Schema(url, schema)))
        }
        other => bail!("--store must be sqlite or postgres, got {other:?}"),
    }
}
