//! `sagaflow serve` as users run it: the real binary on a free port (a second one beside it
//! on another file), sagas through the HTTP API, and a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(db: &std::path::Path) -> Server {
        let url = format!("sqlite://{}", db.display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
            .env_remove("SAGAFLOW_DATABASE_URL")
            .env_remove("SAGAFLOW_LISTEN")
            .env_remove("SAGAFLOW_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sagaflow serve");
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        Server { child, addr }
    }

    /// One HTTP/1.1 request; returns the status and the JSON body (Null when empty).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let (status, text) = self.call_text(method, path, body, headers);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// One HTTP/1.1 request; returns the status and the body as text.
    fn call_text(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, body)
    }

    fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, saga) = self.call("GET", &format!("/api/v1/sagas/{id}"), None, &[]);
            assert_eq!(code, 200, "{saga}");
            if saga["status"] == status {
                return saga;
            }
            assert!(
                Instant::now() < deadline,
                "saga {id} never became {status}: {saga}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_saga(&self, input: Value, headers: &[(&str, &str)]) -> String {
        let (code, body) = self.call(
            "POST",
            "/api/v1/sagas",
            Some(json!({"definition": "order", "input": input})),
            headers,
        );
        assert_eq!(code, 202, "{body}");
        body["saga_id"].as_str().expect("saga_id").to_string()
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let mut rest = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut rest)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        assert!(rest.contains("sagaflow stopped"), "{rest}");
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn two_servers_side_by_side_run_sagas_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(&dir.path().join("a.db"));
    let b = Server::start(&dir.path().join("b.db"));
    assert_ne!(a.addr, b.addr);
    for s in [&a, &b] {
        let (code, body) = s.call("GET", "/healthz", None, &[]);
        assert_eq!((code, body["status"].as_str()), (200, Some("ok")));
    }

    // Happy path, with a request id that the saga records.
    let ok = a.start_saga(
        json!({"product": "book", "qty": 1, "amount": 30}),
        &[("X-Request-ID", "e2e-1")],
    );
    a.wait_status(&ok, "completed");
    let (_, journal) = a.call("GET", &format!("/api/v1/sagas/{ok}/journal"), None, &[]);
    assert_eq!(journal[0]["event"]["request_id"], "e2e-1", "{journal}");

    // Declined by billing: compensated, and the history shows the compensation.
    let declined = a.start_saga(json!({"product": "book", "qty": 1, "amount": 500}), &[]);
    a.wait_status(&declined, "compensated");
    let (code, history) = a.call(
        "GET",
        &format!("/api/v1/sagas/{declined}/history"),
        None,
        &[],
    );
    assert_eq!(code, 200);
    let kinds: Vec<(String, String)> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["step_name"].as_str().unwrap().into(),
                h["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("reserve_stock".into(), "compensation".into())),
        "{history}"
    );

    // Out of stock: parks; a signal by correlation key reaches it; a cancel compensates it.
    let parked = a.start_saga(json!({"product": "lamp", "qty": 1, "amount": 10}), &[]);
    a.wait_status(&parked, "waiting");
    let (code, reached) = a.call(
        "POST",
        "/api/v1/signals",
        Some(json!({"name": "stock_added", "correlation_key": "lamp", "payload": {}})),
        &[],
    );
    assert_eq!(code, 202, "{reached}");
    assert_eq!(reached["reached"], json!([parked]));
    a.wait_status(&parked, "waiting");
    let (code, body) = a.call("POST", &format!("/api/v1/sagas/{parked}/cancel"), None, &[]);
    assert_eq!(code, 202, "{body}");
    a.wait_status(&parked, "compensated");
    let (code, body) = a.call("POST", &format!("/api/v1/sagas/{ok}/cancel"), None, &[]);
    assert_eq!(code, 409, "{body}");

    // The metrics count what happened.
    let (code, metrics) = a.call_text("GET", "/metrics", None, &[]);
    assert_eq!(code, 200);
    for line in [
        "sagaflow_sagas_started_total{definition=\"order\"} 3",
        "sagaflow_sagas_ended_total{definition=\"order\",status=\"completed\"} 1",
        "sagaflow_sagas_ended_total{definition=\"order\",status=\"compensated\"} 2",
        "sagaflow_step_attempts_total{definition=\"order\",step=\"charge\",kind=\"action\",outcome=\"rejected\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    let (_, saga) = a.call("GET", &format!("/api/v1/sagas/{ok}"), None, &[]);
    assert_eq!(saga["request_id"], "e2e-1", "{saga}");

    // The command line talks to the same API.
    let server = format!("http://{}", a.addr);
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
            .args(args)
            .args(["--server", &server])
            .env_remove("SAGAFLOW_SERVER")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok_ls, table, _) = cli(&["saga", "ls", "--status", "compensated"]);
    assert!(ok_ls);
    assert_eq!(
        table.lines().count(),
        3,
        "a header and two compensated sagas:\n{table}"
    );
    let (_, listed, _) = cli(&["saga", "ls", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 3);
    let (_, shown, _) = cli(&["saga", "show", &ok]);
    assert!(
        shown.contains("completed") && shown.contains("e2e-1"),
        "{shown}"
    );
    let (_, history, _) = cli(&["saga", "history", &declined]);
    assert!(
        history.contains("reserve_stock") && history.contains("compensation"),
        "{history}"
    );
    let (refused, _, err) = cli(&["saga", "cancel", &ok]);
    assert!(!refused && err.contains("pivot"), "{err}");
    let (missing, _, err) = cli(&["saga", "show", "nope"]);
    assert!(!missing && err.contains("saga_not_found"), "{err}");
    let lamp = a.start_saga(json!({"product": "lamp", "qty": 1, "amount": 10}), &[]);
    a.wait_status(&lamp, "waiting");
    let (signalled, out, err) = cli(&["signal", "stock_added", "--correlation-key", "lamp"]);
    assert!(
        signalled && out.contains("reached 1 saga(s)") && out.contains(&lamp),
        "{out}{err}"
    );
    a.wait_status(&lamp, "waiting");
    let (cancelled, out, _) = cli(&["saga", "cancel", &lamp, "--reason", "from the CLI"]);
    // Nothing was done (the reservation parked), so there is nothing to undo: it ends at once.
    assert!(cancelled && out.contains("is compensated"), "{out}");
    a.wait_status(&lamp, "compensated");
    let (unreachable, _, err) = {
        let out = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
            .args(["saga", "ls", "--server", "http://127.0.0.1:9"])
            .output()
            .unwrap();
        (
            out.status.success(),
            (),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(
        !unreachable && err.contains("cannot reach sagaflow"),
        "{err}"
    );

    // The other server has its own file: it knows none of these sagas.
    let (code, _) = b.call("GET", &format!("/api/v1/sagas/{ok}"), None, &[]);
    assert_eq!(code, 404);
    a.stop();
    b.stop();
}

#[test]
fn a_bad_setting_names_its_source_and_a_public_address_needs_insecure() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sagaflow"));
        cmd.args(args)
            .env_remove("SAGAFLOW_LISTEN")
            .env_remove("SAGAFLOW_CONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["serve"], &[("SAGAFLOW_LISTEN", "nowhere")]);
    assert!(
        err.contains("SAGAFLOW_LISTEN = \"nowhere\" is not a socket address"),
        "{err}"
    );
    let err = run(&["serve", "--listen", "0.0.0.0:0"], &[]);
    assert!(
        err.contains("not a loopback address") && err.contains("--insecure"),
        "{err}"
    );
}

#[test]
fn with_an_api_key_a_public_address_is_served_and_operating_needs_the_key() {
    // `key new` makes the key and the configuration entry for its hash.
    let out = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(["key", "new", "--name", "e2e", "--rights", "operate,read"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let key = printed
        .split_whitespace()
        .find(|w| w.starts_with("sfk_"))
        .unwrap_or_else(|| panic!("no key in {printed}"))
        .to_string();
    let entry = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("e2e:"))
        .unwrap_or_else(|| panic!("no SAGAFLOW_API_KEYS entry in {printed}"))
        .to_string();
    assert!(
        !entry.contains(&key[4..]),
        "the key itself is never configured"
    );

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keyed.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(["serve", "--listen", "0.0.0.0:0", "--database-url", &url])
        .env_remove("SAGAFLOW_DATABASE_URL")
        .env_remove("SAGAFLOW_LISTEN")
        .env_remove("SAGAFLOW_CONFIG")
        .env_remove("SAGAFLOW_INSECURE")
        .env_remove("SAGAFLOW_READ_OPEN")
        .env("SAGAFLOW_API_KEYS", &entry)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sagaflow serve");
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port = first
        .split("http://0.0.0.0:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("not listening on 0.0.0.0: {first:?}"))
        .to_string();
    let server = Server {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    let (code, _) = server.call("GET", "/healthz", None, &[]);
    assert_eq!(code, 200);
    let start =
        json!({"definition": "order", "input": {"product": "book", "qty": 1, "amount": 30}});
    let (code, body) = server.call("POST", "/api/v1/sagas", Some(start.clone()), &[]);
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["code"], "unauthorized");
    let (code, _) = server.call("GET", "/api/v1/sagas", None, &[]);
    assert_eq!(code, 401, "reading is not open by default");
    let bearer = format!("Bearer {key}");
    let (code, body) = server.call(
        "POST",
        "/api/v1/sagas",
        Some(start),
        &[("Authorization", &bearer)],
    );
    assert_eq!(code, 202, "{body}");
    let (code, _) = server.call("GET", "/api/v1/sagas", None, &[("X-API-Key", &key)]);
    assert_eq!(code, 200);
    server.stop();
}

/// What the stand-in collector received: each request's path and body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A stand-in OTLP/HTTP collector: records each request's path and body.
fn fake_collector() -> (String, Received) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            record.lock().unwrap().push((path, body));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (format!("http://{addr}"), seen)
}

#[test]
fn spans_are_exported_over_otlp_in_the_requests_trace() {
    let (collector, seen) = fake_collector();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("otel.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("SAGAFLOW_LISTEN")
        .env_remove("SAGAFLOW_CONFIG")
        .env_remove("SAGAFLOW_API_KEYS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let server = Server { child, addr };
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let id = server.start_saga(
        json!({"product": "book", "qty": 1, "amount": 30}),
        &[("traceparent", traceparent.as_str())],
    );
    server.wait_status(&id, "completed");
    server.stop();
    // The decision and attempt spans carry the request's trace id (16 raw bytes in OTLP).
    let trace_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|(path, _)| path == "/v1/traces"),
        "no OTLP export: {:?}",
        seen.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    assert!(
        seen.iter()
            .any(|(_, body)| body.windows(16).any(|w| w == trace_bytes.as_slice())),
        "no exported span is in the request's trace"
    );
}
