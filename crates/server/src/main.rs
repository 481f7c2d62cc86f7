//! The sagaflow binary: with no command, a demo saga on embedded SQLite; `bench` measures;
//! `saga ls|show|cancel|resume` inspect and repair sagas in a database.

use clap::{Parser, Subcommand};
use sagaflow::{bench, demo, drill, saga_cmd};

/// sagaflow: sagas that end honestly — every step done, or every done step undone.
/// The embedded default: a SQLite file in the working directory.
const DEFAULT_DATABASE_URL: &str = "sqlite://./sagaflow.db";

#[derive(Debug, Parser)]
#[command(name = "sagaflow", version, about)]
struct Cli {
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB [default: sqlite://./sagaflow.db;
    /// for bench, a fresh temporary database].
    #[arg(long, global = true, env = "SAGAFLOW_DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the built-in order saga three ways and print each journal (the default).
    Demo,
    /// Measure sagas per second and latency with in-process no-op steps.
    Bench(bench::BenchArgs),
    /// Inspect and repair sagas.
    #[command(subcommand)]
    Saga(saga_cmd::SagaCommand),
    /// Crash-recovery workload used by the test suite.
    #[command(hide = true)]
    Drill(drill::DrillArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SAGAFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let url = cli.database_url;
    let embedded = || {
        url.clone()
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string())
    };
    let result = match cli.command.unwrap_or(Command::Demo) {
        Command::Demo => demo::run(&embedded()).await,
        Command::Bench(args) => bench::run(args, url.clone()).await,
        Command::Saga(cmd) => saga_cmd::run(&embedded(), cmd).await,
        Command::Drill(args) => drill::run(args, &embedded()).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
