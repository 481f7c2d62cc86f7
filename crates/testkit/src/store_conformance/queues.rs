//! Outbox and timer checks: rows appear and disappear with decisions, and claims lease them.

use std::collections::HashSet;
use std::sync::Arc;

use sagaflow_core::{Phase, SagaId, Store, TimerChange, TimerKind, TimerRow, TimerSlot};

use super::{commit_all, outbox_at, timers_at, FAR};
use crate::fixture::{
    fired_decision, next_decision, order_definition, order_input, start_decision, succeeded,
    OUTBOX_LEASE_MS, STEP_TIMEOUT_MS, T0,
};

/// A decision's `resolved` keys delete their outbox rows; its new commands are added.
pub async fn resolved_deletes_outbox_rows(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let a0 = start_decision(&def, "a", order_input("u1"), T0, None);
    let b0 = start_decision(&def, "b", order_input("u2"), T0, None);
    commit_all(&*store, vec![a0.clone(), b0.clone()], "two starts").await;
    let a1 = next_decision(&def, &a0.state, &succeeded(0, 1), T0 + 10);
    assert_eq!(
        a1.resolved,
        vec![a0.outbox[0].key.clone()],
        "fixture: the reply resolves the first command"
    );
    commit_all(&*store, vec![a1.clone()], "a's reply").await;
    let keys: Vec<String> = outbox_at(&*store, FAR)
        .await
        .into_iter()
        .map(|r| r.key)
        .collect();
    let mut want = vec![a1.outbox[0].key.clone(), b0.outbox[0].key.clone()];
    want.sort();
    assert_eq!(
        keys, want,
        "a resolved outbox row must be deleted; other rows stay"
    );
}

/// `claim_outbox` returns only rows whose lease expired, and leases them to the claimer.
pub async fn claim_outbox_respects_leases(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let a0 = start_decision(&def, "a", order_input("u1"), T0, None);
    commit_all(&*store, vec![a0.clone()], "start").await;
    let lease_end = T0 + OUTBOX_LEASE_MS;
    let claim = |now: i64, owner: &'static str, lease: i64| {
        let store = store.clone();
        async move {
            store
                .claim_outbox(now, owner, lease, 10)
                .await
                .unwrap_or_else(|e| panic!("claim_outbox at {now} failed: {e}"))
        }
    };
    assert!(
        claim(T0 + 1, "relay-b", 5_000).await.is_empty(),
        "a row leased by the committing engine must not be claimed before its lease ends"
    );
    let rows = claim(lease_end + 1, "relay-b", 5_000).await;
    assert_eq!(rows.len(), 1, "the row is claimable once its lease expired");
    let want = &a0.outbox[0];
    assert_eq!(
        (
            &rows[0].key,
            &rows[0].saga_id,
            &rows[0].topic,
            &rows[0].body
        ),
        (&want.key, &want.saga_id, &want.topic, &want.body)
    );
    assert_eq!(
        (rows[0].lease_owner.as_str(), rows[0].lease_until),
        ("relay-b", lease_end + 1 + 5_000),
        "a claimed row is leased to the claimer until now + lease_ms"
    );
    assert!(
        claim(lease_end + 2, "relay-c", 5_000).await.is_empty(),
        "a second claim before the new lease ends gets nothing"
    );
    let again = claim(lease_end + 5_002, "relay-c", 5_000).await;
    assert_eq!(
        again.iter().map(|r| &r.key).collect::<Vec<_>>(),
        vec![&want.key],
        "after the claimer's lease expired the row is claimable again"
    );
    assert_eq!(again[0].lease_owner, "relay-c");
}

/// `claim_outbox` hands out at most `limit` rows and never the same row twice per lease.
pub async fn claim_outbox_honours_limit(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let starts: Vec<_> = (0..5)
        .map(|i| start_decision(&def, &format!("s{i}"), order_input("u"), T0, None))
        .collect();
    commit_all(&*store, starts.clone(), "five starts").await;
    let now = T0 + OUTBOX_LEASE_MS + 1;
    let mut seen = HashSet::new();
    for want in [2, 2, 1, 0] {
        let rows = store
            .claim_outbox(now, "relay", 60_000, 2)
            .await
            .unwrap_or_else(|e| panic!("claim_outbox failed: {e}"));
        assert_eq!(
            rows.len(),
            want,
            "claims of 2 out of 5 rows give 2, 2, 1, then 0"
        );
        for r in rows {
            assert!(seen.insert(r.key.clone()), "row {} claimed twice", r.key);
        }
    }
    assert_eq!(seen.len(), 5);
}

/// Timers are one per slot: Set upserts (replacing the old one), Clear removes; other sagas'
/// timers are untouched.
pub async fn timers_set_replace_and_clear(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let a0 = start_decision(&def, "a", order_input("u1"), T0, None);
    let b0 = start_decision(&def, "b", order_input("u2"), T0, None);
    commit_all(&*store, vec![a0.clone(), b0.clone()], "two starts").await;
    let slots = |rows: &[TimerRow], id: &SagaId| -> Vec<(TimerSlot, i64, TimerKind)> {
        rows.iter()
            .filter(|t| &t.saga_id == id)
            .map(|t| (t.slot, t.fire_at, t.kind.clone()))
            .collect()
    };
    let rows = timers_at(&*store, FAR).await;
    let b_timers = slots(&rows, &b0.saga_id);
    assert_eq!(b_timers.len(), 2, "b has a step timer and a deadline");

    // reserve succeeds: the step slot now times out `charge` (replaced, not added).
    let a1 = next_decision(&def, &a0.state, &succeeded(0, 1), T0 + 100);
    commit_all(&*store, vec![a1.clone()], "a's reply").await;
    let rows = timers_at(&*store, FAR + 10).await;
    let mut a_timers = slots(&rows, &a0.saga_id);
    a_timers.sort_by_key(|t| t.0.as_str());
    let want_step = (
        TimerSlot::Step,
        T0 + 100 + STEP_TIMEOUT_MS as i64,
        TimerKind::AttemptTimeout {
            step: 1,
            attempt: 1,
            phase: Phase::Action,
        },
    );
    let deadline = a_timers
        .iter()
        .find(|t| t.0 == TimerSlot::Deadline)
        .cloned();
    assert_eq!(
        a_timers
            .iter()
            .filter(|t| t.0 == TimerSlot::Step)
            .collect::<Vec<_>>(),
        vec![&want_step],
        "Set on an occupied slot replaces its timer"
    );
    assert!(deadline.is_some(), "the deadline slot is untouched");

    // charge (the pivot) succeeds: both slots are cleared.
    let a2 = next_decision(&def, &a1.state, &succeeded(1, 1), T0 + 200);
    assert!(
        a2.timers
            .iter()
            .all(|t| matches!(t, TimerChange::Clear { .. }))
            && a2.timers.len() == 2,
        "fixture: after the pivot both timers are cleared"
    );
    commit_all(&*store, vec![a2], "a's pivot").await;
    let rows = timers_at(&*store, FAR + 20).await;
    assert!(
        slots(&rows, &a0.saga_id).is_empty(),
        "Clear removes the slot's timer"
    );
    assert_eq!(
        slots(&rows, &b0.saga_id),
        b_timers,
        "another saga's timers are untouched"
    );
}

/// `claim_timers` returns due timers whose lease is free or expired, leasing them; a timer
/// re-set by the decision that handles it is claimable at once (Set clears the lease).
pub async fn claim_timers_takes_due_unleased(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let a0 = start_decision(&def, "a", order_input("u1"), T0, None);
    commit_all(&*store, vec![a0.clone()], "start").await;
    let timeout_at = T0 + STEP_TIMEOUT_MS as i64;
    let claim = |now: i64, owner: &'static str| {
        let store = store.clone();
        async move {
            store
                .claim_timers(now, owner, 1_000, 10)
                .await
                .unwrap_or_else(|e| panic!("claim_timers at {now} failed: {e}"))
        }
    };
    assert!(
        claim(timeout_at - 1, "t1").await.is_empty(),
        "a timer is not claimed before it is due"
    );
    let kind = TimerKind::AttemptTimeout {
        step: 0,
        attempt: 1,
        phase: Phase::Action,
    };
    let due = claim(timeout_at, "t1").await;
    assert_eq!(
        due,
        vec![TimerRow {
            saga_id: a0.saga_id.clone(),
            slot: TimerSlot::Step,
            fire_at: timeout_at,
            kind: kind.clone(),
        }],
        "only the due timer (not the later deadline) is claimed, exactly as set"
    );
    assert!(
        claim(timeout_at + 1, "t2").await.is_empty(),
        "a leased timer is not claimed again before its lease ends"
    );
    let after_lease = timeout_at + 1_001;
    let again = claim(after_lease, "t2").await;
    assert_eq!(
        again.len(),
        1,
        "a timer whose lease expired is claimable again (its claimer died)"
    );

    // t2 handles it: the attempt timed out, a retry is due shortly (Set on the leased slot).
    let a1 = fired_decision(&def, &a0.state, TimerSlot::Step, kind, after_lease);
    let retry_at = a1
        .timers
        .iter()
        .find_map(|t| match t {
            TimerChange::Set {
                slot: TimerSlot::Step,
                fire_at,
                kind: TimerKind::Retry { .. },
            } => Some(*fire_at),
            _ => None,
        })
        .unwrap_or_else(|| panic!("fixture: a timed-out attempt sets a retry timer"));
    assert!(
        retry_at < after_lease + 1_000,
        "fixture: retry before t2's lease ends"
    );
    commit_all(&*store, vec![a1], "handling the timeout").await;
    let retry = claim(retry_at, "t3").await;
    assert_eq!(
        retry
            .iter()
            .map(|t| (t.slot, t.fire_at, t.kind.clone()))
            .collect::<Vec<_>>(),
        vec![(
            TimerSlot::Step,
            retry_at,
            TimerKind::Retry {
                step: 0,
                phase: Phase::Action
            }
        )],
        "a re-set timer carries no lease: it is claimable as soon as it is due"
    );
}

/// `next_timer_at` is when the earliest timer can be claimed: its fire time, or for a leased
/// timer the end of its lease; `None` when there are no timers.
pub async fn next_timer_at_is_earliest_claimable(store: Arc<dyn Store>) {
    let next = || {
        let store = store.clone();
        async move {
            store
                .next_timer_at()
                .await
                .unwrap_or_else(|e| panic!("next_timer_at failed: {e}"))
        }
    };
    assert_eq!(next().await, None, "an empty store has no next timer");
    let def = order_definition(1);
    let a0 = start_decision(&def, "a", order_input("u1"), T0, None);
    let b0 = start_decision(&def, "b", order_input("u2"), T0 + 1_000, None);
    commit_all(&*store, vec![b0.clone(), a0.clone()], "two starts").await;
    let a_timeout = T0 + STEP_TIMEOUT_MS as i64;
    assert_eq!(
        next().await,
        Some(a_timeout),
        "the earliest timer's fire time"
    );

    let claimed = store
        .claim_timers(a_timeout, "t1", 3_000, 10)
        .await
        .unwrap_or_else(|e| panic!("claim_timers failed: {e}"));
    assert_eq!(claimed.len(), 1, "only a's step timer is due");
    // a's timer is leased until a_timeout + 3000; b's step timer fires at a_timeout + 1000.
    assert_eq!(
        next().await,
        Some(a_timeout + 1_000),
        "a leased timer is not the next one to fire while another is due before its lease ends"
    );
    let claimed = store
        .claim_timers(a_timeout + 1_000, "t1", 60_000, 10)
        .await
        .unwrap_or_else(|e| panic!("claim_timers failed: {e}"));
    assert_eq!(claimed.len(), 1, "b's step timer is due");
    assert_eq!(
        next().await,
        Some(a_timeout + 3_000),
        "when every due timer is leased, the next is the earliest lease end"
    );

    for d in [&a0, &b0] {
        let clear = sagaflow_core::Decision {
            events: Vec::new(),
            outbox: Vec::new(),
            resolved: Vec::new(),
            timers: vec![
                TimerChange::Clear {
                    slot: TimerSlot::Step,
                },
                TimerChange::Clear {
                    slot: TimerSlot::Deadline,
                },
            ],
            expected_version: d.state.journal_version,
            idempotency_key: None,
            ..d.clone()
        };
        commit_all(
            &*store,
            vec![clear],
            "clearing timers with an empty decision",
        )
        .await;
    }
    assert_eq!(next().await, None, "no timers left");
}
