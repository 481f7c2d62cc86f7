//! The social network's registration, through HTTP against the real server (`sagaflow
//! serve`), on SQLite and PostgreSQL: a registration that passes verification and logs in; one
//! that fails (with the reason at login); bad credentials; the profile with its status; and
//! the request id and trace context of the registration reaching the verifier.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use sagaflow_testkit::brokers::{free_port, wait_for_port};
use serde_json::{json, Value};

/// Waits until the server answers `/readyz` with 200: it listens before its store is open, and
/// a second process opening a SQLite file mid-migration would find it locked.
fn wait_ready(port: u16) {
    wait_for_port(port, Duration::from_secs(60)).expect("the server listens");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                use std::io::{Read, Write};
                s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n")?;
                let mut head = [0u8; 12];
                s.read_exact(&mut head)?;
                Ok(head.ends_with(b"200"))
            })
            .unwrap_or(false);
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "the server never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pg_base() -> String {
    std::env::var("SAGAFLOW_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

struct Server {
    child: Child,
    base: String,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(postgres: bool) -> (Server, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let (url, schema) = if postgres {
        let schema = format!("social_{}", fastrand::u32(..));
        (format!("{}?schema={schema}", pg_base()), Some(schema))
    } else {
        (
            format!("sqlite://{}", dir.path().join("social.db").display()),
            None,
        )
    };
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            &url,
        ])
        .env("SAGAFLOW_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sagaflow serve");
    wait_ready(port);
    (
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            url,
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
        let _ = sagaflow_postgres::drop_schema(&pg_base(), &schema).await;
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
