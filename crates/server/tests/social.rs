//! The social network's registration, through HTTP against the real server (`sagaflow
//! serve`), on SQLite and PostgreSQL: a registration that passes verification and logs in; one
//! that fails (with the reason at login); bad credentials; the profile with its status; and
//! the request id and trace context of the registration reaching the verifier.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

mod support;
use support::{pg_url, Serve};

struct Server {
    base: String,
    url: String,
    _serve: Serve,
    _dir: tempfile::TempDir,
}

fn start(postgres: bool) -> (Server, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = if postgres {
        let schema = format!("social_{}", fastrand::u32(..));
        (format!("{}?schema={schema}", pg_url()), Some(schema))
    } else {
        (
            format!("sqlite://{}", dir.path().join("social.db").display()),
            None,
        )
    };
    let serve = Serve::start(&url, &[]);
    (
        Server {
            base: serve.base.clone(),
            url,
            _serve: serve,
            _dir: dir,
        },
        schema,
    )
}

async fn wait_status(http: &Client, base: &str, id: &str, want: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = http
            .get(format!("{base}/user/get/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["user_status"] == want {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "user {id} never reached {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn registration(postgres: bool) {
    let (server, schema) = start(postgres);
    let http = Client::new();
    let base = server.base.clone();
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();

    // Passes: verified, then logs in.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = http
        .post(format!("{base}/user/register"))
        .header("x-request-id", "req-social-1")
        .header("traceparent", traceparent)
        .json(&json!({"first_name": "Ann", "second_name": "Lee", "birthdate": "1990-05-01", "city": "Oslo", "password": "pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.json::<Value>().await.unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let profile = wait_status(&http, &base, &id, 100).await;
    assert_eq!(
        (
            profile["status"].as_str(),
            profile["city"].as_str(),
            profile["gender"].clone()
        ),
        (Some("verified"), Some("Oslo"), Value::Null)
    );
    let login = post("/login", json!({"id": id, "password": "pw"}))
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    assert!(login.json::<Value>().await.unwrap()["token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));
    let bad = post("/login", json!({"id": id, "password": "nope"}))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let nobody = post("/login", json!({"id": "nobody", "password": "pw"}))
        .await
        .unwrap();
    assert_eq!(nobody.status(), StatusCode::UNAUTHORIZED);

    // The registration's request id and trace context reached the verifier.
    let store = sagaflow::store_url::open(&server.url).await.unwrap();
    let rows = sagaflow_app_kit::sql::read(
        &store,
        "SELECT request_id, traceparent FROM social_verifier_checks WHERE user_id = $1",
        &[id.as_str().into()],
    )
    .await
    .unwrap();
    assert_eq!(rows[0][0].as_str(), Some("req-social-1"));
    assert_eq!(rows[0][1].as_str(), Some(traceparent));

    // Fails verification (no second name, implausible birthdate): 403 with the reason.
    let resp = post(
        "/user/register",
        json!({"first_name": "Bob", "birthdate": "1990-05-01", "password": "pw"}),
    )
    .await
    .unwrap();
    let id2 = resp.json::<Value>().await.unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let profile = wait_status(&http, &base, &id2, 10).await;
    assert_eq!(profile["status"], "verification_failed");
    let login = post("/login", json!({"id": id2, "password": "pw"}))
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
    let problem: Value = login.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("second_name is required"),
        "{problem}"
    );
    let resp = post("/user/register", json!({"first_name": "Cy", "second_name": "Po", "birthdate": "2025-01-01", "password": "pw"})).await.unwrap();
    let id3 = resp.json::<Value>().await.unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let profile = wait_status(&http, &base, &id3, 10).await;
    assert!(
        profile["status_reason"]
            .as_str()
            .unwrap()
            .contains("not plausible"),
        "{profile}"
    );

    // Bad requests and unknown users.
    let resp = post(
        "/user/register",
        json!({"first_name": "No", "second_name": "Password"}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = http
        .get(format!("{base}/user/get/nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    drop(server);
    if let Some(schema) = schema {
        let _ = sagaflow_postgres::drop_schema(&pg_url(), &schema).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_registration_passes_or_fails_verification() {
    registration(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_registration_passes_or_fails_verification() {
    registration(true).await;
}
