//! The dashboard in a real browser: a `sagaflow serve` running real shop sagas (one completed,
//! one compensated, one order parked waiting for money), a blog post's choreographed flow and a
//! dead letter, driven by
//! `tests/browser/dashboard.mjs` in headless Chromium (Debian's `chromium`, `playwright-core`
//! from npm; `scripts/test` installs both). Screenshots of each page land in
//! `target/screenshots/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};

mod support;
use support::Serve;

async fn post(http: &Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut req = http.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

async fn wait_status(http: &Client, base: &str, saga: &str, want: &str) {
    support::wait_saga(http, base, saga, |s| s == want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_headless_chromium() {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix crates/server/tests/browser` (scripts/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dash.db").display());
    let serve = Serve::start(&url, &[]);
    let (base, http) = (serve.base.clone(), Client::new());

    // Flow 2: one order completes, one is above the credit and compensates.
    let order = |customer: &str, quantity: u32, price: f64| json!({"customer_id": customer, "items": [{"product_id": "product-2", "quantity": quantity, "price": price}]});
    let completed = post(
        &http,
        format!("{base}/api/v1/orders"),
        None,
        order("customer-1", 1, 10.0),
    )
    .await;
    let compensated = post(
        &http,
        format!("{base}/api/v1/orders"),
        None,
        order("customer-2", 5, 300.0),
    )
    .await;
    let (completed, compensated) = (
        completed["saga_id"].as_str().unwrap().to_string(),
        compensated["saga_id"].as_str().unwrap().to_string(),
    );
    wait_status(&http, &base, &completed, "completed").await;
    wait_status(&http, &base, &compensated, "compensated").await;

    // Flow 1: an order that waits for money.
    let who = json!({"email": "dash@shop.example", "password": "secret", "username": "dash", "role": "customer"});
    post(&http, format!("{base}/profile/register"), None, who.clone()).await;
    let login = post(
        &http,
        format!("{base}/profile/login"),
        None,
        json!({"email": "dash@shop.example", "password": "secret"}),
    )
    .await;
    let token = login["token"].as_str().unwrap().to_string();
    let order_id = post(
        &http,
        format!("{base}/order/place?idSubscription=3"),
        Some(&token),
        json!({}),
    )
    .await;
    let order_id = order_id.as_str().unwrap().trim_matches('"').to_string();
    let placed: Value = http
        .get(format!("{base}/order/{order_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parked = placed["sagaId"].as_str().unwrap().to_string();
    wait_status(&http, &base, &parked, "waiting").await;

    // A dead letter: a saga asks a service for a command it does not have.
    post(
        &http,
        format!("{base}/api/v1/definitions"),
        None,
        json!({"name": "misrouted", "version": 1, "steps": [{"name": "poke", "kind": "pivot", "action": "shop-billing.no_such_command"}]}),
    )
    .await;
    post(
        &http,
        format!("{base}/api/v1/sagas"),
        None,
        json!({"definition": "misrouted", "input": {}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let letters: Value = http
            .get(format!("{base}/api/v1/dead-letters"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if letters.as_array().is_some_and(|l| !l.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no dead letter appeared");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A choreographed flow: a blog post submitted for publication.
    post(
        &http,
        format!("{base}/api/users"),
        None,
        json!({"email": "w@blog.example", "username": "writer", "password": "pw"}),
    )
    .await;
    let token: Value = http
        .post(format!("{base}/api/users/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=writer&password=pw")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let blog_token = token["access_token"].as_str().unwrap().to_string();
    let article = post(
        &http,
        format!("{base}/api/articles"),
        Some(&blog_token),
        json!({"title": "Dashboards", "body": "A flow to look at in the browser."}),
    )
    .await;
    let published = post(
        &http,
        format!("{base}/api/articles/{}/publish", article["id"]),
        Some(&blog_token),
        json!({}),
    )
    .await;
    let flow = published["flow_id"].as_str().unwrap().to_string();

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    let status = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser_dir.join("dashboard.mjs"))
            .env("BASE", &base)
            .env("COMPENSATED", &compensated)
            .env("COMPLETED", &completed)
            .env("PARKED", &parked)
            .env("FLOW", &flow)
            .env("SHOTS", &shots)
            .status()
            .expect("node runs (scripts/test installs nodejs)")
    })
    .await
    .unwrap();
    assert!(status.success(), "the browser checks failed: {status}");
    drop(serve);
}
