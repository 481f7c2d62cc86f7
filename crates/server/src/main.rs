//! The sagaflow binary: with no command, a demo saga on embedded SQLite; `bench` measures;
//! `saga ls|show|cancel|resume` inspect and repair sagas in a database.

use clap::{Parser, Subcommand};
use sagaflow::{bench, demo, drill, saga_cmd};

/// sagaflow: sagas that end honestly — every step done, or every done step undone.
#[derive(Debug, Parser)]
#[command(name = "sagaflow", version, about)]
struct Cli {
    /// Database URL: sqlite://PATH (embedded, the default) or postgres://USER@HOST/DB.
    #[arg(
        long,
        global = true,
        env = "SAGAFLOW_DATABASE_URL",
        default_value = "sqlite://./sagaflow.db"
    )]
    database_url: String,
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
    let result = match cli.command.unwrap_or(Command::Demo) {
        Command::Demo => demo::run(&cli.database_url).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Saga(cmd) => saga_cmd::run(&cli.database_url, cmd).await,
        Command::Drill(args) => drill::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
