//! Events of a choreographed flow: [`emit`] writes one into the event outbox *inside the
//! caller's transaction* (so it exists exactly when the change that caused it does) and
//! records it in the flow journal; an [`EventRelay`] publishes the outbox to the transport
//! and deletes what the broker took. Several relays on one database may publish a row twice:
//! the broker's de-duplication by message id and the subscribers' inbox make that harmless.

use std::sync::Arc;
use std::time::Duration;

use sagaflow_core::{Envelope, MessageKind, ParticipantTx, SqlValue, Store, StoreError, Transport};
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::flow::{self, Record};

/// The topic an event is published on: `sagaflow.events.{name}`.
pub fn event_topic(name: &str) -> String {
    format!("sagaflow.events.{name}")
}

/// An event to emit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Its name (the topic's last part), e.g. `blog.post_moderated`.
    pub name: String,
    /// Its message id: the same id for the same event, so a handler run twice emits it once.
    pub message_id: String,
    /// The flow it belongs to.
    pub correlation_id: String,
    /// The message that caused it.
    pub causation_id: Option<String>,
    /// What it says.
    pub payload: Value,
    /// The request that started the flow.
    pub request_id: Option<String>,
    /// The W3C trace context to continue.
    pub traceparent: Option<String>,
}

impl NewEvent {
    /// An event starting or continuing the flow `correlation_id`, with a fresh message id.
    pub fn new(name: &str, correlation_id: &str, payload: Value) -> Self {
        NewEvent {
            name: name.to_string(),
            message_id: uuid::Uuid::now_v7().to_string(),
            correlation_id: correlation_id.to_string(),
            causation_id: None,
            payload,
            request_id: None,
            traceparent: None,
        }
    }
}

/// Writes `event` into the event outbox and the flow journal, in `tx`, as emitted by
/// `service`. It is published once `tx` commits (by an [`EventRelay`]).
pub async fn emit(
    tx: &mut dyn ParticipantTx,
    service: &str,
    event: &NewEvent,
) -> Result<(), StoreError> {
    let envelope = Envelope {
        protocol: sagaflow_core::PROTOCOL_VERSION,
        message_id: event.message_id.clone(),
        kind: MessageKind::Event,
        subject: event_topic(&event.name),
        saga_id: None,
        correlation_id: Some(event.correlation_id.clone()),
        causation_id: event.causation_id.clone(),
        step: None,
        attempt: None,
        traceparent: event.traceparent.clone(),
        request_id: event.request_id.clone(),
        payload: event.payload.clone(),
    };
    let body = String::from_utf8(envelope.to_bytes()).unwrap_or_default();
    let inserted = tx
        .execute(
            "INSERT INTO sagaflow_event_outbox (message_id, topic, body, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (message_id) DO NOTHING",
            &[
                event.message_id.as_str().into(),
                event_topic(&event.name).into(),
                body.into(),
                flow::now_ms().into(),
            ],
        )
        .await?;
    if inserted > 0 {
        flow::record(
            tx,
            Record {
                correlation_id: &event.correlation_id,
                service,
                event: &event.name,
                message_id: &event.message_id,
                causation_id: event.causation_id.as_deref(),
                outcome: "emitted",
                attempt: 0,
                detail: None,
            },
        )
        .await?;
    }
    Ok(())
}

/// Publishes the event outbox.
pub struct EventRelay {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    wake: Arc<Notify>,
}

/// How often the relay looks at the outbox when nobody wakes it.
const POLL: Duration = Duration::from_millis(200);

impl EventRelay {
    /// Creates the tables if needed and starts publishing.
    pub async fn start(
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
    ) -> Result<EventRelay, StoreError> {
        flow::prepare(&store).await?;
        let (stop, mut stopped) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let woken = wake.clone();
        let task = tokio::spawn(async move {
            loop {
                let published = match relay_once(&store, &*transport).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "event relay: the outbox is unavailable");
                        0
                    }
                };
                if published > 0 {
                    continue;
                }
                tokio::select! {
                    _ = woken.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stopped.changed() => break,
                }
            }
        });
        Ok(EventRelay { stop, task, wake })
    }

    /// Publishes now rather than at the next poll (after a commit that emitted events).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A handle that wakes this relay.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Stops publishing.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Publishes up to 100 outbox rows, oldest first; returns how many went out.
async fn relay_once(
    store: &Arc<dyn Store>,
    transport: &dyn Transport,
) -> Result<usize, StoreError> {
    let mut tx = store.begin().await?;
    let rows = tx
        .query(
            "SELECT message_id, topic, body FROM sagaflow_event_outbox ORDER BY created_at, message_id LIMIT 100",
            &[],
        )
        .await;
    let _ = tx.rollback().await;
    let text = |row: &[SqlValue], i: usize| {
        row.get(i)
            .and_then(SqlValue::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut sent = Vec::new();
    for row in rows? {
        let (id, topic, body) = (text(&row, 0), text(&row, 1), text(&row, 2));
        match transport.publish(&topic, &id, body.into_bytes()).await {
            Ok(()) => sent.push(id),
            Err(e) => {
                tracing::warn!(error = %e, topic, "publishing an event failed; it stays in the outbox");
                break;
            }
        }
    }
    if sent.is_empty() {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    for id in &sent {
        tx.execute(
            "DELETE FROM sagaflow_event_outbox WHERE message_id = $1",
            &[id.as_str().into()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(sent.len())
}
