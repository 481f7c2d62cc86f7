//! The reply consumer: participants' replies become inputs for the decision loop. A message
//! that is not a reply goes to the dead letters with the reason.

use std::sync::Arc;

use sagaflow_core::{Envelope, Input, MessageKind, Reply, SagaId, Subscription, REPLY_TOPIC};
use tokio::sync::{mpsc, watch};

use crate::applier::{Origin, Work};
use crate::engine::Shared;
use crate::error::EngineError;

/// The consumer group every engine joins for replies.
const GROUP: &str = "sagaflow-engine";

pub(crate) async fn subscribe(shared: &Shared) -> Result<Box<dyn Subscription>, EngineError> {
    Ok(shared.transport.subscribe(REPLY_TOPIC, GROUP).await?)
}

/// Reads a reply envelope: the saga it is for and what it says.
pub(crate) fn parse(body: &[u8]) -> Result<(SagaId, Reply), String> {
    let envelope = Envelope::from_bytes(body)?;
    if envelope.kind != MessageKind::Reply {
        return Err(format!(
            "expected a reply, got a {:?} message",
            envelope.kind
        ));
    }
    let saga_id = envelope
        .saga_id
        .ok_or_else(|| "reply has no saga_id".to_string())?;
    let reply: Reply = serde_json::from_value(envelope.payload)
        .map_err(|e| format!("reply payload for saga {saga_id} is malformed: {e}"))?;
    Ok((SagaId(saga_id), reply))
}

pub(crate) async fn consume(
    shared: Arc<Shared>,
    mut sub: Box<dyn Subscription>,
    work: mpsc::Sender<Work>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let delivery = tokio::select! {
            d = sub.next() => d,
            _ = stop.changed() => return,
        };
        let Some(delivery) = delivery else { return };
        match parse(&delivery.body) {
            Ok((saga_id, reply)) => {
                // The delivery is acked once the reply's decision is committed, so a crash
                // in between leaves it with the broker.
                let sagaflow_core::Delivery {
                    topic,
                    body,
                    acker,
                    redelivered,
                } = delivery;
                let item = Work::Input {
                    saga_id,
                    input: Input::Reply(reply),
                    fired: None,
                    origin: Some(Origin {
                        topic,
                        body,
                        acker: Some(acker),
                        redelivered,
                    }),
                    respond: None,
                    retries: 0,
                };
                if let Err(mpsc::error::SendError(item)) = work.send(item).await {
                    if let Work::Input {
                        origin:
                            Some(Origin {
                                acker: Some(acker), ..
                            }),
                        ..
                    } = item
                    {
                        acker.nack().await;
                    }
                    return;
                }
            }
            Err(reason) => {
                let now = shared.now();
                let kept = shared
                    .store
                    .put_dead_letter(
                        &delivery.topic,
                        &delivery.body,
                        &reason,
                        delivery.redelivered + 1,
                        now,
                    )
                    .await;
                match kept {
                    Ok(_) => {
                        tracing::warn!(%reason, "reply dead-lettered");
                        delivery.ack().await
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not keep a dead letter; redelivering");
                        // The store is down: do not spin on the same message.
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        delivery.nack().await
                    }
                }
            }
        }
    }
}
