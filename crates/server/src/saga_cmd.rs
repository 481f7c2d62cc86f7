//! `sagaflow saga ls | show | cancel | resume`.

use std::sync::Arc;

use anyhow::Context;
use sagaflow_core::{SagaFilter, SagaId, Status};
use sagaflow_engine::{Engine, EngineConfig, MemoryBus};

/// Saga commands.
#[derive(Debug, clap::Subcommand)]
pub enum SagaCommand {
    /// List sagas, newest first.
    Ls {
        /// Only this status (running, waiting, compensating, completed, compensated, failed).
        #[arg(long)]
        status: Option<String>,
        /// Only this definition.
        #[arg(long)]
        definition: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one saga and its journal.
    Show {
        /// The saga id.
        id: String,
    },
    /// Compensate what a saga did (refused after its pivot). The compensations run in the
    /// engine that serves the participants.
    Cancel {
        /// The saga id.
        id: String,
        /// Why, for the journal.
        #[arg(long, default_value = "cancelled from the command line")]
        reason: String,
    },
    /// Retry a Failed saga's failed step, or attempt a Waiting saga's step again now.
    Resume {
        /// The saga id.
        id: String,
    },
}

/// Runs a saga command against the database at `url`.
pub async fn run(url: &str, cmd: SagaCommand) -> anyhow::Result<()> {
    let store = crate::store_url::open(url).await?;
    // The binary's built-in definitions; sagas of others are listed but not driven here.
    // The decision is committed here; the commands it sends are left to the engine that
    // serves the participants: this one claims nothing, and its outbox leases end at once.
    let engine = Engine::builder(store.clone(), Arc::new(MemoryBus::new()))
        .config(EngineConfig {
            claims: false,
            redeliver_after_ms: 0,
            ..EngineConfig::default()
        })
        .register(crate::demo::order_definition())
        .register(crate::drill::definition());
    let engine = match &cmd {
        SagaCommand::Ls { .. } | SagaCommand::Show { .. } => None,
        _ => Some(engine.start().await?),
    };
    match cmd {
        SagaCommand::Ls {
            status,
            definition,
            limit,
        } => {
            let status = status
                .map(|s| Status::parse(&s).with_context(|| format!("unknown status {s:?}: use running, waiting, compensating, completed, compensated or failed")))
                .transpose()?;
            let sagas = store
                .list(&SagaFilter {
                    status,
                    definition,
                    limit,
                    ..SagaFilter::default()
                })
                .await?;
            println!(
                "{:<38} {:<12} {:<13} {:>6}",
                "SAGA", "DEFINITION", "STATUS", "EVENTS"
            );
            for s in sagas {
                println!(
                    "{:<38} {:<12} {:<13} {:>6}",
                    s.saga_id,
                    format!("{} v{}", s.definition, s.version),
                    s.status.as_str(),
                    s.journal_version
                );
            }
        }
        SagaCommand::Show { id } => {
            let id = SagaId(id);
            let state = store
                .load(std::slice::from_ref(&id))
                .await?
                .pop()
                .with_context(|| format!("saga {id} not found"))?;
            println!("{}", serde_json::to_string_pretty(&state)?);
            for entry in store.journal(&id).await? {
                println!(
                    "{:>4} {} {}",
                    entry.seq,
                    entry.at,
                    serde_json::to_string(&entry.event)?
                );
            }
        }
        SagaCommand::Cancel { id, reason } => {
            if let Some(engine) = engine {
                let state = engine.cancel(&SagaId(id), &reason).await?;
                println!("saga {} is {}", state.saga_id, state.status);
                engine.shutdown().await;
            }
        }
        SagaCommand::Resume { id } => {
            if let Some(engine) = engine {
                let state = engine.resume(&SagaId(id)).await?;
                println!("saga {} is {}", state.saga_id, state.status);
                engine.shutdown().await;
            }
        }
    }
    Ok(())
}
