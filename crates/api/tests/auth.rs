//! API keys: open without keys; with keys, 401 without or with an unknown key, 403 for a key
//! without the right, and the probes and the OpenAPI document always open.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use sagaflow_api::{hash_key, ApiConfig, ApiKey, Right, Rights};
use serde_json::{json, Value};
use support::{json_request, Api, Reply};
use tower::ServiceExt;

const OPS: &str = "sfk_ops-secret";
const READER: &str = "sfk_reader-secret";

fn keys() -> Vec<ApiKey> {
    vec![
        ApiKey {
            name: "ops".into(),
            sha256: hash_key(OPS),
            rights: [Right::Operate, Right::Read].into_iter().collect(),
        },
        ApiKey {
            name: "reader".into(),
            sha256: hash_key(READER),
            rights: Rights::NONE.with(Right::Read),
        },
    ]
}

async fn keyed(read_open: bool) -> Api {
    Api::with_config(ApiConfig {
        keys: keys(),
        read_open,
        ..ApiConfig::default()
    })
    .await
}

/// A request with these headers (and a JSON body when given).
async fn call(
    api: &Api,
    method: Method,
    uri: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = match body {
        Some(body) => json_request(method, uri, &body),
        None => Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("request"),
    };
    for (k, v) in headers {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    api.send(request).await
}

fn start_body() -> Value {
    json!({"definition": "order", "input": {"customer": "ada"}})
}

fn assert_unauthorized(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reply:?}");
    assert_eq!(reply.code(), "unauthorized");
    let challenge = reply
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{reply:?}");
    assert!(
        reply.headers.contains_key("x-request-id"),
        "refusals carry the request id too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_everything_is_open() {
    let api = Api::start().await;
    let id = api.start_order(json!({"customer": "ada"})).await;
    let reply = api.get(&format!("/api/v1/sagas/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = api.get("/api/v1/definitions").await;
    assert_eq!(reply.status, StatusCode::OK);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operating_needs_a_known_key_with_operate() {
    let api = keyed(false).await;
    let reply = call(&api, Method::POST, "/api/v1/sagas", Some(start_body()), &[]).await;
    assert_unauthorized(&reply);
    assert!(
        reply.detail().contains("Authorization: Bearer") && reply.detail().contains("operate"),
        "{reply:?}"
    );
    for headers in [
        [("authorization", "Bearer sfk_wrong")],
        [("x-api-key", "sfk_wrong")],
    ] {
        let reply = call(
            &api,
            Method::POST,
            "/api/v1/sagas",
            Some(start_body()),
            &headers,
        )
        .await;
        assert_unauthorized(&reply);
        assert!(reply.detail().contains("not one this server knows"));
    }
    // Another scheme is not a bearer key.
    let basic = format!("Basic {OPS}");
    let reply = call(
        &api,
        Method::POST,
        "/api/v1/sagas",
        Some(start_body()),
        &[("authorization", &basic)],
    )
    .await;
    assert_unauthorized(&reply);

    // The operate key works through either header (the scheme's case does not matter).
    let bearer = format!("Bearer {OPS}");
    let reply = call(
        &api,
        Method::POST,
        "/api/v1/sagas",
        Some(start_body()),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    let first = reply.body["saga_id"].as_str().unwrap().to_string();
    let lower = format!("bearer {OPS}");
    let reply = call(
        &api,
        Method::POST,
        "/api/v1/sagas",
        Some(start_body()),
        &[("authorization", &lower)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    let parked = call(
        &api,
        Method::POST,
        "/api/v1/sagas",
        Some(json!({"definition": "order", "input": {"customer": "bo", "park": "reserve"}})),
        &[("x-api-key", OPS)],
    )
    .await;
    assert_eq!(parked.status, StatusCode::ACCEPTED, "{parked:?}");
    let parked = parked.body["saga_id"].as_str().unwrap().to_string();

    // A read-only key may not cancel: 403 naming the right.
    let cancel = format!("/api/v1/sagas/{parked}/cancel");
    let reply = call(&api, Method::POST, &cancel, None, &[("x-api-key", READER)]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    assert_eq!(reply.code(), "forbidden");
    assert!(
        reply.detail().contains("\"reader\"") && reply.detail().contains("`operate`"),
        "{reply:?}"
    );
    for (uri, method) in [
        ("/api/v1/signals", Method::POST),
        ("/api/v1/definitions", Method::POST),
        ("/api/v1/dead-letters/x/replay", Method::POST),
        ("/api/v1/dead-letters/x", Method::DELETE),
        (
            &format!("/api/v1/sagas/{parked}/resume") as &str,
            Method::POST,
        ),
    ] {
        let reply = call(&api, method.clone(), uri, None, &[("x-api-key", READER)]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {uri}");
        let reply = call(&api, method.clone(), uri, None, &[]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }

    // The reader reads; the operator cancels.
    let show = format!("/api/v1/sagas/{first}");
    let reply = call(&api, Method::GET, &show, None, &[("x-api-key", READER)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let reply = call(
        &api,
        Method::GET,
        &show,
        None,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let waiting = format!("/api/v1/sagas/{parked}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reply = call(&api, Method::GET, &waiting, None, &[("x-api-key", OPS)]).await;
        if reply.body["status"] == "waiting" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{reply:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let reply = call(
        &api,
        Method::POST,
        &cancel,
        None,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_needs_read_unless_read_open() {
    let operate_only = "sfk_operate-only";
    let mut keys = keys();
    keys.push(ApiKey {
        name: "deployer".into(),
        sha256: hash_key(operate_only),
        rights: Rights::NONE.with(Right::Operate),
    });
    let api = Api::with_config(ApiConfig {
        keys,
        ..ApiConfig::default()
    })
    .await;
    for uri in [
        "/api/v1/sagas",
        "/api/v1/definitions",
        "/api/v1/dead-letters",
    ] {
        assert_unauthorized(&api.get(uri).await);
        let reply = call(&api, Method::GET, uri, None, &[("x-api-key", READER)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
    }
    let reply = call(
        &api,
        Method::GET,
        "/api/v1/sagas",
        None,
        &[("x-api-key", operate_only)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.detail().contains("`read`"), "{reply:?}");
    // Unknown paths say nothing to strangers either.
    assert_unauthorized(&api.get("/api/v1/nothing-here").await);
    api.stop().await;

    let api = keyed(true).await;
    for uri in [
        "/api/v1/sagas",
        "/api/v1/definitions",
        "/api/v1/dead-letters",
    ] {
        assert_eq!(api.get(uri).await.status, StatusCode::OK, "{uri}");
    }
    // Reading is open; operating is not.
    let reply = call(&api, Method::POST, "/api/v1/sagas", Some(start_body()), &[]).await;
    assert_unauthorized(&reply);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_metrics_and_the_document_are_always_open() {
    let api = keyed(false).await;
    // Through the router directly: /metrics and the UI are not JSON.
    for uri in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/docs",
    ] {
        let response = api
            .app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
    }
    // Even with a wrong key: the open paths do not look at it.
    let reply = call(
        &api,
        Method::GET,
        "/healthz",
        None,
        &[("x-api-key", "sfk_wrong")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    api.stop().await;
}

#[test]
fn the_document_describes_the_keys() {
    let doc = serde_json::to_value(sagaflow_api::openapi()).expect("json");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    let cancel = &doc["paths"]["/api/v1/sagas/{id}/cancel"]["post"];
    assert_eq!(cancel["security"], json!([{"bearer": []}, {"api_key": []}]));
    assert!(cancel["responses"]["401"].is_object());
    assert!(cancel["responses"]["403"].is_object());
    // Reading may be left open, hence the empty alternative.
    let list = &doc["paths"]["/api/v1/sagas"]["get"];
    assert_eq!(
        list["security"],
        json!([{"bearer": []}, {"api_key": []}, {}])
    );
    for open in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        assert!(doc["paths"][open]["get"]["security"].is_null(), "{open}");
    }
}
