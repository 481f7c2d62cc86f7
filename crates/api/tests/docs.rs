//! Swagger UI at `/api/docs`, from the binary: the page, its assets, nothing off-host.

mod support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use support::Api;
use tower::ServiceExt;

struct Raw {
    status: StatusCode,
    content_type: String,
    cache_control: String,
    body: Vec<u8>,
}

async fn fetch(api: &Api, uri: &str) -> Raw {
    let response = api
        .app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (content_type, cache_control) =
        (header(header::CONTENT_TYPE), header(header::CACHE_CONTROL));
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Raw {
        status,
        content_type,
        cache_control,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_the_vendored_bundle_and_the_document() {
    let api = Api::start().await;
    let page = fetch(&api, "/api/docs").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("/api/docs/swagger-ui-bundle.js"), "{html}");
    assert!(html.contains("/api/docs/swagger-ui.css"), "{html}");
    assert!(html.contains("\"/api/v1/openapi.json\""), "{html}");
    // Nothing off-host: no absolute or protocol-relative URL, and the remote validator is off.
    for off_host in ["http:", "https:", "//"] {
        for attr in ["src=\"", "href=\"", "url: \""] {
            assert!(
                !html.contains(&format!("{attr}{off_host}")),
                "{attr}{off_host} in the page"
            );
        }
    }
    assert!(!html.contains("://"), "an absolute URL in the page: {html}");
    assert!(html.contains("validatorUrl: null"));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assets_are_served_with_their_types_and_cached() {
    let api = Api::start().await;
    for (uri, content_type, starts) in [
        (
            "/api/docs/swagger-ui-bundle.js",
            "application/javascript",
            &b""[..],
        ),
        ("/api/docs/swagger-ui.css", "text/css", &b""[..]),
        ("/api/docs/favicon-32x32.png", "image/png", &b"\x89PNG"[..]),
    ] {
        let asset = fetch(&api, uri).await;
        assert_eq!(asset.status, StatusCode::OK, "{uri}");
        assert!(
            asset.content_type.starts_with(content_type),
            "{uri}: {}",
            asset.content_type
        );
        assert!(
            asset.cache_control.contains("max-age="),
            "{uri}: {}",
            asset.cache_control
        );
        assert!(
            asset.body.len() > 100 && asset.body.starts_with(starts),
            "{uri}"
        );
    }
    let bundle = fetch(&api, "/api/docs/swagger-ui-bundle.js").await;
    assert!(String::from_utf8_lossy(&bundle.body).contains("SwaggerUIBundle"));
    // Other paths under /api/docs are the usual problem 404.
    let missing = fetch(&api, "/api/docs/index.html").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.content_type, "application/problem+json");
    api.stop().await;
}

#[test]
fn the_ui_is_not_an_api_operation() {
    let document = serde_json::to_value(sagaflow_api::openapi()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert!(
        paths.keys().all(|p| !p.starts_with("/api/docs")),
        "{:?}",
        paths.keys()
    );
}
