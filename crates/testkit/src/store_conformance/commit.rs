//! Commit checks: one decision is one atomic write, guarded by the journal version.

use std::collections::HashSet;
use std::sync::Arc;

use sagaflow_core::{
    CommitOutcome, Decision, Outcome, SagaId, Store, TimerChange, TimerKind, TimerSlot,
};

use super::{commit, commit_all, journal, load_one, outbox_at, timers_at, FAR};
use crate::fixture::{
    action_reply, next_decision, order_definition, order_input, start_decision, succeeded,
    DEADLINE_MS, STEP_TIMEOUT_MS, T0,
};

/// A new saga's journal, snapshot, outbox rows and timers are written and read back exactly.
pub async fn commit_writes_a_new_saga(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let d = start_decision(&def, "saga-1", order_input("u1"), T0, Some("start-1"));
    assert_eq!(
        d.outbox.len(),
        1,
        "fixture: the start dispatches one command"
    );
    assert_eq!(d.timers.len(), 2, "fixture: the start sets two timers");
    commit_all(&*store, vec![d.clone()], "committing a new saga").await;

    let id = d.saga_id.clone();
    assert_eq!(
        load_one(&*store, &id).await.as_ref(),
        Some(&d.state),
        "load must return the committed snapshot exactly"
    );
    assert_eq!(
        journal(&*store, &id).await,
        d.events,
        "journal must return the committed events, in order, exactly"
    );
    let unknown = store
        .load(&[SagaId::from("nope"), id.clone(), SagaId::from("nope-2")])
        .await
        .unwrap_or_else(|e| panic!("load failed: {e}"));
    assert_eq!(
        unknown,
        vec![d.state.clone()],
        "load returns only the sagas that exist"
    );
    assert!(
        journal(&*store, &SagaId::from("nope")).await.is_empty(),
        "an unknown saga has an empty journal"
    );

    let rows = outbox_at(&*store, FAR).await;
    assert_eq!(rows.len(), 1, "one outbox row expected, got {rows:?}");
    let (row, want) = (&rows[0], &d.outbox[0]);
    assert_eq!(
        (&row.key, &row.saga_id, &row.topic, &row.body),
        (&want.key, &want.saga_id, &want.topic, &want.body),
        "the outbox row must come back as committed"
    );

    let timers = timers_at(&*store, FAR).await;
    let want: Vec<(TimerSlot, i64, TimerKind)> = d
        .timers
        .iter()
        .filter_map(|t| match t {
            TimerChange::Set {
                slot,
                fire_at,
                kind,
            } => Some((*slot, *fire_at, kind.clone())),
            TimerChange::Clear { .. } => None,
        })
        .collect();
    let got: Vec<(TimerSlot, i64, TimerKind)> = timers
        .iter()
        .map(|t| {
            assert_eq!(t.saga_id, id, "timer of the wrong saga");
            (t.slot, t.fire_at, t.kind.clone())
        })
        .collect();
    let sorted = |mut v: Vec<(TimerSlot, i64, TimerKind)>| {
        v.sort_by_key(|t| t.1);
        v
    };
    assert_eq!(
        sorted(got),
        sorted(want),
        "the timers must come back as committed (step timeout at +{STEP_TIMEOUT_MS}, deadline at +{DEADLINE_MS})"
    );
}

/// A decision made on a stale version is refused with the stored version and writes nothing,
/// while the other decisions in the same commit are written.
pub async fn stale_version_conflicts_alone(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let a0 = start_decision(&def, "a", order_input("u1"), T0, None);
    let b0 = start_decision(&def, "b", order_input("u2"), T0, None);
    commit_all(&*store, vec![a0.clone(), b0.clone()], "starting a and b").await;

    let a1 = next_decision(&def, &a0.state, &succeeded(0, 1), T0 + 10);
    let a2 = next_decision(&def, &a1.state, &succeeded(1, 1), T0 + 15);
    commit_all(&*store, vec![a1.clone()], "a's first reply").await;
    commit_all(&*store, vec![a2.clone()], "a's second reply").await;

    // Decided on a1's state, as a second engine would that had not seen a2: the pivot is
    // rejected, so it compensates `reserve` and sets that attempt's timeout.
    let stale = next_decision(
        &def,
        &a1.state,
        &action_reply(1, 1, Outcome::rejected("card declined")),
        T0 + 20,
    );
    assert!(
        !stale.outbox.is_empty()
            && stale.timers.iter().any(|t| matches!(
                t,
                TimerChange::Set {
                    slot: TimerSlot::Step,
                    ..
                }
            )),
        "fixture: the stale decision dispatches a compensation and sets its timeout"
    );
    let b1 = next_decision(&def, &b0.state, &succeeded(0, 1), T0 + 20);
    let c0 = start_decision(&def, "c", order_input("u3"), T0 + 20, None);
    let outcomes = commit(&*store, vec![b1.clone(), stale.clone(), c0.clone()]).await;
    assert_eq!(
        outcomes,
        vec![
            CommitOutcome::Applied,
            CommitOutcome::Conflict {
                actual_version: a2.state.journal_version
            },
            CommitOutcome::Applied,
        ],
        "only the stale decision conflicts, reporting the stored journal length"
    );

    assert_eq!(
        load_one(&*store, &a0.saga_id).await.as_ref(),
        Some(&a2.state),
        "a conflicting decision must not touch the snapshot"
    );
    let mut want_journal = a0.events.clone();
    want_journal.extend(a1.events.iter().cloned());
    want_journal.extend(a2.events.iter().cloned());
    assert_eq!(
        journal(&*store, &a0.saga_id).await,
        want_journal,
        "a conflicting decision must not append to the journal"
    );
    let keys: HashSet<String> = outbox_at(&*store, FAR)
        .await
        .into_iter()
        .map(|r| r.key)
        .collect();
    for row in &stale.outbox {
        assert!(
            !keys.contains(&row.key),
            "a conflicting decision must not write its outbox row {}",
            row.key
        );
    }
    for row in a2.outbox.iter().chain(&b1.outbox).chain(&c0.outbox) {
        assert!(
            keys.contains(&row.key),
            "applied decisions' outbox row {} is missing",
            row.key
        );
    }
    let a_timers: Vec<_> = timers_at(&*store, FAR)
        .await
        .into_iter()
        .filter(|t| t.saga_id == a0.saga_id)
        .collect();
    assert!(
        a_timers.is_empty(),
        "a conflicting decision must not set timers (a's were all cleared by its pivot), got {a_timers:?}"
    );
    assert_eq!(
        load_one(&*store, &b0.saga_id).await.as_ref(),
        Some(&b1.state),
        "b's decision in the same commit must be applied"
    );
    assert_eq!(
        load_one(&*store, &c0.saga_id).await.as_ref(),
        Some(&c0.state),
        "c's start in the same commit must be applied"
    );
}

/// Decisions in one commit apply in order: a decision on the state its predecessor in the
/// same batch produced is applied; a rival to that predecessor conflicts.
pub async fn decisions_in_one_commit_apply_in_order(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let a0 = start_decision(&def, "a", order_input("u1"), T0, None);
    let a1 = next_decision(&def, &a0.state, &succeeded(0, 1), T0 + 1);
    let a2 = next_decision(&def, &a1.state, &succeeded(1, 1), T0 + 2);
    let rival = next_decision(&def, &a1.state, &succeeded(1, 1), T0 + 3);
    let outcomes = commit(&*store, vec![a0, a1, a2.clone(), rival]).await;
    assert_eq!(
        outcomes,
        vec![
            CommitOutcome::Applied,
            CommitOutcome::Applied,
            CommitOutcome::Applied,
            CommitOutcome::Conflict {
                actual_version: a2.state.journal_version
            },
        ],
        "a chain of decisions on one saga in one commit applies in order"
    );
    assert_eq!(load_one(&*store, &a2.saga_id).await, Some(a2.state.clone()));
    assert_eq!(
        journal(&*store, &a2.saga_id).await.len() as u64,
        a2.state.journal_version
    );
}

/// Starting a saga whose id is taken is refused and writes nothing.
pub async fn duplicate_saga_id_is_refused(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let first = start_decision(&def, "dup", order_input("u1"), T0, None);
    commit_all(&*store, vec![first.clone()], "first start").await;
    let again = start_decision(&def, "dup", order_input("u2"), T0 + 5, None);
    let outcomes = commit(&*store, vec![again]).await;
    let refused = match &outcomes[0] {
        CommitOutcome::DuplicateStart { existing } => existing == &first.saga_id,
        CommitOutcome::Conflict { actual_version } => {
            *actual_version == first.state.journal_version
        }
        CommitOutcome::Applied => false,
    };
    assert!(
        refused,
        "a new saga with a taken id must be refused (DuplicateStart or Conflict), got {outcomes:?}"
    );
    assert_eq!(
        load_one(&*store, &first.saga_id).await,
        Some(first.state.clone()),
        "the refused start must not touch the snapshot"
    );
    assert_eq!(
        journal(&*store, &first.saga_id).await,
        first.events,
        "the refused start must not touch the journal"
    );
}

/// A start idempotency key belongs to one saga; a second start with it is a DuplicateStart.
pub async fn start_idempotency_key_is_unique(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let x = start_decision(&def, "x", order_input("u1"), T0, Some("order-42"));
    commit_all(&*store, vec![x.clone()], "start x").await;
    let y = start_decision(&def, "y", order_input("u1"), T0 + 1, Some("order-42"));
    let outcomes = commit(&*store, vec![y.clone()]).await;
    assert_eq!(
        outcomes,
        vec![CommitOutcome::DuplicateStart {
            existing: x.saga_id.clone()
        }],
        "a second start with a taken idempotency key names the saga that has it"
    );
    assert_eq!(
        load_one(&*store, &y.saga_id).await,
        None,
        "y must not exist"
    );
    assert!(
        journal(&*store, &y.saga_id).await.is_empty(),
        "y has no journal"
    );
    assert!(
        outbox_at(&*store, FAR)
            .await
            .iter()
            .all(|r| r.saga_id != y.saga_id),
        "y must have no outbox rows"
    );
    assert!(
        timers_at(&*store, FAR)
            .await
            .iter()
            .all(|t| t.saga_id != y.saga_id),
        "y must have no timers"
    );
    let found = |key: &'static str| {
        let store = store.clone();
        async move {
            store
                .saga_by_idempotency_key(key)
                .await
                .unwrap_or_else(|e| panic!("saga_by_idempotency_key({key}) failed: {e}"))
        }
    };
    assert_eq!(found("order-42").await, Some(x.saga_id.clone()));
    assert_eq!(found("order-43").await, None);

    let p = start_decision(&def, "p", order_input("u1"), T0 + 2, Some("k2"));
    let q = start_decision(&def, "q", order_input("u1"), T0 + 2, Some("k2"));
    let outcomes = commit(&*store, vec![p.clone(), q.clone()]).await;
    assert_eq!(
        outcomes,
        vec![
            CommitOutcome::Applied,
            CommitOutcome::DuplicateStart {
                existing: p.saga_id.clone()
            }
        ],
        "two starts with one key in one commit: the first wins"
    );
    assert_eq!(found("k2").await, Some(p.saga_id.clone()));
    assert_eq!(
        load_one(&*store, &q.saga_id).await,
        None,
        "q must not exist"
    );
}

/// 200 starts, then 200 replies, each in one commit (group commit), all written exactly.
pub async fn many_decisions_in_one_commit(store: Arc<dyn Store>) {
    const N: usize = 200;
    let def = order_definition(1);
    let starts: Vec<Decision> = (0..N)
        .map(|i| {
            let key = format!("bulk-key-{i}");
            start_decision(
                &def,
                &format!("bulk-{i:03}"),
                order_input(&format!("u{i}")),
                T0 + i as i64,
                Some(&key),
            )
        })
        .collect();
    commit_all(&*store, starts.clone(), "200 starts in one commit").await;
    let replies: Vec<Decision> = starts
        .iter()
        .map(|d| next_decision(&def, &d.state, &succeeded(0, 1), T0 + 1_000))
        .collect();
    commit_all(&*store, replies.clone(), "200 replies in one commit").await;

    let ids: Vec<SagaId> = starts.iter().map(|d| d.saga_id.clone()).collect();
    let mut loaded = store
        .load(&ids)
        .await
        .unwrap_or_else(|e| panic!("load of 200 ids failed: {e}"));
    loaded.sort_by(|a, b| a.saga_id.cmp(&b.saga_id));
    let want: Vec<_> = replies.iter().map(|d| d.state.clone()).collect();
    assert!(
        loaded == want,
        "load of 200 ids must return the 200 snapshots after the replies (got {} states)",
        loaded.len()
    );
    for i in [0, N / 2, N - 1] {
        let mut want = starts[i].events.clone();
        want.extend(replies[i].events.iter().cloned());
        assert_eq!(
            journal(&*store, &ids[i]).await,
            want,
            "journal of {}",
            ids[i]
        );
    }
    let rows = outbox_at(&*store, FAR).await;
    let want_keys: HashSet<&str> = replies
        .iter()
        .flat_map(|d| d.outbox.iter().map(|r| r.key.as_str()))
        .collect();
    let got_keys: HashSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        got_keys, want_keys,
        "the outbox holds exactly the replies' commands (the starts' ones were resolved)"
    );
}

/// Many tasks committing at once (the group-commit path) all land.
pub async fn concurrent_commits_all_land(store: Arc<dyn Store>) {
    const TASKS: usize = 20;
    const EACH: usize = 25;
    let def = order_definition(1);
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let batch: Vec<Decision> = (0..EACH)
            .map(|i| {
                start_decision(
                    &def,
                    &format!("c-{t:02}-{i:02}"),
                    order_input("u"),
                    T0 + i as i64,
                    None,
                )
            })
            .collect();
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            commit_all(&*store, batch, "a concurrent commit").await;
        }));
    }
    for h in handles {
        if let Err(e) = h.await {
            panic!("a committing task failed: {e}");
        }
    }
    let ids: Vec<SagaId> = (0..TASKS)
        .flat_map(|t| (0..EACH).map(move |i| SagaId(format!("c-{t:02}-{i:02}"))))
        .collect();
    let loaded = store
        .load(&ids)
        .await
        .unwrap_or_else(|e| panic!("load failed: {e}"));
    assert_eq!(
        loaded.len(),
        TASKS * EACH,
        "every concurrently committed saga must be stored"
    );
}
