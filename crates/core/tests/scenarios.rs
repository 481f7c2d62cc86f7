//! Example runs of the saga model through its public API: one behaviour per test, driven the
//! way the engine drives it (decide, append to the journal, apply the effects).

use std::collections::{BTreeSet, HashMap};

use sagaflow_core::effects::wanted_timer;
use sagaflow_core::{
    decide_with_state, effects, fold, start, Condition, DecideContext, Definition, Dispatch,
    Effects, Event, Failure, Guard, GuardOtherwise, Input, JournalEntry, Millis, Outcome, Phase,
    Refusal, Reply, RetryPolicy, SagaId, SagaState, Status, Step, StepState, TimerChange,
    TimerKind, TimerSlot,
};
use serde_json::{json, Value};

const T0: Millis = 1_700_000_000_000;
const SAGA: &str = "o-1";

/// A saga driven by hand, with what the engine keeps beside it: the journal, the commands
/// waiting for a reply (outbox keys) and the timer rows. Every decision is checked against the
/// journal's fold and the state's wanted timers, so each scenario also checks those.
struct Run {
    def: Definition,
    state: SagaState,
    journal: Vec<JournalEntry>,
    now: Millis,
    timers: HashMap<TimerSlot, (Millis, TimerKind)>,
    sent: Vec<Dispatch>,
    awaiting: BTreeSet<String>,
    last: Effects,
}

impl Run {
    fn start(def: Definition, input: Value) -> Run {
        let (events, state) = start(&def, SagaId::from(SAGA), input, ctx(T0));
        let mut run = Run {
            state: SagaState::empty(SagaId::from(SAGA), def.steps.len(), T0),
            def,
            journal: Vec::new(),
            now: T0,
            timers: HashMap::new(),
            sent: Vec::new(),
            awaiting: BTreeSet::new(),
            last: Effects::default(),
        };
        run.record(None, events, state, &[]);
        run
    }

    fn input(&mut self, input: Input) -> Result<Vec<Event>, Refusal> {
        self.decide(input, &[])
    }

    fn decide(&mut self, input: Input, fired: &[TimerSlot]) -> Result<Vec<Event>, Refusal> {
        let before = self.state.clone();
        let (events, after) = decide_with_state(&before, &self.def, &input, ctx(self.now))?;
        self.record(Some(&before), events.clone(), after, fired);
        Ok(events)
    }

    fn record(
        &mut self,
        before: Option<&SagaState>,
        events: Vec<Event>,
        after: SagaState,
        fired: &[TimerSlot],
    ) {
        for event in &events {
            self.journal.push(JournalEntry {
                seq: self.journal.len() as u64 + 1,
                at: self.now,
                event: event.clone(),
            });
        }
        assert_eq!(
            fold(SagaId::from(SAGA), &self.def, &self.journal),
            after,
            "the journal's fold must equal the decided state; events: {events:?}"
        );
        assert_eq!(after.journal_version, self.journal.len() as u64);
        let fx = effects(before, &after, &events, &self.def, fired);
        for key in &fx.resolved {
            assert!(
                self.awaiting.remove(key),
                "resolved {key}, which was not awaited"
            );
        }
        for d in &fx.dispatch {
            assert!(self.awaiting.insert(d.key.clone()), "{} sent twice", d.key);
            self.sent.push(d.clone());
        }
        // A fired row stays (leased) until the decision sets it again or clears it.
        for slot in fired {
            assert!(
                fx.timers.iter().any(|t| matches!(t,
                    TimerChange::Set { slot: s, .. } | TimerChange::Clear { slot: s } if s == slot)),
                "the fired {slot:?} row is neither set again nor cleared"
            );
        }
        for change in &fx.timers {
            match change {
                TimerChange::Set {
                    slot,
                    fire_at,
                    kind,
                } => {
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
                "timer rows must match what the state wants in slot {slot:?}"
            );
        }
        let in_flight: BTreeSet<String> = after
            .in_flight
            .iter()
            .map(|f| key(&self.def.steps[f.step].name, f.attempt, f.phase))
            .collect();
        assert_eq!(self.awaiting, in_flight, "outbox rows awaiting a reply");
        self.state = after;
        self.last = fx;
    }

    /// The attempt waiting for a reply.
    fn in_flight(&self) -> (usize, u32, Phase) {
        let f = self.state.in_flight.as_ref().expect("an attempt in flight");
        (f.step, f.attempt, f.phase)
    }

    fn reply(&mut self, step: usize, attempt: u32, phase: Phase, outcome: Outcome) -> Vec<Event> {
        self.input(Input::Reply(Reply {
            step,
            attempt,
            phase,
            outcome,
        }))
        .expect("a well-formed reply is never refused")
    }

    /// Answers the attempt in flight.
    fn answer(&mut self, outcome: Outcome) -> Vec<Event> {
        let (step, attempt, phase) = self.in_flight();
        self.reply(step, attempt, phase, outcome)
    }

    fn ok(&mut self) -> Vec<Event> {
        self.answer(Outcome::ok(json!({})))
    }

    /// Fires the timer in `slot` at its time, as the engine's timer worker would.
    fn fire(&mut self, slot: TimerSlot) -> Vec<Event> {
        let (at, kind) = self
            .timers
            .get(&slot)
            .cloned()
            .expect("a timer in the slot");
        self.now = self.now.max(at);
        self.decide(Input::Timer(kind), &[slot])
            .expect("timers are never refused")
    }

    fn cancel(&mut self) -> Result<Vec<Event>, Refusal> {
        self.input(Input::Cancel {
            reason: "customer changed their mind".into(),
        })
    }

    fn keys(&self) -> Vec<&str> {
        self.sent.iter().map(|d| d.key.as_str()).collect()
    }

    fn step_states(&self) -> Vec<StepState> {
        self.state.steps.iter().map(|s| s.state).collect()
    }
}

fn ctx(now: Millis) -> DecideContext {
    DecideContext { now, random: 0.5 }
}

fn key(step: &str, attempt: u32, phase: Phase) -> String {
    format!("{SAGA}:{step}:{attempt}:{}", phase.as_str())
}

fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::type_name).collect()
}

fn policy(max_attempts: u32, initial_delay_ms: u64) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_delay_ms,
        multiplier: 2.0,
        max_delay_ms: 60_000,
        jitter: 0.0,
    }
}

/// reserve (stock) → hold (billing, 5 s timeout) → charge (pivot) → ship (retriable, 10 s).
fn order() -> Definition {
    order_builder().build().unwrap()
}

fn order_builder() -> sagaflow_core::definition::DefinitionBuilder {
    Definition::builder("order", 1)
        .step(
            Step::compensatable("reserve", "stock.reserve", "stock.release").retry(policy(3, 100)),
        )
        .step(
            Step::compensatable("hold", "billing.hold", "billing.release")
                .retry(policy(3, 100))
                .timeout_ms(5_000),
        )
        .step(Step::pivot("charge", "billing.charge").retry(policy(2, 100)))
        .step(
            Step::retriable("ship", "delivery.ship")
                .retry(policy(1, 100))
                .timeout_ms(10_000),
        )
}

/// A state compared for "nothing happened but a journal entry".
fn ignoring_journal_position(s: &SagaState) -> SagaState {
    SagaState {
        journal_version: 0,
        updated_at: 0,
        ..s.clone()
    }
}

#[test]
fn the_happy_path_completes() {
    let mut run = Run::start(order(), json!({"order_id": 7}));
    assert_eq!(run.state.status, Status::Running);
    assert_eq!(run.keys(), [key("reserve", 1, Phase::Action)]);
    run.answer(Outcome::ok(json!({"reservation": "r-1"})));
    run.ok();
    run.ok();
    let events = run.answer(Outcome::ok(json!("TRACK-1")));
    assert_eq!(names(&events), ["step_succeeded", "ended"]);
    assert_eq!(run.state.status, Status::Completed);
    assert_eq!(
        run.keys(),
        [
            key("reserve", 1, Phase::Action),
            key("hold", 1, Phase::Action),
            key("charge", 1, Phase::Action),
            key("ship", 1, Phase::Action),
        ]
    );
    // Object outputs are merged; other values go under the step's name.
    assert_eq!(
        run.state.context,
        json!({"order_id": 7, "reservation": "r-1", "ship": "TRACK-1"})
    );
    assert_eq!(run.step_states(), [StepState::Done; 4]);
    assert!(run.state.pivot_passed);
    assert_eq!(run.state.ended_at, Some(T0));
    assert!(run.awaiting.is_empty() && run.timers.is_empty());
}

#[test]
fn a_rejection_compensates_the_done_steps_newest_first() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    run.ok();
    let events = run.answer(Outcome::rejected("card declined"));
    assert_eq!(names(&events), ["step_rejected", "attempt_dispatched"]);
    assert_eq!(run.state.status, Status::Compensating);
    assert!(run
        .state
        .reason
        .as_deref()
        .unwrap()
        .contains("card declined"));
    assert_eq!(run.in_flight(), (1, 1, Phase::Compensation));
    let events = run.ok();
    assert_eq!(
        names(&events),
        ["compensation_succeeded", "attempt_dispatched"]
    );
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));
    let events = run.ok();
    assert_eq!(names(&events), ["compensation_succeeded", "ended"]);
    assert_eq!(run.state.status, Status::Compensated);
    assert_eq!(
        run.step_states(),
        [
            StepState::Compensated,
            StepState::Compensated,
            StepState::NotDone,
            StepState::Pending
        ]
    );
    assert_eq!(
        run.keys()[3..],
        [
            key("hold", 1, Phase::Compensation),
            key("reserve", 1, Phase::Compensation)
        ]
    );
    assert_eq!(run.sent[3].command.subject(), "billing.release");
}

#[test]
fn retryable_failures_retry_with_backoff_then_compensate_when_exhausted() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    let start = run.now;
    let mut retry_ats = Vec::new();
    for attempt in 1..=2 {
        assert_eq!(run.in_flight(), (1, attempt, Phase::Action));
        let events = run.answer(Outcome::failed("billing is busy"));
        let [Event::AttemptFailed {
            retry_at: Some(at),
            retryable: true,
            ..
        }] = events.as_slice()
        else {
            panic!("expected a scheduled retry, got {events:?}");
        };
        retry_ats.push(*at - start);
        assert_eq!(
            run.timers[&TimerSlot::Step],
            (
                *at,
                TimerKind::Retry {
                    step: 1,
                    phase: Phase::Action
                }
            )
        );
        assert_eq!(names(&run.fire(TimerSlot::Step)), ["attempt_dispatched"]);
    }
    // 100 ms, then 200 ms after the second failure (which came 100 ms after the start).
    assert_eq!(retry_ats, [100, 300]);
    assert_eq!(run.in_flight(), (1, 3, Phase::Action));
    let events = run.answer(Outcome::failed("billing is busy"));
    assert_eq!(names(&events), ["attempt_failed", "attempt_dispatched"]);
    assert!(matches!(
        events[0],
        Event::AttemptFailed { retry_at: None, .. }
    ));
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));
    run.ok();
    assert_eq!(run.state.status, Status::Compensated);
    assert_eq!(
        run.step_states()[..2],
        [StepState::Compensated, StepState::NotDone]
    );
}

/// A participant's `Retry-After` pushes the retry later than the backoff would, never
/// earlier, for an action and for a compensation alike.
#[test]
fn a_retry_waits_at_least_as_long_as_the_participant_asked() {
    let busy = |ms: u64| Outcome::Failed {
        error: "billing is busy".to_string(),
        retryable: true,
        retry_after_ms: Some(ms),
        maybe_done: false,
    };
    let retry_in = |events: &[Event], now: Millis| match events {
        [Event::AttemptFailed {
            retry_at: Some(at), ..
        }]
        | [Event::CompensationFailed {
            retry_at: Some(at), ..
        }] => *at - now,
        _ => panic!("expected a scheduled retry, got {events:?}"),
    };
    let mut run = Run::start(order(), json!({}));
    run.ok();
    // The backoff says 100 ms; the participant asked for 5 s.
    let now = run.now;
    let events = run.answer(busy(5_000));
    assert_eq!(retry_in(&events, now), 5_000);
    assert_eq!(run.timers[&TimerSlot::Step].0, now + 5_000);
    assert_eq!(names(&run.fire(TimerSlot::Step)), ["attempt_dispatched"]);
    // The backoff says 200 ms; the participant asked for less: the backoff holds.
    let now = run.now;
    let events = run.answer(busy(20));
    assert_eq!(retry_in(&events, now), 200);
    assert_eq!(names(&run.fire(TimerSlot::Step)), ["attempt_dispatched"]);
    // Exhausted: compensation of reserve, whose participant is busy too.
    run.answer(Outcome::failed("billing is busy"));
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));
    let now = run.now;
    let events = run.answer(busy(60_000));
    assert_eq!(retry_in(&events, now), 60_000);
    assert_eq!(run.timers[&TimerSlot::Step].0, now + 60_000);
}

/// An attempt whose call broke after it was sent may have taken effect: when the step is
/// given up, it is compensated along with the steps before it, newest first.
#[test]
fn a_step_given_up_after_a_maybe_done_attempt_is_compensated_too() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    let broke = Outcome::Failed {
        error: "the connection broke after the request was sent".to_string(),
        retryable: true,
        retry_after_ms: None,
        maybe_done: true,
    };
    let events = run.answer(broke);
    assert!(
        matches!(
            events.as_slice(),
            [Event::AttemptFailed {
                maybe_done: true,
                ..
            }]
        ),
        "{events:?}"
    );
    run.fire(TimerSlot::Step);
    // Later attempts fail plainly; the step stays maybe done.
    run.answer(Outcome::failed("billing is busy"));
    run.fire(TimerSlot::Step);
    run.answer(Outcome::failed("billing is busy"));
    assert_eq!(run.state.status, Status::Compensating);
    assert_eq!(run.in_flight(), (1, 1, Phase::Compensation));
    run.ok();
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));
    run.ok();
    assert_eq!(run.state.status, Status::Compensated);
    assert_eq!(
        run.step_states()[..2],
        [StepState::Compensated, StepState::Compensated]
    );
}

#[test]
fn a_non_retryable_failure_compensates_at_once() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    let events = run.answer(Outcome::fatal("account closed"));
    assert_eq!(names(&events), ["attempt_failed", "attempt_dispatched"]);
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));
}

#[test]
fn a_timed_out_attempt_counts_as_maybe_done_and_is_compensated() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    assert_eq!(
        run.timers[&TimerSlot::Step],
        (
            T0 + 5_000,
            TimerKind::AttemptTimeout {
                step: 1,
                attempt: 1,
                phase: Phase::Action
            }
        )
    );
    let events = run.fire(TimerSlot::Step);
    assert_eq!(
        events,
        [Event::AttemptTimedOut {
            step: 1,
            attempt: 1,
            phase: Phase::Action,
            retry_at: Some(T0 + 5_100)
        }]
    );
    assert_eq!(run.state.steps[1].state, StepState::Maybe);
    run.fire(TimerSlot::Step);
    assert_eq!(run.in_flight(), (1, 2, Phase::Action));
    // The first attempt's reply arrives late: ignored, the step stays "maybe".
    let late = run.reply(1, 1, Phase::Action, Outcome::ok(json!({})));
    assert_eq!(names(&late), ["reply_ignored"]);
    // The second attempt is refused; the first may still have happened, so it is undone.
    let events = run.answer(Outcome::rejected("limit reached"));
    assert_eq!(names(&events), ["step_rejected", "attempt_dispatched"]);
    assert_eq!(run.state.steps[1].state, StepState::Maybe);
    assert_eq!(run.in_flight(), (1, 1, Phase::Compensation));
    run.ok();
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));
    run.ok();
    assert_eq!(run.state.status, Status::Compensated);
    assert_eq!(run.step_states()[..2], [StepState::Compensated; 2]);
}

#[test]
fn a_timeout_with_no_attempts_left_compensates_the_step_too() {
    let def = Definition::builder("order", 1)
        .step(Step::compensatable(
            "reserve",
            "stock.reserve",
            "stock.release",
        ))
        .step(
            Step::compensatable("hold", "billing.hold", "billing.release")
                .retry(RetryPolicy::none())
                .timeout_ms(1_000),
        )
        .build()
        .unwrap();
    let mut run = Run::start(def, json!({}));
    run.ok();
    let events = run.fire(TimerSlot::Step);
    assert_eq!(names(&events), ["attempt_timed_out", "attempt_dispatched"]);
    assert_eq!(run.in_flight(), (1, 1, Phase::Compensation));
}

#[test]
fn cancel_after_the_pivot_is_refused_naming_the_pivot() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    run.ok();
    run.ok();
    let before = run.state.clone();
    let refusal = run.cancel().unwrap_err();
    assert_eq!(
        refusal,
        Refusal::PivotPassed {
            saga_id: SagaId::from(SAGA),
            step: "charge".into()
        }
    );
    assert!(refusal.to_string().contains("\"charge\""), "{refusal}");
    assert_eq!(run.state, before);
    // Still refused once it completed.
    run.ok();
    assert!(matches!(run.cancel(), Err(Refusal::PivotPassed { .. })));
}

#[test]
fn retriable_steps_after_the_pivot_retry_without_limit() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    run.ok();
    run.ok();
    // "ship" allows one attempt, but after the pivot there is no going back.
    for attempt in 1..=12 {
        assert_eq!(run.in_flight(), (3, attempt, Phase::Action));
        let events = if matches!(attempt % 3, 0) {
            run.fire(TimerSlot::Step)
        } else {
            run.answer(Outcome::failed("carrier down"))
        };
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(matches!(
            events[0],
            Event::AttemptFailed {
                retry_at: Some(_),
                ..
            } | Event::AttemptTimedOut {
                retry_at: Some(_),
                ..
            }
        ));
        assert_eq!(run.state.status, Status::Running);
        run.fire(TimerSlot::Step);
    }
    run.ok();
    assert_eq!(run.state.status, Status::Completed);
    assert_eq!(run.state.steps[3].attempts, 13);
}

#[test]
fn cancel_waits_for_the_action_in_flight_and_compensates_it_when_it_succeeded() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    assert_eq!(run.in_flight(), (1, 1, Phase::Action));
    let events = run.cancel().unwrap();
    assert_eq!(names(&events), ["cancel_requested"]);
    assert_eq!(run.state.status, Status::Compensating);
    assert_eq!(run.in_flight(), (1, 1, Phase::Action));
    assert!(run.last.dispatch.is_empty());
    // A second cancel changes nothing.
    assert_eq!(run.cancel().unwrap(), []);
    let events = run.ok();
    assert_eq!(names(&events), ["step_succeeded", "attempt_dispatched"]);
    assert_eq!(run.in_flight(), (1, 1, Phase::Compensation));
    run.ok();
    run.ok();
    assert_eq!(run.state.status, Status::Compensated);
    assert_eq!(
        run.state.reason.as_deref(),
        Some("customer changed their mind")
    );
}

#[test]
fn cancel_waits_for_the_action_in_flight_and_skips_it_when_it_failed() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    run.cancel().unwrap();
    // Retryable, but the saga is going back: no retry.
    let events = run.answer(Outcome::failed("busy"));
    assert_eq!(names(&events), ["attempt_failed", "attempt_dispatched"]);
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));
    assert_eq!(run.state.steps[1].state, StepState::NotDone);
}

#[test]
fn cancel_overtaken_by_the_pivot_succeeding_is_abandoned() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    run.ok();
    assert_eq!(run.in_flight(), (2, 1, Phase::Action));
    run.cancel().unwrap();
    assert_eq!(run.state.status, Status::Compensating);
    let events = run.ok();
    assert_eq!(
        names(&events),
        ["step_succeeded", "cancel_abandoned", "attempt_dispatched"]
    );
    assert_eq!(run.state.status, Status::Running);
    assert_eq!(run.state.reason, None);
    assert_eq!(run.in_flight(), (3, 1, Phase::Action));
    run.ok();
    assert_eq!(run.state.status, Status::Completed);
    assert!(run.sent.iter().all(|d| d.phase == Phase::Action));
}

#[test]
fn a_parked_step_waits_for_its_signal_by_name_then_attempts_again() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    let events = run.answer(Outcome::park("approved"));
    assert_eq!(names(&events), ["parked"]);
    assert_eq!(run.state.status, Status::Waiting);
    assert!(run.state.in_flight.is_none() && run.awaiting.is_empty());
    let before = run.state.clone();
    let refusal = run
        .input(Input::Signal {
            name: "declined".into(),
            payload: json!({}),
        })
        .unwrap_err();
    assert_eq!(
        refusal,
        Refusal::OtherSignal {
            saga_id: SagaId::from(SAGA),
            step: "hold".into(),
            expected: "approved".into(),
            got: "declined".into()
        }
    );
    assert_eq!(run.state, before);
    let events = run
        .input(Input::Signal {
            name: "approved".into(),
            payload: json!({"approver": "ann"}),
        })
        .unwrap();
    assert_eq!(names(&events), ["signalled", "attempt_dispatched"]);
    assert_eq!(run.state.status, Status::Running);
    assert_eq!(run.in_flight(), (1, 2, Phase::Action));
    assert_eq!(run.state.context["approver"], "ann");
    run.ok();
    assert_eq!(run.in_flight(), (2, 1, Phase::Action));
    // Nothing is parked any more: a signal now is held for the step being attempted, and
    // dropped when that step moves on without waiting.
    let events = run
        .input(Input::Signal {
            name: "approved".into(),
            payload: json!({}),
        })
        .unwrap();
    assert_eq!(names(&events), ["signal_held"]);
    run.ok();
    assert!(run.state.held_signals.is_empty());
}

#[test]
fn a_signal_that_overtakes_the_park_wakes_the_step_at_once() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    assert_eq!(run.in_flight(), (1, 1, Phase::Action));
    // The world changed (say, stock was added) while the attempt that found none was still
    // answering: the signal is held…
    let events = run
        .input(Input::Signal {
            name: "approved".into(),
            payload: json!({"by": "ann"}),
        })
        .unwrap();
    assert_eq!(names(&events), ["signal_held"]);
    assert_eq!(run.state.status, Status::Running);
    // …and when the attempt asks to wait for it, the step is woken and attempted again.
    let events = run.answer(Outcome::park("approved"));
    assert_eq!(
        names(&events),
        ["parked", "signalled", "attempt_dispatched"]
    );
    assert_eq!(run.in_flight(), (1, 2, Phase::Action));
    assert_eq!(run.state.context["by"], "ann");
    assert!(run.state.held_signals.is_empty());
    // A held signal of another name does not wake it.
    let events = run
        .input(Input::Signal {
            name: "other".into(),
            payload: json!({}),
        })
        .unwrap();
    assert_eq!(names(&events), ["signal_held"]);
    let events = run.answer(Outcome::park("approved"));
    assert_eq!(names(&events), ["parked"]);
    assert_eq!(run.state.status, Status::Waiting);
    // Compensating drops what is held.
    run.input(Input::Cancel {
        reason: "stop".into(),
    })
    .unwrap();
    assert!(run.state.held_signals.is_empty());
}

#[test]
fn a_park_timeout_compensates() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    run.answer(Outcome::Park {
        until: None,
        timeout_ms: Some(60_000),
    });
    assert_eq!(
        run.timers[&TimerSlot::Step],
        (T0 + 60_000, TimerKind::ParkTimeout { step: 1 })
    );
    let events = run.fire(TimerSlot::Step);
    assert_eq!(names(&events), ["park_timed_out", "attempt_dispatched"]);
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));
    assert_eq!(run.state.steps[1].state, StepState::NotDone);
    run.ok();
    assert_eq!(run.state.status, Status::Compensated);
}

#[test]
fn resume_of_a_waiting_saga_attempts_the_step_again() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    run.answer(Outcome::park("approved"));
    let events = run.input(Input::Resume).unwrap();
    assert_eq!(names(&events), ["resumed", "attempt_dispatched"]);
    assert_eq!(run.state.status, Status::Running);
    assert_eq!(run.in_flight(), (1, 2, Phase::Action));
}

#[test]
fn resume_of_a_failed_saga_retries_the_compensation_with_fresh_attempt_numbers() {
    let def = Definition::builder("order", 1)
        .step(Step::compensatable("reserve", "stock.reserve", "stock.release").retry(policy(2, 50)))
        .step(Step::compensatable(
            "hold",
            "billing.hold",
            "billing.release",
        ))
        .build()
        .unwrap();
    let mut run = Run::start(def, json!({}));
    run.ok();
    run.answer(Outcome::rejected("no funds"));
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));
    run.answer(Outcome::failed("warehouse offline"));
    run.fire(TimerSlot::Step);
    assert_eq!(run.in_flight(), (0, 2, Phase::Compensation));
    let events = run.answer(Outcome::failed("warehouse offline"));
    assert_eq!(names(&events), ["compensation_failed", "ended"]);
    assert_eq!(run.state.status, Status::Failed);
    assert_eq!(
        run.state.failure,
        Some(Failure::CompensationExhausted { step: 0 })
    );
    assert!(run.timers.is_empty() && run.awaiting.is_empty());

    let events = run.input(Input::Resume).unwrap();
    assert_eq!(names(&events), ["resumed", "attempt_dispatched"]);
    assert_eq!(run.state.status, Status::Compensating);
    assert_eq!(run.in_flight(), (0, 3, Phase::Compensation));
    assert_eq!(
        run.last.dispatch[0].key,
        key("reserve", 3, Phase::Compensation)
    );
    // A late reply to an exhausted attempt does not count for the new one.
    assert_eq!(
        names(&run.reply(0, 2, Phase::Compensation, Outcome::ok(json!({})))),
        ["reply_ignored"]
    );
    run.ok();
    assert_eq!(run.state.status, Status::Compensated);
    let keys: BTreeSet<_> = run.keys().into_iter().collect();
    assert_eq!(
        keys.len(),
        run.sent.len(),
        "idempotency keys are never reused"
    );
}

#[test]
fn resume_of_a_saga_that_is_not_failed_or_waiting_is_refused() {
    let mut run = Run::start(order(), json!({}));
    assert_eq!(
        run.input(Input::Resume),
        Err(Refusal::NothingToResume {
            saga_id: SagaId::from(SAGA),
            status: Status::Running
        })
    );
    run.cancel().unwrap();
    run.answer(Outcome::failed("x"));
    assert_eq!(run.state.status, Status::Compensated);
    assert!(matches!(
        run.input(Input::Resume),
        Err(Refusal::NothingToResume {
            status: Status::Compensated,
            ..
        })
    ));
    assert!(matches!(
        run.cancel(),
        Err(Refusal::AlreadyEnded {
            status: Status::Compensated,
            ..
        })
    ));
}

fn with_gift_wrap(otherwise: GuardOtherwise) -> Definition {
    Definition::builder("order", 1)
        .step(Step::compensatable(
            "reserve",
            "stock.reserve",
            "stock.release",
        ))
        .step(
            Step::compensatable("wrap", "gifts.wrap", "gifts.unwrap").guard(Guard {
                when: Condition::Truthy {
                    path: "gift".into(),
                },
                otherwise,
            }),
        )
        .step(Step::pivot("charge", "billing.charge"))
        .build()
        .unwrap()
}

#[test]
fn a_guard_that_skips_skips_the_step_and_its_compensation() {
    let mut run = Run::start(with_gift_wrap(GuardOtherwise::Skip), json!({"gift": false}));
    let events = run.ok();
    assert_eq!(
        names(&events),
        ["step_succeeded", "step_skipped", "attempt_dispatched"]
    );
    assert_eq!(run.in_flight(), (2, 1, Phase::Action));
    assert_eq!(run.state.steps[1].state, StepState::Skipped);
    run.answer(Outcome::rejected("declined"));
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));

    let mut run = Run::start(with_gift_wrap(GuardOtherwise::Skip), json!({"gift": true}));
    run.ok();
    assert_eq!(run.in_flight(), (1, 1, Phase::Action));
}

#[test]
fn a_guard_that_fails_stops_the_saga_and_cancel_then_compensates() {
    let mut run = Run::start(with_gift_wrap(GuardOtherwise::Fail), json!({}));
    let events = run.ok();
    assert_eq!(names(&events), ["step_succeeded", "guard_refused", "ended"]);
    assert_eq!(run.state.status, Status::Failed);
    assert_eq!(run.state.failure, Some(Failure::GuardRefused { step: 1 }));
    assert!(run
        .state
        .reason
        .as_deref()
        .unwrap()
        .contains("gift is truthy"));

    // Resume evaluates the guard again; it still does not hold.
    let events = run.input(Input::Resume).unwrap();
    assert_eq!(names(&events), ["resumed", "guard_refused", "ended"]);
    assert_eq!(run.state.status, Status::Failed);

    let events = run.cancel().unwrap();
    assert_eq!(names(&events), ["cancel_requested", "attempt_dispatched"]);
    assert_eq!(run.state.status, Status::Compensating);
    assert_eq!(run.state.failure, None);
    assert_eq!(run.state.ended_at, None);
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));
    run.ok();
    assert_eq!(run.state.status, Status::Compensated);
}

#[test]
fn the_saga_deadline_compensates_before_the_pivot() {
    let mut run = Run::start(
        order_builder().deadline_ms(30_000).build().unwrap(),
        json!({}),
    );
    assert_eq!(
        run.timers[&TimerSlot::Deadline],
        (T0 + 30_000, TimerKind::Deadline)
    );
    run.ok();
    run.answer(Outcome::failed("busy"));
    assert!(run.state.retry.is_some());
    let events = run.fire(TimerSlot::Deadline);
    assert_eq!(names(&events), ["deadline_exceeded", "attempt_dispatched"]);
    assert_eq!(run.state.status, Status::Compensating);
    assert_eq!(run.in_flight(), (0, 1, Phase::Compensation));
    assert!(!run.timers.contains_key(&TimerSlot::Deadline));
    run.ok();
    assert_eq!(run.state.status, Status::Compensated);
    assert_eq!(run.state.reason.as_deref(), Some("saga deadline exceeded"));
}

#[test]
fn the_saga_deadline_is_ignored_after_the_pivot() {
    let mut run = Run::start(
        order_builder().deadline_ms(30_000).build().unwrap(),
        json!({}),
    );
    run.ok();
    run.ok();
    run.ok();
    assert!(run.state.pivot_passed);
    assert!(run.last.timers.contains(&TimerChange::Clear {
        slot: TimerSlot::Deadline
    }));
    // A deadline timer that fires anyway (claimed before it was cleared) changes nothing.
    run.now = T0 + 31_000;
    let before = run.state.clone();
    let events = run.input(Input::Timer(TimerKind::Deadline)).unwrap();
    assert_eq!(events, []);
    assert_eq!(run.state, before);
    run.ok();
    assert_eq!(run.state.status, Status::Completed);
}

#[test]
fn a_deadline_timer_that_fires_early_is_set_again() {
    let mut run = Run::start(
        order_builder().deadline_ms(30_000).build().unwrap(),
        json!({}),
    );
    run.now = T0 + 10;
    let events = run
        .decide(Input::Timer(TimerKind::Deadline), &[TimerSlot::Deadline])
        .unwrap();
    assert_eq!(events, []);
    assert_eq!(
        run.last.timers,
        [TimerChange::Set {
            slot: TimerSlot::Deadline,
            fire_at: T0 + 30_000,
            kind: TimerKind::Deadline
        }]
    );
}

#[test]
fn a_malformed_reply_is_refused_naming_the_saga_and_the_reason() {
    let mut run = Run::start(order(), json!({}));
    let before = run.state.clone();
    let out_of_range = run
        .input(Input::Reply(Reply {
            step: 9,
            attempt: 1,
            phase: Phase::Action,
            outcome: Outcome::ok(json!({})),
        }))
        .unwrap_err();
    let Refusal::MalformedReply { saga_id, reason } = &out_of_range else {
        panic!("expected MalformedReply, got {out_of_range:?}");
    };
    assert_eq!(saga_id, &SagaId::from(SAGA));
    assert!(reason.contains("out of range"), "{reason}");
    assert!(out_of_range.to_string().contains(SAGA), "{out_of_range}");

    let attempt_zero = run
        .input(Input::Reply(Reply {
            step: 0,
            attempt: 0,
            phase: Phase::Action,
            outcome: Outcome::ok(json!({})),
        }))
        .unwrap_err();
    assert!(matches!(
        &attempt_zero,
        Refusal::MalformedReply { reason, .. } if reason.contains("start at 1")
    ));
    assert_eq!(run.state, before);
    assert_eq!(run.journal.len() as u64, before.journal_version);
}

#[test]
fn duplicate_and_late_replies_are_recorded_and_ignored() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    let ignored = |run: &mut Run, step, attempt, phase, outcome, why: &str| {
        let before = run.state.clone();
        let events = run.reply(step, attempt, phase, outcome);
        let [Event::ReplyIgnored { reason, .. }] = events.as_slice() else {
            panic!("expected one ReplyIgnored, got {events:?}");
        };
        assert!(reason.contains(why), "{reason:?} should say {why:?}");
        assert_eq!(run.state.journal_version, before.journal_version + 1);
        assert_eq!(
            ignoring_journal_position(&run.state),
            ignoring_journal_position(&before)
        );
        assert!(run.last.dispatch.is_empty() && run.last.resolved.is_empty());
        assert!(run.last.timers.is_empty());
    };
    // A duplicate of the reply that was already applied.
    ignored(
        &mut run,
        0,
        1,
        Phase::Action,
        Outcome::rejected("late no"),
        "already resolved",
    );
    // An attempt that was never sent.
    ignored(
        &mut run,
        1,
        7,
        Phase::Action,
        Outcome::ok(json!({})),
        "never dispatched",
    );
    ignored(
        &mut run,
        0,
        1,
        Phase::Compensation,
        Outcome::ok(json!({})),
        "never dispatched",
    );
    // A superseded attempt.
    run.answer(Outcome::failed("busy"));
    run.fire(TimerSlot::Step);
    assert_eq!(run.in_flight(), (1, 2, Phase::Action));
    ignored(
        &mut run,
        1,
        1,
        Phase::Action,
        Outcome::ok(json!({})),
        "superseded",
    );
    assert_eq!(run.state.steps[1].state, StepState::Pending);
    // Anything after the end.
    run.answer(Outcome::rejected("no"));
    run.ok();
    assert_eq!(run.state.status, Status::Compensated);
    ignored(
        &mut run,
        1,
        2,
        Phase::Action,
        Outcome::ok(json!({})),
        "already ended",
    );
}

#[test]
fn the_fold_of_the_stored_journal_is_the_decided_state() {
    let mut run = Run::start(
        order_builder().deadline_ms(60_000).build().unwrap(),
        json!({"a": 1}),
    );
    run.answer(Outcome::ok(json!({"b": 2})));
    run.fire(TimerSlot::Step);
    run.fire(TimerSlot::Step);
    run.answer(Outcome::park("go"));
    run.input(Input::Signal {
        name: "go".into(),
        payload: json!(3),
    })
    .unwrap();
    run.reply(1, 1, Phase::Action, Outcome::ok(json!({})));
    run.cancel().unwrap();
    run.answer(Outcome::ok(json!({"c": 4})));
    run.answer(Outcome::failed("x"));
    run.fire(TimerSlot::Step);
    run.ok();
    run.ok();
    assert_eq!(run.state.status, Status::Compensated);
    // The journal as the store keeps it: JSON, read back.
    let stored = serde_json::to_string(&run.journal).unwrap();
    let read: Vec<JournalEntry> = serde_json::from_str(&stored).unwrap();
    assert_eq!(read, run.journal);
    let folded = fold(SagaId::from(SAGA), &run.def, &read);
    assert_eq!(folded, run.state);
    assert_eq!(folded.context, json!({"a": 1, "b": 2, "go": 3, "c": 4}));
    assert_eq!(
        read.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=read.len() as u64).collect::<Vec<_>>()
    );
}

#[test]
fn effects_dispatch_each_attempt_resolve_the_previous_and_keep_timers_in_step() {
    let mut run = Run::start(
        order_builder().deadline_ms(60_000).build().unwrap(),
        json!({}),
    );
    let first = &run.last;
    assert_eq!(first.dispatch.len(), 1);
    let d = &first.dispatch[0];
    assert_eq!(d.key, "o-1:reserve:1:action");
    assert_eq!((d.step, d.step_name.as_str(), d.attempt), (0, "reserve", 1));
    assert_eq!(d.command.subject(), "stock.reserve");
    assert!(first.resolved.is_empty());
    assert_eq!(
        first.timers,
        [TimerChange::Set {
            slot: TimerSlot::Deadline,
            fire_at: T0 + 60_000,
            kind: TimerKind::Deadline
        }]
    );

    run.ok();
    assert_eq!(run.last.resolved, ["o-1:reserve:1:action"]);
    assert_eq!(run.last.dispatch[0].key, "o-1:hold:1:action");
    assert_eq!(
        run.last.timers,
        [TimerChange::Set {
            slot: TimerSlot::Step,
            fire_at: T0 + 5_000,
            kind: TimerKind::AttemptTimeout {
                step: 1,
                attempt: 1,
                phase: Phase::Action
            }
        }]
    );

    run.answer(Outcome::failed("busy"));
    assert_eq!(run.last.resolved, ["o-1:hold:1:action"]);
    assert!(run.last.dispatch.is_empty());
    assert_eq!(
        run.last.timers,
        [TimerChange::Set {
            slot: TimerSlot::Step,
            fire_at: T0 + 100,
            kind: TimerKind::Retry {
                step: 1,
                phase: Phase::Action
            }
        }]
    );

    // The consumed retry row is replaced by the new attempt's timeout.
    run.fire(TimerSlot::Step);
    assert_eq!(run.last.dispatch[0].key, "o-1:hold:2:action");
    assert!(run.last.resolved.is_empty());
    assert!(matches!(
        run.last.timers.as_slice(),
        [TimerChange::Set {
            slot: TimerSlot::Step,
            kind: TimerKind::AttemptTimeout { attempt: 2, .. },
            ..
        }]
    ));

    // "charge" has no timeout: the step slot is cleared.
    run.ok();
    assert_eq!(run.last.resolved, ["o-1:hold:2:action"]);
    assert_eq!(
        run.last.timers,
        [TimerChange::Clear {
            slot: TimerSlot::Step
        }]
    );

    // A consumed retry row whose attempt wants no timer is cleared, not left behind.
    run.answer(Outcome::failed("busy"));
    run.fire(TimerSlot::Step);
    assert_eq!(run.last.dispatch[0].key, "o-1:charge:2:action");
    assert_eq!(
        run.last.timers,
        [TimerChange::Clear {
            slot: TimerSlot::Step
        }]
    );

    // Passing the pivot clears the deadline; the end clears the rest.
    run.ok();
    assert!(run.last.timers.contains(&TimerChange::Clear {
        slot: TimerSlot::Deadline
    }));
    run.ok();
    assert_eq!(run.last.resolved, ["o-1:ship:1:action"]);
    assert_eq!(
        run.last.timers,
        [TimerChange::Clear {
            slot: TimerSlot::Step
        }]
    );
    assert!(run.timers.is_empty());
    let actions: Vec<_> = run.sent.iter().map(|d| d.command.subject()).collect();
    assert_eq!(
        actions,
        [
            "stock.reserve",
            "billing.hold",
            "billing.hold",
            "billing.charge",
            "billing.charge",
            "delivery.ship"
        ]
    );
}

#[test]
fn effects_of_a_compensation_name_the_compensation_command() {
    let mut run = Run::start(order(), json!({}));
    run.ok();
    run.answer(Outcome::rejected("no"));
    let d = &run.last.dispatch[0];
    assert_eq!(d.key, "o-1:reserve:1:compensation");
    assert_eq!(d.phase, Phase::Compensation);
    assert_eq!(d.command.subject(), "stock.release");
}

/// reserve → charge (pivot, 1 s timeout, 2 attempts), optionally with a saga deadline.
fn timed_pivot(deadline_ms: Option<u64>) -> Definition {
    let mut builder = Definition::builder("order", 1)
        .step(Step::compensatable(
            "reserve",
            "stock.reserve",
            "stock.release",
        ))
        .step(
            Step::pivot("charge", "billing.charge")
                .retry(policy(2, 100))
                .timeout_ms(1_000),
        );
    if let Some(ms) = deadline_ms {
        builder = builder.deadline_ms(ms);
    }
    builder.build().unwrap()
}

#[test]
fn cancel_while_the_pivot_may_have_happened_needs_an_operator_not_a_false_compensated() {
    let mut run = Run::start(timed_pivot(None), json!({}));
    run.ok();
    let events = run.fire(TimerSlot::Step);
    assert_eq!(names(&events), ["attempt_timed_out"]);
    assert_eq!(run.state.steps[1].state, StepState::Maybe);
    // Nothing in flight will tell whether the charge happened, and it cannot be undone.
    let events = run.cancel().unwrap();
    assert_eq!(names(&events), ["cancel_requested", "ended"]);
    assert_eq!(run.state.status, Status::Failed);
    assert_eq!(
        run.state.failure,
        Some(Failure::StuckAfterPivot { step: 1 })
    );
    let reason = run.state.reason.clone().unwrap();
    assert!(
        reason.contains("charge") && reason.contains("may have happened"),
        "{reason}"
    );
    assert!(run.sent.iter().all(|d| d.phase == Phase::Action));
    // The operator resumes: the pivot is attempted again, with a new key.
    let events = run.input(Input::Resume).unwrap();
    assert_eq!(names(&events), ["resumed", "attempt_dispatched"]);
    assert_eq!(run.in_flight(), (1, 2, Phase::Action));
    run.ok();
    assert_eq!(run.state.status, Status::Completed);
}

#[test]
fn cancel_while_an_unknown_pivot_is_retried_waits_for_that_attempt() {
    let mut run = Run::start(timed_pivot(None), json!({}));
    run.ok();
    run.fire(TimerSlot::Step);
    run.fire(TimerSlot::Step);
    assert_eq!(run.in_flight(), (1, 2, Phase::Action));
    assert_eq!(names(&run.cancel().unwrap()), ["cancel_requested"]);
    let events = run.ok();
    assert_eq!(
        names(&events),
        ["step_succeeded", "cancel_abandoned", "ended"]
    );
    assert_eq!(run.state.status, Status::Completed);
}

#[test]
fn the_deadline_while_the_pivot_may_have_happened_needs_an_operator() {
    let mut run = Run::start(timed_pivot(Some(1_050)), json!({}));
    run.ok();
    run.fire(TimerSlot::Step);
    assert!(run.state.retry.is_some());
    let events = run.fire(TimerSlot::Deadline);
    assert_eq!(names(&events), ["deadline_exceeded", "ended"]);
    assert_eq!(
        run.state.failure,
        Some(Failure::StuckAfterPivot { step: 1 })
    );
    assert!(run
        .state
        .reason
        .as_deref()
        .unwrap()
        .starts_with("saga deadline exceeded"));
}

#[test]
fn a_pivot_cannot_be_skipped_by_its_guard() {
    let guard = |otherwise| Guard {
        when: Condition::Exists {
            path: "card".into(),
        },
        otherwise,
    };
    let skipped = Definition::builder("order", 1)
        .step(Step::compensatable(
            "reserve",
            "stock.reserve",
            "stock.release",
        ))
        .step(Step::pivot("charge", "billing.charge").guard(guard(GuardOtherwise::Skip)))
        .step(Step::retriable("ship", "delivery.ship"))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        skipped.contains("\"charge\"") && skipped.contains("cannot be skipped"),
        "{skipped}"
    );
    assert!(Definition::builder("order", 1)
        .step(Step::pivot("charge", "billing.charge").guard(guard(GuardOtherwise::Fail)))
        .step(Step::retriable("ship", "delivery.ship"))
        .build()
        .is_ok());
}

/// A definition stored before spans were bounded (or built by hand) may name spans too long
/// for the clock: every time it gives saturates at the end of time — never a wrap into the
/// past, never an overflow panic in the decision loop.
#[test]
fn spans_too_long_for_the_clock_saturate_instead_of_wrapping() {
    let mut def = order();
    def.deadline_ms = Some(u64::MAX);
    def.steps[1].timeout_ms = Some(u64::MAX);
    def.steps[1].retry = RetryPolicy {
        max_attempts: 3,
        initial_delay_ms: u64::MAX,
        multiplier: 1e300,
        max_delay_ms: u64::MAX,
        jitter: 0.5,
    };
    let mut run = Run::start(def, json!({}));
    assert_eq!(run.state.deadline_at, Some(Millis::MAX), "the deadline");
    run.ok();
    assert_eq!(
        run.timers[&TimerSlot::Step].0,
        Millis::MAX,
        "the attempt's timeout"
    );
    let events = run.answer(Outcome::failed("billing is busy"));
    let [Event::AttemptFailed {
        retry_at: Some(at), ..
    }] = events.as_slice()
    else {
        panic!("expected a scheduled retry, got {events:?}");
    };
    assert_eq!(*at, Millis::MAX, "the retry");
}

/// Registration refuses spans over ten years and growth factors over 1000, naming the field.
#[test]
fn spans_past_ten_years_are_refused_at_registration() {
    let over = sagaflow_core::clock::MAX_SPAN_MS + 1;
    let cases: [(sagaflow_core::definition::DefinitionBuilder, &str); 4] = [
        (
            Definition::builder("d", 1).step(Step::compensatable("a", "s.a", "s.u").retry(
                RetryPolicy {
                    max_delay_ms: over,
                    ..policy(3, 100)
                },
            )),
            "max_delay_ms",
        ),
        (
            Definition::builder("d", 1).step(Step::compensatable("a", "s.a", "s.u").retry(
                RetryPolicy {
                    multiplier: 1e6,
                    ..policy(3, 100)
                },
            )),
            "multiplier",
        ),
        (
            Definition::builder("d", 1)
                .step(Step::compensatable("a", "s.a", "s.u").timeout_ms(over)),
            "timeout_ms",
        ),
        (
            Definition::builder("d", 1)
                .step(Step::compensatable("a", "s.a", "s.u"))
                .deadline_ms(over),
            "deadline_ms",
        ),
    ];
    for (builder, field) in cases {
        let e = builder.build().expect_err(field).to_string();
        assert!(e.contains(field) && e.contains("at most"), "{field}: {e}");
    }
}
