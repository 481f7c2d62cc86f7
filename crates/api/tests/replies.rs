//! `POST /api/v1/replies`: a participant's answer by idempotency key, for one that has no
//! queue to answer on (an HTTP participant that said 202) — and the clear refusals for keys
//! that name nothing, or an attempt that no longer waits.

mod support;

use axum::http::StatusCode;
use serde_json::json;
use support::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_by_key_moves_the_saga_and_a_stale_one_is_refused() {
    let api = Api::start().await;
    // `ghost` has no participant: its commands wait for an answer from outside.
    let def = json!({
        "name": "ghostly", "version": 1,
        "steps": [
            {"name": "hold", "kind": "compensatable", "action": "ghost.hold", "compensation": "ghost.unhold"},
            {"name": "go", "kind": "pivot", "action": "ghost.go"}
        ]
    });
    let r = api.post("/api/v1/definitions", def).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = api
        .post(
            "/api/v1/sagas",
            json!({"definition": "ghostly", "input": {}}),
        )
        .await;
    let id = r.body["saga_id"].as_str().unwrap().to_string();

    let answer = |key: String, body: serde_json::Value| {
        let mut body = body;
        body["key"] = json!(key);
        body
    };
    let hold = format!("{id}:hold:1:action");
    let r = api
        .post(
            "/api/v1/replies",
            answer(
                hold.clone(),
                json!({"outcome": "succeeded", "output": {"held": 1}, "from_a_newer_sdk": true}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    assert_eq!(r.body["saga_id"], id.as_str());

    // The same answer again: that attempt no longer waits.
    let r = api
        .post(
            "/api/v1/replies",
            answer(hold.clone(), json!({"outcome": "succeeded"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert_eq!(r.code(), "not_awaited");
    assert!(r.detail().contains("already answered"), "{}", r.detail());

    for (key, says) in [
        (format!("{id}:nope:1:action"), "no step of this name"),
        (format!("{id}:go:7:action"), "never sent"),
        ("no-such-saga:go:1:action".to_string(), "no saga"),
        ("garbage".to_string(), "saga_id:step:attempt:phase"),
        (format!("{id}:go:1:sideways"), "phase"),
    ] {
        let r = api
            .post(
                "/api/v1/replies",
                answer(key.clone(), json!({"outcome": "succeeded"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{key}: {r:?}");
        assert_eq!(r.code(), "unknown_key");
        assert!(r.detail().contains(says), "{key}: {}", r.detail());
    }
    let go = format!("{id}:go:1:action");
    let r = api
        .post(
            "/api/v1/replies",
            answer(go.clone(), json!({"outcome": "rejected"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "a rejection needs a reason: {r:?}"
    );
    let r = api
        .post("/api/v1/replies", json!({"key": go, "outcome": "maybe"}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");

    let r = api
        .post(
            "/api/v1/replies",
            answer(
                go,
                json!({"outcome": "rejected", "reason": "out of couriers"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    api.wait_until(&id, "compensating", |s| s["status"] == "compensating")
        .await;
    let r = api
        .post(
            "/api/v1/replies",
            answer(
                format!("{id}:hold:1:compensation"),
                json!({"outcome": "succeeded"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    let saga = api.wait_status(&id, "compensated").await;
    assert_eq!(saga["context"]["held"], 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_participant_endpoints_on_a_plain_bus() {
    let api = Api::start().await;
    let r = api.get("/api/v1/participants").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!([]));
    api.stop().await;
}
