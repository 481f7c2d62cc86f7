//! The journal: every change to a saga is one of these events, appended in order.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Millis;

/// Whether a command performs a step or undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The step's action.
    Action,
    /// The step's compensation.
    Compensation,
}

impl Phase {
    /// `action` or `compensation`, as used in idempotency keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Action => "action",
            Phase::Compensation => "compensation",
        }
    }
}

/// How a saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndStatus {
    /// Every step done.
    Completed,
    /// Every done step undone.
    Compensated,
    /// Needs an operator.
    Failed,
}

/// One change to a saga. Steps are referred to by their index in the definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The saga began with this input.
    Started {
        /// Definition name.
        definition: String,
        /// Definition version.
        version: u32,
        /// The initial context.
        input: Value,
        /// The value of the definition's correlation key in the input, if any.
        correlation_key: Option<String>,
        /// When the saga deadline falls, if the definition has one.
        deadline_at: Option<Millis>,
        /// The request that started the saga (carried in every message of the saga).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// The W3C trace context of that request (carried in every message of the saga).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// A command was sent (it is in the outbox, committed with this event).
    AttemptDispatched {
        /// Step index.
        step: usize,
        /// Attempt number for this step and phase, from 1, never reused.
        attempt: u32,
        /// Action or compensation.
        phase: Phase,
        /// When this attempt times out, if the step has a timeout.
        deadline_at: Option<Millis>,
    },
    /// The step's action succeeded; its output is merged into the context.
    StepSucceeded {
        /// Step index.
        step: usize,
        /// Attempt.
        attempt: u32,
        /// The participant's output.
        output: Value,
    },
    /// An action attempt failed.
    AttemptFailed {
        /// Step index.
        step: usize,
        /// Attempt.
        attempt: u32,
        /// The participant's error.
        error: String,
        /// Whether the participant said a retry might help.
        retryable: bool,
        /// When the next attempt runs; `None` means the step gave up.
        retry_at: Option<Millis>,
        /// The action may have taken effect all the same: the step counts as maybe done.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        maybe_done: bool,
    },
    /// An attempt got no reply in time: it may have happened.
    AttemptTimedOut {
        /// Step index.
        step: usize,
        /// Attempt.
        attempt: u32,
        /// Action or compensation.
        phase: Phase,
        /// When the next attempt runs; `None` means no more attempts.
        retry_at: Option<Millis>,
    },
    /// The participant said no (a business refusal): compensate now, no retry.
    StepRejected {
        /// Step index.
        step: usize,
        /// Attempt.
        attempt: u32,
        /// The participant's reason.
        reason: String,
    },
    /// The participant asked to wait for an external signal, then attempt again.
    Parked {
        /// Step index.
        step: usize,
        /// Attempt.
        attempt: u32,
        /// The signal name that wakes it, if a particular one.
        signal: Option<String>,
        /// When waiting gives up, if ever.
        timeout_at: Option<Millis>,
    },
    /// Waiting for a signal took too long.
    ParkTimedOut {
        /// Step index.
        step: usize,
    },
    /// An external signal woke the parked step.
    Signalled {
        /// Step index.
        step: usize,
        /// The signal's name.
        name: String,
        /// The signal's payload (merged into the context when it is an object).
        payload: Value,
    },
    /// A signal came while the step was still being attempted: it is held, and wakes the
    /// step at once should this attempt ask to wait for it.
    SignalHeld {
        /// Step index.
        step: usize,
        /// The signal's name.
        name: String,
        /// The signal's payload.
        payload: Value,
    },
    /// The step's guard did not hold and it was skipped.
    StepSkipped {
        /// Step index.
        step: usize,
        /// The guard's condition.
        reason: String,
    },
    /// The step's guard did not hold and the saga stopped for an operator.
    GuardRefused {
        /// Step index.
        step: usize,
        /// The guard's condition.
        reason: String,
    },
    /// A compensation succeeded: the step is undone.
    CompensationSucceeded {
        /// Step index.
        step: usize,
        /// Compensation attempt.
        attempt: u32,
    },
    /// A compensation attempt failed.
    CompensationFailed {
        /// Step index.
        step: usize,
        /// Compensation attempt.
        attempt: u32,
        /// The participant's error.
        error: String,
        /// When the next attempt runs; `None` means retries are exhausted.
        retry_at: Option<Millis>,
    },
    /// Someone asked to cancel: compensate what was done.
    CancelRequested {
        /// Why.
        reason: String,
    },
    /// A cancel was overtaken by the pivot succeeding: the saga goes forward instead.
    CancelAbandoned {
        /// Why.
        reason: String,
    },
    /// The saga deadline passed before the pivot: compensate.
    DeadlineExceeded,
    /// An operator resumed the saga.
    Resumed,
    /// A reply that no longer applies (late, duplicate, or for a superseded attempt).
    ReplyIgnored {
        /// Step index.
        step: usize,
        /// Attempt.
        attempt: u32,
        /// Action or compensation.
        phase: Phase,
        /// Why it was ignored.
        reason: String,
    },
    /// The saga ended.
    Ended {
        /// How.
        status: EndStatus,
        /// Why, for Failed and Compensated.
        reason: Option<String>,
    },
}

impl Event {
    /// The event's type name, as stored.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::AttemptDispatched { .. } => "attempt_dispatched",
            Event::StepSucceeded { .. } => "step_succeeded",
            Event::AttemptFailed { .. } => "attempt_failed",
            Event::AttemptTimedOut { .. } => "attempt_timed_out",
            Event::StepRejected { .. } => "step_rejected",
            Event::Parked { .. } => "parked",
            Event::ParkTimedOut { .. } => "park_timed_out",
            Event::Signalled { .. } => "signalled",
            Event::SignalHeld { .. } => "signal_held",
            Event::StepSkipped { .. } => "step_skipped",
            Event::GuardRefused { .. } => "guard_refused",
            Event::CompensationSucceeded { .. } => "compensation_succeeded",
            Event::CompensationFailed { .. } => "compensation_failed",
            Event::CancelRequested { .. } => "cancel_requested",
            Event::CancelAbandoned { .. } => "cancel_abandoned",
            Event::DeadlineExceeded => "deadline_exceeded",
            Event::Resumed => "resumed",
            Event::ReplyIgnored { .. } => "reply_ignored",
            Event::Ended { .. } => "ended",
        }
    }
}

/// An event as it sits in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Position in the saga's journal, from 1.
    pub seq: u64,
    /// When it was decided.
    pub at: Millis,
    /// The event.
    pub event: Event,
}
