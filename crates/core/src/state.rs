//! Saga state: a fold of the journal. `evolve` applies one event.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Millis;
use crate::definition::{Definition, StepKind};
use crate::event::{EndStatus, Event, JournalEntry, Phase};

/// A saga's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SagaId(pub String);

impl std::fmt::Display for SagaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for SagaId {
    fn from(s: &str) -> Self {
        SagaId(s.to_string())
    }
}

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Moving forward.
    Running,
    /// Parked until a signal.
    Waiting,
    /// Undoing what was done, newest first.
    Compensating,
    /// Every step done (an end).
    Completed,
    /// Every done step undone (an end).
    Compensated,
    /// Needs an operator (an end, left only by `resume`).
    Failed,
}

impl Status {
    /// Whether this is one of the ends.
    pub fn is_end(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Compensated | Status::Failed
        )
    }

    /// The lowercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Compensating => "compensating",
            Status::Completed => "completed",
            Status::Compensated => "compensated",
            Status::Failed => "failed",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Running,
            Status::Waiting,
            Status::Compensating,
            Status::Completed,
            Status::Compensated,
            Status::Failed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not attempted yet.
    Pending,
    /// Succeeded.
    Done,
    /// An attempt timed out: it may have happened, so it counts for compensation.
    Maybe,
    /// Attempted, and known not to have happened.
    NotDone,
    /// Skipped by its guard.
    Skipped,
    /// Undone by its compensation.
    Compensated,
}

/// Per-step bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// What is known about the step.
    pub state: StepState,
    /// Action attempts ever dispatched (numbers are never reused).
    pub attempts: u32,
    /// `attempts` when the current retry budget began (reset by signals and resume).
    pub budget_from: u32,
    /// Compensation attempts ever dispatched.
    pub compensation_attempts: u32,
    /// `compensation_attempts` when the current retry budget began.
    pub compensation_budget_from: u32,
}

impl StepRecord {
    fn new() -> Self {
        StepRecord {
            state: StepState::Pending,
            attempts: 0,
            budget_from: 0,
            compensation_attempts: 0,
            compensation_budget_from: 0,
        }
    }

    /// Whether the step counts as done (or maybe done) for compensation.
    pub fn needs_compensation(&self) -> bool {
        matches!(self.state, StepState::Done | StepState::Maybe)
    }
}

/// The attempt waiting for a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// Step index.
    pub step: usize,
    /// Attempt number.
    pub attempt: u32,
    /// Action or compensation.
    pub phase: Phase,
    /// When it times out, if it can.
    pub deadline_at: Option<Millis>,
    /// When it was sent.
    #[serde(default)]
    pub dispatched_at: Millis,
}

/// A parked step waiting for a signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    /// Step index.
    pub step: usize,
    /// The signal that wakes it, if a particular one.
    pub signal: Option<String>,
    /// When waiting gives up.
    pub timeout_at: Option<Millis>,
}

/// A retry waiting for its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryDue {
    /// Step index.
    pub step: usize,
    /// Action or compensation.
    pub phase: Phase,
    /// When.
    pub at: Millis,
}

/// Why a saga is Failed (or why it is compensating).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// A compensation exhausted its retries; `resume` tries it again.
    CompensationExhausted {
        /// Step index.
        step: usize,
    },
    /// A step's guard refused; `resume` evaluates it again.
    GuardRefused {
        /// Step index.
        step: usize,
    },
    /// A step after the pivot was rejected, or the pivot's outcome is unknown; `resume`
    /// attempts it again.
    StuckAfterPivot {
        /// Step index.
        step: usize,
    },
}

/// The state of one saga: a fold of its journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    /// The saga's id.
    pub saga_id: SagaId,
    /// Definition name.
    pub definition: String,
    /// Definition version it runs on, to the end.
    pub version: u32,
    /// Where it is.
    pub status: Status,
    /// The input merged with every step's output.
    pub context: Value,
    /// The correlation key value, if the definition declares one.
    pub correlation_key: Option<String>,
    /// The saga deadline.
    pub deadline_at: Option<Millis>,
    /// The next step to move forward to.
    pub cursor: usize,
    /// One record per definition step.
    pub steps: Vec<StepRecord>,
    /// The attempt waiting for a reply.
    pub in_flight: Option<InFlight>,
    /// The parked step, if Waiting.
    pub parked: Option<Parked>,
    /// The retry waiting for its time.
    pub retry: Option<RetryDue>,
    /// Whether the pivot succeeded: from then on only forward.
    pub pivot_passed: bool,
    /// Why the saga is compensating or Failed.
    pub reason: Option<String>,
    /// Set while Failed (and, briefly inside a decision, just before the `Ended` event).
    pub failure: Option<Failure>,
    /// Events applied so far: the journal's length, used for optimistic concurrency.
    pub journal_version: u64,
    /// When it started.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// When it ended.
    pub ended_at: Option<Millis>,
    /// The request that started it.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The trace context of that request.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// Signals that came while their step was being attempted, kept until the step parks
    /// (and is woken by one at once), moves on, or the saga stops running forward.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_signals: Vec<HeldSignal>,
}

/// A signal held for a step that was being attempted when it came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldSignal {
    /// Step index.
    pub step: usize,
    /// The signal's name.
    pub name: String,
    /// Its payload.
    pub payload: Value,
}

/// Held signals kept per saga at most; the oldest go first.
pub const HELD_SIGNALS_MAX: usize = 16;

impl SagaState {
    /// The state before the `Started` event: nothing yet.
    pub fn empty(saga_id: SagaId, step_count: usize, at: Millis) -> Self {
        SagaState {
            saga_id,
            definition: String::new(),
            version: 0,
            status: Status::Running,
            context: Value::Object(Default::default()),
            correlation_key: None,
            deadline_at: None,
            cursor: 0,
            steps: vec![StepRecord::new(); step_count],
            in_flight: None,
            parked: None,
            held_signals: Vec::new(),
            retry: None,
            pivot_passed: false,
            reason: None,
            failure: None,
            journal_version: 0,
            created_at: at,
            updated_at: at,
            ended_at: None,
            request_id: None,
            traceparent: None,
        }
    }

    /// The step the saga is on: the in-flight, parked or retrying one, else the cursor.
    pub fn current_step(&self) -> Option<usize> {
        self.in_flight
            .as_ref()
            .map(|f| f.step)
            .or(self.parked.as_ref().map(|p| p.step))
            .or(self.retry.as_ref().map(|r| r.step))
            .or((self.cursor < self.steps.len() && !self.status.is_end()).then_some(self.cursor))
    }
}

/// Merges a step's output into the context: object keys are copied over; any other value is
/// stored under the step's name.
pub fn merge_output(context: &mut Value, step_name: &str, output: &Value) {
    if !context.is_object() {
        *context = Value::Object(Default::default());
    }
    let Value::Object(ctx) = context else { return };
    match output {
        Value::Null => {}
        Value::Object(out) => {
            for (k, v) in out {
                ctx.insert(k.clone(), v.clone());
            }
        }
        other => {
            ctx.insert(step_name.to_string(), other.clone());
        }
    }
}

/// Applies one event at time `at`. Total: an event that does not fit the state changes
/// only the journal version, so a fold of any journal is defined.
pub fn evolve(s: SagaState, def: &Definition, event: &Event, at: Millis) -> SagaState {
    let mut s = apply(s, def, event, at);
    // Held signals wait for a step going forward; once the saga compensates or ends, none
    // will park to take them.
    if !matches!(s.status, Status::Running | Status::Waiting) {
        s.held_signals.clear();
    }
    s
}

fn apply(mut s: SagaState, def: &Definition, event: &Event, at: Millis) -> SagaState {
    s.journal_version += 1;
    s.updated_at = at;
    let name = |i: usize| def.steps.get(i).map(|st| st.name.as_str()).unwrap_or("?");
    match event {
        Event::Started {
            definition,
            version,
            input,
            correlation_key,
            deadline_at,
            request_id,
            traceparent,
        } => {
            s.request_id = request_id.clone();
            s.traceparent = traceparent.clone();
            s.definition = definition.clone();
            s.version = *version;
            s.context = if input.is_object() {
                input.clone()
            } else {
                serde_json::json!({ "input": input })
            };
            s.correlation_key = correlation_key.clone();
            s.deadline_at = *deadline_at;
            s.created_at = at;
            s.steps = vec![StepRecord::new(); def.steps.len()];
        }
        Event::AttemptDispatched {
            step,
            attempt,
            phase,
            deadline_at,
        } => {
            if let Some(rec) = s.steps.get_mut(*step) {
                match phase {
                    Phase::Action => rec.attempts = (*attempt).max(rec.attempts),
                    Phase::Compensation => {
                        rec.compensation_attempts = (*attempt).max(rec.compensation_attempts)
                    }
                }
            }
            s.retry = None;
            s.parked = None;
            s.in_flight = Some(InFlight {
                step: *step,
                attempt: *attempt,
                phase: *phase,
                deadline_at: *deadline_at,
                dispatched_at: at,
            });
        }
        Event::StepSucceeded { step, output, .. } => {
            s.in_flight = None;
            s.held_signals.retain(|h| h.step != *step);
            if let Some(rec) = s.steps.get_mut(*step) {
                rec.state = StepState::Done;
            }
            merge_output(&mut s.context, name(*step), output);
            if def
                .steps
                .get(*step)
                .is_some_and(|st| st.kind == StepKind::Pivot)
            {
                s.pivot_passed = true;
            }
            s.cursor = s.cursor.max(step + 1);
        }
        Event::AttemptFailed {
            step,
            retry_at,
            error,
            maybe_done,
            ..
        } => {
            s.in_flight = None;
            if *maybe_done {
                mark_maybe(&mut s, *step);
            }
            match retry_at {
                Some(at) => {
                    s.retry = Some(RetryDue {
                        step: *step,
                        phase: Phase::Action,
                        at: *at,
                    })
                }
                None => give_up_step(
                    &mut s,
                    def,
                    *step,
                    format!("step {} failed: {error}", name(*step)),
                ),
            }
        }
        Event::AttemptTimedOut {
            step,
            phase,
            retry_at,
            ..
        } => {
            s.in_flight = None;
            if *phase == Phase::Action {
                mark_maybe(&mut s, *step);
            }
            match (retry_at, phase) {
                (Some(at), _) => {
                    s.retry = Some(RetryDue {
                        step: *step,
                        phase: *phase,
                        at: *at,
                    })
                }
                (None, Phase::Action) => give_up_step(
                    &mut s,
                    def,
                    *step,
                    format!("step {} timed out", name(*step)),
                ),
                (None, Phase::Compensation) => fail(
                    &mut s,
                    Failure::CompensationExhausted { step: *step },
                    format!(
                        "compensation of {} timed out and exhausted its retries",
                        name(*step)
                    ),
                ),
            }
        }
        Event::StepRejected { step, reason, .. } => {
            s.in_flight = None;
            give_up_step(
                &mut s,
                def,
                *step,
                format!("step {} rejected: {reason}", name(*step)),
            );
        }
        Event::Parked {
            step,
            signal,
            timeout_at,
            ..
        } => {
            s.in_flight = None;
            s.status = Status::Waiting;
            s.parked = Some(Parked {
                step: *step,
                signal: signal.clone(),
                timeout_at: *timeout_at,
            });
        }
        Event::ParkTimedOut { step } => {
            s.parked = None;
            s.status = Status::Running;
            give_up_step(
                &mut s,
                def,
                *step,
                format!("step {} waited too long", name(*step)),
            );
        }
        Event::Signalled {
            step,
            name: signal,
            payload,
        } => {
            s.parked = None;
            s.status = Status::Running;
            if let Some(rec) = s.steps.get_mut(*step) {
                rec.budget_from = rec.attempts;
            }
            merge_output(&mut s.context, signal, payload);
            s.held_signals.retain(|h| h.step != *step);
        }
        Event::SignalHeld {
            step,
            name: signal,
            payload,
        } => {
            if s.held_signals.len() >= HELD_SIGNALS_MAX {
                s.held_signals.remove(0);
            }
            s.held_signals.push(HeldSignal {
                step: *step,
                name: signal.clone(),
                payload: payload.clone(),
            });
        }
        Event::StepSkipped { step, .. } => {
            if let Some(rec) = s.steps.get_mut(*step) {
                rec.state = StepState::Skipped;
            }
            s.cursor = s.cursor.max(step + 1);
        }
        Event::GuardRefused { step, reason } => fail(
            &mut s,
            Failure::GuardRefused { step: *step },
            format!("guard of step {} refused: {reason}", name(*step)),
        ),
        Event::CompensationSucceeded { step, .. } => {
            s.in_flight = None;
            if let Some(rec) = s.steps.get_mut(*step) {
                rec.state = StepState::Compensated;
            }
        }
        Event::CompensationFailed {
            step,
            retry_at,
            error,
            ..
        } => {
            s.in_flight = None;
            match retry_at {
                Some(at) => {
                    s.retry = Some(RetryDue {
                        step: *step,
                        phase: Phase::Compensation,
                        at: *at,
                    })
                }
                None => fail(
                    &mut s,
                    Failure::CompensationExhausted { step: *step },
                    format!(
                        "compensation of {} exhausted its retries: {error}",
                        name(*step)
                    ),
                ),
            }
        }
        Event::CancelRequested { reason } => {
            // A cancel can leave Failed (a refused guard): the saga is no longer ended.
            s.failure = None;
            s.ended_at = None;
            go_back(&mut s, def, reason.clone());
        }
        Event::CancelAbandoned { .. } => {
            s.status = Status::Running;
            s.reason = None;
        }
        Event::DeadlineExceeded => go_back(&mut s, def, "saga deadline exceeded".into()),
        Event::Resumed => {
            s.parked = None;
            s.retry = None;
            s.ended_at = None;
            match s.failure.take() {
                Some(Failure::CompensationExhausted { step }) => {
                    s.status = Status::Compensating;
                    if let Some(rec) = s.steps.get_mut(step) {
                        rec.compensation_budget_from = rec.compensation_attempts;
                    }
                }
                Some(Failure::GuardRefused { .. }) => {
                    s.status = Status::Running;
                    s.reason = None;
                }
                Some(Failure::StuckAfterPivot { step }) => {
                    s.status = Status::Running;
                    s.reason = None;
                    if let Some(rec) = s.steps.get_mut(step) {
                        rec.budget_from = rec.attempts;
                    }
                }
                None => {
                    // Waiting: attempt the step again now, with a fresh budget.
                    s.status = Status::Running;
                    let step = s.cursor;
                    if let Some(rec) = s.steps.get_mut(step) {
                        rec.budget_from = rec.attempts;
                    }
                }
            }
        }
        Event::ReplyIgnored { .. } => {}
        Event::Ended { status, reason } => {
            s.status = match status {
                EndStatus::Completed => Status::Completed,
                EndStatus::Compensated => Status::Compensated,
                EndStatus::Failed => Status::Failed,
            };
            if reason.is_some() {
                s.reason = reason.clone();
            }
            s.in_flight = None;
            s.retry = None;
            s.parked = None;
            s.ended_at = Some(at);
        }
    }
    s
}

/// Folds a whole journal into a state.
pub fn fold<'a>(
    saga_id: SagaId,
    def: &Definition,
    journal: impl IntoIterator<Item = &'a JournalEntry>,
) -> SagaState {
    let mut state = SagaState::empty(saga_id, def.steps.len(), 0);
    for entry in journal {
        state = evolve(state, def, &entry.event, entry.at);
    }
    state
}

/// An action attempt that may have taken effect (no reply in time, or a call that broke
/// after it was sent): a step not known to be done counts as maybe done.
fn mark_maybe(s: &mut SagaState, step: usize) {
    if let Some(rec) = s.steps.get_mut(step) {
        if rec.state == StepState::Pending || rec.state == StepState::NotDone {
            rec.state = StepState::Maybe;
        }
    }
}

/// An action gave up. Before the pivot the saga compensates. A retriable step (after the
/// pivot) or a pivot whose outcome is unknown (it timed out) needs an operator instead:
/// going back is no longer possible, or no longer known to be safe.
fn give_up_step(s: &mut SagaState, def: &Definition, step: usize, reason: String) {
    let kind = def.steps.get(step).map(|st| st.kind);
    let rec_state = s.steps.get(step).map(|r| r.state);
    if let Some(rec) = s.steps.get_mut(step) {
        if rec.state == StepState::Pending {
            rec.state = StepState::NotDone;
        }
    }
    let stuck = s.pivot_passed
        || kind == Some(StepKind::Retriable)
        || (kind == Some(StepKind::Pivot) && rec_state == Some(StepState::Maybe));
    if stuck {
        fail(s, Failure::StuckAfterPivot { step }, reason);
    } else if s.status != Status::Compensating {
        s.status = Status::Compensating;
        s.reason = Some(reason);
    }
}

/// A cancel or the deadline: compensate what was done. A pivot that may have happened (an
/// attempt timed out) and has nothing in flight to settle it cannot be undone, so, as when
/// such a pivot gives up, the saga needs an operator instead of claiming `Compensated`.
fn go_back(s: &mut SagaState, def: &Definition, reason: String) {
    s.status = Status::Compensating;
    s.parked = None;
    s.retry = None;
    let unknown_pivot = def
        .pivot()
        .filter(|&p| s.steps.get(p).is_some_and(|r| r.state == StepState::Maybe));
    match unknown_pivot {
        Some(step) if s.in_flight.is_none() && !s.pivot_passed => fail(
            s,
            Failure::StuckAfterPivot { step },
            format!(
                "{reason}, but pivot step {} may have happened (an attempt timed out) and cannot be undone",
                def.steps[step].name
            ),
        ),
        _ => s.reason = Some(reason),
    }
}

/// Marks the saga as needing an operator; `decide` follows with an `Ended { Failed }` event.
fn fail(s: &mut SagaState, failure: Failure, reason: String) {
    s.failure = Some(failure);
    s.reason = Some(reason);
    s.in_flight = None;
    s.retry = None;
    s.parked = None;
}
