//! Query checks: listing with filters and a keyset cursor, versions in flight, correlation
//! lookups, and the dead-letter store.

use std::sync::Arc;

use sagaflow_core::{Decision, Outcome, SagaFilter, SagaId, Status, Store};

use super::{commit_all, ids};
use crate::fixture::{
    action_reply, next_decision, order_definition, order_input, ping_definition, start_decision,
    succeeded, T0,
};

async fn list(store: &dyn Store, filter: SagaFilter) -> Vec<String> {
    let found = store
        .list(&filter)
        .await
        .unwrap_or_else(|e| panic!("list({filter:?}) failed: {e}"));
    ids(&found)
}

/// `list` filters by status, definition, correlation key and creation range, newest first
/// (ties broken by id, descending), honouring `limit` and the `before` cursor.
pub async fn list_filters_and_orders_newest_first(store: Arc<dyn Store>) {
    let order1 = order_definition(1);
    let order2 = order_definition(2);
    let ping = ping_definition();
    let o1 = start_decision(&order1, "o1", order_input("u1"), T0 + 100, None);
    let o2 = start_decision(&order1, "o2", order_input("u2"), T0 + 200, None);
    let o2w = next_decision(
        &order1,
        &o2.state,
        &action_reply(0, 1, Outcome::park("approved")),
        T0 + 250,
    );
    let o3 = start_decision(&order2, "o3", order_input("u1"), T0 + 200, None);
    let o3a = next_decision(&order2, &o3.state, &succeeded(0, 1), T0 + 210);
    let o3c = next_decision(
        &order2,
        &o3a.state,
        &action_reply(1, 1, Outcome::rejected("card declined")),
        T0 + 220,
    );
    let p1 = start_decision(&ping, "p1", serde_json::json!({}), T0 + 300, None);
    let p1done = next_decision(&ping, &p1.state, &succeeded(0, 1), T0 + 310);
    let p2 = start_decision(&ping, "p2", serde_json::json!({}), T0 + 50, None);
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
    // Separate commits, so this check does not depend on in-batch ordering.
    commit_all(&*store, vec![o1, o2, o3, p1, p2], "list fixtures: starts").await;
    commit_all(&*store, vec![o2w, o3a, p1done], "list fixtures: replies").await;
    commit_all(&*store, vec![o3c], "list fixtures: rejection").await;

    let all = list(&*store, SagaFilter::default()).await;
    assert_eq!(
        all,
        ["p1", "o3", "o2", "o1", "p2"],
        "newest first; equal created_at ordered by id descending"
    );
    let cases: Vec<(SagaFilter, Vec<&str>, &str)> = vec![
        (
            SagaFilter {
                status: Some(Status::Running),
                ..Default::default()
            },
            vec!["o1", "p2"],
            "status running",
        ),
        (
            SagaFilter {
                status: Some(Status::Waiting),
                ..Default::default()
            },
            vec!["o2"],
            "status waiting",
        ),
        (
            SagaFilter {
                status: Some(Status::Completed),
                ..Default::default()
            },
            vec!["p1"],
            "status completed",
        ),
        (
            SagaFilter {
                definition: Some("ping".into()),
                ..Default::default()
            },
            vec!["p1", "p2"],
            "definition ping",
        ),
        (
            SagaFilter {
                correlation_key: Some("u1".into()),
                ..Default::default()
            },
            vec!["o3", "o1"],
            "correlation key u1",
        ),
        (
            SagaFilter {
                created_after: Some(T0 + 100),
                ..Default::default()
            },
            vec!["p1", "o3", "o2", "o1"],
            "created_after is inclusive",
        ),
        (
            SagaFilter {
                created_before: Some(T0 + 200),
                ..Default::default()
            },
            vec!["o1", "p2"],
            "created_before is exclusive",
        ),
        (
            SagaFilter {
                created_after: Some(T0 + 100),
                created_before: Some(T0 + 300),
                ..Default::default()
            },
            vec!["o3", "o2", "o1"],
            "created range",
        ),
        (
            SagaFilter {
                definition: Some("order".into()),
                status: Some(Status::Running),
                ..Default::default()
            },
            vec!["o1"],
            "definition and status together",
        ),
        (
            SagaFilter {
                limit: 2,
                ..Default::default()
            },
            vec!["p1", "o3"],
            "limit",
        ),
        (
            SagaFilter {
                before: Some((T0 + 200, SagaId::from("o3"))),
                ..Default::default()
            },
            vec!["o2", "o1", "p2"],
            "before a cursor: strictly older, same created_at with a smaller id included",
        ),
        (
            SagaFilter {
                before: Some((T0 + 200, SagaId::from("o2"))),
                ..Default::default()
            },
            vec!["o1", "p2"],
            "before a cursor",
        ),
        (
            SagaFilter {
                definition: Some("nothing".into()),
                ..Default::default()
            },
            vec![],
            "no match",
        ),
    ];
    for (filter, want, what) in cases {
        assert_eq!(list(&*store, filter).await, want, "list filter: {what}");
    }
}

/// Paging with `before` set to the last row of each page visits every saga exactly once,
/// with filters, when many share a creation time; `limit: 0` means 100.
pub async fn list_paginates_with_keyset_cursor(store: Arc<dyn Store>) {
    const N: usize = 130;
    let order = order_definition(1);
    let ping = ping_definition();
    let starts: Vec<Decision> = (0..N)
        .map(|i| {
            // Three sagas per millisecond, two orders for each ping.
            let at = T0 + (i / 3) as i64;
            let id = format!("s{i:03}");
            if i % 3 == 2 {
                start_decision(&ping, &id, serde_json::json!({}), at, None)
            } else {
                start_decision(&order, &id, order_input("u"), at, None)
            }
        })
        .collect();
    let mut expected: Vec<(i64, String, String)> = starts
        .iter()
        .map(|d| {
            (
                d.state.created_at,
                d.saga_id.0.clone(),
                d.state.definition.clone(),
            )
        })
        .collect();
    expected.sort();
    expected.reverse();
    commit_all(&*store, starts, "pagination fixtures").await;

    let first_page = list(&*store, SagaFilter::default()).await;
    assert_eq!(first_page.len(), 100, "limit 0 means 100");

    for definition in [None, Some("order")] {
        let want: Vec<String> = expected
            .iter()
            .filter(|e| definition.is_none_or(|d| d == e.2))
            .map(|e| e.1.clone())
            .collect();
        let mut got: Vec<String> = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .list(&SagaFilter {
                    definition: definition.map(str::to_string),
                    before: before.clone(),
                    limit: 7,
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("list failed: {e}"));
            assert!(page.len() <= 7, "a page never exceeds the limit");
            let Some(last) = page.last() else { break };
            before = Some((last.created_at, last.saga_id.clone()));
            got.extend(ids(&page));
            assert!(got.len() <= N, "paging does not terminate (repeats?)");
        }
        assert_eq!(
            got, want,
            "paging (definition {definition:?}) visits every saga once, newest first"
        );
    }
}

/// `versions_in_flight` counts unfinished sagas per definition and version.
pub async fn versions_in_flight_counts_unfinished(store: Arc<dyn Store>) {
    let order1 = order_definition(1);
    let order2 = order_definition(2);
    let ping = ping_definition();
    let a = start_decision(&order1, "a", order_input("u1"), T0, None);
    let b = start_decision(&order1, "b", order_input("u1"), T0, None);
    let b1 = next_decision(
        &order1,
        &b.state,
        &action_reply(0, 1, Outcome::park("approved")),
        T0 + 1,
    );
    let c = start_decision(&order2, "c", order_input("u1"), T0, None);
    let p = start_decision(&ping, "p", serde_json::json!({}), T0, None);
    let p1 = next_decision(&ping, &p.state, &succeeded(0, 1), T0 + 1);
    let q = start_decision(&ping, "q", serde_json::json!({}), T0, None);
    let r = start_decision(&ping, "r", serde_json::json!({}), T0, None);
    let r1 = next_decision(&ping, &r.state, &succeeded(0, 1), T0 + 1);
    commit_all(&*store, vec![a, b, c, p, q, r], "versions fixtures: starts").await;
    commit_all(&*store, vec![b1, p1, r1], "versions fixtures: replies").await;
    let mut got = store
        .versions_in_flight()
        .await
        .unwrap_or_else(|e| panic!("versions_in_flight failed: {e}"));
    got.sort();
    assert_eq!(
        got,
        vec![
            ("order".to_string(), 1, 2),
            ("order".to_string(), 2, 1),
            ("ping".to_string(), 1, 1),
        ],
        "running and waiting sagas count, completed ones do not"
    );
}

/// `waiting_by_correlation` finds the Waiting sagas with that correlation key value, only.
pub async fn waiting_by_correlation_finds_parked_sagas(store: Arc<dyn Store>) {
    let def = order_definition(1);
    let park = action_reply(0, 1, Outcome::park("approved"));
    let (mut starts, mut parks) = (Vec::new(), Vec::new());
    for (id, user, parked) in [
        ("w1", "u1", true),
        ("w2", "u1", false),
        ("w3", "u2", true),
        ("w4", "u1", true),
    ] {
        let d = start_decision(&def, id, order_input(user), T0, None);
        if parked {
            parks.push(next_decision(&def, &d.state, &park, T0 + 1));
        }
        starts.push(d);
    }
    commit_all(&*store, starts, "correlation fixtures: starts").await;
    commit_all(&*store, parks, "correlation fixtures: parks").await;
    let waiting = |key: &'static str| {
        let store = store.clone();
        async move {
            let mut found = store
                .waiting_by_correlation(key)
                .await
                .unwrap_or_else(|e| panic!("waiting_by_correlation({key}) failed: {e}"));
            found.sort();
            found
        }
    };
    assert_eq!(
        waiting("u1").await,
        vec![SagaId::from("w1"), SagaId::from("w4")],
        "only the waiting sagas with this key (w2 runs)"
    );
    assert_eq!(waiting("u2").await, vec![SagaId::from("w3")]);
    assert_eq!(waiting("u9").await, Vec::<SagaId>::new());
}

/// Dead letters keep raw bodies (not even UTF-8), list oldest first, and `take` removes them.
pub async fn dead_letters_put_list_take(store: Arc<dyn Store>) {
    let letters: [(&str, &[u8], &str, u32); 3] = [
        (
            "sagaflow.replies",
            b"not json \xff\xfe",
            "malformed envelope",
            1,
        ),
        (
            "sagaflow.commands.billing",
            b"{}",
            "handler kept failing",
            5,
        ),
        ("blog.published", b"", "empty body", 0),
    ];
    let mut ids = Vec::new();
    for (i, (topic, body, reason, attempts)) in letters.iter().enumerate() {
        let id = store
            .put_dead_letter(topic, body, reason, *attempts, T0 + i as i64)
            .await
            .unwrap_or_else(|e| panic!("put_dead_letter failed: {e}"));
        ids.push(id);
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "dead-letter ids increase: {ids:?}"
    );
    let all = store
        .dead_letters(0, 10)
        .await
        .unwrap_or_else(|e| panic!("dead_letters failed: {e}"));
    assert_eq!(all.len(), 3);
    for ((dl, id), (i, (topic, body, reason, attempts))) in
        all.iter().zip(&ids).zip(letters.iter().enumerate())
    {
        assert_eq!(dl.id, *id);
        assert_eq!(
            (dl.topic.as_str(), dl.body.as_slice(), dl.reason.as_str()),
            (*topic, *body, *reason),
            "a dead letter comes back exactly, raw body included"
        );
        assert_eq!((dl.attempts, dl.created_at), (*attempts, T0 + i as i64));
    }
    let two = store
        .dead_letters(0, 2)
        .await
        .unwrap_or_else(|e| panic!("dead_letters failed: {e}"));
    assert_eq!(two, all[..2].to_vec(), "the limit keeps the oldest");
    let next = store
        .dead_letters(two[1].id, 2)
        .await
        .unwrap_or_else(|e| panic!("dead_letters failed: {e}"));
    assert_eq!(
        next,
        all[2..].to_vec(),
        "the next page starts after the last id seen"
    );
    let past = store
        .dead_letters(ids[2], 2)
        .await
        .unwrap_or_else(|e| panic!("dead_letters failed: {e}"));
    assert!(past.is_empty(), "nothing after the newest");
    let taken = store
        .take_dead_letter(ids[1])
        .await
        .unwrap_or_else(|e| panic!("take_dead_letter failed: {e}"));
    assert_eq!(taken.as_ref(), Some(&all[1]), "take returns the letter");
    let again = store
        .take_dead_letter(ids[1])
        .await
        .unwrap_or_else(|e| panic!("take_dead_letter failed: {e}"));
    assert_eq!(again, None, "a taken letter is gone");
    let rest = store
        .dead_letters(0, 10)
        .await
        .unwrap_or_else(|e| panic!("dead_letters failed: {e}"));
    assert_eq!(rest, vec![all[0].clone(), all[2].clone()]);
    let unknown = store
        .take_dead_letter(ids[2] + 1_000)
        .await
        .unwrap_or_else(|e| panic!("take_dead_letter failed: {e}"));
    assert_eq!(unknown, None, "taking an unknown id gives nothing");
}

/// `stale` lists unfinished sagas untouched since a time, the longest untouched first;
/// `activity` counts starts and ends per window.
pub async fn stale_and_activity_describe_the_recent_past(store: Arc<dyn Store>) {
    let order = order_definition(1);
    let ping = ping_definition();
    let a = start_decision(&order, "a", order_input("u1"), T0, None);
    let b = start_decision(&order, "b", order_input("u1"), T0, None);
    let b1 = next_decision(
        &order,
        &b.state,
        &action_reply(0, 1, Outcome::park("approved")),
        T0 + 1,
    );
    let c = start_decision(&order, "c", order_input("u1"), T0 + 120_000, None);
    let p = start_decision(&ping, "p", serde_json::json!({}), T0, None);
    let p1 = next_decision(&ping, &p.state, &succeeded(0, 1), T0 + 1);
    commit_all(&*store, vec![a, b, c, p], "stale fixtures: starts").await;
    commit_all(&*store, vec![b1, p1], "stale fixtures: replies").await;
    let stale = |before: i64, limit: usize| {
        let store = store.clone();
        async move {
            ids(&store
                .stale(before, limit)
                .await
                .unwrap_or_else(|e| panic!("stale failed: {e}")))
        }
    };
    assert_eq!(
        stale(T0 + 60_000, 10).await,
        ["a", "b"],
        "oldest first; ended and recent left out"
    );
    assert_eq!(stale(T0 + 1, 10).await, ["a"], "b was touched at T0 + 1");
    assert_eq!(stale(T0 + 60_000, 1).await, ["a"], "the limit holds");
    let activity = store
        .activity(T0, 60_000)
        .await
        .unwrap_or_else(|e| panic!("activity failed: {e}"));
    assert_eq!(
        activity,
        vec![(T0, 3, 1), (T0 + 120_000, 1, 0)],
        "a, b and p started in the first minute and p ended; c started two minutes later"
    );
    assert!(store
        .activity(T0 + 600_000, 60_000)
        .await
        .unwrap()
        .is_empty());
}
