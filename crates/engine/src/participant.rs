//! The participant SDK: a service's handlers for the commands sagas send it.
//!
//! A transactional handler ([`TxHandler`]) runs inside the participant's own database
//! transaction, and the SDK records the command's idempotency key and reply in the inbox in
//! that same transaction: a redelivered command has no second effect and gets the same reply.
//! A plain handler (`on`) is for commands without effects of their own to protect.
//!
//! A handler whose own dependency is down (a remote service it calls, its database) says so
//! — [`Unavailable`] from an `on_try` handler, `StoreError::Unavailable` from a transactional
//! one — and the SDK neither replies nor gives up: it nacks the command after a pause
//! (0.5 s doubling to 30 s), and the transport delivers it again (on RabbitMQ through the
//! broker's delayed-retry loop), until the dependency is back or the delivery limit sends it
//! to the dead letters.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use sagaflow_core::{
    command_topic, CommandPayload, DeadLetterSink, Delivery, Envelope, MessageKind, Outcome,
    ParticipantTx, Phase, Store, StoreError, Transport, TransportError, REPLY_TOPIC,
};
use serde_json::Value;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// How often a transactional command is tried when its transaction loses a race.
const TX_TRIES: usize = 5;

/// One command as a handler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandCall {
    /// The saga.
    pub saga_id: String,
    /// Definition name.
    pub definition: String,
    /// The command's name.
    pub command: String,
    /// The step's name.
    pub step: String,
    /// The attempt.
    pub attempt: u32,
    /// Action or compensation.
    pub phase: Phase,
    /// The idempotency key.
    pub key: String,
    /// The saga context when the command was sent.
    pub context: Value,
    /// The request that started the saga, for logs.
    pub request_id: Option<String>,
    /// The W3C trace context of that request: continue the trace from it.
    pub traceparent: Option<String>,
    /// How many times the transport delivered this command before (0 the first time).
    pub redelivered: u32,
}

/// A handler that runs in the participant's own transaction.
#[async_trait]
pub trait TxHandler: Send + Sync + 'static {
    /// Performs the command using `tx`; the SDK commits it together with the inbox record.
    /// An error rolls everything back: it is tried again, and if it keeps failing (at once,
    /// for `StoreError::Unavailable`) the command is nacked and comes again later.
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError>;

    /// Runs once the transaction that handled the command has committed, before the reply
    /// is published: for work that must follow the database and never precede it, such as
    /// updating a cache. Not run for an answer read back from the inbox, nor when the
    /// process dies in between, so what it writes must be repairable (a cache entry with a
    /// version, say).
    async fn after_commit(&self, _call: &CommandCall, _outcome: &Outcome) {}
}

/// A handler's dependency is down: the command is nacked and comes again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type PlainFn = Arc<
    dyn Fn(CommandCall) -> Pin<Box<dyn Future<Output = Result<Outcome, Unavailable>> + Send>>
        + Send
        + Sync,
>;

#[derive(Clone)]
enum Handler {
    Plain(PlainFn),
    Tx(Arc<dyn TxHandler>),
}

/// A participant service: its name and its command handlers.
pub struct Participant {
    service: String,
    handlers: HashMap<String, Handler>,
    concurrency: usize,
}

impl Participant {
    /// A participant for `service` (commands `service.*`).
    pub fn new(service: &str) -> Self {
        Participant {
            service: service.to_string(),
            handlers: HashMap::new(),
            concurrency: 64,
        }
    }

    /// Handles `command` with a plain async function (no inbox, no transaction).
    pub fn on<F, Fut>(self, command: &str, f: F) -> Self
    where
        F: Fn(CommandCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let f = Arc::new(f);
        self.on_try(command, move |call| {
            let f = f.clone();
            async move { Ok(f(call).await) }
        })
    }

    /// Handles `command` with a plain async function that may find a dependency down: on
    /// `Err(Unavailable)` nothing is replied and the command comes again after a pause.
    pub fn on_try<F, Fut>(mut self, command: &str, f: F) -> Self
    where
        F: Fn(CommandCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, Unavailable>> + Send + 'static,
    {
        let f = Arc::new(f);
        let plain: PlainFn = Arc::new(move |call| {
            let f = f.clone();
            Box::pin(async move { f(call).await })
        });
        self.handlers
            .insert(command.to_string(), Handler::Plain(plain));
        self
    }

    /// Handles `command` in a transaction with inbox de-duplication.
    pub fn on_tx(mut self, command: &str, handler: impl TxHandler) -> Self {
        self.handlers
            .insert(command.to_string(), Handler::Tx(Arc::new(handler)));
        self
    }

    /// At most this many commands are handled at once (default 64).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Subscribes to the service's commands and starts handling them.
    pub async fn start(
        self,
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
    ) -> Result<ParticipantHandle, TransportError> {
        let mut sub = transport
            .subscribe(&command_topic(&self.service), &self.service)
            .await?;
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let ctx = Arc::new(Ctx {
            service: self.service,
            handlers: self.handlers,
            store,
            transport,
        });
        let limit = self.concurrency;
        let task = tokio::spawn(async move {
            loop {
                let delivery = tokio::select! {
                    d = sub.next() => d,
                    _ = stop_rx.changed() => None,
                };
                let Some(delivery) = delivery else { break };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    ctx.handle(delivery).await;
                    drop(permit);
                });
            }
            // Let in-flight commands finish.
            let _ = permits.acquire_many(limit as u32).await;
        });
        Ok(ParticipantHandle {
            stop: stop_tx,
            task: Some(task),
        })
    }
}

/// A running participant.
pub struct ParticipantHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ParticipantHandle {
    /// Stops taking commands and waits for the ones in hand.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops at once, as a crash would (for tests).
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Ctx {
    service: String,
    handlers: HashMap<String, Handler>,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
}

impl Ctx {
    async fn handle(&self, delivery: Delivery) {
        let parsed = Envelope::from_bytes(&delivery.body).and_then(|env| {
            if env.kind != MessageKind::Command {
                return Err(format!("expected a command, got a {:?} message", env.kind));
            }
            let payload: CommandPayload = serde_json::from_value(env.payload.clone())
                .map_err(|e| format!("command payload is malformed: {e}"))?;
            Ok((env, payload))
        });
        let (env, payload) = match parsed {
            Ok(p) => p,
            Err(reason) => return self.dead_letter(delivery, &reason).await,
        };
        let call = CommandCall {
            saga_id: payload.saga_id.clone(),
            definition: payload.definition.clone(),
            command: payload.command.clone(),
            step: payload.step_name.clone(),
            attempt: payload.attempt,
            phase: payload.phase,
            key: payload.key.clone(),
            context: payload.context.clone(),
            request_id: env.request_id.clone(),
            traceparent: env.traceparent.clone(),
            redelivered: delivery.redelivered,
        };
        // One span per attempt, carrying what ties it to its saga and request; a handler's own
        // logs and spans nest under it.
        let span = tracing::info_span!(
            "attempt",
            saga_id = %payload.saga_id,
            definition = %payload.definition,
            step = %payload.step_name,
            attempt = payload.attempt,
            kind = payload.phase.as_str(),
            service = %self.service,
            request_id = env.request_id.as_deref().unwrap_or(""),
            traceparent = env.traceparent.as_deref().unwrap_or(""),
        );
        crate::trace::join(&span, env.traceparent.as_deref());
        if !self.handlers.contains_key(&payload.command) {
            // A deployment mismatch (or a stray message): an operator sees it in the dead
            // letters and can replay it once the handler exists; the saga hears of the failure
            // at once (below) rather than waiting for a timeout.
            let reason = format!(
                "service {} has no handler for command {}",
                self.service, payload.command
            );
            let sink = crate::dead_letters::StoreDeadLetters::new(self.store.clone());
            if let Err(e) = sink
                .dead_letter(&delivery.topic, &delivery.body, &reason, 1)
                .await
            {
                tracing::error!(error = %e, %reason, "could not keep a dead letter");
            }
        }
        let reply = self
            .run_handler(&env, &payload, call)
            .instrument(span)
            .await;
        let Some(reply) = reply else {
            // The database is unavailable: the command comes again after a pause.
            return nack_later(delivery).await;
        };
        let Answer {
            body: reply,
            recorded,
        } = reply;
        // A first answer goes out under `key:reply`, so a broker drops a repeat of that very
        // publish. An answer read back from the inbox is a deliberate second reply (the first
        // may have been lost with an engine that died before committing it), so it gets a
        // fresh id a broker's de-duplication does not swallow; the engine ignores it if the
        // first did arrive.
        let reply_id = if recorded {
            format!("{}:reply:{}", payload.key, uuid::Uuid::new_v4().simple())
        } else {
            format!("{}:reply", payload.key)
        };
        match self.transport.publish(REPLY_TOPIC, &reply_id, reply).await {
            Ok(()) => delivery.ack().await,
            Err(e) => {
                // The command comes again, and the inbox answers with the same reply.
                tracing::warn!(error = %e, "publishing a reply failed");
                nack_later(delivery).await
            }
        }
    }

    /// Runs the command's handler; returns the reply body to publish, or `None` when the
    /// database is unavailable (the outbox lease brings the command back).
    async fn run_handler(
        &self,
        env: &Envelope,
        payload: &CommandPayload,
        call: CommandCall,
    ) -> Option<Answer> {
        match self.handlers.get(&payload.command).cloned() {
            None => Some(Answer::new(reply_envelope(
                env,
                payload,
                Outcome::fatal(format!(
                    "service {} has no handler for command {}",
                    self.service, payload.command
                )),
            ))),
            Some(Handler::Plain(f)) => {
                let outcome = tokio::spawn(f(call).instrument(tracing::Span::current()))
                    .await
                    .unwrap_or_else(|e| Ok(Outcome::failed(format!("handler panicked: {e}"))));
                match outcome {
                    Ok(outcome) => Some(Answer::new(reply_envelope(env, payload, outcome))),
                    Err(Unavailable(why)) => {
                        tracing::warn!(reason = %why, key = %payload.key, "handler unavailable; the command comes again");
                        None
                    }
                }
            }
            Some(Handler::Tx(h)) => self.handle_tx(env, payload, call, h).await,
        }
    }

    /// Runs a transactional handler once per key; returns the reply body to publish.
    async fn handle_tx(
        &self,
        env: &Envelope,
        payload: &CommandPayload,
        call: CommandCall,
        handler: Arc<dyn TxHandler>,
    ) -> Option<Answer> {
        for _ in 0..TX_TRIES {
            let mut tx = match self.store.begin().await {
                Ok(tx) => tx,
                Err(e) => {
                    tracing::warn!(error = %e, key = %payload.key, "participant transaction unavailable");
                    return None;
                }
            };
            match tx.inbox_get(&self.service, &payload.key).await {
                Ok(Some(recorded)) => {
                    let _ = tx.rollback().await;
                    return Some(Answer {
                        body: recorded,
                        recorded: true,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "inbox read failed");
                    let _ = tx.rollback().await;
                    continue;
                }
            }
            let outcome = {
                let call = call.clone();
                let handler = handler.clone();
                // Run the handler on this task: it borrows the transaction.
                handler.handle(&call, tx.as_mut()).await
            };
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(StoreError::Unavailable(why)) => {
                    // Trying again at once will not help: the command comes back later.
                    tracing::warn!(reason = %why, key = %payload.key, "handler unavailable; the command comes again");
                    let _ = tx.rollback().await;
                    return None;
                }
                Err(e) => {
                    // A database error (a deadlock, a lost connection, a concurrent delivery
                    // of the same command tripping a key) is no business answer: try again,
                    // reading the inbox first; if it keeps failing the command is nacked and
                    // comes back later (or goes to the dead letters, with the reason).
                    tracing::debug!(error = %e, key = %payload.key, "handler failed; trying again");
                    let _ = tx.rollback().await;
                    continue;
                }
            };
            let reply = reply_envelope(env, payload, outcome.clone());
            if tx
                .inbox_put(&self.service, &payload.key, &reply)
                .await
                .is_err()
            {
                // A concurrent delivery of the same command got there first.
                let _ = tx.rollback().await;
                continue;
            }
            match tx.commit().await {
                Ok(()) => {
                    handler.after_commit(&call, &outcome).await;
                    return Some(Answer::new(reply));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "participant commit lost a race; reading the inbox")
                }
            }
        }
        tracing::warn!(key = %payload.key, "participant transaction kept failing");
        None
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &str) {
        let sink = crate::dead_letters::StoreDeadLetters::new(self.store.clone());
        let kept = sink
            .dead_letter(
                &delivery.topic,
                &delivery.body,
                reason,
                delivery.redelivered + 1,
            )
            .await;
        match kept {
            Ok(()) => {
                tracing::warn!(reason, service = %self.service, "command dead-lettered");
                delivery.ack().await
            }
            Err(e) => {
                tracing::error!(error = %e, "could not keep a dead letter; the command comes again");
                nack_later(delivery).await
            }
        }
    }
}

/// A reply to publish, and whether it was read back from the inbox (a redelivery).
struct Answer {
    body: Vec<u8>,
    recorded: bool,
}

impl Answer {
    fn new(body: Vec<u8>) -> Self {
        Answer {
            body,
            recorded: false,
        }
    }
}

/// How long a delivery that could not be handled for want of a database or broker waits
/// before it is nacked: 0.5 s, doubling with each redelivery up to 30 s, so a dependency that
/// is down is not hammered and ten deliveries (the dead-letter limit) span minutes of outage.
pub(crate) fn unavailable_backoff(redelivered: u32) -> std::time::Duration {
    let ms = 500u64.saturating_mul(1u64 << redelivered.min(16));
    std::time::Duration::from_millis(ms.min(30_000))
}

pub(crate) async fn nack_later(delivery: Delivery) {
    tokio::time::sleep(unavailable_backoff(delivery.redelivered)).await;
    delivery.nack().await
}

fn reply_envelope(command: &Envelope, payload: &CommandPayload, outcome: Outcome) -> Vec<u8> {
    Envelope::reply_to(command, payload, outcome, format!("{}:reply", payload.key)).to_bytes()
}
