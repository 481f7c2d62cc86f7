//! The one JSON envelope every message travels in, on every transport.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Engine → participant: do (or undo) a step.
    Command,
    /// Participant → engine: what happened.
    Reply,
    /// Anyone → subscribers: something happened.
    Event,
}

/// The envelope: ids for tracing and de-duplication, and the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Unique per message; a re-publish of the same message keeps it (transports de-duplicate on it).
    pub message_id: String,
    /// Command, reply or event.
    pub kind: MessageKind,
    /// The subject, e.g. `billing.charge`.
    pub subject: String,
    /// The saga it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga_id: Option<String>,
    /// Ties together the messages of one business flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The message that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The step name, for commands and replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The attempt, for commands and replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// W3C trace context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The request that started it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The body.
    pub payload: Value,
}

impl Envelope {
    /// Serialises to JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // An Envelope holds only strings, numbers and JSON values: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses JSON bytes, saying what is wrong when they are not an envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a sagaflow envelope: {e}"))
    }
}

/// The topic a participant service consumes its commands from.
pub fn command_topic(service: &str) -> String {
    format!("sagaflow.commands.{service}")
}

/// The topic the engine consumes replies from.
pub const REPLY_TOPIC: &str = "sagaflow.replies";

/// The payload of a command envelope: what a participant needs to perform (or undo) a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandPayload {
    /// The saga.
    pub saga_id: String,
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub version: u32,
    /// Step index (echoed in the reply).
    pub step: usize,
    /// Step name.
    pub step_name: String,
    /// Attempt (echoed in the reply).
    pub attempt: u32,
    /// Action or compensation (echoed in the reply).
    pub phase: crate::event::Phase,
    /// The command's name within the participant service.
    pub command: String,
    /// The idempotency key: handle each key at most once.
    pub key: String,
    /// The saga context when the command was sent.
    pub context: Value,
}
