//! What a decision asks the runtime to do: commands to put in the outbox, outbox rows that
//! no longer wait for a reply, and timers to set or clear. Derived from the states before and
//! after, so the runtime needs no saga logic of its own.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::definition::{Command, Definition};
use crate::event::{Event, Phase};
use crate::input::TimerKind;
use crate::state::{SagaId, SagaState, Status};

/// A saga has at most two timers: one for its current step and one for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerSlot {
    /// Retry-at, attempt timeout or park timeout of the current step.
    Step,
    /// The saga deadline.
    Deadline,
}

impl TimerSlot {
    /// `step` or `deadline`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerSlot::Step => "step",
            TimerSlot::Deadline => "deadline",
        }
    }
}

/// A change to a saga's timers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerChange {
    /// Set (or replace) the slot's timer.
    Set {
        /// Which slot.
        slot: TimerSlot,
        /// When it fires.
        fire_at: Millis,
        /// What it means when it fires.
        kind: TimerKind,
    },
    /// Remove the slot's timer.
    Clear {
        /// Which slot.
        slot: TimerSlot,
    },
}

/// A command to send, committed to the outbox with the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    /// Idempotency key: `saga:step:attempt:phase`; also the outbox row's key.
    pub key: String,
    /// Step index.
    pub step: usize,
    /// Step name.
    pub step_name: String,
    /// Attempt.
    pub attempt: u32,
    /// Action or compensation.
    pub phase: Phase,
    /// The participant command.
    pub command: Command,
}

/// Everything a decision asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Effects {
    /// Commands to put in the outbox.
    pub dispatch: Vec<Dispatch>,
    /// Outbox keys whose attempt no longer waits for a reply.
    pub resolved: Vec<String>,
    /// Timer changes.
    pub timers: Vec<TimerChange>,
}

/// The idempotency key of one attempt.
pub fn idempotency_key(saga_id: &SagaId, step_name: &str, attempt: u32, phase: Phase) -> String {
    format!("{saga_id}:{step_name}:{attempt}:{}", phase.as_str())
}

/// The effects of going from `before` to `after` through `events`. `fired` names the timer
/// slots this decision consumed: their rows are treated as gone, so a slot is set again if
/// the state still wants a timer there and cleared otherwise.
pub fn effects(
    before: Option<&SagaState>,
    after: &SagaState,
    events: &[Event],
    def: &Definition,
    fired: &[TimerSlot],
) -> Effects {
    let mut out = Effects::default();
    let step_name = |i: usize| def.steps.get(i).map(|s| s.name.as_str()).unwrap_or("?");
    for event in events {
        if let Event::AttemptDispatched {
            step,
            attempt,
            phase,
            ..
        } = event
        {
            let Some(def_step) = def.steps.get(*step) else {
                continue;
            };
            let command = match phase {
                Phase::Action => Some(def_step.action.clone()),
                Phase::Compensation => def_step.compensation.clone(),
            };
            if let Some(command) = command {
                out.dispatch.push(Dispatch {
                    key: idempotency_key(&after.saga_id, &def_step.name, *attempt, *phase),
                    step: *step,
                    step_name: def_step.name.clone(),
                    attempt: *attempt,
                    phase: *phase,
                    command,
                });
            }
        }
    }
    if let Some(before_flight) = before.and_then(|b| b.in_flight.as_ref()) {
        if after.in_flight.as_ref() != Some(before_flight) {
            out.resolved.push(idempotency_key(
                &after.saga_id,
                step_name(before_flight.step),
                before_flight.attempt,
                before_flight.phase,
            ));
        }
    }
    for slot in [TimerSlot::Step, TimerSlot::Deadline] {
        let consumed = fired.contains(&slot);
        let was = if consumed {
            None
        } else {
            before.and_then(|b| wanted_timer(b, slot))
        };
        let wants = wanted_timer(after, slot);
        match (was, wants) {
            (was, Some(now)) if was.as_ref() != Some(&now) => out.timers.push(TimerChange::Set {
                slot,
                fire_at: now.0,
                kind: now.1,
            }),
            (Some(_), None) => out.timers.push(TimerChange::Clear { slot }),
            (None, None) if consumed => out.timers.push(TimerChange::Clear { slot }),
            _ => {}
        }
    }
    out
}

/// The timer a state wants in a slot, if any.
pub fn wanted_timer(s: &SagaState, slot: TimerSlot) -> Option<(Millis, TimerKind)> {
    if s.status.is_end() {
        return None;
    }
    match slot {
        TimerSlot::Step => {
            if let Some(f) = &s.in_flight {
                return f.deadline_at.map(|at| {
                    (
                        at,
                        TimerKind::AttemptTimeout {
                            step: f.step,
                            attempt: f.attempt,
                            phase: f.phase,
                        },
                    )
                });
            }
            if let Some(r) = &s.retry {
                return Some((
                    r.at,
                    TimerKind::Retry {
                        step: r.step,
                        phase: r.phase,
                    },
                ));
            }
            s.parked.as_ref().and_then(|p| {
                p.timeout_at
                    .map(|at| (at, TimerKind::ParkTimeout { step: p.step }))
            })
        }
        TimerSlot::Deadline => {
            let applies = !s.pivot_passed && s.status != Status::Compensating;
            s.deadline_at
                .filter(|_| applies)
                .map(|at| (at, TimerKind::Deadline))
        }
    }
}
