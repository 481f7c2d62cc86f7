//! What can go wrong when asking the engine for something.

use sagaflow_core::{DefinitionError, Refusal, SagaId, StoreError, TransportError};
use thiserror::Error;

/// An engine error; each names what it is about.
#[derive(Debug, Error)]
pub enum EngineError {
    /// No such definition (or version) is registered.
    #[error("unknown definition {name}{}", .version.map(|v| format!(" v{v}")).unwrap_or_default())]
    UnknownDefinition {
        /// The name asked for.
        name: String,
        /// The version asked for, if any.
        version: Option<u32>,
    },
    /// A definition failed validation.
    #[error(transparent)]
    InvalidDefinition(#[from] DefinitionError),
    /// A different definition is already registered under this name and version.
    #[error("definition {name} v{version} is already registered (or stored) with different steps: register a new version instead")]
    DefinitionChanged {
        /// Name.
        name: String,
        /// Version.
        version: u32,
    },
    /// Sagas in flight need definitions this engine does not have.
    #[error("refusing to start: {0}")]
    MissingDefinitions(String),
    /// No saga with this id.
    #[error("saga {0} not found")]
    NotFound(SagaId),
    /// An answer's idempotency key names no command sagaflow sent.
    #[error("unknown command key {key:?}: {reason}")]
    UnknownKey {
        /// The key.
        key: String,
        /// Why it names nothing.
        reason: String,
    },
    /// An answer for a command whose attempt no longer waits for one.
    #[error("command {key:?} is not awaiting an answer: {reason}")]
    NotAwaited {
        /// The key.
        key: String,
        /// What happened to the attempt instead.
        reason: String,
    },
    /// The saga refused the request.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The saga kept changing under us (another engine is busy with it); try again.
    #[error("saga {0} kept changing concurrently; try again")]
    Contended(SagaId),
    /// The engine is shutting down and takes no new work.
    #[error("the engine is shutting down")]
    ShuttingDown,
}
