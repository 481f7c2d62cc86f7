//! The sagaflow binary: `serve` (the default) runs the engine behind the HTTP API; `demo`
//! runs a saga three ways and prints the journals; `bench` measures; `saga …` and `signal`
//! inspect and steer sagas through a running server.

use clap::{Parser, Subcommand};
use sagaflow::config::{ServeArgs, DEFAULT_DATABASE_URL};
use sagaflow::{bench, demo, drill, saga_cmd, serve};

/// sagaflow: sagas that end honestly — every step done, or every done step undone.
#[derive(Debug, Parser)]
#[command(name = "sagaflow", version, about)]
struct Cli {
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB [env: SAGAFLOW_DATABASE_URL]
    /// [default: sqlite://./sagaflow.db; for bench, a fresh temporary database].
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Log lines as text or as JSON objects (one per line) [env: SAGAFLOW_LOG_FORMAT].
    /// The level filter is SAGAFLOW_LOG (e.g. `info`, `sagaflow_engine=debug`; default `warn`).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine behind the HTTP API (the default).
    Serve(ServeArgs),
    /// Run the built-in order saga three ways and print each journal.
    Demo,
    /// Measure sagas per second and latency with in-process no-op steps.
    Bench(bench::BenchArgs),
    /// Inspect and repair sagas through a running server's API.
    Saga {
        #[command(flatten)]
        client: saga_cmd::ClientArgs,
        #[command(subcommand)]
        command: saga_cmd::SagaCommand,
    },
    /// Wake parked sagas through a running server's API.
    Signal {
        #[command(flatten)]
        client: saga_cmd::ClientArgs,
        #[command(flatten)]
        args: saga_cmd::SignalArgs,
    },
    /// Run built-in participant services over a broker, as a process of their own.
    Participant(sagaflow::participant_cmd::ParticipantArgs),
    /// Check saga definition files.
    #[command(subcommand)]
    Definitions(sagaflow::definition_files::DefinitionsCommand),
    /// Make API keys for `serve`.
    #[command(subcommand)]
    Key(sagaflow::key_cmd::KeyCommand),
    /// Crash-recovery workload used by the test suite.
    #[command(hide = true)]
    Drill(drill::DrillArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let format = cli
        .log_format
        .clone()
        .or_else(|| std::env::var("SAGAFLOW_LOG_FORMAT").ok());
    let _telemetry = match sagaflow::telemetry::init(format.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // `serve` resolves its own settings so it can say where each came from.
    let flag = cli.database_url;
    let url = flag
        .clone()
        .or_else(|| std::env::var("SAGAFLOW_DATABASE_URL").ok());
    let embedded = || {
        url.clone()
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string())
    };
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeArgs::default()));
    let result = match command {
        Command::Serve(args) => serve::run(args, flag.as_deref()).await,
        Command::Demo => demo::run(&embedded()).await,
        Command::Bench(args) => bench::run(args, url.clone()).await,
        Command::Saga { client, command } => saga_cmd::run(&client, command).await,
        Command::Signal { client, args } => saga_cmd::signal(&client, args).await,
        Command::Key(cmd) => sagaflow::key_cmd::run(cmd),
        Command::Definitions(cmd) => sagaflow::definition_files::run(cmd),
        Command::Drill(args) => drill::run(args, &embedded()).await,
        Command::Participant(args) => sagaflow::participant_cmd::run(args, &embedded()).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
