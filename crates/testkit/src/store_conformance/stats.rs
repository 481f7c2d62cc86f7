//! Stats checks: the gauges behind the metrics endpoint count what is stored, and lags are
//! measured from the `now` the caller passes.

use std::sync::Arc;

use sagaflow_core::{Millis, Outcome, Status, Store, StoreStats};

use super::commit_all;
use crate::fixture::{
    action_reply, next_decision, order_definition, order_input, ping_definition, start_decision,
    succeeded, OUTBOX_LEASE_MS, STEP_TIMEOUT_MS, T0,
};

async fn stats(store: &dyn Store, now: Millis) -> StoreStats {
    store
        .stats(now)
        .await
        .unwrap_or_else(|e| panic!("stats({now}) failed: {e}"))
}

/// An empty store's gauges are all zero, whatever `now` is.
pub async fn stats_of_an_empty_store_are_zero(store: Arc<dyn Store>) {
    for now in [0, T0, Millis::MAX] {
        assert_eq!(
            stats(&*store, now).await,
            StoreStats::default(),
            "an empty store has no sagas, no lag, no outbox rows and no dead letters (now {now})"
        );
    }
}

/// `sagas` counts every saga, ends included, by definition (all versions together) and
/// status; only pairs with sagas are listed, by definition then status name.
pub async fn stats_count_sagas_by_definition_and_status(store: Arc<dyn Store>) {
    let order1 = order_definition(1);
    let order2 = order_definition(2);
    let ping = ping_definition();
    let o1 = start_decision(&order1, "o1", order_input("u1"), T0, None);
    let o2 = start_decision(&order1, "o2", order_input("u2"), T0, None);
    let o2w = next_decision(
        &order1,
        &o2.state,
        &action_reply(0, 1, Outcome::park("approved")),
        T0 + 10,
    );
    let o3 = start_decision(&order2, "o3", order_input("u3"), T0, None);
    let o3a = next_decision(&order2, &o3.state, &succeeded(0, 1), T0 + 10);
    let o3c = next_decision(
        &order2,
        &o3a.state,
        &action_reply(1, 1, Outcome::rejected("card declined")),
        T0 + 20,
    );
    let o4 = start_decision(&order2, "o4", order_input("u4"), T0, None);
    let p1 = start_decision(&ping, "p1", serde_json::json!({}), T0, None);
    let p1done = next_decision(&ping, &p1.state, &succeeded(0, 1), T0 + 10);
    let p2 = start_decision(&ping, "p2", serde_json::json!({}), T0, None);
    let p2done = next_decision(&ping, &p2.state, &succeeded(0, 1), T0 + 10);
    let p3 = start_decision(&ping, "p3", serde_json::json!({}), T0, None);
    assert_eq!(o2w.state.status, Status::Waiting, "fixture: o2 waits");
    assert_eq!(
        o3c.state.status,
        Status::Compensating,
        "fixture: o3 compensates"
    );
    assert_eq!(
        p1done.state.status,
        Status::Completed,
        "fixture: p1 completed"
    );
    commit_all(
        &*store,
        vec![o1, o2, o3, o4, p1, p2, p3],
        "stats fixtures: starts",
    )
    .await;
    commit_all(
        &*store,
        vec![o2w, o3a, p1done, p2done],
        "stats fixtures: replies",
    )
    .await;
    commit_all(&*store, vec![o3c], "stats fixtures: rejection").await;
    let got = stats(&*store, T0 + 30).await;
    assert_eq!(
        got.sagas,
        vec![
            ("order".to_string(), Status::Compensating, 1),
            ("order".to_string(), Status::Running, 2),
            ("order".to_string(), Status::Waiting, 1),
            ("ping".to_string(), Status::Completed, 2),
            ("ping".to_string(), Status::Running, 1),
        ],
        "sagas by definition (versions together) and status, finished ones included"
    );
}

/// `outbox_lag_ms` is how long ago the oldest expired outbox lease ended; rows still
/// leased (by the committing engine, or freshly by a relay) are not late. `outbox_rows`
/// counts every row, leased or not.
pub async fn stats_outbox_lag_is_since_the_oldest_expired_lease(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let a = start_decision(&def, "a", order_input("u1"), T0, None);
    let b = start_decision(&def, "b", order_input("u2"), T0 + 200, None);
    commit_all(&*store, vec![a, b], "two starts, one command each").await;
    let a_lease_end = T0 + OUTBOX_LEASE_MS;

    let leased = stats(&*store, T0 + 1).await;
    assert_eq!(
        (leased.outbox_lag_ms, leased.outbox_rows),
        (0, 2),
        "rows the committing engine still holds are not late"
    );
    assert_eq!(
        stats(&*store, a_lease_end).await.outbox_lag_ms,
        0,
        "a lease ending right now is not late yet"
    );
    let now = a_lease_end + 500;
    let late = stats(&*store, now).await;
    assert_eq!(
        (late.outbox_lag_ms, late.outbox_rows),
        (500, 2),
        "the oldest expired lease (a's, 500 ms ago; b's 300 ms ago) gives the lag"
    );

    let claimed = store
        .claim_outbox(now, "relay", 5_000, 10)
        .await
        .unwrap_or_else(|e| panic!("claim_outbox failed: {e}"));
    assert_eq!(
        claimed.len(),
        2,
        "both leases expired, both rows are claimed"
    );
    let fresh = stats(&*store, now).await;
    assert_eq!(
        (fresh.outbox_lag_ms, fresh.outbox_rows),
        (0, 2),
        "freshly leased rows are not late, and are still counted"
    );
    assert_eq!(
        stats(&*store, now + 5_000 + 42).await.outbox_lag_ms,
        42,
        "once the relay's lease expired, the lag runs from its end"
    );
}

/// `timer_lag_ms` is how long the oldest claimable timer has been claimable: since it was
/// due when unleased, since its lease ended when its claimer let the lease expire.
pub async fn stats_timer_lag_is_since_the_oldest_claimable_timer(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let a = start_decision(&def, "a", order_input("u1"), T0, None);
    let b = start_decision(&def, "b", order_input("u2"), T0 + 100, None);
    commit_all(&*store, vec![a, b], "two starts with step timers").await;
    let a_due = T0 + STEP_TIMEOUT_MS as i64;

    assert_eq!(
        stats(&*store, a_due - 1).await.timer_lag_ms,
        0,
        "no timer is due yet"
    );
    assert_eq!(
        stats(&*store, a_due).await.timer_lag_ms,
        0,
        "a timer due right now is not late yet"
    );
    let now = a_due + 300;
    assert_eq!(
        stats(&*store, now).await.timer_lag_ms,
        300,
        "the oldest due, unleased timer (a's, due 300 ms ago; b's 200 ms ago) gives the lag"
    );

    let claimed = store
        .claim_timers(now, "timers", 1_000, 10)
        .await
        .unwrap_or_else(|e| panic!("claim_timers failed: {e}"));
    assert_eq!(claimed.len(), 2, "both step timers are due and claimed");
    assert_eq!(
        stats(&*store, now).await.timer_lag_ms,
        0,
        "leased timers are not late while their lease runs"
    );
    assert_eq!(
        stats(&*store, now + 1_000 + 250).await.timer_lag_ms,
        250,
        "a due timer whose lease expired is late from the later of its fire time and \
         its lease end"
    );
}

/// `dead_letters` counts the dead letters kept; taking one removes it from the count.
pub async fn stats_count_dead_letters(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for (i, topic) in ["sagaflow.replies", "sagaflow.commands.billing", "blog.x"]
        .into_iter()
        .enumerate()
    {
        let id = store
            .put_dead_letter(topic, b"{}", "unreadable", 1, T0 + i as i64)
            .await
            .unwrap_or_else(|e| panic!("put_dead_letter failed: {e}"));
        ids.push(id);
    }
    assert_eq!(
        stats(&*store, T0).await,
        StoreStats {
            dead_letters: 3,
            ..StoreStats::default()
        },
        "three dead letters kept, nothing else"
    );
    store
        .take_dead_letter(ids[1])
        .await
        .unwrap_or_else(|e| panic!("take_dead_letter failed: {e}"));
    assert_eq!(
        stats(&*store, T0).await.dead_letters,
        2,
        "a taken dead letter is no longer counted"
    );
}
