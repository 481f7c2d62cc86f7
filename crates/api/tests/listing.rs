//! `GET /api/v1/sagas`: newest first, filters, and cursor pagination that returns every saga
//! exactly once; each bad filter value is a 400 naming its parameter.

mod support;

use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::json;
use support::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_return_every_saga_exactly_once_newest_first() {
    let api = Api::start().await;
    let mut started = Vec::new();
    for i in 0..7 {
        let customer = if i % 2 == 0 { "even" } else { "odd" };
        started.push(api.start_order(json!({"customer": customer})).await);
    }
    for id in &started {
        api.wait_status(id, "completed").await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            None => "/api/v1/sagas?limit=3".to_string(),
            Some(c) => format!("/api/v1/sagas?limit=3&cursor={c}"),
        };
        let reply = api.get(&uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        pages += 1;
        let items = reply.body["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|s| {
            (
                sagaflow_api::parse_utc(s["created_at"].as_str().unwrap_or_default())
                    .expect("created_at is RFC 3339"),
                s["saga_id"].as_str().unwrap_or_default().to_string(),
            )
        }));
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    let ids: Vec<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 7);
    assert_eq!(unique, started.iter().map(String::as_str).collect());
    // Newest first: (created_at, id) never increases.
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "{seen:?}");

    let odd = api.get("/api/v1/sagas?correlation_id=odd").await;
    assert_eq!(odd.body["items"].as_array().map(Vec::len), Some(3));
    let done = api
        .get("/api/v1/sagas?status=completed&definition=order&limit=500")
        .await;
    assert_eq!(done.body["items"].as_array().map(Vec::len), Some(7));
    assert_eq!(done.body["next_cursor"], json!(null));
    let none = api.get("/api/v1/sagas?status=failed").await;
    assert_eq!(none.body["items"], json!([]));
    let other = api.get("/api/v1/sagas?definition=other").await;
    assert_eq!(other.body["items"], json!([]));

    let first = seen.last().map(|(at, _)| *at).unwrap_or_default();
    let last = seen.first().map(|(at, _)| *at).unwrap_or_default();
    let after = api
        .get(&format!(
            "/api/v1/sagas?created_after={}&created_before={}",
            sagaflow_api::rfc3339(first),
            sagaflow_api::rfc3339(last + 1)
        ))
        .await;
    assert_eq!(after.body["items"].as_array().map(Vec::len), Some(7));
    let before = api
        .get(&format!(
            "/api/v1/sagas?created_before={}",
            sagaflow_api::rfc3339(first)
        ))
        .await;
    assert_eq!(before.body["items"], json!([]));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_filter_is_400_naming_the_parameter() {
    let api = Api::start().await;
    for (query, parameter) in [
        ("status=sleeping", "status"),
        ("created_after=yesterday", "created_after"),
        ("created_before=1.5", "created_before"),
        ("created_before=0", "created_before"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=many", "limit"),
        ("cursor=garbage", "cursor"),
        ("cursor=12_", "cursor"),
        ("colour=red", "colour"),
    ] {
        let reply = api.get(&format!("/api/v1/sagas?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.code(), "bad_filter", "{query}");
        assert!(reply.detail().contains(parameter), "{query}: {reply:?}");
    }
    api.stop().await;
}
