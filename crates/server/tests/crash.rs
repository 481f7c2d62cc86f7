//! Crash recovery: 1 000 sagas through a child `sagaflow drill` process that is killed with
//! SIGKILL at random moments, several times, and once stopped with SIGTERM; then every saga
//! must have ended correctly with every participant effect exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SAGAS: usize = 1000;

fn drill(url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args([
            "drill",
            "--database-url",
            url,
            "--sagas",
            &SAGAS.to_string(),
        ])
        .env("SAGAFLOW_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sagaflow drill")
}

/// Reads the child's lines until `stop` says so or it exits; returns the last line.
fn read_until(child: &mut Child, mut stop: impl FnMut(&str, usize) -> bool) -> Option<String> {
    let out = child.stdout.as_mut().expect("stdout");
    let mut last = None;
    for (n, line) in BufReader::new(out).lines().enumerate() {
        let Ok(line) = line else { break };
        let done = stop(&line, n);
        last = Some(line);
        if done {
            break;
        }
    }
    last
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sagaflow drill did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_at_random_moments_then_every_saga_ends_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("drill.db").display());
    let seed = std::env::var("SAGAFLOW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed {seed} (set SAGAFLOW_CRASH_SEED to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let mut finished = false;
    for round in 0..6 {
        let mut child = drill(&url);
        // Kill after a random number of progress lines: a random moment in the run.
        let kill_after = rng.usize(1..40);
        let last = read_until(&mut child, |line, n| {
            line == "drill done" || n >= kill_after
        });
        eprintln!(
            "round {round}: stopped reading after {kill_after} progress lines; last {last:?}"
        );
        if last.as_deref() == Some("drill done") {
            wait_exit(&mut child, Duration::from_secs(30));
            finished = true;
            break;
        }
        if round == 3 {
            // Once, a graceful stop: SIGTERM finishes the decisions in hand and exits 0.
            let pid = child.id().to_string();
            let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            assert!(sent.success());
            let last = read_until(&mut child, |line, _| {
                line == "drill stopped" || line == "drill done"
            });
            let status = wait_exit(&mut child, Duration::from_secs(30));
            assert!(
                status.success(),
                "SIGTERM exit: {status:?}, last line {last:?}"
            );
        } else {
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
        }
    }
    if !finished {
        let mut child = drill(&url);
        let last = read_until(&mut child, |line, _| line == "drill done");
        let status = wait_exit(&mut child, Duration::from_secs(240));
        assert!(
            status.success() && last.as_deref() == Some("drill done"),
            "{status:?} {last:?}"
        );
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store: Arc<dyn sagaflow_core::Store> =
            Arc::new(sagaflow_sqlite::SqliteStore::open(&url).await.unwrap());
        let report = sagaflow::drill::verify(&store, SAGAS)
            .await
            .unwrap_or_else(|problems| panic!("seed {seed}:\n{}", problems.join("\n")));
        assert_eq!(report.completed + report.compensated, SAGAS);
        assert_eq!(report.compensated, SAGAS / 10);
    });
}
