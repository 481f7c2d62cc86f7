//! Simulation of random sagas against random schedules: participants that fail, time out,
//! lose and duplicate replies, park; timers firing; signals, cancels and resumes. The
//! decider's guarantees are checked after every input, and every saga must reach an end once
//! its participants cooperate.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use sagaflow_core::effects::wanted_timer;
use sagaflow_core::{
    decide_with_state, effects, evolve, fold, start, Condition, DecideContext, Definition, Event,
    Failure, Guard, GuardOtherwise, Input, JournalEntry, Millis, Outcome, Phase, Refusal, Reply,
    RetryPolicy, SagaId, SagaState, Status, Step, StepKind, StepState, TimerChange, TimerKind,
    TimerSlot,
};
use serde_json::json;

const T0: Millis = 1_000_000;
const SAGA: &str = "s-1";
const FLAGS: usize = 3;

// ---------------------------------------------------------------------------------------
// Random definitions
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct StepParams {
    max_attempts: u32,
    initial_delay_ms: u64,
    multiplier: f64,
    jitter: f64,
    timeout_ms: Option<u64>,
    guard_flag: Option<usize>,
}

fn step_params() -> impl Strategy<Value = StepParams> {
    (
        1u32..=4,
        1u64..=300,
        prop::sample::select(vec![1.0, 1.5, 2.0, 3.0]),
        prop::sample::select(vec![0.0, 0.2, 1.0]),
        prop::option::weighted(0.5, 1u64..=3_000),
        prop::option::weighted(0.25, 0..FLAGS),
    )
        .prop_map(
            |(max_attempts, initial_delay_ms, multiplier, jitter, timeout_ms, guard_flag)| {
                StepParams {
                    max_attempts,
                    initial_delay_ms,
                    multiplier,
                    jitter,
                    timeout_ms,
                    guard_flag,
                }
            },
        )
}

/// 1–6 steps; no pivot, or one anywhere with compensatable steps before it and retriable ones
/// after it.
fn definition() -> impl Strategy<Value = Definition> {
    (1usize..=6)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(step_params(), n),
                prop::option::of(0..n),
                prop::option::weighted(0.3, 1u64..=20_000),
            )
        })
        .prop_map(|(params, pivot, deadline_ms)| {
            let mut builder = Definition::builder("sim", 1);
            for (i, p) in params.iter().enumerate() {
                let name = format!("s{i}");
                let mut step = match pivot {
                    Some(at) if i == at => Step::pivot(&name, &format!("svc{i}.pivot")),
                    Some(at) if i > at => Step::retriable(&name, &format!("svc{i}.go")),
                    _ => Step::compensatable(&name, &format!("svc{i}.go"), &format!("svc{i}.undo")),
                };
                step = step.retry(RetryPolicy {
                    max_attempts: p.max_attempts,
                    initial_delay_ms: p.initial_delay_ms,
                    multiplier: p.multiplier,
                    max_delay_ms: p.initial_delay_ms * 8,
                    jitter: p.jitter,
                });
                if let Some(ms) = p.timeout_ms {
                    step = step.timeout_ms(ms);
                }
                // A pivot cannot be skipped (validation refuses it).
                if let Some(flag) = p.guard_flag.filter(|_| pivot != Some(i)) {
                    step = step.guard(Guard {
                        when: Condition::Truthy {
                            path: format!("flag{flag}"),
                        },
                        otherwise: GuardOtherwise::Skip,
                    });
                }
                builder = builder.step(step);
            }
            if let Some(ms) = deadline_ms {
                builder = builder.deadline_ms(ms);
            }
            builder.build().expect("generated definitions are valid")
        })
}

// ---------------------------------------------------------------------------------------
// The simulation: engine bookkeeping, participants, and the checks
// ---------------------------------------------------------------------------------------

type Attempt = (usize, u32, Phase);

struct Sim {
    def: Definition,
    state: SagaState,
    journal: Vec<JournalEntry>,
    /// The journal folded one entry at a time (equal to a fold from scratch).
    folded: SagaState,
    now: Millis,
    /// Timer rows, as the engine keeps them from the effects.
    timers: HashMap<TimerSlot, (Millis, TimerKind)>,
    /// Outbox keys still waiting for a reply, as the engine keeps them from the effects.
    awaiting: BTreeSet<String>,

    // Participants.
    /// Keys each participant handled, with the reply it gave (an inbox: same key, same reply).
    inbox: HashMap<String, Outcome>,
    /// Replies handled but lost on the way back (the outbox re-sends; the inbox answers again).
    lost: Vec<Reply>,
    /// Replies delivered so far (for duplicates).
    delivered: Vec<Reply>,
    /// Whether a step's action took effect at a participant.
    action_effect: Vec<bool>,
    /// Whether a step's compensation took effect at a participant.
    compensation_effect: Vec<bool>,

    // What the journal said so far.
    /// The last dispatched attempt not yet resolved.
    outstanding: Option<Attempt>,
    /// Highest attempt dispatched per step and phase.
    attempts: HashMap<(usize, Phase), u32>,
    /// `attempts` when the current retry budget began (signals and resumes reset it).
    budget_from: HashMap<(usize, Phase), u32>,
    /// The step succeeded or an action attempt timed out (so it may have happened).
    maybe_done: Vec<bool>,
    compensated: Vec<bool>,
    last_compensation: Option<usize>,
    compensation_dispatched: bool,
    pivot_succeeded: bool,
    /// Attempt timeouts set at some point, to fire late.
    old_timeouts: Vec<TimerKind>,
    /// Inputs applied (a bound for liveness).
    inputs: usize,
}

fn key(def: &Definition, (step, attempt, phase): Attempt) -> String {
    sagaflow_core::idempotency_key(&SagaId::from(SAGA), &def.steps[step].name, attempt, phase)
}

fn without_position(s: &SagaState) -> SagaState {
    SagaState {
        journal_version: 0,
        updated_at: 0,
        ..s.clone()
    }
}

impl Sim {
    fn start(def: Definition, flags: [bool; FLAGS]) -> Sim {
        let n = def.steps.len();
        let input = json!({"flag0": flags[0], "flag1": flags[1], "flag2": flags[2]});
        let ctx = DecideContext {
            now: T0,
            random: 0.5,
        };
        let (events, state) = start(&def, SagaId::from(SAGA), input, ctx);
        let empty = SagaState::empty(SagaId::from(SAGA), n, 0);
        let mut sim = Sim {
            def,
            state: empty.clone(),
            journal: Vec::new(),
            folded: empty,
            now: T0,
            timers: HashMap::new(),
            awaiting: BTreeSet::new(),
            inbox: HashMap::new(),
            lost: Vec::new(),
            delivered: Vec::new(),
            action_effect: vec![false; n],
            compensation_effect: vec![false; n],
            outstanding: None,
            attempts: HashMap::new(),
            budget_from: HashMap::new(),
            maybe_done: vec![false; n],
            compensated: vec![false; n],
            last_compensation: None,
            compensation_dispatched: false,
            pivot_succeeded: false,
            old_timeouts: Vec::new(),
            inputs: 0,
        };
        sim.record(None, &events, state, &[], &Input::Resume);
        sim
    }

    /// Applies one input the way the engine does; checks everything on the way.
    fn apply(
        &mut self,
        input: Input,
        fired: &[TimerSlot],
        random: f64,
    ) -> Result<Vec<Event>, Refusal> {
        self.inputs += 1;
        let ctx = DecideContext {
            now: self.now,
            random,
        };
        let before = self.state.clone();
        match decide_with_state(&before, &self.def, &input, ctx) {
            Ok((events, after)) => {
                self.record(Some(&before), &events, after, fired, &input);
                Ok(events)
            }
            Err(refusal) => {
                assert!(fired.is_empty(), "a timer was refused: {refusal:?}");
                self.check_refusal(&refusal, &input);
                Err(refusal)
            }
        }
    }

    fn check_refusal(&self, refusal: &Refusal, input: &Input) {
        let s = &self.state;
        match (refusal, input) {
            (Refusal::PivotPassed { .. }, Input::Cancel { .. }) => assert!(s.pivot_passed),
            (Refusal::AlreadyEnded { .. }, Input::Cancel { .. }) => assert!(s.status.is_end()),
            (Refusal::NothingToResume { .. }, Input::Resume) => {
                assert!(!matches!(s.status, Status::Failed | Status::Waiting))
            }
            (Refusal::NotWaiting { .. }, Input::Signal { .. }) => {
                assert_ne!(s.status, Status::Waiting)
            }
            (Refusal::OtherSignal { expected, got, .. }, Input::Signal { name, .. }) => {
                assert_eq!(s.status, Status::Waiting);
                assert_eq!(got, name);
                assert_ne!(expected, name);
                assert_eq!(
                    s.parked.as_ref().and_then(|p| p.signal.as_ref()),
                    Some(expected)
                );
            }
            other => panic!("unexpected refusal {other:?} in {s:?}"),
        }
    }

    fn record(
        &mut self,
        before: Option<&SagaState>,
        events: &[Event],
        after: SagaState,
        fired: &[TimerSlot],
        input: &Input,
    ) {
        // The journal's fold is the decided state.
        for event in events {
            self.journal.push(JournalEntry {
                seq: self.journal.len() as u64 + 1,
                at: self.now,
                event: event.clone(),
            });
            self.folded = evolve(self.folded.clone(), &self.def, event, self.now);
        }
        assert_eq!(self.folded, after, "fold != decided state after {events:?}");

        // Ends are absorbing; Failed is left only by Resume (or a cancel of a refused guard).
        if let Some(b) = before {
            let guard_cancel = matches!(input, Input::Cancel { .. })
                && matches!(b.failure, Some(Failure::GuardRefused { .. }));
            let leaves_failed =
                b.status == Status::Failed && (matches!(input, Input::Resume) || guard_cancel);
            if b.status.is_end() && !leaves_failed {
                assert_eq!(
                    without_position(&after),
                    without_position(b),
                    "an ended saga changed after {input:?}: {events:?}"
                );
            }
        }

        self.check_retries(before, events);
        self.check_events(events);

        // At most one attempt in flight, and it is the last one dispatched and not resolved.
        let in_flight = after
            .in_flight
            .as_ref()
            .map(|f| (f.step, f.attempt, f.phase));
        assert_eq!(in_flight, self.outstanding, "in_flight vs the journal");

        // The engine's view from the effects: outbox rows awaiting replies, timer rows.
        let fx = effects(before, &after, events, &self.def, fired);
        for k in &fx.resolved {
            assert!(self.awaiting.remove(k), "resolved {k}, not awaited");
        }
        for d in &fx.dispatch {
            assert_eq!(d.key, key(&self.def, (d.step, d.attempt, d.phase)));
            assert!(self.awaiting.insert(d.key.clone()), "{} sent twice", d.key);
        }
        let dispatched = events
            .iter()
            .filter(|e| matches!(e, Event::AttemptDispatched { .. }))
            .count();
        assert_eq!(
            fx.dispatch.len(),
            dispatched,
            "one dispatch per AttemptDispatched"
        );
        let expected: BTreeSet<String> = in_flight.map(|a| key(&self.def, a)).into_iter().collect();
        assert_eq!(self.awaiting, expected, "outbox rows awaiting a reply");
        // A fired row stays (leased) until the decision sets it again or clears it.
        for slot in fired {
            assert!(
                fx.timers.iter().any(|t| matches!(t,
                    TimerChange::Set { slot: s, .. } | TimerChange::Clear { slot: s } if s == slot)),
                "the fired {slot:?} row is neither set again nor cleared: {:?}",
                fx.timers
            );
        }
        for change in &fx.timers {
            match change {
                TimerChange::Set {
                    slot,
                    fire_at,
                    kind,
                } => {
                    if matches!(kind, TimerKind::AttemptTimeout { .. }) {
                        self.old_timeouts.push(kind.clone());
                    }
                    self.timers.insert(*slot, (*fire_at, kind.clone()));
                }
                TimerChange::Clear { slot } => {
                    self.timers.remove(slot);
                }
            }
        }
        for slot in [TimerSlot::Step, TimerSlot::Deadline] {
            assert_eq!(
                self.timers.get(&slot),
                wanted_timer(&after, slot).as_ref(),
                "timer rows vs the state, slot {slot:?}, after {events:?}"
            );
        }

        if self.pivot_succeeded {
            assert!(after.pivot_passed);
        }
        match after.status {
            Status::Compensated => self.check_compensated(&after),
            Status::Completed => self.check_completed(&after),
            Status::Failed => self.check_failed(&after),
            _ => assert!(after.failure.is_none() && after.ended_at.is_none()),
        }
        self.state = after;
    }

    fn resolve(&mut self, attempt: Attempt, event: &Event) {
        assert_eq!(
            self.outstanding,
            Some(attempt),
            "{event:?} resolves an attempt that is not in flight"
        );
        self.outstanding = None;
    }

    /// Retries follow the policy: a retry is scheduled exactly when the budget (reset by
    /// signals and resumes) allows one, except that forward-only steps retry without limit and
    /// nothing moves forward while compensating.
    fn check_retries(&mut self, before: Option<&SagaState>, events: &[Event]) {
        let mut s = before
            .cloned()
            .unwrap_or_else(|| SagaState::empty(SagaId::from(SAGA), self.def.steps.len(), 0));
        for event in events {
            match (event, &s.failure) {
                (Event::Signalled { step, .. }, _) => self.reset_budget(*step, Phase::Action),
                (Event::Resumed, None) => self.reset_budget(s.cursor, Phase::Action),
                (Event::Resumed, Some(Failure::StuckAfterPivot { step })) => {
                    self.reset_budget(*step, Phase::Action)
                }
                (Event::Resumed, Some(Failure::CompensationExhausted { step })) => {
                    self.reset_budget(*step, Phase::Compensation)
                }
                _ => {}
            }
            let policy = |step: usize| &self.def.steps[step].retry;
            let used = |step: usize, attempt: u32, phase: Phase| {
                attempt - self.budget_from.get(&(step, phase)).copied().unwrap_or(0)
            };
            let action_retries = |s: &SagaState, step: usize, attempt: u32, retryable: bool| {
                let forward_only =
                    s.pivot_passed || self.def.steps[step].kind == StepKind::Retriable;
                s.status != Status::Compensating
                    && retryable
                    && (forward_only
                        || used(step, attempt, Phase::Action) < policy(step).max_attempts)
            };
            let compensation_retries = |step: usize, attempt: u32| {
                used(step, attempt, Phase::Compensation) < policy(step).max_attempts
            };
            let (step, expected, retry_at) = match event {
                Event::AttemptFailed {
                    step,
                    attempt,
                    retryable,
                    retry_at,
                    ..
                } => (
                    *step,
                    action_retries(&s, *step, *attempt, *retryable),
                    *retry_at,
                ),
                Event::AttemptTimedOut {
                    step,
                    attempt,
                    phase: Phase::Action,
                    retry_at,
                } => (*step, action_retries(&s, *step, *attempt, true), *retry_at),
                Event::AttemptTimedOut {
                    step,
                    attempt,
                    phase: Phase::Compensation,
                    retry_at,
                } => (*step, compensation_retries(*step, *attempt), *retry_at),
                Event::CompensationFailed {
                    step,
                    attempt,
                    error,
                    retry_at,
                } => (
                    *step,
                    error != "broken" && compensation_retries(*step, *attempt),
                    *retry_at,
                ),
                _ => (0, false, None),
            };
            assert_eq!(
                retry_at.is_some(),
                expected,
                "{event:?} in {s:?}: a retry must be scheduled exactly when the policy allows"
            );
            if let Some(at) = retry_at {
                let p = policy(step);
                let longest = (p.max_delay_ms as f64 * (1.0 + p.jitter)).ceil() as Millis;
                assert!(
                    (self.now..=self.now + longest).contains(&at),
                    "retry at {at}, now {}, policy {p:?}",
                    self.now
                );
            }
            s = evolve(s, &self.def, event, self.now);
        }
    }

    fn reset_budget(&mut self, step: usize, phase: Phase) {
        let used = self.attempts.get(&(step, phase)).copied().unwrap_or(0);
        self.budget_from.insert((step, phase), used);
    }

    fn check_events(&mut self, events: &[Event]) {
        for event in events {
            match *event {
                Event::AttemptDispatched {
                    step,
                    attempt,
                    phase,
                    ..
                } => {
                    assert_eq!(
                        self.outstanding, None,
                        "a second attempt dispatched while one is in flight"
                    );
                    let last = self.attempts.entry((step, phase)).or_insert(0);
                    assert_eq!(attempt, *last + 1, "attempt numbers go up by one");
                    *last = attempt;
                    self.outstanding = Some((step, attempt, phase));
                    if phase == Phase::Compensation {
                        assert!(!self.pivot_succeeded, "compensating after the pivot");
                        assert_eq!(self.def.steps[step].kind, StepKind::Compensatable);
                        assert!(
                            self.maybe_done[step],
                            "compensating step {step}, which neither succeeded nor may have (timed out, broke mid-call)"
                        );
                        assert!(!self.compensated[step], "step {step} compensated twice");
                        assert!(
                            self.last_compensation.is_none_or(|l| step <= l),
                            "compensations newest first: {step} after {:?}",
                            self.last_compensation
                        );
                        self.last_compensation = Some(step);
                        self.compensation_dispatched = true;
                    }
                }
                Event::StepSucceeded { step, attempt, .. } => {
                    self.resolve((step, attempt, Phase::Action), event);
                    self.maybe_done[step] = true;
                    if self.def.steps[step].kind == StepKind::Pivot {
                        self.pivot_succeeded = true;
                    }
                }
                Event::AttemptTimedOut {
                    step,
                    attempt,
                    phase,
                    ..
                } => {
                    self.resolve((step, attempt, phase), event);
                    if phase == Phase::Action {
                        self.maybe_done[step] = true;
                    }
                }
                Event::AttemptFailed {
                    step,
                    attempt,
                    maybe_done,
                    ..
                } => {
                    self.resolve((step, attempt, Phase::Action), event);
                    // A call that broke after it was sent counts as a timeout does.
                    if maybe_done {
                        self.maybe_done[step] = true;
                    }
                }
                Event::StepRejected { step, attempt, .. } | Event::Parked { step, attempt, .. } => {
                    self.resolve((step, attempt, Phase::Action), event);
                }
                Event::CompensationSucceeded { step, attempt } => {
                    self.resolve((step, attempt, Phase::Compensation), event);
                    self.compensated[step] = true;
                }
                Event::CompensationFailed { step, attempt, .. } => {
                    self.resolve((step, attempt, Phase::Compensation), event);
                }
                Event::Ended { .. } => {
                    assert_eq!(self.outstanding, None, "ended with an attempt in flight");
                }
                _ => {}
            }
        }
    }

    /// Every step that succeeded or may have is undone, at the participants too.
    fn check_compensated(&self, s: &SagaState) {
        for (i, step) in self.def.steps.iter().enumerate() {
            if self.maybe_done[i] {
                assert_eq!(
                    step.kind,
                    StepKind::Compensatable,
                    "Compensated, but step {i} ({:?}) may have happened and cannot be undone: {s:?}",
                    step.kind
                );
                assert!(
                    self.compensated[i],
                    "Compensated, but step {i} was not undone"
                );
            }
            if self.action_effect[i] {
                assert!(
                    self.compensation_effect[i],
                    "Compensated, but step {i}'s action took effect and was never undone"
                );
            }
        }
    }

    /// Failed only for the operator cases: a compensation that cannot go on, or a step that
    /// can neither go forward nor be undone.
    fn check_failed(&self, s: &SagaState) {
        match s.failure {
            Some(Failure::CompensationExhausted { step }) => {
                assert_eq!(self.def.steps[step].kind, StepKind::Compensatable);
                assert!(!self.compensated[step]);
            }
            Some(Failure::StuckAfterPivot { step }) => {
                let kind = self.def.steps[step].kind;
                assert!(
                    s.pivot_passed
                        || kind == StepKind::Retriable
                        || (kind == StepKind::Pivot && s.steps[step].state == StepState::Maybe),
                    "stuck on step {step} ({kind:?}), which could go back: {s:?}"
                );
            }
            ref other => panic!("Failed with {other:?} (no guard fails in these definitions)"),
        }
        assert_eq!(s.in_flight, None);
    }

    /// Every step done (or skipped), nothing undone.
    fn check_completed(&self, s: &SagaState) {
        assert!(
            !self.compensation_dispatched,
            "Completed after compensating"
        );
        for (i, rec) in s.steps.iter().enumerate() {
            match rec.state {
                StepState::Done => assert!(self.action_effect[i]),
                StepState::Skipped => {}
                other => panic!("Completed with step {i} {other:?}"),
            }
            assert!(!self.compensation_effect[i]);
        }
    }

    // -- participants ------------------------------------------------------------------

    /// The participant handles the attempt's command: the first time with `outcome`, after
    /// that with the reply it gave then.
    fn handle(&mut self, attempt: Attempt, outcome: Outcome) -> Reply {
        let k = key(&self.def, attempt);
        let outcome = self
            .inbox
            .entry(k)
            .or_insert_with(|| {
                if matches!(outcome, Outcome::Succeeded { .. }) {
                    match attempt.2 {
                        Phase::Action => self.action_effect[attempt.0] = true,
                        Phase::Compensation => self.compensation_effect[attempt.0] = true,
                    }
                }
                outcome
            })
            .clone();
        Reply {
            step: attempt.0,
            attempt: attempt.1,
            phase: attempt.2,
            outcome,
        }
    }

    fn deliver(&mut self, reply: Reply) -> Vec<Event> {
        self.delivered.push(reply.clone());
        self.apply(Input::Reply(reply), &[], 0.5)
            .expect("well-formed replies are never refused")
    }

    fn fire(&mut self, slot: TimerSlot, random: f64) -> Vec<Event> {
        let (at, kind) = self.timers[&slot].clone();
        self.now = self.now.max(at);
        self.apply(Input::Timer(kind), &[slot], random)
            .expect("timers are never refused")
    }

    fn expected_signal(&self) -> Option<String> {
        self.state.parked.as_ref().and_then(|p| p.signal.clone())
    }

    fn earliest_timer(&self) -> Option<TimerSlot> {
        [TimerSlot::Step, TimerSlot::Deadline]
            .into_iter()
            .filter(|s| self.timers.contains_key(s))
            .min_by_key(|s| self.timers[s].0)
    }
}

fn action_outcome(a: u8, b: u8) -> Outcome {
    match a % 16 {
        0..=8 => Outcome::ok(json!({ format!("flag{}", b as usize % FLAGS): matches!(b % 2, 0) })),
        9 | 10 => Outcome::failed("busy"),
        // The call broke after it was sent: a retryable failure that may have taken effect.
        11 => Outcome::Failed {
            error: "broke mid-call".to_string(),
            retryable: true,
            retry_after_ms: None,
            maybe_done: true,
        },
        12 => Outcome::fatal("broken"),
        13 => Outcome::rejected("no"),
        _ => Outcome::Park {
            until: (matches!(b % 2, 0)).then(|| "go".to_string()),
            timeout_ms: (matches!(b % 3, 0)).then_some(1_000),
        },
    }
}

fn compensation_outcome(a: u8, b: u8) -> Outcome {
    match a % 8 {
        0..=3 => Outcome::ok(json!(null)),
        4 | 5 => Outcome::failed("busy"),
        6 if matches!(b % 4, 0) => Outcome::fatal("broken"),
        6 => Outcome::rejected("no"),
        _ => Outcome::park("go"),
    }
}

/// One chaotic input, chosen among the things that can happen now.
fn chaos(sim: &mut Sim, (c, a, b): (u8, u8, u8)) {
    let random = f64::from(b) / 256.0;
    let outcome = |attempt: Attempt| match attempt.2 {
        Phase::Action => action_outcome(a, b),
        Phase::Compensation => compensation_outcome(a, b),
    };
    match c % 20 {
        // The participant handles the attempt in flight and its reply comes back.
        0..=5 => {
            if let Some(attempt) = sim.outstanding {
                let reply = sim.handle(attempt, outcome(attempt));
                sim.deliver(reply);
            }
        }
        // The participant handles it, but the reply is lost for now.
        6 | 7 => {
            if let Some(attempt) = sim.outstanding {
                let reply = sim.handle(attempt, outcome(attempt));
                sim.lost.push(reply);
            }
        }
        // A lost reply turns up (outbox redelivery, answered from the inbox), maybe late.
        8 => {
            if !sim.lost.is_empty() {
                let reply = sim.lost.remove(a as usize % sim.lost.len());
                sim.deliver(reply);
            }
        }
        // A duplicate of a delivered reply.
        9 => {
            if !sim.delivered.is_empty() {
                let reply = sim.delivered[a as usize % sim.delivered.len()].clone();
                let current = sim.outstanding;
                let events = sim.deliver(reply.clone());
                // Only a reply for the attempt in flight can change anything.
                if current != Some((reply.step, reply.attempt, reply.phase)) {
                    assert!(matches!(events.as_slice(), [Event::ReplyIgnored { .. }]));
                }
            }
        }
        // Timers come due.
        10 | 11 => {
            if sim.timers.contains_key(&TimerSlot::Step) {
                sim.fire(TimerSlot::Step, random);
            }
        }
        12 => {
            if sim.timers.contains_key(&TimerSlot::Deadline) {
                sim.fire(TimerSlot::Deadline, random);
            }
        }
        // A timeout row claimed before it was cleared fires late: nothing happens.
        13 => {
            if !sim.old_timeouts.is_empty() {
                let kind = sim.old_timeouts[a as usize % sim.old_timeouts.len()].clone();
                let TimerKind::AttemptTimeout {
                    step,
                    attempt,
                    phase,
                } = kind
                else {
                    unreachable!()
                };
                if sim.outstanding != Some((step, attempt, phase)) {
                    let before = sim.state.clone();
                    let events = sim.apply(Input::Timer(kind), &[], random).unwrap();
                    assert_eq!(events, [], "a stale timeout changed the saga");
                    assert_eq!(sim.state, before);
                }
            }
        }
        // A reply for an attempt that was never sent.
        14 => {
            let step = a as usize % sim.def.steps.len();
            let phase = if matches!(b % 2, 0) {
                Phase::Action
            } else {
                Phase::Compensation
            };
            let attempt = sim.attempts.get(&(step, phase)).copied().unwrap_or(0) + 1 + b as u32 % 3;
            // Not kept for duplicates: once that attempt exists, its participant answers it.
            let reply = Reply {
                step,
                attempt,
                phase,
                outcome: Outcome::ok(json!({})),
            };
            let events = sim.apply(Input::Reply(reply), &[], random).unwrap();
            assert!(matches!(events.as_slice(), [Event::ReplyIgnored { .. }]));
        }
        15 | 16 => {
            let name = if matches!(a % 4, 0) {
                "stop".to_string()
            } else {
                sim.expected_signal().unwrap_or_else(|| "any".into())
            };
            let _ = sim.apply(
                Input::Signal {
                    name,
                    payload: json!({ "signal": b }),
                },
                &[],
                random,
            );
        }
        17 if matches!(a % 3, 0) => {
            let _ = sim.apply(
                Input::Cancel {
                    reason: "cancelled".into(),
                },
                &[],
                random,
            );
        }
        18 => {
            let _ = sim.apply(Input::Resume, &[], random);
        }
        _ => sim.now += i64::from(a) * 10,
    }
}

/// Participants cooperate: every new command succeeds, every reply arrives, every timer
/// fires, parked steps get their signal; a Failed saga is resumed once. Returns the end.
fn cooperate(sim: &mut Sim) -> Status {
    let bound = 40 + 30 * sim.def.steps.len();
    let start = sim.inputs;
    let mut resumed = false;
    loop {
        assert!(
            sim.inputs - start <= bound,
            "no end within {bound} cooperative inputs: {:?}",
            sim.state
        );
        match sim.state.status {
            Status::Completed | Status::Compensated => return sim.state.status,
            Status::Failed => {
                assert!(
                    !resumed,
                    "Failed again after a resume with cooperative participants: {:?}",
                    sim.state
                );
                resumed = true;
                let events = sim.apply(Input::Resume, &[], 0.5).unwrap();
                assert!(matches!(events.first(), Some(Event::Resumed)));
                continue;
            }
            _ => {}
        }
        if let Some(attempt) = sim.outstanding {
            let reply = sim.handle(attempt, Outcome::ok(json!({})));
            sim.deliver(reply);
        } else if sim.state.status == Status::Waiting {
            let name = sim.expected_signal().unwrap_or_else(|| "any".into());
            let events = sim
                .apply(
                    Input::Signal {
                        name,
                        payload: json!({}),
                    },
                    &[],
                    0.5,
                )
                .unwrap();
            assert!(matches!(events.first(), Some(Event::Signalled { .. })));
        } else if let Some(slot) = sim.earliest_timer() {
            sim.fire(slot, 0.5);
        } else {
            panic!(
                "stuck: nothing in flight, no timer, not waiting: {:?}",
                sim.state
            );
        }
    }
}

fn run(def: Definition, flags: [bool; FLAGS], schedule: &[(u8, u8, u8)]) -> Sim {
    let mut sim = Sim::start(def, flags);
    for &choice in schedule {
        chaos(&mut sim, choice);
    }
    cooperate(&mut sim);
    assert_eq!(
        fold(SagaId::from(SAGA), &sim.def, &sim.journal),
        sim.state,
        "a fold from scratch"
    );
    sim
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn every_schedule_keeps_the_guarantees_and_ends(
        def in definition(),
        flags in any::<[bool; FLAGS]>(),
        schedule in prop::collection::vec(any::<(u8, u8, u8)>(), 0..100),
    ) {
        run(def, flags, &schedule);
    }

    #[test]
    fn cooperative_participants_complete_every_saga(
        def in definition(),
        flags in any::<[bool; FLAGS]>(),
    ) {
        let sim = run(def, flags, &[]);
        prop_assert_eq!(sim.state.status, Status::Completed);
        prop_assert_eq!(sim.inputs, sim.def.steps.iter().enumerate()
            .filter(|(i, _)| sim.state.steps[*i].state == StepState::Done).count());
    }
}
