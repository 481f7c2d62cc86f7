//! Group commit throughput: whole order sagas (start and three replies, four decisions each)
//! committed in batches by a few concurrent committers, with synchronous_commit on.

mod support;

use std::sync::Arc;
use std::time::Instant;

use sagaflow_core::{CommitOutcome, Decision, Store};
use sagaflow_testkit::fixture::{
    next_decision, order_definition, order_input, start_decision, succeeded, T0,
};

const SAGAS: usize = 2_000;
const BATCH: usize = 250;
const COMMITTERS: usize = 2;
/// Far below the 1 500 sagas/s target, so a busy shared machine does not fail the build,
/// yet far above what a commit paying round trips per decision reaches.
const FLOOR_SAGAS_PER_SEC: f64 = 400.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_throughput() {
    let (store, _guard) = support::fresh().await;
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(store.pool())
        .await
        .expect("SHOW synchronous_commit");
    let store: Arc<dyn Store> = Arc::new(store);
    let def = order_definition(1);
    // Every saga's four decisions, decided up front: only commits are timed.
    let mut phases: Vec<Vec<Decision>> = vec![Vec::new(); 4];
    for i in 0..SAGAS {
        let mut d = start_decision(&def, &format!("t{i:05}"), order_input("u"), T0, None);
        phases[0].push(d.clone());
        for (step, phase) in phases.iter_mut().enumerate().skip(1) {
            d = next_decision(&def, &d.state, &succeeded(step - 1, 1), T0 + step as i64);
            phase.push(d.clone());
        }
    }
    let started = Instant::now();
    for phase in phases {
        let mut batches: Vec<Vec<Decision>> = Vec::new();
        let mut rest = phase;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(BATCH));
            batches.push(rest);
            rest = tail;
        }
        let batches = Arc::new(std::sync::Mutex::new(batches));
        let committers: Vec<_> = (0..COMMITTERS)
            .map(|_| {
                let (store, batches) = (Arc::clone(&store), Arc::clone(&batches));
                tokio::spawn(async move {
                    loop {
                        let next = batches.lock().expect("batches lock").pop();
                        let Some(batch) = next else { return };
                        let n = batch.len();
                        let outcomes = store.commit(batch).await.expect("commit");
                        assert_eq!(outcomes, vec![CommitOutcome::Applied; n]);
                    }
                })
            })
            .collect();
        for c in committers {
            c.await.expect("a committer panicked");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = SAGAS as f64 / secs;
    println!(
        "{SAGAS} sagas ({} decisions) in {secs:.2}s: {rate:.0} sagas/s, {:.0} decisions/s \
         (synchronous_commit={sync}, batches of {BATCH}, {COMMITTERS} committers)",
        SAGAS * 4,
        SAGAS as f64 * 4.0 / secs
    );
    assert!(
        rate >= FLOOR_SAGAS_PER_SEC,
        "{rate:.0} sagas/s is below the floor of {FLOOR_SAGAS_PER_SEC}"
    );
}
