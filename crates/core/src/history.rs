//! A saga's history per attempt: when each action or compensation attempt started, how it
//! ended and why. A projection of the journal, for people (the API and the dashboard).

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::definition::Definition;
use crate::event::{Event, JournalEntry, Phase};

/// How one attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Sent; no answer yet.
    InFlight,
    /// Done.
    Succeeded,
    /// Failed (it may be retried as a new attempt).
    Failed,
    /// A business refusal.
    Rejected,
    /// No answer in time: it may have happened.
    TimedOut,
    /// The participant asked to wait for a signal.
    Parked,
}

/// One attempt of one step's action or compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Step index.
    pub step: usize,
    /// Step name.
    pub step_name: String,
    /// Action or compensation.
    pub kind: Phase,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// How it went.
    pub status: AttemptStatus,
    /// When it was sent.
    pub started_at: Millis,
    /// When its outcome was recorded.
    pub completed_at: Option<Millis>,
    /// The error, refusal or timeout, if any.
    pub error: Option<String>,
    /// How many attempts came before this one (0 for the first).
    pub retry_attempt: u32,
}

/// The attempts in a journal, in the order they were sent.
pub fn history(def: &Definition, journal: &[JournalEntry]) -> Vec<AttemptRecord> {
    let mut out: Vec<AttemptRecord> = Vec::new();
    for entry in journal {
        let at = entry.at;
        let (step, attempt, kind, status, error) = match &entry.event {
            Event::AttemptDispatched {
                step,
                attempt,
                phase,
                ..
            } => {
                out.push(AttemptRecord {
                    step: *step,
                    step_name: def
                        .steps
                        .get(*step)
                        .map(|s| s.name.clone())
                        .unwrap_or_else(|| format!("#{step}")),
                    kind: *phase,
                    attempt: *attempt,
                    status: AttemptStatus::InFlight,
                    started_at: at,
                    completed_at: None,
                    error: None,
                    retry_attempt: attempt.saturating_sub(1),
                });
                continue;
            }
            Event::StepSucceeded { step, attempt, .. } => {
                (step, attempt, Phase::Action, AttemptStatus::Succeeded, None)
            }
            Event::AttemptFailed {
                step,
                attempt,
                error,
                ..
            } => (
                step,
                attempt,
                Phase::Action,
                AttemptStatus::Failed,
                Some(error.clone()),
            ),
            Event::StepRejected {
                step,
                attempt,
                reason,
            } => (
                step,
                attempt,
                Phase::Action,
                AttemptStatus::Rejected,
                Some(reason.clone()),
            ),
            Event::Parked {
                step,
                attempt,
                signal,
                ..
            } => (
                step,
                attempt,
                Phase::Action,
                AttemptStatus::Parked,
                Some(match signal {
                    Some(s) => format!("waiting for signal {s}"),
                    None => "waiting for a signal".to_string(),
                }),
            ),
            Event::AttemptTimedOut {
                step,
                attempt,
                phase,
                ..
            } => (
                step,
                attempt,
                *phase,
                AttemptStatus::TimedOut,
                Some("no reply in time; it may have happened".to_string()),
            ),
            Event::CompensationSucceeded { step, attempt } => (
                step,
                attempt,
                Phase::Compensation,
                AttemptStatus::Succeeded,
                None,
            ),
            Event::CompensationFailed {
                step,
                attempt,
                error,
                ..
            } => (
                step,
                attempt,
                Phase::Compensation,
                AttemptStatus::Failed,
                Some(error.clone()),
            ),
            _ => continue,
        };
        let open = out.iter_mut().rev().find(|r| {
            r.step == *step && r.attempt == *attempt && r.kind == kind && r.completed_at.is_none()
        });
        if let Some(r) = open {
            r.status = status;
            r.completed_at = Some(at);
            r.error = error;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{decide_with_state, start, DecideContext};
    use crate::definition::Step;
    use crate::input::{Input, Outcome, Reply};
    use crate::retry::RetryPolicy;
    use crate::state::SagaId;

    #[test]
    fn each_attempt_is_one_record_with_its_outcome() {
        let def = Definition::builder("d", 1)
            .step(Step::compensatable("a", "x.a", "x.undo_a").retry(RetryPolicy::attempts(2, 10)))
            .step(Step::compensatable("b", "x.b", "x.undo_b"))
            .build()
            .unwrap();
        let mut now = 1_000;
        let ctx = |now| DecideContext { now, random: 0.5 };
        let (events, mut state) = start(&def, SagaId("s".into()), serde_json::json!({}), ctx(now));
        let mut journal: Vec<JournalEntry> = Vec::new();
        let push = |events: Vec<Event>, at, journal: &mut Vec<JournalEntry>| {
            for event in events {
                journal.push(JournalEntry {
                    seq: journal.len() as u64 + 1,
                    at,
                    event,
                });
            }
        };
        push(events, now, &mut journal);
        let reply = |step, attempt, phase, outcome| {
            Input::Reply(Reply {
                step,
                attempt,
                phase,
                outcome,
            })
        };
        let inputs = [
            reply(0, 1, Phase::Action, Outcome::failed("busy")),
            Input::Timer(crate::input::TimerKind::Retry {
                step: 0,
                phase: Phase::Action,
            }),
            reply(0, 2, Phase::Action, Outcome::ok(serde_json::json!({}))),
            reply(1, 1, Phase::Action, Outcome::rejected("no")),
            reply(
                0,
                1,
                Phase::Compensation,
                Outcome::ok(serde_json::Value::Null),
            ),
        ];
        for input in inputs {
            now += 100;
            let (events, next) = decide_with_state(&state, &def, &input, ctx(now)).unwrap();
            state = next;
            push(events, now, &mut journal);
        }
        let h = history(&def, &journal);
        let summary: Vec<_> = h
            .iter()
            .map(|r| {
                (
                    r.step_name.as_str(),
                    r.kind,
                    r.attempt,
                    r.status,
                    r.retry_attempt,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a", Phase::Action, 1, AttemptStatus::Failed, 0),
                ("a", Phase::Action, 2, AttemptStatus::Succeeded, 1),
                ("b", Phase::Action, 1, AttemptStatus::Rejected, 0),
                ("a", Phase::Compensation, 1, AttemptStatus::Succeeded, 0),
            ]
        );
        assert_eq!(h[0].error.as_deref(), Some("busy"));
        assert_eq!((h[0].started_at, h[0].completed_at), (1_000, Some(1_100)));
        assert_eq!(h[2].error.as_deref(), Some("no"));
        assert_eq!(state.status, crate::state::Status::Compensated);
    }
}
