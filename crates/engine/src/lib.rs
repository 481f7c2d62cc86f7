//! The sagaflow runtime: applies the core's decisions through the ports.
//!
//! An [`Engine`] owns one decision loop (group commit of many sagas' decisions), a timer
//! loop, an outbox relay and a reply consumer. [`Participant`] is the SDK for services that
//! handle commands; [`Subscriber`] is the SDK for services reacting to the events of a
//! choreographed flow ([`emit`], [`EventRelay`], the [`flow`] journal); [`MemoryBus`] is the
//! in-process transport.

mod applier;
mod bus;
pub mod caller;
mod clock;
mod dead_letters;
mod engine;
mod error;
mod event_outbox;
pub mod flow;
mod metrics;
mod outbox;
mod participant;
mod registry;
mod reply;
mod subscriber;
mod timer;
mod trace;

pub use async_trait::async_trait;
pub use bus::MemoryBus;
pub use clock::SystemClock;
pub use dead_letters::StoreDeadLetters;
pub use engine::{Engine, EngineBuilder, EngineConfig, SagaEnd, SignalTarget, StartSaga, Started};
pub use error::EngineError;
pub use event_outbox::{emit, event_topic, EventRelay, NewEvent};
pub use metrics::Metrics;
pub use participant::{CommandCall, Participant, ParticipantHandle, TxHandler, Unavailable};
pub use registry::Registry;
pub use sagaflow_core as core;
pub use subscriber::{
    Emitter, EventCall, EventHandler, HandlerError, SubscribeError, Subscriber, SubscriberHandle,
};
