//! One guarded edge: with API keys configured, every route of a real `sagaflow serve` — the
//! API's (from its OpenAPI document), the dashboard's and every reference app's (from
//! their tables) — answers only with the right it needs. An API-key route refuses a caller
//! without a key (401) and a `read` key where it needs `operate` (403), and lets the right
//! key through; a route that checks a credential of its own never succeeds without one.

mod support;

use reqwest::{Client, Method, StatusCode};
use sagaflow_api::Access;
use serde_json::Value;
use support::Serve;

const READER: &str = "edge-reader-key-0123456789abcdef";
const OPERATOR: &str = "edge-operator-key-0123456789abcdef";

/// The API's routes that stay open with keys configured (the supervisor's and the docs').
const OPEN: &[&str] = &["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"];

fn entry(name: &str, key: &str, rights: &str) -> String {
    format!(
        "{name}:{}:{rights}",
        sagaflow_api::to_hex(&sagaflow_api::hash_key(key))
    )
}

/// A concrete path for a route's pattern: every `{segment}` becomes `x1`.
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|s| if s.starts_with('{') { "x1" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(http: &Client, base: &str, method: &Method, path: &str, key: Option<&str>) -> u16 {
    let mut req = http
        .request(method.clone(), format!("{base}{path}"))
        .header("content-type", "application/json")
        .body("{}");
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        .status()
        .as_u16()
}

/// Checks an API-key route: refused without a key, refused to a reader when it changes
/// something, let through with the right key. The problems found, in words.
async fn check_keyed(http: &Client, base: &str, method: &Method, path: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    let reading = *method == Method::GET;
    let anonymous = call(http, base, method, path, None).await;
    if anonymous != 401 {
        wrong.push(format!(
            "{method} {path} without a key answered {anonymous}, not 401"
        ));
    }
    let reader = call(http, base, method, path, Some(READER)).await;
    if !reading && reader != 403 {
        wrong.push(format!(
            "{method} {path} with a read key answered {reader}, not 403"
        ));
    }
    let right = if reading { READER } else { OPERATOR };
    let allowed = call(http, base, method, path, Some(right)).await;
    if allowed == 401 || allowed == 403 {
        wrong.push(format!(
            "{method} {path} with the right key answered {allowed}"
        ));
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_every_route_answers_only_with_the_right_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("edge.db").display());
    let keys = format!(
        "{},{}",
        entry("reader", READER, "read"),
        entry("operator", OPERATOR, "read+operate")
    );
    let serve = Serve::start(&url, &[("SAGAFLOW_API_KEYS", keys.as_str())]);
    let http = Client::new();
    let base = serve.base.clone();
    let mut wrong = Vec::new();

    // The API, as its OpenAPI document lists it.
    let doc: Value = http
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() > 10, "{paths:?}");
    for (pattern, operations) in paths {
        for method in operations.as_object().expect("operations").keys() {
            let method: Method = method.to_uppercase().parse().expect("a method");
            let path = concrete(pattern);
            if OPEN.contains(&pattern.as_str()) {
                let status = call(&http, &base, &method, &path, None).await;
                if status == 401 {
                    wrong.push(format!("{method} {path} is open, answered 401"));
                }
            } else {
                wrong.extend(check_keyed(&http, &base, &method, &path).await);
            }
        }
    }
    // The dashboard's pages ask for a key too.
    for page in [
        "/",
        "/ui/sagas",
        "/ui/dead-letters",
        "/ui/definitions",
        "/ui/flows",
    ] {
        let status = call(&http, &base, &Method::GET, page, None).await;
        if status != 401 {
            wrong.push(format!(
                "GET {page} without a key answered {status}, not 401"
            ));
        }
    }

    // Every route of every reference app, as its table declares it.
    let table = sagaflow::serve::app_route_table();
    assert!(table.len() > 30, "{table:?}");
    // What the tables must say: the outside world's simulations, the internal counters,
    // the blog's first service keys and anything under /api/v1 are the operator's.
    for (method, path) in [
        (Method::PUT, "/stock/add"),
        (Method::PUT, "/delivery/accept"),
        (Method::GET, "/counters/{id}"),
        (Method::POST, "/counters/{id}/reset"),
        (Method::POST, "/api/internal/init-keys"),
    ] {
        assert!(
            table
                .iter()
                .any(|(_, r)| r.method == method && r.path == path && r.access == Access::ApiKey),
            "{method} {path} must need an API key: {table:?}"
        );
    }
    for (app, rule) in &table {
        if rule.path.starts_with("/api/v1/") {
            assert_eq!(rule.access, Access::ApiKey, "{app}: {rule:?}");
        }
    }
    for (app, rule) in &table {
        let path = concrete(rule.path);
        match rule.access {
            Access::ApiKey => wrong.extend(
                check_keyed(&http, &base, &rule.method, &path)
                    .await
                    .into_iter()
                    .map(|w| format!("{app}: {w}")),
            ),
            Access::OwnCredential => {
                // No user token, no service key — an API key is no substitute for either.
                for key in [None, Some(OPERATOR)] {
                    let status = call(&http, &base, &rule.method, &path, key).await;
                    if StatusCode::from_u16(status).unwrap().is_success() {
                        wrong.push(format!(
                            "{app}: {} {path} answered {status} without its own credential",
                            rule.method
                        ));
                    }
                }
            }
            Access::Public => {
                // It may refuse (a log-in with a wrong password is a 401 of its own), but
                // never because no API key came.
                let response = http
                    .request(rule.method.clone(), format!("{base}{path}"))
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                if body.contains("needs an API key") || status >= 500 {
                    wrong.push(format!(
                        "{app}: public {} {path} answered {status}: {body}",
                        rule.method
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A database failure reaches the client as its request id, never as the database's own
/// words: with the tables the API and the shop read dropped under a running server,
/// PostgreSQL's errors (naming the tables) stay in the server's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_failure_is_answered_with_the_request_id_not_the_databases_words() {
    let url = format!("{}?schema=edge_{}", support::pg_url(), fastrand::u32(..));
    let serve = Serve::start(&url, &[]);
    let store = sagaflow::store_url::open(&url).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.execute("DROP TABLE shop_purchase_orders", &[])
        .await
        .unwrap();
    tx.execute("DROP TABLE sagas CASCADE", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let http = Client::new();
    for path in ["/api/v1/orders/x1", "/api/v1/sagas/x1"] {
        let response = http
            .get(format!("{}{path}", serve.base))
            .header("x-request-id", "edge-req-1")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let id = response
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response.text().await.unwrap();
        assert_eq!(id.as_deref(), Some("edge-req-1"), "{path}");
        assert!(status.is_server_error(), "{path}: {status} {body}");
        assert!(
            body.contains(sagaflow_api::HIDDEN_STORE_ERROR),
            "{path}: {body}"
        );
        for leak in [
            "relation",
            "shop_purchase_orders",
            "sagas\"",
            "SQLSTATE",
            "does not exist",
        ] {
            assert!(!body.contains(leak), "{path} leaks {leak:?}: {body}");
        }
    }
}
