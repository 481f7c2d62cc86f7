//! `/api/v1/sagas`: start, show, list, history, journal, cancel and resume, on a real engine.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use sagaflow_engine::core::SagaId;
use serde_json::json;
use support::{json_request, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_saga_completes_and_records_the_request_id_and_trace() {
    let api = Api::start().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = json_request(
        Method::POST,
        "/api/v1/sagas",
        &json!({"definition": "order", "input": {"customer": "ann"}}),
    );
    request
        .headers_mut()
        .insert("x-request-id", "req-42".parse().expect("header"));
    request
        .headers_mut()
        .insert("traceparent", traceparent.parse().expect("header"));
    let reply = api.send(request).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    assert_eq!(reply.headers["x-request-id"], "req-42");
    assert_eq!(reply.body["status"], "running");
    assert_eq!(reply.body["created"], true);
    let id = reply.body["saga_id"].as_str().expect("id").to_string();

    let saga = api.wait_status(&id, "completed").await;
    assert_eq!(saga["definition"], "order");
    assert_eq!(saga["version"], 1);
    assert_eq!(saga["correlation_key"], "ann");
    assert_eq!(saga["current_step"], json!(null));
    assert_eq!(saga["context"]["notify_action"], true);
    assert_eq!(saga["request_id"], "req-42");
    let rfc3339 = |v: &serde_json::Value| {
        v.as_str()
            .and_then(sagaflow_api::parse_utc)
            .map(sagaflow_api::rfc3339)
            == v.as_str().map(str::to_string)
    };
    assert!(rfc3339(&saga["ended_at"]), "{saga}");
    assert!(rfc3339(&saga["created_at"]) && rfc3339(&saga["updated_at"]));
    let state = api
        .engine
        .saga(&SagaId(id.clone()))
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(state.request_id.as_deref(), Some("req-42"));
    assert_eq!(state.traceparent.as_deref(), Some(traceparent));

    let history = api.get(&format!("/api/v1/sagas/{id}/history")).await;
    assert_eq!(history.status, StatusCode::OK);
    assert_eq!(history.body["saga_id"], id.as_str());
    let history = &history.body["history"];
    let steps: Vec<(&str, &str, &str)> = history
        .as_array()
        .expect("array")
        .iter()
        .map(|a| {
            (
                a["step_name"].as_str().unwrap_or_default(),
                a["kind"].as_str().unwrap_or_default(),
                a["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("reserve", "action", "succeeded"),
            ("charge", "action", "succeeded"),
            ("ship", "action", "succeeded"),
            ("notify", "action", "succeeded"),
        ]
    );
    assert_eq!(history[0]["retry_attempt"], 0);
    assert!(rfc3339(&history[0]["completed_at"]) && rfc3339(&history[0]["started_at"]));

    let journal = api.get(&format!("/api/v1/sagas/{id}/journal")).await;
    assert_eq!(journal.status, StatusCode::OK);
    let entries = journal.body.as_array().expect("array");
    assert_eq!(entries[0]["event"]["type"], "started");
    assert!(rfc3339(&entries[0]["at"]), "{}", entries[0]);
    assert_eq!(entries[0]["event"]["request_id"], "req-42");
    assert_eq!(entries.last().expect("entries")["event"]["type"], "ended");
    let seqs: Vec<u64> = entries.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=entries.len() as u64).collect::<Vec<_>>());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_an_id_gets_a_generated_one_on_the_saga_and_the_response() {
    let api = Api::start().await;
    let reply = api
        .post(
            "/api/v1/sagas",
            json!({"definition": "order", "input": {}, "correlation_id": "explicit"}),
        )
        .await;
    let generated = reply.headers["x-request-id"].to_str().expect("ascii");
    assert!(uuid_like(generated), "{generated}");
    let id = reply.body["saga_id"].as_str().expect("id");
    let saga = api.get(&format!("/api/v1/sagas/{id}")).await;
    assert_eq!(saga.body["request_id"], generated);
    assert_eq!(saga.body["correlation_key"], "explicit");
    // A request id nobody could log safely is replaced, not echoed.
    let bad = api
        .send(
            Request::get("/healthz")
                .header("x-request-id", "x".repeat(500))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert!(uuid_like(
        bad.headers["x-request-id"].to_str().expect("ascii")
    ));
    api.stop().await;
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_returns_the_same_saga() {
    let api = Api::start().await;
    let start = || {
        let mut r = json_request(
            Method::POST,
            "/api/v1/sagas",
            &json!({"definition": "order", "version": 1, "input": {}}),
        );
        r.headers_mut()
            .insert("idempotency-key", "order-7".parse().expect("header"));
        r
    };
    let first = api.send(start()).await;
    let second = api.send(start()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(first.body["saga_id"], second.body["saga_id"]);
    assert_eq!(first.body["created"], true);
    assert_eq!(second.body["created"], false);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_an_unknown_definition_or_version_is_404() {
    let api = Api::start().await;
    for body in [
        json!({"definition": "nope", "input": {}}),
        json!({"definition": "order", "version": 9, "input": {}}),
    ] {
        let reply = api.post("/api/v1/sagas", body).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.code(), "definition_not_found");
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_step_compensates_and_history_shows_the_compensations() {
    let api = Api::start().await;
    let id = api.start_order(json!({"reject": "ship"})).await;
    let saga = api.wait_status(&id, "compensated").await;
    assert!(
        saga["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("ship says no"),
        "{saga}"
    );
    let history = api.get(&format!("/api/v1/sagas/{id}/history")).await;
    let rows: Vec<(String, String, String)> = history.body["history"]
        .as_array()
        .expect("array")
        .iter()
        .map(|a| {
            (
                a["step_name"].as_str().unwrap_or_default().to_string(),
                a["kind"].as_str().unwrap_or_default().to_string(),
                a["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected = [
        ("reserve", "action", "succeeded"),
        ("charge", "action", "succeeded"),
        ("ship", "action", "rejected"),
        ("charge", "compensation", "succeeded"),
        ("reserve", "compensation", "succeeded"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(rows, expected);
    assert!(history.body["history"][2]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("ship says no"));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_saga_signalled_by_correlation_key_completes() {
    let api = Api::start().await;
    let id = api
        .start_order(json!({"customer": "bea", "park": "charge"}))
        .await;
    let parked = api.wait_status(&id, "waiting").await;
    assert_eq!(parked["current_step"], "charge");
    let reply = api
        .post(
            "/api/v1/signals",
            json!({"name": "go", "correlation_key": "bea", "payload": {"go": true}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    assert_eq!(reply.body["reached"], json!([id]));
    let done = api.wait_status(&id, "completed").await;
    assert_eq!(done["context"]["go"], true);
    // Nobody else waits with that key now.
    let again = api
        .post(
            "/api/v1/signals",
            json!({"name": "go", "correlation_key": "bea"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["reached"], json!([]));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_parked_saga_compensates_it() {
    let api = Api::start().await;
    let id = api.start_order(json!({"park": "charge"})).await;
    api.wait_status(&id, "waiting").await;
    let reply = api
        .post(
            &format!("/api/v1/sagas/{id}/cancel"),
            json!({"reason": "customer changed their mind"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    assert_eq!(reply.body["saga_id"], id.as_str());
    assert_eq!(reply.body["status"], "compensating");
    let saga = api.wait_status(&id, "compensated").await;
    assert!(saga["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("changed their mind"));
    // Ended: cancelling again (with no body at all) is refused.
    let again = api.post_empty(&format!("/api/v1/sagas/{id}/cancel")).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "already_ended");
    api.stop().await;
}

/// Found by schemathesis: the document allows a JSON `null` cancel body (it is optional), so
/// `null` means "no body", not 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_cancel_body_is_the_same_as_none() {
    let api = Api::start().await;
    let id = api.start_order(json!({"park": "charge"})).await;
    api.wait_status(&id, "waiting").await;
    let reply = api
        .post(&format!("/api/v1/sagas/{id}/cancel"), json!(null))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    assert_eq!(reply.body["status"], "compensating");
    api.wait_status(&id, "compensated").await;
    // A body of another type is still refused.
    let wrong = api
        .post(&format!("/api/v1/sagas/{id}/cancel"), json!(5))
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY, "{wrong:?}");
    assert_eq!(wrong.code(), "wrong_type");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_the_pivot_is_409_and_resume_of_a_running_saga_is_409() {
    let api = Api::start().await;
    let id = api.start_order(json!({"park": "notify"})).await;
    api.wait_status(&id, "waiting").await;
    let reply = api.post_empty(&format!("/api/v1/sagas/{id}/cancel")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.code(), "pivot_passed");
    assert!(reply.detail().contains("ship"), "{reply:?}");

    // Resume of a waiting saga attempts the step again now: it parks again.
    let resumed = api.post_empty(&format!("/api/v1/sagas/{id}/resume")).await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{resumed:?}");
    assert_eq!(resumed.body["saga_id"], id.as_str());

    let done = api.start_order(json!({})).await;
    api.wait_status(&done, "completed").await;
    let nothing = api
        .post_empty(&format!("/api/v1/sagas/{done}/resume"))
        .await;
    assert_eq!(nothing.status, StatusCode::CONFLICT);
    assert!(
        ["nothing_to_resume", "already_ended"].contains(&nothing.code()),
        "{nothing:?}"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sagas_are_404_everywhere() {
    let api = Api::start().await;
    for uri in [
        "/api/v1/sagas/nope",
        "/api/v1/sagas/nope/history",
        "/api/v1/sagas/nope/journal",
    ] {
        let reply = api.get(uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.code(), "saga_not_found", "{uri}");
    }
    for uri in ["/api/v1/sagas/nope/cancel", "/api/v1/sagas/nope/resume"] {
        let reply = api.post_empty(uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.code(), "saga_not_found", "{uri}");
    }
    api.stop().await;
}
