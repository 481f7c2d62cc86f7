//! The decider: given a saga's state and an input, the events that follow. Pure.

use serde_json::Value;
use thiserror::Error;

use crate::clock::Millis;
use crate::definition::{Definition, StepKind};
use crate::event::{EndStatus, Event, Phase};
use crate::guard::{lookup, GuardOtherwise};
use crate::input::{Input, Outcome, Reply, TimerKind};
use crate::state::{evolve, Failure, SagaId, SagaState, Status};

/// The longest a participant's `retry_after_ms` may hold a retry back (an hour, as an HTTP
/// `Retry-After` is capped).
pub const MAX_RETRY_AFTER_MS: u64 = 3_600_000;

/// What `decide` may use besides the state: the time and a random number for jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecideContext {
    /// Now.
    pub now: Millis,
    /// A number in `[0, 1)` for retry jitter.
    pub random: f64,
}

/// Why a request was refused; nothing changes in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// The saga already ended.
    #[error("saga {saga_id} already ended as {status}")]
    AlreadyEnded {
        /// The saga.
        saga_id: SagaId,
        /// How it ended.
        status: Status,
    },
    /// Cancel after the pivot succeeded.
    #[error("saga {saga_id} cannot be cancelled: its pivot step {step:?} succeeded, so it only moves forward")]
    PivotPassed {
        /// The saga.
        saga_id: SagaId,
        /// The pivot step.
        step: String,
    },
    /// Resume of a saga that is neither Failed nor Waiting.
    #[error("saga {saga_id} is {status}: only a failed or waiting saga can be resumed")]
    NothingToResume {
        /// The saga.
        saga_id: SagaId,
        /// Its status.
        status: Status,
    },
    /// Signal to a saga that is not parked.
    #[error("saga {saga_id} is {status}, not waiting for a signal")]
    NotWaiting {
        /// The saga.
        saga_id: SagaId,
        /// Its status.
        status: Status,
    },
    /// Signal with the wrong name.
    #[error("saga {saga_id} step {step:?} waits for signal {expected:?}, not {got:?}")]
    OtherSignal {
        /// The saga.
        saga_id: SagaId,
        /// The parked step.
        step: String,
        /// The signal it waits for.
        expected: String,
        /// The signal that came.
        got: String,
    },
    /// A reply that cannot belong to this saga.
    #[error("malformed reply for saga {saga_id}: {reason}")]
    MalformedReply {
        /// The saga.
        saga_id: SagaId,
        /// What is wrong.
        reason: String,
    },
}

/// Where a saga's start came from: carried in every message of the saga, so a participant's
/// work joins the request's trace and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartMeta {
    /// The saga's correlation key, given explicitly; otherwise it is read from the input at
    /// the definition's `correlation_key` path.
    pub correlation_id: Option<String>,
    /// The request id (`X-Request-ID`).
    pub request_id: Option<String>,
    /// The W3C `traceparent`.
    pub traceparent: Option<String>,
}

/// The events that start a saga: `Started`, then whatever follows (the first dispatch).
pub fn start(
    def: &Definition,
    saga_id: SagaId,
    input: Value,
    ctx: DecideContext,
) -> (Vec<Event>, SagaState) {
    start_with(def, saga_id, input, StartMeta::default(), ctx)
}

/// Like [`start`], recording where the start came from.
pub fn start_with(
    def: &Definition,
    saga_id: SagaId,
    input: Value,
    meta: StartMeta,
    ctx: DecideContext,
) -> (Vec<Event>, SagaState) {
    let correlation_key = meta.correlation_id.clone().or_else(|| {
        def.correlation_key
            .as_deref()
            .and_then(|path| lookup(&input, path))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            })
    });
    let state = SagaState::empty(saga_id, def.steps.len(), ctx.now);
    let mut d = Decider::new(state, def, ctx);
    d.emit(Event::Started {
        definition: def.name.clone(),
        version: def.version,
        input,
        correlation_key,
        deadline_at: def.deadline_ms.map(|ms| crate::clock::after(ctx.now, ms)),
        request_id: meta.request_id,
        traceparent: meta.traceparent,
    });
    d.advance(false);
    (d.events, d.state)
}

/// The events that follow from `input` in `state`.
pub fn decide(
    state: &SagaState,
    def: &Definition,
    input: &Input,
    ctx: DecideContext,
) -> Result<Vec<Event>, Refusal> {
    decide_with_state(state, def, input, ctx).map(|(events, _)| events)
}

/// Like [`decide`], and also returns the state after those events.
pub fn decide_with_state(
    state: &SagaState,
    def: &Definition,
    input: &Input,
    ctx: DecideContext,
) -> Result<(Vec<Event>, SagaState), Refusal> {
    let mut d = Decider::new(state.clone(), def, ctx);
    d.react(input)?;
    Ok((d.events, d.state))
}

struct Decider<'a> {
    state: SagaState,
    def: &'a Definition,
    ctx: DecideContext,
    events: Vec<Event>,
}

impl<'a> Decider<'a> {
    fn new(state: SagaState, def: &'a Definition, ctx: DecideContext) -> Self {
        Decider {
            state,
            def,
            ctx,
            events: Vec::new(),
        }
    }

    fn emit(&mut self, event: Event) {
        let state = std::mem::replace(
            &mut self.state,
            SagaState::empty(SagaId(String::new()), 0, 0),
        );
        self.state = evolve(state, self.def, &event, self.ctx.now);
        self.events.push(event);
    }

    /// The step whose action is being attempted (an answer awaited, or a retry due) while
    /// the saga runs forward.
    fn action_in_progress(&self) -> Option<usize> {
        let s = &self.state;
        if s.status != Status::Running {
            return None;
        }
        s.in_flight
            .as_ref()
            .filter(|f| f.phase == Phase::Action)
            .map(|f| f.step)
            .or(s
                .retry
                .as_ref()
                .filter(|r| r.phase == Phase::Action)
                .map(|r| r.step))
    }

    fn step_name(&self, step: usize) -> String {
        self.def
            .steps
            .get(step)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| format!("#{step}"))
    }

    fn react(&mut self, input: &Input) -> Result<(), Refusal> {
        let id = self.state.saga_id.clone();
        let status = self.state.status;
        match input {
            Input::Reply(reply) => self.reply(reply)?,
            Input::Timer(timer) => self.timer(timer),
            Input::Cancel { reason } => {
                let failed_on_guard =
                    matches!(self.state.failure, Some(Failure::GuardRefused { .. }));
                if self.state.pivot_passed {
                    let step = self
                        .def
                        .pivot()
                        .map(|i| self.step_name(i))
                        .unwrap_or_default();
                    return Err(Refusal::PivotPassed { saga_id: id, step });
                }
                if status.is_end() && !(status == Status::Failed && failed_on_guard) {
                    return Err(Refusal::AlreadyEnded {
                        saga_id: id,
                        status,
                    });
                }
                if status == Status::Compensating {
                    return Ok(());
                }
                self.emit(Event::CancelRequested {
                    reason: reason.clone(),
                });
            }
            Input::Resume => {
                if status != Status::Failed && status != Status::Waiting {
                    return Err(Refusal::NothingToResume {
                        saga_id: id,
                        status,
                    });
                }
                self.emit(Event::Resumed);
            }
            Input::Signal { name, payload } => {
                let Some(parked) = self
                    .state
                    .parked
                    .clone()
                    .filter(|_| status == Status::Waiting)
                else {
                    // A step still being attempted (its answer not in yet, or a retry due)
                    // may be about to ask to wait for this very signal: hold it for that
                    // step, so a signal that overtakes the park is not lost.
                    if let Some(step) = self.action_in_progress() {
                        self.emit(Event::SignalHeld {
                            step,
                            name: name.clone(),
                            payload: payload.clone(),
                        });
                        return Ok(());
                    }
                    return Err(Refusal::NotWaiting {
                        saga_id: id,
                        status,
                    });
                };
                if let Some(expected) = parked.signal.filter(|e| e != name) {
                    return Err(Refusal::OtherSignal {
                        saga_id: id,
                        step: self.step_name(parked.step),
                        expected,
                        got: name.clone(),
                    });
                }
                self.emit(Event::Signalled {
                    step: parked.step,
                    name: name.clone(),
                    payload: payload.clone(),
                });
            }
        }
        self.advance(false);
        Ok(())
    }

    fn reply(&mut self, reply: &Reply) -> Result<(), Refusal> {
        let s = &self.state;
        if reply.step >= self.def.steps.len() {
            return Err(Refusal::MalformedReply {
                saga_id: s.saga_id.clone(),
                reason: format!(
                    "step index {} is out of range: definition {} v{} has {} steps",
                    reply.step,
                    self.def.name,
                    self.def.version,
                    self.def.steps.len()
                ),
            });
        }
        if reply.attempt == 0 {
            return Err(Refusal::MalformedReply {
                saga_id: s.saga_id.clone(),
                reason: "attempt numbers start at 1".into(),
            });
        }
        let matches = s.in_flight.as_ref().is_some_and(|f| {
            f.step == reply.step && f.attempt == reply.attempt && f.phase == reply.phase
        });
        if !matches {
            let rec = &s.steps[reply.step];
            let latest = match reply.phase {
                Phase::Action => rec.attempts,
                Phase::Compensation => rec.compensation_attempts,
            };
            let reason = if s.status.is_end() {
                format!("saga already ended as {}", s.status)
            } else if reply.attempt > latest {
                format!("attempt {} was never dispatched", reply.attempt)
            } else if reply.attempt < latest {
                format!("superseded by attempt {latest}")
            } else {
                "attempt already resolved (duplicate or late reply)".into()
            };
            self.emit(Event::ReplyIgnored {
                step: reply.step,
                attempt: reply.attempt,
                phase: reply.phase,
                reason,
            });
            return Ok(());
        }
        match reply.phase {
            Phase::Action => self.action_outcome(reply.step, reply.attempt, &reply.outcome),
            Phase::Compensation => {
                self.compensation_outcome(reply.step, reply.attempt, &reply.outcome)
            }
        }
        Ok(())
    }

    /// When the next action attempt may run, or `None` when the step gives up.
    fn action_retry_at(&self, step: usize, retryable: bool) -> Option<Millis> {
        let def_step = &self.def.steps[step];
        let rec = &self.state.steps[step];
        if self.state.status == Status::Compensating {
            return None;
        }
        let forward_only = self.state.pivot_passed || def_step.kind == StepKind::Retriable;
        let used = rec.attempts - rec.budget_from.min(rec.attempts);
        if retryable && (forward_only || def_step.retry.allows_another(used)) {
            Some(
                self.ctx
                    .now
                    .saturating_add(def_step.retry.delay_ms(used.max(1), self.ctx.random)),
            )
        } else {
            None
        }
    }

    fn compensation_retry_at(&self, step: usize) -> Option<Millis> {
        let def_step = &self.def.steps[step];
        let rec = &self.state.steps[step];
        let used =
            rec.compensation_attempts - rec.compensation_budget_from.min(rec.compensation_attempts);
        def_step.retry.allows_another(used).then(|| {
            self.ctx
                .now
                .saturating_add(def_step.retry.delay_ms(used.max(1), self.ctx.random))
        })
    }

    fn action_outcome(&mut self, step: usize, attempt: u32, outcome: &Outcome) {
        let cancelling = self.state.status == Status::Compensating;
        match outcome {
            Outcome::Succeeded { output } => {
                self.emit(Event::StepSucceeded {
                    step,
                    attempt,
                    output: output.clone(),
                });
                if cancelling && self.state.pivot_passed {
                    self.emit(Event::CancelAbandoned {
                        reason: format!(
                            "pivot step {:?} succeeded before the cancel took effect",
                            self.step_name(step)
                        ),
                    });
                }
            }
            Outcome::Failed {
                error,
                retryable,
                retry_after_ms,
                maybe_done,
            } => {
                let retry_at = self
                    .action_retry_at(step, *retryable)
                    .map(|at| self.not_before(at, *retry_after_ms));
                self.emit(Event::AttemptFailed {
                    step,
                    attempt,
                    error: error.clone(),
                    retryable: *retryable,
                    retry_at,
                    maybe_done: *maybe_done,
                });
            }
            Outcome::Rejected { reason } => self.emit(Event::StepRejected {
                step,
                attempt,
                reason: reason.clone(),
            }),
            Outcome::Park { until, timeout_ms } => {
                if cancelling {
                    self.emit(Event::AttemptFailed {
                        step,
                        attempt,
                        error: "asked to wait while the saga was being cancelled".into(),
                        retryable: false,
                        retry_at: None,
                        maybe_done: false,
                    });
                } else {
                    self.emit(Event::Parked {
                        step,
                        attempt,
                        signal: until.clone(),
                        timeout_at: timeout_ms.map(|ms| crate::clock::after(self.ctx.now, ms)),
                    });
                    // A signal it waits for may have come while it was being attempted.
                    let held =
                        self.state.held_signals.iter().find(|h| {
                            h.step == step && until.as_ref().is_none_or(|u| *u == h.name)
                        });
                    if let Some(h) = held.cloned() {
                        self.emit(Event::Signalled {
                            step,
                            name: h.name,
                            payload: h.payload,
                        });
                    }
                }
            }
        }
    }

    fn compensation_outcome(&mut self, step: usize, attempt: u32, outcome: &Outcome) {
        let error = match outcome {
            Outcome::Succeeded { .. } => {
                self.emit(Event::CompensationSucceeded { step, attempt });
                return;
            }
            Outcome::Failed {
                error,
                retryable: false,
                ..
            } => {
                // A compensation that can never succeed needs an operator now.
                self.emit(Event::CompensationFailed {
                    step,
                    attempt,
                    error: error.clone(),
                    retry_at: None,
                });
                return;
            }
            Outcome::Failed { error, .. } => error.clone(),
            Outcome::Rejected { reason } => format!("rejected: {reason}"),
            Outcome::Park { .. } => "a compensation cannot wait for a signal".to_string(),
        };
        let retry_after_ms = match outcome {
            Outcome::Failed { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        };
        let retry_at = self
            .compensation_retry_at(step)
            .map(|at| self.not_before(at, retry_after_ms));
        self.emit(Event::CompensationFailed {
            step,
            attempt,
            error,
            retry_at,
        });
    }

    /// `at`, or later when the participant asked not to be called again that soon — by an
    /// hour at most, so a wild value cannot leave a saga waiting for ever.
    fn not_before(&self, at: Millis, retry_after_ms: Option<u64>) -> Millis {
        match retry_after_ms {
            Some(ms) => at.max(
                self.ctx
                    .now
                    .saturating_add(ms.min(MAX_RETRY_AFTER_MS) as i64),
            ),
            None => at,
        }
    }

    fn timer(&mut self, timer: &TimerKind) {
        let s = &self.state;
        if s.status.is_end() {
            return;
        }
        match timer {
            TimerKind::AttemptTimeout {
                step,
                attempt,
                phase,
            } => {
                let matches = s
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| f.step == *step && f.attempt == *attempt && f.phase == *phase);
                if !matches || *step >= self.def.steps.len() {
                    return;
                }
                let retry_at = match phase {
                    Phase::Action => self.action_retry_at(*step, true),
                    Phase::Compensation => self.compensation_retry_at(*step),
                };
                self.emit(Event::AttemptTimedOut {
                    step: *step,
                    attempt: *attempt,
                    phase: *phase,
                    retry_at,
                });
            }
            TimerKind::Retry { step, phase } => {
                let due = s
                    .retry
                    .as_ref()
                    .is_some_and(|r| r.step == *step && r.phase == *phase);
                if due {
                    self.advance(true);
                }
            }
            TimerKind::ParkTimeout { step } => {
                if s.parked.as_ref().is_some_and(|p| p.step == *step) {
                    self.emit(Event::ParkTimedOut { step: *step });
                }
            }
            TimerKind::Deadline => {
                let applies = !s.pivot_passed
                    && s.status != Status::Compensating
                    && s.deadline_at.is_some_and(|at| at <= self.ctx.now);
                if applies {
                    self.emit(Event::DeadlineExceeded);
                }
            }
        }
    }

    fn dispatch(&mut self, step: usize, phase: Phase) {
        let rec = &self.state.steps[step];
        let attempt = match phase {
            Phase::Action => rec.attempts + 1,
            Phase::Compensation => rec.compensation_attempts + 1,
        };
        let deadline_at = self.def.steps[step]
            .timeout_ms
            .map(|ms| crate::clock::after(self.ctx.now, ms));
        self.emit(Event::AttemptDispatched {
            step,
            attempt,
            phase,
            deadline_at,
        });
    }

    /// Moves the saga on until it has to wait for something outside: a reply, a timer, a
    /// signal, or an operator.
    fn advance(&mut self, retry_due: bool) {
        loop {
            let s = &self.state;
            if s.status.is_end() {
                return;
            }
            if s.failure.is_some() {
                let reason = s.reason.clone();
                self.emit(Event::Ended {
                    status: EndStatus::Failed,
                    reason,
                });
                return;
            }
            if s.in_flight.is_some() || s.parked.is_some() {
                return;
            }
            if let Some(r) = &s.retry {
                if retry_due {
                    let (step, phase) = (r.step, r.phase);
                    self.dispatch(step, phase);
                }
                return;
            }
            match s.status {
                Status::Running => {
                    let cursor = s.cursor;
                    let Some(step) = self.def.steps.get(cursor) else {
                        self.emit(Event::Ended {
                            status: EndStatus::Completed,
                            reason: None,
                        });
                        return;
                    };
                    if let Some(guard) = &step.guard {
                        if !guard.when.holds(&self.state.context) {
                            let reason = guard.when.describe();
                            match guard.otherwise {
                                GuardOtherwise::Skip => self.emit(Event::StepSkipped {
                                    step: cursor,
                                    reason,
                                }),
                                GuardOtherwise::Fail => self.emit(Event::GuardRefused {
                                    step: cursor,
                                    reason,
                                }),
                            }
                            continue;
                        }
                    }
                    self.dispatch(cursor, Phase::Action);
                    return;
                }
                Status::Compensating => {
                    let next = (0..self.def.steps.len()).rev().find(|&i| {
                        self.state.steps[i].needs_compensation()
                            && self.def.steps[i].compensation.is_some()
                    });
                    match next {
                        Some(i) => self.dispatch(i, Phase::Compensation),
                        None => {
                            let reason = self.state.reason.clone();
                            self.emit(Event::Ended {
                                status: EndStatus::Compensated,
                                reason,
                            });
                        }
                    }
                    return;
                }
                Status::Waiting | Status::Completed | Status::Compensated | Status::Failed => {
                    return
                }
            }
        }
    }
}
