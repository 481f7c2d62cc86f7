//! How sagaflow's topics and groups map onto Kafka's: one Kafka topic per sagaflow topic, one
//! retry topic per (topic, group), one dead-letter topic per topic, one consumer group per
//! (topic, group), all under the deployment's namespace.

use sagaflow_core::TransportError;

/// Kafka's limit on a topic name's length.
const MAX_TOPIC_NAME: usize = 249;

/// Names under one namespace (`""`, or `"team-a."`).
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(namespace: Option<&str>) -> Names {
        Names {
            prefix: namespace.map(|ns| format!("{ns}.")).unwrap_or_default(),
        }
    }

    /// The Kafka topic messages for `topic` are published on.
    pub(crate) fn topic(&self, topic: &str) -> Result<String, TransportError> {
        checked(format!("{}{topic}", self.prefix), topic)
    }

    /// The topic a group's nacked messages wait on before they are delivered again
    /// (Spring Kafka's `-retry` convention, one per group, since each group retries its own).
    pub(crate) fn retry_topic(&self, topic: &str, group: &str) -> Result<String, TransportError> {
        checked(
            format!("{}{topic}-retry-{}", self.prefix, sanitize(group)),
            topic,
        )
    }

    /// The topic a copy of each dead letter goes to, for Kafka tooling (sagaflow's own dead
    /// letters are in its store).
    pub(crate) fn dead_letter_topic(&self, topic: &str) -> Result<String, TransportError> {
        checked(format!("{}{topic}-dlt", self.prefix), topic)
    }

    /// The consumer group of a sagaflow group on a topic.
    pub(crate) fn group(&self, topic: &str, group: &str) -> String {
        format!("{}{group}:{topic}", self.prefix)
    }

    /// The consumer group reading a group's retry topic.
    pub(crate) fn retry_group(&self, topic: &str, group: &str) -> String {
        format!("{}{group}:{topic}-retry", self.prefix)
    }
}

/// Replaces what a topic name may not hold with `_`.
fn sanitize(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn checked(name: String, topic: &str) -> Result<String, TransportError> {
    let valid = !topic.is_empty()
        && name.len() <= MAX_TOPIC_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
    if valid {
        Ok(name)
    } else {
        Err(TransportError::Invalid(format!(
            "{topic:?} cannot be a Kafka topic: use letters, digits, '.', '_' and '-', at most {MAX_TOPIC_NAME} in all"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn names_follow_the_namespace_and_refuse_what_kafka_refuses() {
        let n = Names::new(Some("team-a"));
        assert_eq!(
            n.topic("sagaflow.commands.billing").unwrap(),
            "team-a.sagaflow.commands.billing"
        );
        assert_eq!(
            n.retry_topic("sagaflow.replies", "engine x").unwrap(),
            "team-a.sagaflow.replies-retry-engine_x"
        );
        assert_eq!(n.dead_letter_topic("t").unwrap(), "team-a.t-dlt");
        assert_eq!(n.group("t", "billing"), "team-a.billing:t");
        let plain = Names::new(None);
        assert_eq!(plain.topic("a.b").unwrap(), "a.b");
        assert!(plain.topic("a b").is_err());
        assert!(plain.topic("").is_err());
        assert!(plain.topic(&"x".repeat(250)).is_err());
    }
}
