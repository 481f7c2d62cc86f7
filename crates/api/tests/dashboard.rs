//! The dashboard's pages through the router (`app(state).oneshot`), on a real SQLite store with
//! real sagas: every page answers HTML with its key content; the list filters; a compensated
//! saga's timeline has compensation bars and the pivot marked; a parked saga is cancelled from
//! its page and compensates, while a refused action says why; dead letters are discarded in a
//! batch; with keys configured a page asks for one, and the key's cookie opens it.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use sagaflow_api::{hash_key, ApiConfig, ApiKey, Right, Rights};
use sagaflow_engine::core::{Transport, REPLY_TOPIC};
use serde_json::json;
use support::Api;
use tower::ServiceExt;

struct Page {
    status: StatusCode,
    location: String,
    content_type: String,
    html: String,
}

async fn request(api: &Api, req: Request<Body>) -> Page {
    let response = api.app.clone().oneshot(req).await.unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (location, content_type) = (header(header::LOCATION), header(header::CONTENT_TYPE));
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Page {
        status,
        location,
        content_type,
        html: String::from_utf8_lossy(&body).to_string(),
    }
}

async fn get(api: &Api, uri: &str) -> Page {
    request(api, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn form(api: &Api, uri: &str, body: &str) -> Page {
    request(
        api,
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

fn html(page: &Page, uri: &str) -> String {
    assert_eq!(page.status, StatusCode::OK, "{uri}: {}", page.html);
    assert!(
        page.content_type.starts_with("text/html"),
        "{uri}: {}",
        page.content_type
    );
    page.html.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_real_sagas_and_the_actions_work() {
    let api = Api::start().await;
    let done = api.start_order(json!({"customer": "ann"})).await;
    let undone = api
        .start_order(json!({"customer": "bob", "reject": "ship"}))
        .await;
    let parked = api
        .start_order(json!({"customer": "cy", "park": "charge"}))
        .await;
    api.wait_status(&done, "completed").await;
    api.wait_status(&undone, "compensated").await;
    api.wait_status(&parked, "waiting").await;
    api.bus
        .publish(REPLY_TOPIC, "junk-1", b"not a reply".to_vec())
        .await
        .unwrap();

    let overview = html(&get(&api, "/").await, "/");
    for needle in [
        "Overview",
        "Sagas by status",
        "Stuck sagas",
        "Compensations failing",
        "per minute",
        "order",
    ] {
        assert!(overview.contains(needle), "overview lacks {needle:?}");
    }
    assert!(
        overview.contains("aria-current=\"page\""),
        "the navigation marks the page"
    );

    // With a threshold of 0 s every unfinished saga is stuck: the parked one shows, linked.
    let stuck = html(&get(&api, "/?stuck=0").await, "/?stuck=0");
    assert!(
        stuck.contains(&format!("/ui/sagas/{parked}"))
            && !stuck.contains(&format!("/ui/sagas/{done}")),
        "the parked saga is stuck, the completed one is not"
    );
    assert!(
        stuck.contains("signal go"),
        "it says what the saga waits on"
    );

    let list = html(&get(&api, "/ui/sagas").await, "/ui/sagas");
    for id in [&done, &undone, &parked] {
        assert!(list.contains(id.as_str()), "the list lacks {id}");
    }
    assert!(
        list.contains("hx-trigger=\"every 5s"),
        "the rows refresh themselves"
    );
    let filtered = html(&get(&api, "/ui/sagas?status=compensated").await, "filtered");
    assert!(filtered.contains(undone.as_str()) && !filtered.contains(done.as_str()));
    let by_key = html(&get(&api, "/ui/sagas?key=cy").await, "by key");
    assert!(by_key.contains(parked.as_str()) && !by_key.contains(undone.as_str()));
    let rows = html(&get(&api, "/ui/sagas/rows?status=waiting").await, "rows");
    assert!(rows.contains(parked.as_str()) && !rows.contains("<html"));
    let bad = html(&get(&api, "/ui/sagas?status=nope").await, "bad filter");
    assert!(bad.contains("is not a status"));

    let detail = html(&get(&api, &format!("/ui/sagas/{undone}")).await, "detail");
    assert!(
        detail.contains("class=\"bar compensation succeeded\""),
        "compensation bars"
    );
    assert!(
        detail.contains("class=\"bar action rejected\""),
        "the rejected pivot"
    );
    assert!(detail.contains("◆ pivot"));
    assert!(detail.contains("Journal") && detail.contains("What each step changed"));
    assert!(
        detail.contains("No action applies"),
        "an ended saga offers no action"
    );
    assert_eq!(
        get(&api, "/ui/sagas/no-such-saga").await.status,
        StatusCode::NOT_FOUND
    );

    // Cancel the parked saga from its page: it compensates.
    let page = html(&get(&api, &format!("/ui/sagas/{parked}")).await, "parked");
    assert!(page.contains("Cancel saga") && page.contains("confirm("));
    let cancelled = form(
        &api,
        &format!("/ui/sagas/{parked}/cancel"),
        "reason=from+the+test",
    )
    .await;
    assert_eq!(cancelled.status, StatusCode::SEE_OTHER);
    assert!(
        cancelled.location.contains("ok=1"),
        "{}",
        cancelled.location
    );
    api.wait_status(&parked, "compensated").await;
    let after = html(&get(&api, &cancelled.location).await, "after cancel");
    assert!(after.contains("Cancel accepted"));
    // A refused action says so.
    let refused = form(&api, &format!("/ui/sagas/{done}/cancel"), "reason=late").await;
    assert!(refused.location.contains("ok=0"), "{}", refused.location);
    assert!(html(&get(&api, &refused.location).await, "refused").contains("The engine refused"));

    // A form posted from another site is refused (no keys here: nothing else would stop it).
    let forged = request(
        &api,
        Request::post(format!("/ui/sagas/{done}/resume"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "cross-site")
            .header(header::ORIGIN, "https://evil.example")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.html.contains("another site"));
    // The flow search works without JavaScript.
    let go = get(&api, "/ui/flows/go?id=a%20b%2Fc").await;
    assert_eq!(
        (go.status, go.location.as_str()),
        (StatusCode::SEE_OTHER, "/ui/flows/a%20b%2Fc")
    );

    // Dead letters: listed, then discarded in a batch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let letters = loop {
        let page = html(&get(&api, "/ui/dead-letters").await, "dead letters");
        if page.contains("not a reply") {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead letter never showed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let id = letters
        .split("name=\"id\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let discarded = form(
        &api,
        "/ui/dead-letters/act",
        &format!("id={id}&action=discard"),
    )
    .await;
    assert!(
        discarded.location.contains("ok=1"),
        "{}",
        discarded.location
    );
    assert!(html(&get(&api, "/ui/dead-letters").await, "after").contains("No dead letters."));
    // More than a page: the first 100, then a link to the rest.
    let mut kept = Vec::new();
    for i in 0..101 {
        kept.push(
            api.store
                .put_dead_letter("t", format!("letter {i}").as_bytes(), "r", 1, 0)
                .await
                .unwrap(),
        );
    }
    let first = html(&get(&api, "/ui/dead-letters").await, "first page");
    assert_eq!(first.matches("name=\"id\"").count(), 100);
    let next = format!("/ui/dead-letters?after={}", kept[99]);
    assert!(
        first.contains(&next.replace('&', "&amp;")),
        "a next-page link"
    );
    let rest = html(&get(&api, &next).await, "next page");
    assert_eq!(rest.matches("name=\"id\"").count(), 1);
    assert!(rest.contains("letter 100") && !rest.contains("Next page"));

    let defs = html(&get(&api, "/ui/definitions").await, "definitions");
    assert!(
        defs.contains("order v1") && defs.contains("step pivot") && defs.contains("shop.refund")
    );
    let flows = html(&get(&api, "/ui/flows").await, "flows");
    assert!(flows.contains("No choreographed flow"));
    assert_eq!(
        get(&api, "/ui/flows/nothing-here").await.status,
        StatusCode::NOT_FOUND
    );
    let js = get(&api, "/ui/assets/htmx.min.js").await;
    assert!(js.content_type.starts_with("text/javascript") && js.html.contains("htmx"));
    api.stop().await;
}

async fn wait_engine(api: &Api, id: &str, status: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = api
            .engine
            .saga(&sagaflow_engine::core::SagaId(id.into()))
            .await
            .unwrap()
            .unwrap();
        if s.status.as_str() == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {status}: {:?}",
            s.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_a_page_asks_for_one_and_actions_need_operate() {
    let key = |name: &str, secret: &str, rights: &[Right]| ApiKey {
        name: name.into(),
        sha256: hash_key(secret),
        rights: rights.iter().copied().collect::<Rights>(),
    };
    let api = Api::with_config(ApiConfig {
        keys: vec![
            key("ops", "ops-secret", &[Right::Operate, Right::Read]),
            key("viewer", "view-secret", &[Right::Read]),
        ],
        ..ApiConfig::default()
    })
    .await;
    let asked = get(&api, "/").await;
    assert_eq!(asked.status, StatusCode::UNAUTHORIZED);
    assert!(
        asked.html.contains("<form") && asked.html.contains("/ui/key"),
        "a page, not JSON"
    );
    let set = form(&api, "/ui/key", "key=view-secret").await;
    let cookie = set.location.clone();
    assert_eq!(set.status, StatusCode::SEE_OTHER, "{cookie}");
    let with = |uri: &str, secret: &str, post: bool| {
        let b = if post {
            Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        } else {
            Request::get(uri)
        };
        b.header(header::COOKIE, format!("theme=dark; sagaflow_key={secret}"))
            .body(Body::from(if post { "reason=x" } else { "" }))
            .unwrap()
    };
    assert_eq!(
        request(&api, with("/", "view-secret", false)).await.status,
        StatusCode::OK
    );
    // The API itself needs a key now: start and watch the saga through the engine.
    let id = api
        .engine
        .start_saga(sagaflow_engine::StartSaga::new(
            "order",
            json!({"customer": "dee", "park": "charge"}),
        ))
        .await
        .unwrap()
        .saga_id
        .0;
    wait_engine(&api, &id, "waiting").await;
    let denied = request(
        &api,
        with(&format!("/ui/sagas/{id}/cancel"), "view-secret", true),
    )
    .await;
    assert_eq!(
        denied.status,
        StatusCode::FORBIDDEN,
        "reading is not operating"
    );
    let allowed = request(
        &api,
        with(&format!("/ui/sagas/{id}/cancel"), "ops-secret", true),
    )
    .await;
    assert_eq!(allowed.status, StatusCode::SEE_OTHER);
    wait_engine(&api, &id, "compensated").await;
    api.stop().await;
}
