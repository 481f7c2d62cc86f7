//! A service bound to an HTTP URL that keeps failing: its circuit opens, and both
//! `GET /api/v1/participants` and the dashboard's overview say so, with the reason.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sagaflow_api::ApiConfig;
use sagaflow_http::{HttpParticipants, HttpService};
use serde_json::json;
use support::Api;

/// A loopback URL nobody listens on: every call is refused.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

async fn overview(api: &Api) -> String {
    let (status, _, body) = api
        .send_raw(Request::get("/").body(Body::empty()).expect("request"))
        .await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(body).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_service_opens_its_circuit_and_operators_see_it() {
    let url = refused_url();
    let service = HttpService::new("ghost", &url)
        .and_then(|s| s.timeout_ms(2_000))
        .expect("a valid binding");
    let api = Api::with_transport(ApiConfig::default(), |bus| {
        Arc::new(HttpParticipants::new(bus, vec![service]).expect("participants"))
    })
    .await;
    let before = overview(&api).await;
    assert!(before.contains("HTTP participants"), "{before}");
    assert!(before.contains(&url), "{before}");

    let def = json!({
        "name": "haunted", "version": 1,
        "steps": [{"name": "hold", "kind": "compensatable", "action": "ghost.hold", "compensation": "ghost.unhold",
                   "retry": {"max_attempts": 50, "initial_delay_ms": 10, "max_delay_ms": 20}}]
    });
    let r = api.post("/api/v1/definitions", def).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = api
        .post(
            "/api/v1/sagas",
            json!({"definition": "haunted", "input": {}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");

    // Refused calls are retryable failures; five in a row open the circuit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let ghost = loop {
        let r = api.get("/api/v1/participants").await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let ghost = r.body[0].clone();
        if ghost["circuit"] == "open" {
            break ghost;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit never opened: {ghost}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ghost["service"], "ghost");
    assert_eq!(ghost["url"], url.as_str());
    assert!(ghost["failures"].as_u64().unwrap() >= 5, "{ghost}");
    assert!(
        ghost["consecutive_failures"].as_u64().unwrap() >= 5,
        "{ghost}"
    );
    let error = ghost["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("cannot call ghost at "), "{ghost}");

    // The page a moment later: the circuit is open, or its cool-down just ended and a
    // probe is deciding — never closed, since every call is refused.
    let page = overview(&api).await;
    assert!(
        page.contains("badge failed\">open<") || page.contains("badge compensating\">half_open<"),
        "{page}"
    );
    assert!(page.contains("cannot call ghost at "), "{page}");
    api.stop().await;
}
