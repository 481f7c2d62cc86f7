//! The sagaflow model: definitions, saga state, `decide`/`evolve`, retry math and the ports.
//!
//! Everything here is pure: no I/O, no clock reads, no randomness of its own. Time, jitter
//! and ids come in as inputs, so the same inputs always give the same decision.

pub mod clock;
pub mod decide;
pub mod definition;
pub mod effects;
pub mod event;
pub mod guard;
pub mod history;
pub mod input;
pub mod message;
pub mod redact;
pub mod retry;
pub mod state;
pub mod store;
pub mod transport;

pub use clock::{Clock, Millis};
pub use decide::{decide, decide_with_state, start, start_with, DecideContext, Refusal, StartMeta};
pub use definition::{Command, Definition, DefinitionError, Step, StepKind};
pub use effects::{effects, idempotency_key, Dispatch, Effects, TimerChange, TimerSlot};
pub use event::{EndStatus, Event, JournalEntry, Phase};
pub use guard::{Condition, Guard, GuardOtherwise};
pub use history::{history, AttemptRecord, AttemptStatus};
pub use input::{Input, Outcome, Reply, TimerKind};
pub use message::{
    cloud_event_attributes, command_topic, CloudEventAttributes, CommandPayload, Envelope,
    MessageKind, CLOUD_EVENT_SOURCE, PROTOCOL_VERSION, REPLY_TOPIC,
};
pub use redact::redact_url;
pub use retry::RetryPolicy;
pub use state::{
    evolve, fold, Failure, InFlight, SagaId, SagaState, Status, StepRecord, StepState,
};
pub use store::{
    check_same_definition, definition_json, parse_stored_definition, CommitOutcome, DeadLetter,
    Decision, OutboxRow, ParticipantTx, SagaFilter, SqlValue, Store, StoreError, StoreStats,
    TimerRow,
};
pub use transport::{
    Acker, CircuitState, DeadLetterSink, DeadLetters, Delivery, EndpointHealth, Subscription,
    Transport, TransportError,
};
