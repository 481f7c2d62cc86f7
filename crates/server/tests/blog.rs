//! The blog's publishing flow by choreography, through HTTP against the real server:
//!
//! - embedded (SQLite, in-memory bus): a post reaches PUBLISHED with its preview URL and one
//!   push record per subscriber with a push key, while the notification service fails twice
//!   and recovers within its retries; a post breaking the rules is REJECTED; the internal
//!   endpoints refuse no key, a user's token, an expired and a deactivated key; the flow reads
//!   as one timeline at `/api/v1/flows/{flow_id}`;
//! - a preview service that fails every time: the post ends in ERROR through the dead letters
//!   and the compensation hook;
//! - distributed (PostgreSQL, NATS, the services in a `sagaflow participant --app blog`
//!   process): the flow completes, and the `post_published` event delivered again has no
//!   second effect — no second push record.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use sagaflow_testkit::brokers::NatsServer;
use serde_json::{json, Value};

mod support;

/// The one-time token `init-keys` takes on these keyless servers.
const INIT_TOKEN: &str = "blog-init-token-for-tests";
use support::{pg_url, spawn, Serve};

/// Sends a request and reads its JSON answer.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

struct User {
    id: i64,
    token: String,
}

async fn user(http: &Client, base: &str, name: &str, push_key: Option<&str>) -> User {
    let resp = http
        .post(format!("{base}/api/users"))
        .json(&json!({"email": format!("{name}@blog.example"), "username": name, "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    let login = json_of(
        http.post(format!("{base}/api/users/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("username={}&password={}", name, "pw")),
    )
    .await;
    assert_eq!(login["token_type"], "bearer");
    let u = User {
        id: created["id"].as_i64().unwrap(),
        token: login["access_token"].as_str().unwrap().to_string(),
    };
    if let Some(key) = push_key {
        let resp = http
            .put(format!("{base}/api/users/me/subscription-key"))
            .bearer_auth(&u.token)
            .json(&json!({ "subscription_key": key }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    u
}

async fn subscribe(http: &Client, base: &str, who: &User, to: i64) -> StatusCode {
    http.post(format!("{base}/api/users/subscribe"))
        .bearer_auth(&who.token)
        .json(&json!({ "target_user_id": to }))
        .send()
        .await
        .unwrap()
        .status()
}

/// Writes an article and asks for it to be published; returns (article, flow id).
async fn publish(
    http: &Client,
    base: &str,
    author: &User,
    title: &str,
    body: &str,
) -> (Value, String) {
    let resp = http
        .post(format!("{base}/api/articles"))
        .bearer_auth(&author.token)
        .json(&json!({ "title": title, "description": "d", "body": body }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let article: Value = resp.json().await.unwrap();
    assert_eq!(article["status"], "DRAFT");
    let resp = http
        .post(format!("{base}/api/articles/{}/publish", article["id"]))
        .bearer_auth(&author.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let accepted: Value = resp.json().await.unwrap();
    assert_eq!(accepted["status"], "PENDING_PUBLISH");
    (article, accepted["flow_id"].as_str().unwrap().to_string())
}

/// Polls the article, as its author, until it leaves PENDING_PUBLISH.
async fn settled(http: &Client, base: &str, author: &User, slug: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = json_of(
            http.get(format!("{base}/api/articles/{slug}"))
                .bearer_auth(&author.token),
        )
        .await;
        if a["status"] != "PENDING_PUBLISH" {
            return a;
        }
        assert!(Instant::now() < deadline, "still pending: {a}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn notifications(http: &Client, base: &str, who: &User) -> Vec<Value> {
    let v = json_of(
        http.get(format!("{base}/api/users/me/notifications"))
            .bearer_auth(&who.token),
    )
    .await;
    v.as_array().unwrap().clone()
}

/// The flow's timeline once `done` holds.
async fn timeline(
    http: &Client,
    base: &str,
    flow: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = json_of(http.get(format!("{base}/api/v1/flows/{flow}"))).await;
        let entries = v["entries"].as_array().unwrap().clone();
        if done(&entries) {
            return entries;
        }
        assert!(Instant::now() < deadline, "the flow never got there: {v:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn has(entries: &[Value], service: &str, event: &str, outcome: &str) -> bool {
    entries
        .iter()
        .any(|e| e["service"] == service && e["event"] == event && e["outcome"] == outcome)
}

fn steps(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["service"].as_str().unwrap(),
                e["event"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_post_is_published_by_choreography_and_internal_endpoints_are_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("blog.db").display());
    let serve = Serve::start(
        &url,
        &[
            ("SAGAFLOW_BLOG_APPROVAL_RATE", "1"),
            ("SAGAFLOW_BLOG_NOTIFY_FAILURES", "2"),
            ("SAGAFLOW_BLOG_RETRY_INITIAL_MS", "50"),
            ("SAGAFLOW_BLOG_INIT_TOKEN", INIT_TOKEN),
        ],
    );
    let (base, http) = (serve.base.clone(), Client::new());
    let health = json_of(http.get(format!("{base}/health"))).await;
    assert_eq!(health, json!({"status": "ok"}));

    let author = user(&http, &base, "author", None).await;
    let taken = http
        .post(format!("{base}/api/users"))
        .json(&json!({"email": "author@blog.example", "username": "other", "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    let bad_login = http
        .post(format!("{base}/api/users/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username={}&password={}", "author", "wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_login.status(), StatusCode::UNAUTHORIZED);
    let fans = [
        user(&http, &base, "fan1", Some("push-fan1")).await,
        user(&http, &base, "fan2", Some("push-fan2")).await,
    ];
    let keyless = user(&http, &base, "keyless", None).await;
    for u in fans.iter().chain([&keyless]) {
        assert_eq!(subscribe(&http, &base, u, author.id).await, StatusCode::OK);
    }
    assert_eq!(
        subscribe(&http, &base, &keyless, 9_999).await,
        StatusCode::NOT_FOUND
    );

    // Happy path: PUBLISHED with a preview; one push per subscriber with a key, after the
    // notification service failed twice and recovered.
    let (article, flow) = publish(
        &http,
        &base,
        &author,
        "Hello choreography",
        "A post that passes moderation.",
    )
    .await;
    let slug = article["slug"].as_str().unwrap();
    let done = settled(&http, &base, &author, slug).await;
    assert_eq!(done["status"], "PUBLISHED", "{done}");
    assert!(done["preview_url"]
        .as_str()
        .unwrap()
        .starts_with("https://previews.blog.example/"));
    let entries = timeline(&http, &base, &flow, |e| {
        has(e, "blog-notification", "blog.post_published", "handled")
    })
    .await;
    for fan in &fans {
        let pushes = notifications(&http, &base, fan).await;
        assert_eq!(pushes.len(), 1, "{pushes:?}");
        assert_eq!(pushes[0]["post_id"], article["id"]);
    }
    assert!(notifications(&http, &base, &keyless).await.is_empty());
    // One timeline, service to service, with the notification's two failures in it.
    assert_eq!(
        steps(&entries),
        vec![
            "blog-api blog.publish_requested emitted",
            "blog-moderation blog.post_approved emitted",
            "blog-moderation blog.publish_requested handled",
            "blog-preview blog.preview_ready emitted",
            "blog-preview blog.post_approved handled",
            "blog-publication blog.post_published emitted",
            "blog-publication blog.preview_ready handled",
            "blog-notification blog.post_published failed",
            "blog-notification blog.post_published failed",
            "blog-notification blog.post_published handled",
        ]
    );
    // The timeline a page at a time.
    let page = json_of(http.get(format!("{base}/api/v1/flows/{flow}?limit=4"))).await;
    assert_eq!(page["entries"].as_array().unwrap()[..], entries[..4]);
    assert_eq!(page["next_offset"], 4);
    let last = json_of(http.get(format!("{base}/api/v1/flows/{flow}?limit=4&offset=8"))).await;
    assert_eq!(last["entries"].as_array().unwrap()[..], entries[8..]);
    assert_eq!(last["next_offset"], Value::Null);
    let bad = http
        .get(format!("{base}/api/v1/flows/{flow}?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    // Publishing again is refused: it is no DRAFT; another user may not publish it at all.
    let again = http
        .post(format!("{base}/api/articles/{}/publish", article["id"]))
        .bearer_auth(&author.token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let (draft, _) = {
        let resp = http
            .post(format!("{base}/api/articles"))
            .bearer_auth(&author.token)
            .json(&json!({ "title": "Mine", "body": "only the author publishes" }))
            .send()
            .await
            .unwrap();
        (resp.json::<Value>().await.unwrap(), ())
    };
    let foreign = http
        .post(format!("{base}/api/articles/{}/publish", draft["id"]))
        .bearer_auth(&fans[0].token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        foreign.status(),
        StatusCode::NOT_FOUND,
        "another author's draft is not there for this user"
    );

    // Rejection: the content rules say no.
    let (spam, _) = publish(
        &http,
        &base,
        &author,
        "Great casino",
        "Come and play at the casino.",
    )
    .await;
    let rejected = settled(&http, &base, &author, spam["slug"].as_str().unwrap()).await;
    // Only its author sees a post that is not published; to anyone else it does not exist.
    let spam_url = format!("{base}/api/articles/{}", spam["slug"].as_str().unwrap());
    let anonymous = http.get(&spam_url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::NOT_FOUND);
    let other = http
        .get(&spam_url)
        .bearer_auth(&keyless.token)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND, "another user");
    let published = http
        .get(format!("{base}/api/articles/{slug}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        published.status(),
        StatusCode::OK,
        "a published post is anyone's"
    );
    assert_eq!(rejected["status"], "REJECTED");
    assert!(
        rejected["reason"].as_str().unwrap().contains("casino"),
        "{rejected}"
    );

    // Internal endpoints: service keys only.
    let post_url = format!("{base}/api/internal/posts/{}", article["id"]);
    assert_eq!(
        http.get(&post_url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let with_jwt = http
        .get(&post_url)
        .bearer_auth(&author.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        with_jwt.status(),
        StatusCode::UNAUTHORIZED,
        "a user's token is no service key"
    );
    // init-keys: only with the one-time token (this server has no API keys), and only once.
    let init = |token: Option<&str>| {
        let req = http.post(format!("{base}/api/internal/init-keys"));
        match token {
            Some(t) => req.header("x-init-token", t),
            None => req,
        }
        .send()
    };
    for token in [None, Some("not-the-token-at-all")] {
        let refused = init(token).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{token:?}");
    }
    let keys: Value = init(Some(INIT_TOKEN)).await.unwrap().json().await.unwrap();
    let listed = keys["keys"].as_array().unwrap();
    let scopes: Vec<String> = listed
        .iter()
        .map(|k| format!("{} {}", k["description"], k["scopes"]))
        .collect();
    assert_eq!(
        scopes,
        [
            r#""moderation service" ["read","moderate"]"#,
            r#""preview service" ["read","preview"]"#,
            r#""publication service" ["read","publish"]"#,
            r#""notification service" ["read"]"#,
            r#""key administration" ["keys"]"#,
        ]
    );
    let key = listed[0]["key"].as_str().unwrap().to_string();
    let admin = listed[4]["key"].as_str().unwrap().to_string();
    let second_init = init(Some(INIT_TOKEN)).await.unwrap();
    assert_eq!(
        second_init.status(),
        StatusCode::UNAUTHORIZED,
        "the token is good once"
    );
    assert!(second_init.text().await.unwrap().contains("was used"));
    // Scopes: moderation may not publish nor make keys; the administration key may not read.
    let scoped = |method: reqwest::Method, path: String, key: String| {
        http.request(method, format!("{base}{path}"))
            .header("x-api-key", key)
            .json(&json!({}))
            .send()
    };
    for (method, path, key, why) in [
        (
            reqwest::Method::POST,
            format!("/api/internal/posts/{}/publish", article["id"]),
            key.clone(),
            "moderation publishing",
        ),
        (
            reqwest::Method::POST,
            "/api/internal/keys".to_string(),
            key.clone(),
            "moderation making a key",
        ),
        (
            reqwest::Method::GET,
            format!("/api/internal/posts/{}", article["id"]),
            admin.clone(),
            "administration reading",
        ),
    ] {
        let resp = scoped(method, path, key).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{why}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "missing_scope", "{why}: {v}");
    }
    let resp = http
        .post(format!("{base}/api/internal/keys"))
        .header("x-api-key", &admin)
        .json(&json!({ "scopes": ["everything"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let shown = json_of(http.get(&post_url).header("x-api-key", &key)).await;
    assert_eq!(
        (shown["status"].as_str(), shown["preview_url"].is_string()),
        (Some("PUBLISHED"), true)
    );
    let user_with_key = http
        .put(format!("{base}/api/users/me/subscription-key"))
        .bearer_auth(&key)
        .json(&json!({ "subscription_key": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        user_with_key.status(),
        StatusCode::UNAUTHORIZED,
        "a service key is no user token"
    );
    let expired = json_of(
        http.post(format!("{base}/api/internal/keys"))
            .header("x-api-key", &admin)
            .json(&json!({ "description": "short-lived", "expires_in_seconds": 0 })),
    )
    .await;
    let resp = http
        .get(&post_url)
        .header("x-api-key", expired["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await.unwrap().contains("expired"));
    let doomed = json_of(
        http.post(format!("{base}/api/internal/keys"))
            .header("x-api-key", &admin)
            .json(&json!({ "description": "to deactivate" })),
    )
    .await;
    let doomed_key = doomed["key"].as_str().unwrap();
    assert_eq!(
        http.get(&post_url)
            .header("x-api-key", doomed_key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let off = http
        .post(format!(
            "{base}/api/internal/keys/{}/deactivate",
            doomed["id"].as_str().unwrap()
        ))
        .header("x-api-key", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), 200);
    assert_eq!(
        http.get(&post_url)
            .header("x-api-key", doomed_key)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Transitions: "already" when already there, 400 when impossible, 404 when unknown
    // (with a key made for moderating and publishing).
    let operator = json_of(
        http.post(format!("{base}/api/internal/keys"))
            .header("x-api-key", &admin)
            .json(&json!({ "description": "operator", "scopes": ["moderate", "publish"] })),
    )
    .await;
    assert_eq!(operator["scopes"], json!(["moderate", "publish"]));
    let operator = operator["key"].as_str().unwrap().to_string();
    let internal = |path: String| {
        http.post(format!("{base}/api/internal/posts/{path}"))
            .header("x-api-key", &operator)
            .send()
    };
    let already: Value = internal(format!("{}/publish", article["id"]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(already["message"], "already published");
    assert_eq!(
        internal(format!("{}/reject", article["id"]))
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        internal("999999/publish".to_string())
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let reset: Value = internal(format!("{}/reset-to-draft", spam["id"]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reset["status"], "DRAFT");
}

/// `GET /api/users/me/notifications` is paged by `limit` and `offset`: three push records
/// read two at a time give pages of 2 and 1, in the order of the whole list, never
/// overlapping; bad values are 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_push_records_are_paged() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("blog.db").display());
    let serve = Serve::start(&url, &[("SAGAFLOW_BLOG_APPROVAL_RATE", "1")]);
    let (base, http) = (serve.base.clone(), Client::new());
    let author = user(&http, &base, "author", None).await;
    let fan = user(&http, &base, "fan", Some("push-fan")).await;
    assert_eq!(
        subscribe(&http, &base, &fan, author.id).await,
        StatusCode::OK
    );
    let mut posts = Vec::new();
    for n in 1..=3 {
        let (article, flow) = publish(
            &http,
            &base,
            &author,
            &format!("Post number {n}"),
            "A post that passes moderation.",
        )
        .await;
        timeline(&http, &base, &flow, |e| {
            has(e, "blog-notification", "blog.post_published", "handled")
        })
        .await;
        posts.push(article["id"].clone());
    }
    let page = |query: &'static str| {
        let req = http
            .get(format!("{base}/api/users/me/notifications{query}"))
            .bearer_auth(&fan.token);
        async move {
            let v = json_of(req).await;
            v.as_array()
                .unwrap_or_else(|| panic!("{query}: an array, got {v}"))
                .iter()
                .map(|p| p["post_id"].clone())
                .collect::<Vec<Value>>()
        }
    };
    let all = page("").await;
    assert_eq!(all.len(), 3, "one push per post: {all:?}");
    assert!(posts.iter().all(|p| all.contains(p)), "{posts:?} {all:?}");
    let first = page("?limit=2").await;
    let second = page("?limit=2&offset=2").await;
    support::assert_pages_of_three(first, second, &all);
    assert!(page("?offset=3").await.is_empty());
    for (query, names) in support::BAD_PAGES {
        let resp = http
            .get(format!("{base}/api/users/me/notifications?{query}"))
            .bearer_auth(&fan.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "bad_parameter", "{query}: {v}");
        assert!(
            v["detail"].as_str().unwrap_or_default().contains(names),
            "{query} names {names}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_preview_that_always_fails_ends_in_error_through_the_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("blog.db").display());
    let serve = Serve::start(
        &url,
        &[
            ("SAGAFLOW_BLOG_APPROVAL_RATE", "1"),
            ("SAGAFLOW_BLOG_PREVIEW_FAILURES", "always"),
            ("SAGAFLOW_BLOG_RETRY_INITIAL_MS", "50"),
        ],
    );
    let (base, http) = (serve.base.clone(), Client::new());
    let author = user(&http, &base, "writer", None).await;
    let (article, flow) = publish(
        &http,
        &base,
        &author,
        "Doomed preview",
        "The renderer is down for good.",
    )
    .await;
    let done = settled(&http, &base, &author, article["slug"].as_str().unwrap()).await;
    assert_eq!(done["status"], "ERROR", "{done}");
    assert!(
        done["reason"].as_str().unwrap().contains("preview failed"),
        "{done}"
    );
    let entries = timeline(&http, &base, &flow, |e| {
        has(e, "blog-preview", "blog.post_approved", "compensated")
    })
    .await;
    let preview: Vec<String> = steps(&entries)
        .into_iter()
        .filter(|s| s.starts_with("blog-preview"))
        .collect();
    assert_eq!(
        preview,
        vec![
            "blog-preview blog.post_approved failed",
            "blog-preview blog.post_approved failed",
            "blog-preview blog.post_approved dead_lettered",
            "blog-preview blog.post_approved compensated",
        ]
    );
    let dead = json_of(http.get(format!("{base}/api/v1/dead-letters"))).await;
    let dead = dead
        .as_array()
        .cloned()
        .unwrap_or_else(|| dead["items"].as_array().cloned().unwrap_or_default());
    assert!(
        dead.iter().any(|d| d
            .to_string()
            .contains("blog-preview gave up on blog.post_approved after 3 attempts")),
        "{dead:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_the_flow_crosses_processes_and_a_redelivered_event_pushes_nothing_twice() {
    let nats = NatsServer::start();
    let pg = format!("{}?schema=blog_{}", pg_url(), fastrand::u32(..));
    let env = [("SAGAFLOW_BLOG_APPROVAL_RATE", "1")];
    let serve = Serve::start_with(&pg, &["--transport", &nats.url()], &env);
    let _services = spawn(
        &[
            "participant",
            "--app",
            "blog",
            "--transport",
            &nats.url(),
            "--database-url",
            &pg,
        ],
        &env,
    );
    let (base, http) = (serve.base.clone(), Client::new());
    let author = user(&http, &base, "remote-author", None).await;
    let fan = user(&http, &base, "remote-fan", Some("push-remote")).await;
    assert_eq!(
        subscribe(&http, &base, &fan, author.id).await,
        StatusCode::OK
    );
    let (article, flow) = publish(
        &http,
        &base,
        &author,
        "Across processes",
        "Every service in another process.",
    )
    .await;
    assert_eq!(
        settled(&http, &base, &author, article["slug"].as_str().unwrap()).await["status"],
        "PUBLISHED"
    );
    let entries = timeline(&http, &base, &flow, |e| {
        has(e, "blog-notification", "blog.post_published", "handled")
    })
    .await;
    assert_eq!(notifications(&http, &base, &fan).await.len(), 1);

    // The same post_published event again, as a broker redelivery would bring it.
    let published = entries
        .iter()
        .find(|e| e["event"] == "blog.post_published" && e["outcome"] == "emitted")
        .unwrap();
    let envelope = sagaflow_core::Envelope {
        protocol: sagaflow_core::PROTOCOL_VERSION,
        message_id: published["message_id"].as_str().unwrap().to_string(),
        kind: sagaflow_core::MessageKind::Event,
        subject: "sagaflow.events.blog.post_published".into(),
        saga_id: None,
        correlation_id: Some(flow.clone()),
        causation_id: published["causation_id"].as_str().map(str::to_string),
        step: None,
        attempt: None,
        traceparent: None,
        request_id: None,
        payload: json!({ "post_id": article["id"], "author_id": author.id, "title": "Across processes" }),
    };
    let store = sagaflow::store_url::open(&pg).await.unwrap();
    let broker = sagaflow::transport_url::open(&nats.url(), store)
        .await
        .unwrap();
    broker
        .publish(
            "sagaflow.events.blog.post_published",
            "redelivery-1",
            envelope.to_bytes(),
        )
        .await
        .unwrap();
    timeline(&http, &base, &flow, |e| {
        has(e, "blog-notification", "blog.post_published", "duplicate")
    })
    .await;
    assert_eq!(
        notifications(&http, &base, &fan).await.len(),
        1,
        "no second push"
    );
}

/// On a server with API keys, `init-keys` takes the server's `operate` key (checked at the
/// edge) and no token; on an open one, the one-time token the server prints at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_keys_takes_an_operate_key_or_the_token_printed_at_start() {
    const OPERATE: &str = "blog-operator-key-0123456789";
    let digest = sagaflow_api::to_hex(&sagaflow_api::hash_key(OPERATE));
    let keys = format!("ops:{digest}:operate+read");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keyed.db").display());
    let keyed = Serve::start(&url, &[("SAGAFLOW_API_KEYS", keys.as_str())]);
    let http = Client::new();
    let init = format!("{}/api/internal/init-keys", keyed.base);
    let refused = http
        .post(&init)
        .header("x-init-token", INIT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "a token is no key"
    );
    for _ in 0..2 {
        let made: Value = http
            .post(&init)
            .bearer_auth(OPERATE)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(made["keys"].as_array().map(Vec::len), Some(5), "{made}");
    }
    drop(keyed);

    // Open: the banner names the token; it works once.
    let port = sagaflow_testkit::brokers::free_port();
    let url = format!("sqlite://{}", dir.path().join("open.db").display());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            &url,
        ])
        .env("SAGAFLOW_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let open = support::Proc(child);
    let token = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(40)
            .map_while(Result::ok)
            .find_map(|line| {
                line.split_once("X-Init-Token: ")
                    .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_string())
            })
    })
    .join()
    .unwrap()
    .expect("the banner prints the one-time token");
    support::wait_ready(port);
    let init = format!("http://127.0.0.1:{port}/api/internal/init-keys");
    let first = http
        .post(&init)
        .header("x-init-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let again = http
        .post(&init)
        .header("x-init-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    drop(open);
}
