//! Commits racing between processes: the version check and the idempotency key hold across
//! stores, and a lost race refuses one decision, never the batch.

mod support;

use std::collections::HashMap;

use sagaflow_core::{CommitOutcome, Decision, SagaId, Store};
use sagaflow_postgres::PgStore;
use sagaflow_testkit::fixture::{
    next_decision, order_definition, order_input, start_decision, succeeded, T0,
};

async fn commit(store: &PgStore, batch: Vec<Decision>) -> Vec<CommitOutcome> {
    store.commit(batch).await.expect("commit")
}

/// Begins a transaction on `store`'s pool standing for another process; returns it and its
/// backend pid.
async fn other_process(store: &PgStore) -> (sqlx::Transaction<'static, sqlx::Postgres>, i32) {
    let mut tx = store.pool().begin().await.expect("begin");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .expect("pg_backend_pid");
    (tx, pid)
}

/// Another process appends to saga x while our batch (x and y) waits for x's row lock: once
/// it commits, our x decision conflicts with the version it wrote and y is still applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_a_saga_another_process_moved_conflicts_alone() {
    let (a, guard) = support::fresh().await;
    let b = support::connect(&guard.0).await;
    let def = order_definition(1);
    let x0 = start_decision(&def, "x", order_input("u1"), T0, None);
    let y0 = start_decision(&def, "y", order_input("u2"), T0, None);
    commit(&a, vec![x0.clone(), y0.clone()]).await;
    let x1 = next_decision(&def, &x0.state, &succeeded(0, 1), T0 + 10);
    let y1 = next_decision(&def, &y0.state, &succeeded(0, 1), T0 + 10);

    let (mut other, pid) = other_process(&a).await;
    sqlx::query("UPDATE sagas SET journal_version = journal_version + 1 WHERE saga_id = 'x'")
        .execute(&mut *other)
        .await
        .expect("moving x on");
    let batch = tokio::spawn(async move { commit(&b, vec![x1, y1.clone()]).await });
    support::wait_until_blocked_by(&a, pid).await;
    other.commit().await.expect("the other process commits");

    let outcomes = batch.await.expect("the batch task");
    assert_eq!(
        outcomes,
        vec![
            CommitOutcome::Conflict {
                actual_version: x0.state.journal_version + 1
            },
            CommitOutcome::Applied,
        ],
        "the version is read after the lock is granted, and only x conflicts"
    );
}

/// Another process is inserting a saga with idempotency key k when our batch starts one with
/// k: we wait for it, and when it commits our start is a DuplicateStart naming its saga while
/// the rest of the batch is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_racing_another_process_for_its_key_is_a_duplicate() {
    for other_commits in [true, false] {
        let (a, guard) = support::fresh().await;
        let b = support::connect(&guard.0).await;
        let def = order_definition(1);
        let holder = start_decision(&def, "holder", order_input("u1"), T0, Some("k"));
        let late = start_decision(&def, "late", order_input("u1"), T0, Some("k"));
        let bystander = start_decision(&def, "bystander", order_input("u2"), T0, None);

        let (mut other, pid) = other_process(&a).await;
        let state = serde_json::to_string(&holder.state).expect("state json");
        sqlx::query(
            "INSERT INTO sagas (saga_id, definition, version, status, idempotency_key,
                 journal_version, state, created_at, updated_at)
             VALUES ('holder', 'order', 1, 'running', 'k', 1, $1, 0, 0)",
        )
        .bind(state)
        .execute(&mut *other)
        .await
        .expect("the other process inserts its saga");
        let batch = tokio::spawn(async move { commit(&b, vec![late, bystander]).await });
        support::wait_until_blocked_by(&a, pid).await;
        if other_commits {
            other.commit().await.expect("commit");
        } else {
            other.rollback().await.expect("rollback");
        }
        let outcomes = batch.await.expect("the batch task");
        let want_late = if other_commits {
            CommitOutcome::DuplicateStart {
                existing: SagaId::from("holder"),
            }
        } else {
            CommitOutcome::Applied
        };
        assert_eq!(
            outcomes,
            vec![want_late, CommitOutcome::Applied],
            "other process {}",
            if other_commits {
                "committed"
            } else {
                "rolled back"
            }
        );
        let owner = a.saga_by_idempotency_key("k").await.expect("lookup");
        let want_owner = if other_commits { "holder" } else { "late" };
        assert_eq!(owner, Some(SagaId::from(want_owner)));
    }
}

/// Two processes start sagas with the same 100 keys at once, in opposite orders: every key
/// ends up with exactly one saga, and the other start names it. No deadlock, no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_starting_with_the_same_keys_each_key_wins_once() {
    const KEYS: usize = 100;
    let (a, guard) = support::fresh().await;
    let b = support::connect(&guard.0).await;
    let def = order_definition(1);
    let batch = |prefix: &str, reversed: bool| -> Vec<Decision> {
        let mut keys: Vec<usize> = (0..KEYS).collect();
        if reversed {
            keys.reverse();
        }
        keys.into_iter()
            .map(|k| {
                let key = format!("key-{k:03}");
                start_decision(
                    &def,
                    &format!("{prefix}-{k:03}"),
                    order_input("u"),
                    T0,
                    Some(&key),
                )
            })
            .collect()
    };
    let (batch_a, batch_b) = (batch("a", false), batch("b", true));
    let (ids_a, ids_b): (Vec<SagaId>, Vec<SagaId>) = (
        batch_a.iter().map(|d| d.saga_id.clone()).collect(),
        batch_b.iter().map(|d| d.saga_id.clone()).collect(),
    );
    let (keys_a, keys_b): (Vec<String>, Vec<String>) = (
        batch_a
            .iter()
            .filter_map(|d| d.idempotency_key.clone())
            .collect(),
        batch_b
            .iter()
            .filter_map(|d| d.idempotency_key.clone())
            .collect(),
    );
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { commit(&a, batch_a).await }),
        tokio::spawn(async move { commit(&b, batch_b).await })
    );
    let (ra, rb) = (ra.expect("task a"), rb.expect("task b"));

    let mut winner: HashMap<&str, SagaId> = HashMap::new();
    for (outcomes, ids, keys) in [(&ra, &ids_a, &keys_a), (&rb, &ids_b, &keys_b)] {
        for ((outcome, id), key) in outcomes.iter().zip(ids).zip(keys) {
            if *outcome == CommitOutcome::Applied {
                let before = winner.insert(key, id.clone());
                assert_eq!(before, None, "key {key} was won twice");
            }
        }
    }
    assert_eq!(winner.len(), KEYS, "every key has a saga");
    for (outcomes, ids, keys) in [(&ra, &ids_a, &keys_a), (&rb, &ids_b, &keys_b)] {
        for ((outcome, id), key) in outcomes.iter().zip(ids).zip(keys) {
            if *outcome != CommitOutcome::Applied {
                assert_eq!(
                    *outcome,
                    CommitOutcome::DuplicateStart {
                        existing: winner[key.as_str()].clone()
                    },
                    "{id} lost key {key}"
                );
            }
        }
    }
    drop(guard);
}

/// Two processes decide on the same state of the same sagas at once: for each saga exactly
/// one decision is applied and the other conflicts with the version it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_deciding_on_the_same_state_one_wins_per_saga() {
    const SAGAS: usize = 50;
    let (a, guard) = support::fresh().await;
    let b = support::connect(&guard.0).await;
    let def = order_definition(1);
    let starts: Vec<Decision> = (0..SAGAS)
        .map(|i| start_decision(&def, &format!("s{i:02}"), order_input("u"), T0, None))
        .collect();
    commit(&a, starts.clone()).await;
    let next = |at: i64, reversed: bool| -> Vec<Decision> {
        let mut batch: Vec<Decision> = starts
            .iter()
            .map(|d| next_decision(&def, &d.state, &succeeded(0, 1), at))
            .collect();
        if reversed {
            batch.reverse();
        }
        batch
    };
    let (batch_a, batch_b) = (next(T0 + 1, false), next(T0 + 2, true));
    let won: Vec<u64> = batch_a.iter().map(|d| d.state.journal_version).collect();
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { commit(&a, batch_a).await }),
        tokio::spawn(async move { commit(&b, batch_b).await })
    );
    let (ra, mut rb) = (ra.expect("task a"), rb.expect("task b"));
    rb.reverse();
    for (i, (oa, ob)) in ra.iter().zip(&rb).enumerate() {
        let applied = [oa, ob]
            .iter()
            .filter(|o| ***o == CommitOutcome::Applied)
            .count();
        assert_eq!(applied, 1, "saga {i}: {oa:?} / {ob:?}");
        let conflict = if *oa == CommitOutcome::Applied {
            ob
        } else {
            oa
        };
        assert_eq!(
            *conflict,
            CommitOutcome::Conflict {
                actual_version: won[i]
            },
            "saga {i}: the loser sees the winner's version"
        );
    }
    drop(guard);
}
