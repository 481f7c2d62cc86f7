//! Two stores on one schema, as two engine processes: their claims never share a row.

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use sagaflow_core::{Decision, Store};
use sagaflow_testkit::fixture::{order_definition, order_input, start_decision, T0};

const SAGAS: usize = 300;
const TASKS_PER_STORE: usize = 3;
/// After every fixture timer and outbox lease.
const FAR: i64 = 4_000_000_000_000;

/// Two stores (two pools) sharing `SAGAS` started sagas: each has two timers and one outbox row.
async fn two_processes() -> (Vec<Arc<dyn Store>>, support::SchemaGuard) {
    let (a, guard) = support::fresh().await;
    let b = support::connect(&guard.0).await;
    let def = order_definition(1);
    let starts: Vec<Decision> = (0..SAGAS)
        .map(|i| start_decision(&def, &format!("s{i:03}"), order_input("u"), T0, None))
        .collect();
    let outcomes = a.commit(starts).await.expect("committing the starts");
    assert!(outcomes
        .iter()
        .all(|o| *o == sagaflow_core::CommitOutcome::Applied));
    (vec![Arc::new(a), Arc::new(b)], guard)
}

/// Runs `TASKS_PER_STORE` claimers on each store until none finds anything more; returns
/// every claimed key, in claim order.
async fn claim_everything<F, Fut>(stores: &[Arc<dyn Store>], claim: F) -> Vec<String>
where
    F: Fn(Arc<dyn Store>, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Vec<String>> + Send,
{
    let mut tasks = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..TASKS_PER_STORE {
            let (store, claim) = (Arc::clone(store), claim.clone());
            let owner = format!("engine-{s}-{t}");
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = claim(Arc::clone(&store), owner.clone()).await;
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got);
                }
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a claiming task panicked"));
    }
    all
}

fn assert_each_once(claimed: &[String], want: usize, what: &str) {
    let distinct: HashSet<&String> = claimed.iter().collect();
    assert_eq!(
        distinct.len(),
        claimed.len(),
        "some {what} was claimed twice by concurrent claimers"
    );
    assert_eq!(claimed.len(), want, "every {what} is claimed exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_timer_claims_never_share_a_timer() {
    let (stores, _guard) = two_processes().await;
    let claimed = claim_everything(&stores, |store, owner| async move {
        store
            .claim_timers(FAR, &owner, 600_000, 7)
            .await
            .expect("claim_timers")
            .into_iter()
            .map(|t| format!("{}/{}", t.saga_id, t.slot.as_str()))
            .collect()
    })
    .await;
    assert_each_once(&claimed, SAGAS * 2, "timer");
    // The leases hold: nothing is claimable again before they end.
    let again = stores[1]
        .claim_timers(FAR, "late", 1_000, 1_000)
        .await
        .expect("claim_timers");
    assert!(again.is_empty(), "leased timers were claimed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_outbox_claims_never_share_a_row() {
    let (stores, _guard) = two_processes().await;
    let claimed = claim_everything(&stores, |store, owner| async move {
        let rows = store
            .claim_outbox(FAR, &owner, 600_000, 7)
            .await
            .expect("claim_outbox");
        for row in &rows {
            assert_eq!(
                row.lease_owner, owner,
                "a claimed row is leased to its claimer"
            );
            assert_eq!(row.lease_until, FAR + 600_000);
        }
        rows.into_iter().map(|r| r.key).collect()
    })
    .await;
    assert_each_once(&claimed, SAGAS, "outbox row");
}
