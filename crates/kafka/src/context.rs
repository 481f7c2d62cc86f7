//! What librdkafka reports, in sagaflow's log: its errors once per distinct reason per
//! process (it retries a refused connection many times a second, from every client), its
//! warnings as warnings, the rest at debug; and, for consumers, which partitions this member
//! holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use tokio::sync::watch;

use crate::offsets::Offsets;

/// How often the same reason is logged at most.
const REPEAT_EVERY: Duration = Duration::from_secs(30);

/// The reasons logged within [`REPEAT_EVERY`], by every client of the process.
static RECENT: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);

/// Logs what librdkafka says, without repeating itself.
#[derive(Default)]
pub(crate) struct Logged;

impl Logged {
    fn fresh(&self, text: &str) -> bool {
        let reason = reason(text);
        let mut recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
        let recent = recent.get_or_insert_with(HashMap::new);
        recent.retain(|_, at| at.elapsed() < REPEAT_EVERY);
        if recent.contains_key(&reason) {
            return false;
        }
        recent.insert(reason, Instant::now());
        true
    }
}

/// What a message says without what changes from one retry to the next: the reporting
/// thread, counts, timings, ports and broker ids.
fn reason(text: &str) -> String {
    let text = match text.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ").map_or(rest, |(_, after)| after),
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 || c.is_ascii_digit() => {}
            _ => out.push(c),
        }
    }
    out
}

/// librdkafka's "all brokers down" with none down: the connection came back.
fn none_down(reason: &str) -> bool {
    reason.contains(": 0/")
}

impl ClientContext for Logged {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if self.fresh(message) {
                    tracing::warn!(target: "sagaflow_kafka", facility, "Kafka client: {message}");
                }
            }
            _ => tracing::debug!(target: "sagaflow_kafka", facility, "Kafka client: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let text = format!("{error}: {reason}");
        if none_down(&text) {
            tracing::debug!(target: "sagaflow_kafka", "Kafka: {text}");
        } else if self.fresh(&text) {
            tracing::warn!(target: "sagaflow_kafka", "Kafka: {text}");
        }
    }
}

/// A consumer's context: logs, tells when the group gave it partitions, and forgets the
/// outstanding offsets of partitions taken away.
pub(crate) struct Member {
    logged: Logged,
    offsets: Arc<Mutex<Offsets>>,
    assigned: Option<watch::Sender<bool>>,
}

impl Member {
    /// A member keeping `offsets`, telling `assigned` when it first gets partitions.
    pub(crate) fn new(
        offsets: Arc<Mutex<Offsets>>,
        assigned: Option<watch::Sender<bool>>,
    ) -> Member {
        Member {
            logged: Logged,
            offsets,
            assigned,
        }
    }
}

impl ClientContext for Member {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.logged.log(level, facility, message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logged.error(error, reason)
    }
}

impl ConsumerContext for Member {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::debug!(target: "sagaflow_kafka", partitions = partitions.count(), "partitions assigned");
                if let Some(assigned) = &self.assigned {
                    assigned.send_replace(true);
                }
            }
            Rebalance::Revoke(partitions) => {
                let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
                for p in partitions.elements() {
                    offsets.forget(p.partition());
                }
            }
            Rebalance::Error(e) => {
                tracing::warn!(target: "sagaflow_kafka", error = %e, "consumer group rebalance failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_of_one_reason_read_the_same() {
        let a = "[thrd:127.0.0.1:40565/bootstrap]: 127.0.0.1:40565/bootstrap: Connect to ipv4#127.0.0.1:40565 failed: Connection refused (after 0ms in state CONNECT)";
        let b = "[thrd:127.0.0.1:40565/bootstrap]: 127.0.0.1:40565/bootstrap: Connect to ipv4#127.0.0.1:40565 failed: Connection refused (after 1ms in state CONNECT, 1 identical error(s) suppressed)";
        assert_eq!(reason(a), reason(b));
        assert_ne!(
            reason(a),
            reason("Global error: AllBrokersDown: 1/1 brokers are down")
        );
        assert!(none_down("Global error: AllBrokersDown (Local: All broker connections are down): 0/1 brokers are down"));
        assert!(!none_down("Global error: AllBrokersDown (Local: All broker connections are down): 1/1 brokers are down"));
    }
}
