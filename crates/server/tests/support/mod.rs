//! What the server's integration tests share: the PostgreSQL URL, and a `sagaflow serve`
//! child process that is ready (store open) before a test talks to it.

#![allow(dead_code)] // each test binary uses its own part

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sagaflow_testkit::brokers::{free_port, wait_for_port};

/// The test database (`SAGAFLOW_TEST_PG_URL`, default the local `test` database).
pub fn pg_url() -> String {
    std::env::var("SAGAFLOW_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Waits until the server answers `/readyz` with 200: it listens before its store is open, and
/// a second process opening a SQLite file mid-migration would find it locked.
pub fn wait_ready(port: u16) {
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

/// A `sagaflow serve` on a free loopback port; killed when dropped.
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Serve {
    /// Starts one on `database_url` with extra environment, and waits until it is ready.
    pub fn start(database_url: &str, env: &[(&str, &str)]) -> Serve {
        Serve::start_with(database_url, &[], env)
    }

    /// Starts one with extra arguments (`--transport …`, `--redis-url …`) and environment.
    pub fn start_with(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                database_url,
            ])
            .args(args)
            .envs(env.iter().copied())
            .env("SAGAFLOW_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sagaflow serve");
        let serve = Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        wait_ready(port);
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `sagaflow` child process (a participant, an engine), killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `sagaflow ARGS` with extra environment.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_sagaflow"))
            .args(args)
            .envs(env.iter().copied())
            .env("SAGAFLOW_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sagaflow"),
    )
}

/// Polls `GET /api/v1/sagas/{id}` until its status is one `done` accepts (deadline 60 s);
/// returns that status.
pub async fn wait_saga(
    http: &reqwest::Client,
    base: &str,
    saga: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value = http
            .get(format!("{base}/api/v1/sagas/{saga}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(status) = v["status"].as_str().filter(|s| done(s)) {
            return status.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "saga {saga} never got there: {v}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Query strings every paged list refuses with 400 `bad_parameter`, each with the parameter
/// its message names.
pub const BAD_PAGES: [(&str, &str); 5] = [
    ("limit=0", "limit"),
    ("limit=x", "limit"),
    ("limit=501", "limit"),
    ("offset=-1", "offset"),
    ("offset=x", "offset"),
];

/// Two pages of a three-row list (`?limit=2`, then `?limit=2&offset=2`): two rows and one,
/// no overlap, together the whole list in its order.
pub fn assert_pages_of_three<T: PartialEq + std::fmt::Debug + Clone>(
    first: Vec<T>,
    second: Vec<T>,
    all: &[T],
) {
    assert_eq!((first.len(), second.len()), (2, 1), "{first:?} {second:?}");
    assert!(!first.contains(&second[0]), "no overlap");
    assert_eq!(
        [first, second].concat(),
        all,
        "the pages are the list, in order"
    );
}
