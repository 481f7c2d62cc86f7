//! What can happen to a saga: replies, timers, and operator or external requests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Phase;

/// What a participant says about one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Readers ignore unknown fields (a newer participant must not break an older engine).
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Done; the output is merged into the saga context.
    Succeeded {
        /// The output (an object's keys are merged; other values go under the step name).
        #[serde(default)]
        output: Value,
    },
    /// Not done because of an error.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether trying again might help.
        #[serde(default = "yes")]
        retryable: bool,
        /// Do not try again sooner than this many milliseconds from now (an HTTP
        /// participant's `Retry-After`); the retry policy's own delay applies when longer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// The action may have taken effect all the same (an HTTP call that broke or timed
        /// out after it was sent): a step given up after such an attempt is compensated,
        /// like one whose attempt timed out.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        maybe_done: bool,
    },
    /// A business "no": compensate now, no retry.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Cannot proceed yet: wait for a signal (or `resume`), then attempt again.
    Park {
        /// The signal name that wakes the step; any signal when absent.
        #[serde(default)]
        until: Option<String>,
        /// Give up waiting after this many milliseconds.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
}

fn yes() -> bool {
    true
}

impl Outcome {
    /// Success with this output.
    pub fn ok(output: Value) -> Self {
        Outcome::Succeeded { output }
    }

    /// A retryable failure.
    pub fn failed(error: impl Into<String>) -> Self {
        Outcome::Failed {
            error: error.into(),
            retryable: true,
            retry_after_ms: None,
            maybe_done: false,
        }
    }

    /// A failure that trying again cannot fix.
    pub fn fatal(error: impl Into<String>) -> Self {
        Outcome::Failed {
            error: error.into(),
            retryable: false,
            retry_after_ms: None,
            maybe_done: false,
        }
    }

    /// A business refusal.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Outcome::Rejected {
            reason: reason.into(),
        }
    }

    /// Wait for the named signal.
    pub fn park(until: impl Into<String>) -> Self {
        Outcome::Park {
            until: Some(until.into()),
            timeout_ms: None,
        }
    }
}

/// A participant's reply to one attempt. Unknown fields are ignored, as everywhere on the
/// wire (see docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Step index in the definition.
    pub step: usize,
    /// The attempt it answers.
    pub attempt: u32,
    /// Action or compensation.
    pub phase: Phase,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Which durable timer fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "timer", rename_all = "snake_case")]
pub enum TimerKind {
    /// Time for the next attempt.
    Retry {
        /// Step index.
        step: usize,
        /// Action or compensation.
        phase: Phase,
    },
    /// An attempt got no reply in time.
    AttemptTimeout {
        /// Step index.
        step: usize,
        /// The attempt.
        attempt: u32,
        /// Action or compensation.
        phase: Phase,
    },
    /// A parked step waited too long.
    ParkTimeout {
        /// Step index.
        step: usize,
    },
    /// The saga deadline passed.
    Deadline,
}

/// Everything `decide` reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A participant replied.
    Reply(Reply),
    /// A timer fired.
    Timer(TimerKind),
    /// Compensate what was done.
    Cancel {
        /// Why (shown in the journal).
        reason: String,
    },
    /// Retry a failed compensation, or attempt a waiting step again now.
    Resume,
    /// An external event for a parked step.
    Signal {
        /// The signal's name.
        name: String,
        /// Its payload.
        payload: Value,
    },
}
