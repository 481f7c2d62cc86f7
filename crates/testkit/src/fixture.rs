//! Realistic decisions built with the real decider and effects planner, so store tests write
//! the rows the engine would write, not hand-made ones that drift from the model.

use serde_json::{json, Value};

use sagaflow_core::{
    command_topic, decide_with_state, effects, start, DecideContext, Decision, Definition,
    Envelope, Event, Input, JournalEntry, MessageKind, Millis, OutboxRow, Outcome, Phase, Reply,
    SagaId, SagaState, Step, TimerKind, TimerSlot,
};

/// A fixed "now" for tests: far from zero so that sign and offset bugs show.
pub const T0: Millis = 1_700_000_000_000;

/// The engine that commits fixture decisions and holds their outbox leases.
pub const OWNER: &str = "engine-a";

/// How long the committing engine keeps its outbox rows to itself.
pub const OUTBOX_LEASE_MS: i64 = 30_000;

/// Attempt timeout of the order saga's first two steps.
pub const STEP_TIMEOUT_MS: u64 = 5_000;

/// Deadline of the order saga.
pub const DEADLINE_MS: u64 = 60_000;

/// The order saga: `reserve` (compensatable, 5 s timeout) → `charge` (pivot, 5 s timeout)
/// → `ship` (retriable, no timeout); a 60 s deadline; correlated by `user_id`.
pub fn order_definition(version: u32) -> Definition {
    let built = Definition::builder("order", version)
        .step(
            Step::compensatable("reserve", "stock.reserve", "stock.release")
                .timeout_ms(STEP_TIMEOUT_MS),
        )
        .step(Step::pivot("charge", "billing.charge").timeout_ms(STEP_TIMEOUT_MS))
        .step(Step::retriable("ship", "delivery.ship"))
        .deadline_ms(DEADLINE_MS)
        .correlation_key("user_id")
        .build();
    match built {
        Ok(def) => def,
        Err(e) => panic!("the fixture order definition must be valid: {e}"),
    }
}

/// A one-step saga (`pong`, a pivot, no timers): one successful reply completes it.
pub fn ping_definition() -> Definition {
    match Definition::builder("ping", 1)
        .step(Step::pivot("pong", "echo.pong"))
        .build()
    {
        Ok(def) => def,
        Err(e) => panic!("the fixture ping definition must be valid: {e}"),
    }
}

/// The input of an order saga for this user.
pub fn order_input(user: &str) -> Value {
    json!({ "user_id": user, "sku": "book-1", "amount": 42 })
}

/// The decision that starts saga `id` at `now`.
pub fn start_decision(
    def: &Definition,
    id: &str,
    input: Value,
    now: Millis,
    idempotency_key: Option<&str>,
) -> Decision {
    let ctx = DecideContext { now, random: 0.5 };
    let (events, state) = start(def, SagaId::from(id), input, ctx);
    let mut decision = build(def, None, events, state, now, None);
    decision.idempotency_key = idempotency_key.map(str::to_string);
    decision
}

/// The decision that follows `input` on the saga whose snapshot is `state`.
///
/// Panics when the decider refuses: fixtures only feed inputs that apply.
pub fn next_decision(def: &Definition, state: &SagaState, input: &Input, now: Millis) -> Decision {
    decide_next(def, state, input, now, None)
}

/// The decision that handles the timer in `slot` firing with `kind`.
pub fn fired_decision(
    def: &Definition,
    state: &SagaState,
    slot: TimerSlot,
    kind: TimerKind,
    now: Millis,
) -> Decision {
    decide_next(def, state, &Input::Timer(kind), now, Some(slot))
}

/// A reply to an action attempt.
pub fn action_reply(step: usize, attempt: u32, outcome: Outcome) -> Input {
    Input::Reply(Reply {
        step,
        attempt,
        phase: Phase::Action,
        outcome,
    })
}

/// A successful reply to an action attempt, with an empty output.
pub fn succeeded(step: usize, attempt: u32) -> Input {
    action_reply(step, attempt, Outcome::ok(json!({})))
}

fn decide_next(
    def: &Definition,
    state: &SagaState,
    input: &Input,
    now: Millis,
    fired: Option<TimerSlot>,
) -> Decision {
    let ctx = DecideContext { now, random: 0.5 };
    match decide_with_state(state, def, input, ctx) {
        Ok((events, after)) => build(def, Some(state), events, after, now, fired),
        Err(refusal) => panic!("fixture input {input:?} was refused: {refusal}"),
    }
}

fn build(
    def: &Definition,
    before: Option<&SagaState>,
    events: Vec<Event>,
    after: SagaState,
    now: Millis,
    fired: Option<TimerSlot>,
) -> Decision {
    let planned = effects(before, &after, &events, def, fired.as_slice());
    let expected_version = before.map_or(0, |b| b.journal_version);
    let events = events
        .into_iter()
        .zip(expected_version + 1..)
        .map(|(event, seq)| JournalEntry {
            seq,
            at: now,
            event,
        })
        .collect();
    let outbox = planned
        .dispatch
        .iter()
        .map(|d| OutboxRow {
            key: d.key.clone(),
            saga_id: after.saga_id.clone(),
            topic: command_topic(&d.command.service),
            body: Envelope {
                protocol: sagaflow_core::PROTOCOL_VERSION,
                message_id: d.key.clone(),
                kind: MessageKind::Command,
                subject: d.command.subject(),
                saga_id: Some(after.saga_id.0.clone()),
                correlation_id: after.correlation_key.clone(),
                causation_id: None,
                step: Some(d.step_name.clone()),
                attempt: Some(d.attempt),
                traceparent: None,
                request_id: None,
                payload: after.context.clone(),
            }
            .to_bytes(),
            lease_until: now + OUTBOX_LEASE_MS,
            lease_owner: OWNER.to_string(),
        })
        .collect();
    Decision {
        saga_id: after.saga_id.clone(),
        expected_version,
        events,
        state: after,
        outbox,
        resolved: planned.resolved,
        timers: planned.timers,
        idempotency_key: None,
    }
}
