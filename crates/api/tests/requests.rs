//! Bad requests: each kind gets its status and stable problem code, and a detail a person can
//! act on; unknown routes and methods are problems too; the request id is echoed on errors.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use sagaflow_api::ApiConfig;
use serde_json::json;
use support::{raw_request, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_the_right_status_and_code() {
    let api = Api::start().await;
    let json = Some("application/json");
    let cases = [
        (
            json,
            "{\"definition\": \"order\",",
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "line 1",
        ),
        (json, "", StatusCode::BAD_REQUEST, "malformed_json", "empty"),
        (
            json,
            r#"{"definition": "order", "input": {}} trailing"#,
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "trailing",
        ),
        (
            json,
            r#"{"definition": "order", "input": {}, "colour": "red"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_field",
            "colour",
        ),
        (
            json,
            r#"{"definition": "order"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
            "input",
        ),
        (
            json,
            r#"{"definition": 7, "input": {}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_type",
            "definition",
        ),
        (
            json,
            r#"{"definition": "order", "version": -1, "input": {}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_type",
            "version",
        ),
        (
            Some("text/plain"),
            r#"{"definition": "order", "input": {}}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "text/plain",
        ),
        (
            None,
            r#"{"definition": "order", "input": {}}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
    ];
    for (content_type, body, status, code, mentions) in cases {
        let reply = api
            .send(raw_request(
                Method::POST,
                "/api/v1/sagas",
                content_type,
                body,
            ))
            .await;
        assert_eq!(reply.status, status, "{body}: {reply:?}");
        assert_eq!(reply.code(), code, "{body}");
        assert!(reply.detail().contains(mentions), "{body}: {reply:?}");
        assert_eq!(reply.body["type"], format!("urn:sagaflow:problem:{code}"));
        assert!(reply.body["title"].as_str().is_some_and(|t| !t.is_empty()));
    }
    // A JSON media type with parameters or a +json suffix is JSON.
    for ct in [
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ] {
        let reply = api
            .send(raw_request(
                Method::POST,
                "/api/v1/sagas",
                Some(ct),
                r#"{"definition": "order", "input": {}}"#,
            ))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{ct}: {reply:?}");
    }
    // Each JSON endpoint refuses the same way.
    for uri in [
        "/api/v1/signals",
        "/api/v1/definitions",
        "/api/v1/sagas/x/cancel",
    ] {
        let reply = api
            .send(raw_request(Method::POST, uri, json, "{nope"))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(reply.code(), "malformed_json", "{uri}");
    }
    let reply = api
        .send(raw_request(
            Method::POST,
            "/api/v1/sagas/x/cancel",
            json,
            r#"{"reason": "x", "force": true}"#,
        ))
        .await;
    assert_eq!(reply.code(), "unknown_field");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_body_is_413() {
    let api = Api::with_config(ApiConfig {
        body_limit_bytes: 64,
        ..ApiConfig::default()
    })
    .await;
    let big = json!({"definition": "order", "input": {"pad": "x".repeat(200)}}).to_string();
    let reply = api
        .send(raw_request(
            Method::POST,
            "/api/v1/sagas",
            Some("application/json"),
            &big,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "body_too_large");
    // Under the limit is fine.
    let small = api
        .post("/api/v1/sagas", json!({"definition": "order", "input": {}}))
        .await;
    assert_eq!(small.status, StatusCode::ACCEPTED, "{small:?}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_problems_and_echo_the_request_id() {
    let api = Api::start().await;
    let reply = api
        .send(
            Request::get("/api/v1/nothing-here")
                .header("x-request-id", "trace-me")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
    assert_eq!(reply.headers["x-request-id"], "trace-me");

    let reply = api.delete("/api/v1/sagas").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.code(), "method_not_allowed");
    let allow = reply.headers.get("allow").and_then(|v| v.to_str().ok());
    assert!(
        allow.is_some_and(|a| a.contains("POST") && a.contains("GET")),
        "{reply:?}"
    );
    assert!(reply.headers.contains_key("x-request-id"));

    let reply = api.get("/api/v1/sagas/x/cancel").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.code(), "method_not_allowed");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_idempotency_key_is_400() {
    let api = Api::start().await;
    let reply = api
        .send(
            Request::post("/api/v1/sagas")
                .header("content-type", "application/json")
                .header("idempotency-key", "k".repeat(300))
                .body(Body::from(r#"{"definition": "order", "input": {}}"#))
                .expect("request"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "bad_header");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_engine_answers_503_shutting_down() {
    let api = Api::start().await;
    api.engine.shutdown().await;
    let reply = api
        .post("/api/v1/sagas", json!({"definition": "order", "input": {}}))
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.code(), "shutting_down");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_gets_a_500_or_a_non_json_answer() {
    let api = Api::start().await;
    let deep = "[".repeat(10_000);
    let bodies = [
        deep.as_str(),
        r#"{"definition": "order", "input": 1e999}"#,
        r#"{"definition": "order", "version": 99999999999, "input": null}"#,
        "\u{0}\u{1}",
        r#"{"name": "", "saga_id": "x"}"#,
        r#"{"name": "n", "version": 1, "steps": [{"name": "s", "kind": "sideways", "action": "a.b"}]}"#,
        r#"[]"#,
        r#""just a string""#,
    ];
    let uris = [
        "/api/v1/sagas",
        "/api/v1/signals",
        "/api/v1/definitions",
        "/api/v1/sagas/%E2%82%AC%20x/cancel",
        "/api/v1/sagas/%FF/resume",
        "/api/v1/dead-letters/99999999999999999999/replay",
    ];
    for uri in uris {
        for body in bodies {
            let reply = api
                .send(raw_request(
                    Method::POST,
                    uri,
                    Some("application/json"),
                    body,
                ))
                .await;
            assert!(
                reply.status.is_client_error(),
                "POST {uri} {body:.40}: {reply:?}"
            );
            assert!(!reply.code().is_empty());
        }
    }
    for uri in [
        "/api/v1/sagas/%FF",
        "/api/v1/sagas/%2e%2e%2f%2e%2e",
        "/api/v1/sagas?limit=%FF",
        "/api/v1/sagas?status=running&status=failed",
        "/api/v1/definitions/%00",
    ] {
        let reply = api.get(uri).await;
        assert!(reply.status.is_client_error(), "GET {uri}: {reply:?}");
        assert!(!reply.code().is_empty());
    }
    api.stop().await;
}

/// A NUL character in a path, a query or any JSON string is a 400 `nul_character` on every
/// store (PostgreSQL would refuse it deep in a query, as a 503), and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_anywhere_is_400() {
    let api = Api::start().await;
    for (method, uri, body) in [
        (Method::GET, "/api/v1/sagas/a%00b", None),
        (Method::POST, "/api/v1/sagas/a%00b/cancel", None),
        (Method::GET, "/api/v1/sagas?definition=a%00b", None),
        (
            Method::POST,
            "/api/v1/sagas",
            Some(r#"{"definition": "order", "input": {"note": "a\u0000b"}}"#),
        ),
        (
            Method::POST,
            "/api/v1/signals",
            Some(r#"{"signal": "go", "saga_id": "x", "payload": {"k\u0000": 1}}"#),
        ),
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.unwrap_or_default()))
            .unwrap();
        let r = api.send(request).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {uri}: {r:?}");
        assert_eq!(r.code(), "nul_character", "{method} {uri}");
    }
    // A body that only mentions the escape, as text, is fine.
    let r = api
        .post(
            "/api/v1/sagas",
            json!({"definition": "order", "input": {"note": "\\u0000 is how JSON writes NUL"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    api.stop().await;
}

/// Cross-site request forgery and DNS rebinding: a browser's state-changing request from
/// another site is refused in every mode (bodiless POSTs and `text/plain` bodies too), a
/// server open on loopback answers only for loopback names, the dashboard is never framed,
/// and its key cookie is `Secure` behind TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_elsewhere_cannot_forge_requests_or_rebind_the_host() {
    let api = Api::with_config(ApiConfig {
        allowed_hosts: Some(
            sagaflow_api::LOOPBACK_HOSTS
                .iter()
                .map(|h| h.to_string())
                .collect(),
        ),
        ..ApiConfig::default()
    })
    .await;
    let id = api.start_order(json!({"park": "charge"})).await;
    api.wait_status(&id, "waiting").await;
    let request = |method: Method, uri: &str, headers: &[(&str, &str)], ct: Option<&str>| {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "127.0.0.1:8080");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        b.body(Body::from(if ct.is_some() {
            r#"{"definition": "order", "input": {}}"#
        } else {
            ""
        }))
        .unwrap()
    };
    let cancel = format!("/api/v1/sagas/{id}/cancel");
    for (uri, headers, ct) in [
        (
            cancel.as_str(),
            vec![("sec-fetch-site", "cross-site")],
            None,
        ),
        (
            cancel.as_str(),
            vec![("origin", "http://evil.example")],
            None,
        ),
        (
            "/api/v1/sagas",
            vec![("origin", "http://evil.example")],
            Some("text/plain"),
        ),
        (
            "/api/v1/sagas",
            vec![("sec-fetch-site", "same-site")],
            Some("application/json"),
        ),
    ] {
        let r = api.send(request(Method::POST, uri, &headers, ct)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri} {headers:?}: {r:?}");
        assert_eq!(r.code(), "cross_site");
    }
    let saga = api.get(&format!("/api/v1/sagas/{id}")).await;
    assert_eq!(
        saga.body["status"], "waiting",
        "the forged cancel did nothing"
    );
    // The same from this site's own pages, or from a client that is not a browser, works.
    let own = [
        ("sec-fetch-site", "same-origin"),
        ("origin", "http://127.0.0.1:8080"),
    ];
    let r = api
        .send(request(
            Method::POST,
            "/api/v1/sagas",
            &own,
            Some("application/json"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    let r = api.send(request(Method::POST, &cancel, &[], None)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");

    // DNS rebinding: a loopback server answers only for loopback names.
    let get = |host: &str| {
        Request::get("/api/v1/sagas")
            .header("host", host)
            .body(Body::empty())
            .unwrap()
    };
    let r = api.send(get("attacker.example:8080")).await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{r:?}");
    assert_eq!(r.code(), "unknown_host");
    for host in ["localhost:8080", "127.0.0.1", "[::1]:8080", "app.localhost"] {
        assert_eq!(api.send(get(host)).await.status, StatusCode::OK, "{host}");
    }

    // The dashboard is never framed; its key cookie is Secure behind a TLS proxy.
    let (_, headers, _) = api
        .send_raw(
            Request::get("/")
                .header("host", "localhost")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["content-security-policy"], "frame-ancestors 'none'");
    for (proto, secure) in [(None, false), (Some("https"), true)] {
        let mut b = Request::post("/ui/key")
            .header("host", "localhost")
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(p) = proto {
            b = b.header("x-forwarded-proto", p);
        }
        let (_, headers, _) = api
            .send_raw(b.body(Body::from("key=sfk_abc")).unwrap())
            .await;
        let cookie = headers["set-cookie"].to_str().unwrap();
        assert_eq!(cookie.contains("; Secure"), secure, "{proto:?}: {cookie}");
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_past_the_deadline_is_408_and_a_prompt_one_is_served() {
    let api = Api::with_config(ApiConfig {
        request_timeout: std::time::Duration::from_millis(300),
        ..ApiConfig::default()
    })
    .await;
    // The first bytes of a body, then nothing more: the handler waits for the rest.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(b"{\"definition\": ".to_vec())).await.unwrap();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let trickle = Request::post("/api/v1/sagas")
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap();
    let reply = api.send(trickle).await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT, "{reply:?}");
    assert_eq!(reply.code(), "request_timeout");
    assert!(reply.headers.contains_key("x-request-id"));
    drop(tx);
    let prompt = api
        .post("/api/v1/sagas", json!({"definition": "order", "input": {}}))
        .await;
    assert_eq!(prompt.status, StatusCode::ACCEPTED, "{prompt:?}");
    api.stop().await;
}
