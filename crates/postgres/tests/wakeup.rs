//! LISTEN/NOTIFY: a store's `wakeup()` resolves when another store commits work to claim.

mod support;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use sagaflow_core::{CommitOutcome, Store};
use sagaflow_postgres::PgStore;
use sagaflow_testkit::fixture::{order_definition, order_input, start_decision, T0};

/// Long enough for a loaded machine; a wakeup that works takes milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// Whether the future is still pending after one poll.
fn still_pending<F: Future>(fut: std::pin::Pin<&mut F>) -> bool {
    fut.poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
}

/// The first `wakeup()` starts the listener and resolves once it listens (commits made before
/// may have been missed); later ones wait. Returns when the next `wakeup()` would wait.
async fn listening(store: &PgStore) {
    tokio::time::timeout(DEADLINE, store.wakeup())
        .await
        .expect("the first wakeup() resolves once the listener is up");
    // A reconnect may also have left one wakeup pending: take it.
    for _ in 0..2 {
        let mut next = pin!(store.wakeup());
        if still_pending(next.as_mut()) {
            return;
        }
    }
    panic!("wakeup() keeps resolving with nothing committed");
}

async fn start(store: &PgStore, id: &str) {
    let def = order_definition(1);
    let d = start_decision(&def, id, order_input("u"), T0, None);
    let outcomes = store.commit(vec![d]).await.expect("commit");
    assert_eq!(outcomes, vec![CommitOutcome::Applied]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakeup_resolves_after_another_stores_commit() {
    let (a, guard) = support::fresh().await;
    let b = support::connect(&guard.0).await;
    listening(&a).await;

    let mut woken = pin!(a.wakeup());
    assert!(
        still_pending(woken.as_mut()),
        "nothing was committed: wakeup() must wait"
    );
    start(&b, "from-b").await;
    tokio::time::timeout(DEADLINE, woken)
        .await
        .expect("wakeup() must resolve after another store committed a timer and a command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_while_nobody_waits_is_kept_for_the_next_wakeup() {
    let (a, guard) = support::fresh().await;
    let b = support::connect(&guard.0).await;
    listening(&a).await;
    start(&b, "from-b").await;
    // Nobody waits now; the next wakeup() must not sleep through b's commit.
    tokio::time::timeout(DEADLINE, a.wakeup())
        .await
        .expect("a notification that came while nobody waited wakes the next wakeup()");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakeup_survives_losing_the_listener_connection() {
    let (a, guard) = support::fresh().await;
    let b = support::connect(&guard.0).await;
    listening(&a).await;

    let killed: Vec<bool> = sqlx::query_scalar(
        r#"SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE query = 'LISTEN "sagaflow_wakeup.' || $1 || '"'"#,
    )
    .bind(&guard.0)
    .fetch_all(b.pool())
    .await
    .expect("terminating the listener");
    assert_eq!(
        killed,
        vec![true],
        "exactly one listener backend for this schema"
    );

    // Losing the connection may have lost notifications: wakeup() resolves for it.
    tokio::time::timeout(DEADLINE, a.wakeup())
        .await
        .expect("wakeup() resolves when the listener reconnects");
    listening(&a).await;
    let mut woken = pin!(a.wakeup());
    assert!(still_pending(woken.as_mut()));
    start(&b, "after-reconnect").await;
    tokio::time::timeout(DEADLINE, woken)
        .await
        .expect("notifications arrive again after the listener reconnected");
}
