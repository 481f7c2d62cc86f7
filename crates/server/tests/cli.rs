//! The binary as a person uses it: the demo (`cargo run`), `saga ls`, a small bench, and
//! clear errors for bad flags.

use std::process::{Command, Output};

fn sagaflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(args)
        .env_remove("SAGAFLOW_DATABASE_URL")
        .output()
        .expect("run sagaflow")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_demo_completes_compensates_and_waits() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let out = sagaflow(&["demo", "--database-url", &url]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("→ completed").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("→ compensated").count(), 1, "{stdout}");
    assert!(
        stdout.contains("charge rejected: card declined for 500"),
        "{stdout}"
    );
    assert!(stdout.contains("reserve_stock compensated"), "{stdout}");
    assert!(stdout.contains("woken by signal stock_added"), "{stdout}");

    // A second run on the same file works too.
    assert!(sagaflow(&["demo", "--database-url", &url]).status.success());
}

/// The bench, with the Rust participant or with an HTTP one (sagaflow calling an endpoint
/// on loopback), prints one JSON line whose counts add up.
#[test]
fn a_small_bench_prints_one_json_line() {
    for participants in ["sdk", "http"] {
        let out = sagaflow(&[
            "bench",
            "--store",
            "sqlite",
            "--sagas",
            "300",
            "--steps",
            "3",
            "--concurrency",
            "32",
            "--fail-rate",
            "0.2",
            "--participants",
            participants,
            "--quiet",
        ]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{participants}: {stderr}");
        let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        assert_eq!(line["sagas"], 300);
        assert_eq!(line["participants"], participants);
        let completed = line["completed"].as_u64().unwrap();
        let compensated = line["compensated"].as_u64().unwrap();
        assert_eq!(completed + compensated, 300, "{line}");
        assert!(
            compensated > 20 && compensated < 100,
            "about 20 % compensate: {compensated}"
        );
        assert_eq!(line["failed"], 0);
        for key in ["sagas_per_sec", "p50_ms", "p95_ms", "p99_ms"] {
            assert!(line[key].as_f64().unwrap() > 0.0, "{key}: {line}");
        }
    }
    let out = sagaflow(&["bench", "--participants", "grpc", "--sagas", "1"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("--participants must be sdk or http"));
}

#[test]
fn bad_bench_flags_say_what_is_wrong() {
    let out = sagaflow(&["bench", "--store", "mysql", "--sagas", "1"]);
    assert!(text(&out).1.contains("--store must be sqlite or postgres"));
    let out = sagaflow(&["bench", "--fail-rate", "2", "--sagas", "1"]);
    assert!(text(&out).1.contains("--fail-rate must be between 0 and 1"));
    let out = sagaflow(&[
        "bench",
        "--store",
        "postgres",
        "--database-url",
        "sqlite://x.db",
        "--sagas",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("does not match --database-url"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_the_saga_id() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("logs.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(["demo", "--log-format", "json", "--database-url", &url])
        .env("SAGAFLOW_LOG", "sagaflow_engine=debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let decisions: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .filter(|v: &serde_json::Value| v["fields"]["message"] == "decision committed")
        .collect();
    assert!(!decisions.is_empty(), "{stderr}");
    // Each decision's line is inside its `decision` span, which carries the saga id.
    for d in &decisions {
        assert_eq!(d["span"]["name"], "decision", "{d}");
        assert!(
            d["span"]["saga_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{d}"
        );
    }
    let bad = sagaflow(&["demo", "--log-format", "xml"]);
    assert!(!bad.status.success());
}

/// `serve` on `db` with the definitions of `dir`, run to its end (a refusal).
fn serve_with_definitions(db: &str, dir: &std::path::Path) -> Output {
    sagaflow(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        db,
        "--definitions",
        dir.to_str().unwrap(),
    ])
}

/// Definition files as a person checks them: `definitions validate` passes a good file and
/// names the file, the step and the reason of a bad one; `serve --definitions` refuses to
/// start on a directory holding the bad one, saying the same.
#[test]
fn bad_definition_files_are_refused_naming_the_file_the_step_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/polyglot/definitions/order.yaml");
    let out = sagaflow(&["definitions", "validate", good.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("ok    ") && stdout.contains("polyglot-order v1 (3 steps)"),
        "{stdout}"
    );

    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    let bad = defs.join("refund.yaml");
    std::fs::write(
        &bad,
        "name: refund\nversion: 1\nsteps:\n  - name: pay_back\n    kind: compensatable\n    action: payments.refund\n",
    )
    .unwrap();
    let out = sagaflow(&[
        "definitions",
        "validate",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("refund.yaml")
            && stdout.contains("pay_back")
            && stdout.contains("needs a compensation"),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 of 2 definition files are invalid"),
        "{stderr}"
    );

    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let out = serve_with_definitions(&db, &defs);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "serve started on a bad file: {stdout}"
    );
    assert!(
        stderr.contains("refund.yaml")
            && stderr.contains("pay_back")
            && stderr.contains("needs a compensation"),
        "{stderr}"
    );

    // A valid file that reuses the name and version of a built-in saga.
    std::fs::write(
        &bad,
        "name: order\nversion: 1\nsteps:\n  - name: ship\n    kind: pivot\n    action: delivery.ship\n",
    )
    .unwrap();
    let out = serve_with_definitions(&db, &defs);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "serve started: {stdout}");
    assert!(
        stderr.contains("refund.yaml") && stderr.contains("order v1 is taken by a saga built into"),
        "{stderr}"
    );
}
