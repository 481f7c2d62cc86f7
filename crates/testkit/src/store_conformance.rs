//! The Store conformance suite: every `sagaflow_core::Store` adapter must pass it.
//!
//! Each check is a public async fn taking a fresh, empty store and panicking with a message
//! that says what the contract is and how it was broken. An adapter runs them all with one
//! line in a test file:
//!
//! ```ignore
//! sagaflow_testkit::store_conformance_tests!(fresh_store().await);
//! ```
//!
//! where the expression (evaluated inside each `#[tokio::test]`, so it may `.await`) gives an
//! `Arc<dyn Store>` or an `(Arc<dyn Store>, guard)` pair; the guard (a temp dir, a scratch
//! schema) lives until the check ends. The adapter's test crate must depend on `tokio`.
//! [`run_all`] runs the same checks from a single test instead.
//!
//! Participant checks create tables named `conformance_*`, so each store must be backed by
//! its own empty database (or schema).

use std::future::Future;
use std::sync::Arc;

use sagaflow_core::{
    CommitOutcome, Decision, JournalEntry, Millis, OutboxRow, SagaId, SagaState, Store, TimerRow,
};

mod commit;
mod definitions;
mod participant;
mod queries;
mod queues;
mod stats;

pub use commit::{
    commit_writes_a_new_saga, concurrent_commits_all_land, decisions_in_one_commit_apply_in_order,
    duplicate_saga_id_is_refused, many_decisions_in_one_commit, stale_version_conflicts_alone,
    start_idempotency_key_is_unique,
};
pub use definitions::{
    a_different_definition_under_a_taken_version_is_invalid,
    concurrent_saves_of_one_version_store_one,
    definition_versions_are_listed_side_by_side_in_order, definitions_round_trip_exactly,
    saving_the_same_definition_again_is_a_no_op,
};
pub use participant::{
    concurrent_inbox_put_lets_one_commit, dropped_participant_tx_is_abandoned,
    participant_commit_is_visible_rollback_is_not, participant_inbox_records_replies,
    participant_sql_round_trips_values,
};
pub use queries::{
    dead_letters_put_list_take, list_filters_and_orders_newest_first,
    list_paginates_with_keyset_cursor, stale_and_activity_describe_the_recent_past,
    versions_in_flight_counts_unfinished, waiting_by_correlation_finds_parked_sagas,
};
pub use queues::{
    claim_outbox_honours_limit, claim_outbox_respects_leases, claim_timers_takes_due_unleased,
    next_timer_at_is_earliest_claimable, resolved_deletes_outbox_rows,
    timers_set_replace_and_clear,
};
pub use stats::{
    stats_count_dead_letters, stats_count_sagas_by_definition_and_status,
    stats_of_an_empty_store_are_zero, stats_outbox_lag_is_since_the_oldest_expired_lease,
    stats_timer_lag_is_since_the_oldest_claimable_timer,
};

/// A fresh store for one check, possibly with something that must outlive it.
pub trait FreshStore {
    /// The store under test.
    fn store(&self) -> Arc<dyn Store>;
}

impl FreshStore for Arc<dyn Store> {
    fn store(&self) -> Arc<dyn Store> {
        self.clone()
    }
}

impl<G> FreshStore for (Arc<dyn Store>, G) {
    fn store(&self) -> Arc<dyn Store> {
        self.0.clone()
    }
}

/// Runs every check in turn, each on a fresh store from `make`.
pub async fn run_all<F, Fut, S>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    S: FreshStore,
{
    macro_rules! each {
        ($($check:ident),* $(,)?) => {
            $(
                let fresh = make().await;
                $check(fresh.store()).await;
                drop(fresh);
            )*
        };
    }
    each!(
        commit_writes_a_new_saga,
        stale_version_conflicts_alone,
        decisions_in_one_commit_apply_in_order,
        duplicate_saga_id_is_refused,
        start_idempotency_key_is_unique,
        many_decisions_in_one_commit,
        concurrent_commits_all_land,
        resolved_deletes_outbox_rows,
        claim_outbox_respects_leases,
        claim_outbox_honours_limit,
        timers_set_replace_and_clear,
        claim_timers_takes_due_unleased,
        next_timer_at_is_earliest_claimable,
        list_filters_and_orders_newest_first,
        list_paginates_with_keyset_cursor,
        versions_in_flight_counts_unfinished,
        stale_and_activity_describe_the_recent_past,
        waiting_by_correlation_finds_parked_sagas,
        dead_letters_put_list_take,
        definitions_round_trip_exactly,
        saving_the_same_definition_again_is_a_no_op,
        a_different_definition_under_a_taken_version_is_invalid,
        definition_versions_are_listed_side_by_side_in_order,
        concurrent_saves_of_one_version_store_one,
        stats_of_an_empty_store_are_zero,
        stats_count_sagas_by_definition_and_status,
        stats_outbox_lag_is_since_the_oldest_expired_lease,
        stats_timer_lag_is_since_the_oldest_claimable_timer,
        stats_count_dead_letters,
        participant_sql_round_trips_values,
        participant_commit_is_visible_rollback_is_not,
        dropped_participant_tx_is_abandoned,
        participant_inbox_records_replies,
        concurrent_inbox_put_lets_one_commit,
    );
}

/// Expands to one `#[tokio::test]` per conformance check, each on a fresh store from the
/// expression (see the module docs). Checks that race tasks run on a multi-thread runtime.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@current $make;
            commit_writes_a_new_saga,
            stale_version_conflicts_alone,
            decisions_in_one_commit_apply_in_order,
            duplicate_saga_id_is_refused,
            start_idempotency_key_is_unique,
            resolved_deletes_outbox_rows,
            claim_outbox_respects_leases,
            claim_outbox_honours_limit,
            timers_set_replace_and_clear,
            claim_timers_takes_due_unleased,
            next_timer_at_is_earliest_claimable,
            list_filters_and_orders_newest_first,
            list_paginates_with_keyset_cursor,
            versions_in_flight_counts_unfinished,
            stale_and_activity_describe_the_recent_past,
            waiting_by_correlation_finds_parked_sagas,
            dead_letters_put_list_take,
            definitions_round_trip_exactly,
            saving_the_same_definition_again_is_a_no_op,
            a_different_definition_under_a_taken_version_is_invalid,
            definition_versions_are_listed_side_by_side_in_order,
            stats_of_an_empty_store_are_zero,
            stats_count_sagas_by_definition_and_status,
            stats_outbox_lag_is_since_the_oldest_expired_lease,
            stats_timer_lag_is_since_the_oldest_claimable_timer,
            stats_count_dead_letters,
            participant_sql_round_trips_values,
            participant_commit_is_visible_rollback_is_not,
            dropped_participant_tx_is_abandoned,
            participant_inbox_records_replies
        );
        $crate::store_conformance_tests!(@multi $make;
            many_decisions_in_one_commit,
            concurrent_commits_all_land,
            concurrent_inbox_put_lets_one_commit,
            concurrent_saves_of_one_version_store_one
        );
    };
    (@current $make:expr; $($check:ident),*) => {
        $(
            #[::tokio::test]
            async fn $check() {
                let fresh = $make;
                $crate::store_conformance::$check(
                    $crate::store_conformance::FreshStore::store(&fresh),
                )
                .await;
                drop(fresh);
            }
        )*
    };
    (@multi $make:expr; $($check:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fresh = $make;
                $crate::store_conformance::$check(
                    $crate::store_conformance::FreshStore::store(&fresh),
                )
                .await;
                drop(fresh);
            }
        )*
    };
}

/// A time after every fixture timer and lease, for "show me everything" claims.
pub(crate) const FAR: Millis = 4_000_000_000_000;

/// Commits and asserts every decision was applied.
pub(crate) async fn commit_all(store: &dyn Store, decisions: Vec<Decision>, what: &str) {
    let n = decisions.len();
    let outcomes = match store.commit(decisions).await {
        Ok(outcomes) => outcomes,
        Err(e) => panic!("{what}: commit failed: {e}"),
    };
    assert_eq!(
        outcomes,
        vec![CommitOutcome::Applied; n],
        "{what}: every decision should be applied"
    );
}

/// Commits and returns the outcomes, panicking on a store error.
pub(crate) async fn commit(store: &dyn Store, decisions: Vec<Decision>) -> Vec<CommitOutcome> {
    let n = decisions.len();
    let outcomes = match store.commit(decisions).await {
        Ok(outcomes) => outcomes,
        Err(e) => panic!("commit failed: {e}"),
    };
    assert_eq!(
        outcomes.len(),
        n,
        "commit must give one outcome per decision"
    );
    outcomes
}

/// The snapshot of one saga, if stored.
pub(crate) async fn load_one(store: &dyn Store, id: &SagaId) -> Option<SagaState> {
    let mut found = store
        .load(std::slice::from_ref(id))
        .await
        .unwrap_or_else(|e| panic!("load({id}) failed: {e}"));
    assert!(
        found.len() <= 1,
        "load({id}) returned {} states",
        found.len()
    );
    found.pop()
}

/// One saga's journal.
pub(crate) async fn journal(store: &dyn Store, id: &SagaId) -> Vec<JournalEntry> {
    store
        .journal(id)
        .await
        .unwrap_or_else(|e| panic!("journal({id}) failed: {e}"))
}

/// Every outbox row, claimed at `now` with a 1 ms lease so a later call sees them again.
pub(crate) async fn outbox_at(store: &dyn Store, now: Millis) -> Vec<OutboxRow> {
    let mut rows = store
        .claim_outbox(now, "peek", 1, 100_000)
        .await
        .unwrap_or_else(|e| panic!("claim_outbox failed: {e}"));
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
}

/// Every timer due by `now`, claimed with a 1 ms lease so a later call sees them again.
pub(crate) async fn timers_at(store: &dyn Store, now: Millis) -> Vec<TimerRow> {
    let mut rows = store
        .claim_timers(now, "peek", 1, 100_000)
        .await
        .unwrap_or_else(|e| panic!("claim_timers failed: {e}"));
    rows.sort_by(|a, b| (&a.saga_id, a.slot.as_str()).cmp(&(&b.saga_id, b.slot.as_str())));
    rows
}

/// The ids of some states, in the order given.
pub(crate) fn ids(states: &[SagaState]) -> Vec<String> {
    states.iter().map(|s| s.saga_id.0.clone()).collect()
}
