//! Signals, definitions, dead letters and health, through the router on a real engine.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use sagaflow_engine::core::{Transport, REPLY_TOPIC};
use serde_json::{json, Value};
use support::{order, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_need_exactly_one_target_and_refusals_are_409() {
    let api = Api::start().await;
    for body in [
        json!({"name": "go"}),
        json!({"name": "go", "saga_id": "a", "correlation_key": "b"}),
    ] {
        let reply = api.post("/api/v1/signals", body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.code(), "bad_signal_target");
    }
    let reply = api
        .post("/api/v1/signals", json!({"name": "go", "saga_id": "nope"}))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "saga_not_found");
    let reply = api
        .post("/api/v1/signals", json!({"saga_id": "nope"}))
        .await;
    assert_eq!(reply.code(), "missing_field");

    let parked = api.start_order(json!({"park": "reserve"})).await;
    api.wait_status(&parked, "waiting").await;
    let reply = api
        .post(
            "/api/v1/signals",
            json!({"name": "stop", "saga_id": parked}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "other_signal");
    let reply = api
        .post(
            "/api/v1/signals",
            json!({"name": "go", "saga_id": parked, "payload": true}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    assert_eq!(reply.body["reached"], json!([parked]));
    api.wait_status(&parked, "completed").await;
    let reply = api
        .post("/api/v1/signals", json!({"name": "go", "saga_id": parked}))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "not_waiting");
    api.stop().await;
}

fn payment(version: u32, retries: u32) -> Value {
    json!({
        "name": "payment",
        "version": version,
        "steps": [
            {"name": "hold", "kind": "compensatable", "action": "bank.hold", "compensation": "bank.release",
             "retry": {"max_attempts": retries}},
            {"name": "settle", "kind": "pivot", "action": "bank.settle"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_are_listed_registered_and_refused_with_reasons() {
    let api = Api::start().await;
    let all = api.get("/api/v1/definitions").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        all.body,
        json!([serde_json::to_value(order()).expect("json")])
    );
    let one = api.get("/api/v1/definitions/order").await;
    assert_eq!(one.body[0]["name"], "order");
    assert_eq!(one.body[0]["steps"][2]["kind"], "pivot");
    let missing = api.get("/api/v1/definitions/payment").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "definition_not_found");

    let created = api.post("/api/v1/definitions", payment(1, 3)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(created.body["name"], "payment");
    assert_eq!(created.body["steps"][0]["retry"]["max_attempts"], 3);
    let again = api.post("/api/v1/definitions", payment(1, 3)).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    let conflict = api.post("/api/v1/definitions", payment(1, 5)).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.code(), "definition_conflict");
    let v2 = api.post("/api/v1/definitions", payment(2, 5)).await;
    assert_eq!(v2.status, StatusCode::CREATED);
    let versions = api.get("/api/v1/definitions/payment").await;
    let numbers: Vec<u64> = versions
        .body
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|d| d["version"].as_u64())
        .collect();
    assert_eq!(numbers, [1, 2]);

    let mut invalid = payment(3, 3);
    invalid["steps"][0]["compensation"] = Value::Null;
    let reply = api.post("/api/v1/definitions", invalid).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_definition");
    assert!(
        reply.detail().contains("\"hold\"") && reply.detail().contains("needs a compensation"),
        "{reply:?}"
    );
    let mut bad_subject = payment(3, 3);
    bad_subject["steps"][1]["action"] = json!("settle");
    let reply = api.post("/api/v1/definitions", bad_subject).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.detail().contains("steps[1].action"), "{reply:?}");
    let mut unknown = payment(3, 3);
    unknown["owner"] = json!("me");
    let reply = api.post("/api/v1/definitions", unknown).await;
    assert_eq!(reply.code(), "unknown_field");
    // A registered definition can be started at once.
    let started = api
        .post(
            "/api/v1/sagas",
            json!({"definition": "payment", "version": 2, "input": {}}),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{started:?}");
    api.stop().await;
}

/// Polls `GET /dead-letters` until `done` holds (deadline 10 s).
async fn wait_letters(api: &Api, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = api.get("/api/v1/dead-letters").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        let letters = reply.body.as_array().cloned().unwrap_or_default();
        if done(&letters) {
            return letters;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead letters never became {what}: {letters:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_and_discarded() {
    let api = Api::start().await;
    api.bus
        .publish(REPLY_TOPIC, "bad-1", b"this is no reply".to_vec())
        .await
        .expect("publish");
    api.bus
        .publish(REPLY_TOPIC, "bad-2", vec![0xff, 0xfe, b'x'])
        .await
        .expect("publish");
    let letters = wait_letters(&api, "two", |l| l.len() == 2).await;
    let text = letters
        .iter()
        .find(|l| l["body"] == "this is no reply")
        .expect("the text letter");
    assert_eq!(text["topic"], REPLY_TOPIC);
    assert_eq!(text["body_utf8"], true);
    assert!(text["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(text["attempts"].as_u64().is_some_and(|a| a >= 1));
    let binary = letters
        .iter()
        .find(|l| l["body_utf8"] == false)
        .expect("the binary letter");
    assert!(binary["body"].as_str().is_some_and(|b| b.ends_with('x')));

    let limited = api.get("/api/v1/dead-letters?limit=1").await;
    assert_eq!(limited.body.as_array().map(Vec::len), Some(1));
    // Page by page: the next one starts after the last id seen, and an empty one ends it.
    let first = limited.body[0]["id"].as_i64().expect("id");
    let second = api
        .get(&format!("/api/v1/dead-letters?limit=1&after={first}"))
        .await;
    assert_eq!(second.body.as_array().map(Vec::len), Some(1));
    assert!(second.body[0]["id"].as_i64().expect("id") > first);
    assert_eq!(
        json!([limited.body[0], second.body[0]]),
        api.get("/api/v1/dead-letters").await.body
    );
    let last = second.body[0]["id"].as_i64().expect("id");
    let end = api.get(&format!("/api/v1/dead-letters?after={last}")).await;
    assert_eq!(end.body, json!([]));
    for query in [
        "limit=0",
        "limit=x",
        "limit=1001",
        "topic=a",
        "after=-1",
        "after=x",
    ] {
        let reply = api.get(&format!("/api/v1/dead-letters?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.code(), "bad_filter", "{query}");
    }

    // Replayed garbage is garbage again: it comes back as a new dead letter.
    let text_id = text["id"].as_i64().expect("id");
    let replayed = api
        .post_empty(&format!("/api/v1/dead-letters/{text_id}/replay"))
        .await;
    assert_eq!(replayed.status, StatusCode::ACCEPTED, "{replayed:?}");
    assert_eq!(replayed.body["id"], text_id);
    let letters = wait_letters(&api, "replayed", |l| {
        l.len() == 2
            && l.iter()
                .any(|x| x["body"] == "this is no reply" && x["id"] != text_id)
    })
    .await;
    for letter in &letters {
        let id = letter["id"].as_i64().expect("id");
        let reply = api.delete(&format!("/api/v1/dead-letters/{id}")).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(reply.body, Value::Null);
    }
    assert_eq!(api.get("/api/v1/dead-letters").await.body, json!([]));
    for uri in [
        format!("/api/v1/dead-letters/{text_id}"),
        "/api/v1/dead-letters/not-a-number".to_string(),
    ] {
        let reply = api.delete(&uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.code(), "dead_letter_not_found");
    }
    let reply = api
        .post_empty(&format!("/api/v1/dead-letters/{text_id}/replay"))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "dead_letter_not_found");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let api = Api::start().await;
    let health = api.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, json!({"status": "ok"}));
    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ready");
    // A stopping engine is not ready: a load balancer should send new work elsewhere.
    api.engine.shutdown().await;
    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.code(), "shutting_down");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_that_counts_sagas() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let api = Api::start().await;
    let started = api
        .post("/api/v1/sagas", json!({"definition": "order", "input": {}}))
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.body["saga_id"].as_str().unwrap().to_string();
    api.wait_status(&id, "completed").await;
    let response = api
        .app
        .clone()
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for line in [
        "sagaflow_sagas_started_total{definition=\"order\"} 1",
        "sagaflow_sagas_ended_total{definition=\"order\",status=\"completed\"} 1",
        "sagaflow_sagas{definition=\"order\",status=\"completed\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    api.stop().await;
}
