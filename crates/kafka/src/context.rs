//! What librdkafka reports, in sagaflow's log: its errors once per distinct reason (it
//! retries a refused connection many times a second), its warnings as warnings, the rest at
//! debug; and, for consumers, which partitions this member holds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use tokio::sync::watch;

use crate::offsets::Offsets;

/// How often the same error is logged at most.
const REPEAT_EVERY: Duration = Duration::from_secs(30);

/// Logs what librdkafka says, without repeating itself.
#[derive(Default)]
pub(crate) struct Logged {
    last: Mutex<Option<(String, Instant)>>,
}

impl Logged {
    fn fresh(&self, text: &str) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let repeat = matches!(&*last, Some((t, at)) if t == text && at.elapsed() < REPEAT_EVERY);
        if !repeat {
            *last = Some((text.to_string(), Instant::now()));
        }
        !repeat
    }
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
        if self.fresh(&text) {
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
            logged: Logged::default(),
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
