//! Schemathesis fuzzes the real binary's API from its own OpenAPI document: no input may get a
//! 5xx, and every response must be one the document declares (status, content type, schema).
//!
//! Needs the `schemathesis` CLI (PyPI), pinned and installed by `scripts/test`, which exports
//! `SAGAFLOW_SCHEMATHESIS` (the executable); otherwise `schemathesis` on PATH. Without it this
//! test fails, never skips.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The whole schemathesis run must finish within this.
const HARD_TIMEOUT: Duration = Duration::from_secs(240);

/// Test cases per operation and phase: enough to find the edges, bounded in time.
const MAX_EXAMPLES: &str = "25";

/// Fixed, so a failure reproduces with the same inputs.
const SEED: &str = "20240601";

/// The checks that matter for "nothing breaks on any input, and the document tells the truth".
///
/// Left out on purpose:
/// - `positive_data_acceptance`: it expects every schema-valid request to succeed, but the API
///   rightly refuses some of them for reasons no JSON Schema can state (a cursor the API never
///   gave out, a definition that fails validation, an unknown definition or saga) with
///   documented 4xx problem responses.
/// - `ignored_auth`: this server runs without API keys (the loopback default), where every
///   endpoint is open by design; the auth tests cover keys.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,response_headers_conformance,negative_data_rejection,\
unsupported_method";

/// Kills the process if the test ends early (a panic included).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn schemathesis() -> String {
    let exe = std::env::var("SAGAFLOW_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let version = Command::new(&exe).arg("--version").output();
    match version {
        Ok(out) if out.status.success() => exe,
        other => panic!(
            "schemathesis is not installed (tried {exe:?}: {other:?}). scripts/test installs the \
             pinned version and exports SAGAFLOW_SCHEMATHESIS; run it, or install it yourself \
             with `python3 -m pip install 'schemathesis==4.32.5'`"
        ),
    }
}

fn start_server(dir: &Path) -> (Killed, String) {
    let url = format!("sqlite://{}", dir.join("fuzz.db").display());
    let mut command = Command::new(env!("CARGO_BIN_EXE_sagaflow"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("server.log")).unwrap(),
        ));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SAGAFLOW_") {
            command.env_remove(key);
        }
    }
    let mut child = Killed(command.spawn().expect("spawn sagaflow serve"));
    let mut first = String::new();
    BufReader::new(child.0.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    (child, addr)
}

#[test]
fn schemathesis_finds_nothing_wrong_with_the_api() {
    let exe = schemathesis();
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start_server(dir.path());
    let log_path = dir.path().join("schemathesis.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // In the temporary directory, so no stray config is picked up and nothing is left behind.
    let mut fuzz = Killed(
        Command::new(&exe)
            .current_dir(dir.path())
            .args(["run", &format!("http://{addr}/api/v1/openapi.json")])
            .args(["--checks", CHECKS])
            .args(["--max-examples", MAX_EXAMPLES])
            .args(["--seed", SEED])
            .args(["--generation-database", "none"])
            .args(["--request-timeout", "10"])
            .arg("--no-color")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn schemathesis"),
    );
    let deadline = Instant::now() + HARD_TIMEOUT;
    let status = loop {
        if let Some(status) = fuzz.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let server_log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    let server_tail: String = {
        let lines: Vec<&str> = server_log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    match status {
        None => panic!(
            "schemathesis did not finish within {HARD_TIMEOUT:?}; its output so far:\n{output}\n\
             --- server log (tail) ---\n{server_tail}"
        ),
        Some(status) => assert!(
            status.success(),
            "schemathesis found problems ({status}); reproduce with the curl lines below \
             (seed {SEED}):\n{output}\n--- server log (tail) ---\n{server_tail}"
        ),
    }
    assert!(
        output.contains("passed"),
        "schemathesis succeeded without reporting tests:\n{output}"
    );
}
