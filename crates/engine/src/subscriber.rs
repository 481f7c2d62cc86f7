//! The subscriber SDK: a service's handlers for the events of choreographed flows, with the
//! guarantees a saga's participant has.
//!
//! - **Inbox de-duplication**: a handler runs in the service's own transaction, and the
//!   event's message id is recorded in the inbox in that same transaction, so a redelivered
//!   event has no second effect. Events the handler emits ([`Emitter`]) go to the event outbox
//!   in that transaction too.
//! - **Persisted retries with exponential backoff**: a failed handling is written to
//!   `sagaflow_event_retries` with the time of the next attempt (per the handler's
//!   [`RetryPolicy`]); the delivery is acknowledged, and the subscriber's retry loop runs the
//!   handler again when it is due — in whichever process of the service claims it first, after
//!   any restart.
//! - **Dead-letter with a compensation hook**: once the attempts are exhausted the event goes
//!   to the dead-letter store with the last error, and the handler's
//!   [`EventHandler::on_exhausted`] runs in a transaction of its own (it may emit events too;
//!   if it fails, only it is tried again later, and the event is not dead-lettered twice).
//!   An exhausted event is not kept in the inbox: replaying its dead letter runs it afresh —
//!   so a handler should check that its event still applies (the blog's check the post's
//!   status and flow).
//!
//! Every handling is recorded in the flow journal under the event's correlation id
//! ([`crate::flow`]), so the whole flow reads as one timeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sagaflow_core::{
    Envelope, MessageKind, ParticipantTx, RetryPolicy, SqlValue, Store, StoreError, Transport,
    TransportError,
};
use serde_json::Value;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::event_outbox::{emit, event_topic, NewEvent};
use crate::flow::{self, now_ms, Record};

/// One event as a handler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventCall {
    /// The event's name (`blog.publish_requested`).
    pub name: String,
    /// Its message id.
    pub message_id: String,
    /// The flow it belongs to.
    pub correlation_id: String,
    /// What caused it.
    pub causation_id: Option<String>,
    /// What it says.
    pub payload: Value,
    /// Which attempt this is (1 the first time).
    pub attempt: u32,
    /// The request that started the flow.
    pub request_id: Option<String>,
    /// Its W3C trace context.
    pub traceparent: Option<String>,
}

impl EventCall {
    /// A follow-up event in the same flow, caused by this one. Its message id derives from
    /// this event's, so running the handler again emits the same event, not a second one.
    pub fn follow(&self, name: &str, payload: Value) -> NewEvent {
        NewEvent {
            name: name.to_string(),
            message_id: format!("{}>{name}", self.message_id),
            correlation_id: self.correlation_id.clone(),
            causation_id: Some(self.message_id.clone()),
            payload,
            request_id: self.request_id.clone(),
            traceparent: self.traceparent.clone(),
        }
    }
}

/// Why a handling failed: it is tried again (per the retry policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError(pub String);

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        HandlerError(e.to_string())
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Events a handler emits; written to the outbox in the handler's transaction.
#[derive(Debug, Default)]
pub struct Emitter {
    events: Vec<NewEvent>,
}

impl Emitter {
    /// Emits `event` once the handling commits.
    pub fn emit(&mut self, event: NewEvent) {
        self.events.push(event);
    }
}

/// A handler for one event.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles the event in `tx`; an error rolls it back and the event is tried again later.
    async fn handle(
        &self,
        event: &EventCall,
        tx: &mut dyn ParticipantTx,
        out: &mut Emitter,
    ) -> Result<(), HandlerError>;

    /// The compensation, once the attempts are exhausted (the event is already in the dead
    /// letters): runs in a transaction of its own. The default does nothing.
    async fn on_exhausted(
        &self,
        _event: &EventCall,
        _error: &str,
        _tx: &mut dyn ParticipantTx,
        _out: &mut Emitter,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

struct Registered {
    handler: Arc<dyn EventHandler>,
    retry: RetryPolicy,
}

/// A service reacting to events.
pub struct Subscriber {
    service: String,
    handlers: HashMap<String, Registered>,
    concurrency: usize,
}

impl Subscriber {
    /// A subscriber for `service` (each event goes to one of its processes).
    pub fn new(service: &str) -> Self {
        Subscriber {
            service: service.to_string(),
            handlers: HashMap::new(),
            concurrency: 16,
        }
    }

    /// Handles the event `name`, attempting it up to `retry.max_attempts` times.
    pub fn on(mut self, name: &str, retry: RetryPolicy, handler: impl EventHandler) -> Self {
        self.handlers.insert(
            name.to_string(),
            Registered {
                handler: Arc::new(handler),
                retry,
            },
        );
        self
    }

    /// At most this many events are handled at once (default 16).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Creates the tables if needed, subscribes to each event, and starts the retry loop.
    /// `relay_wake` (an [`crate::EventRelay`]'s waker) is told when handlings emitted events.
    pub async fn start(
        self,
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
        relay_wake: Option<Arc<Notify>>,
    ) -> Result<SubscriberHandle, SubscribeError> {
        flow::prepare(&store).await?;
        let (stop, stopped) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            service: self.service,
            handlers: self.handlers,
            store,
            relay_wake,
            permits: Semaphore::new(self.concurrency),
            retry_scheduled: Notify::new(),
        });
        let mut tasks = Vec::new();
        for name in ctx.handlers.keys() {
            let mut sub = transport
                .subscribe(&event_topic(name), &ctx.service)
                .await?;
            let ctx = ctx.clone();
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let delivery = tokio::select! {
                        d = sub.next() => d,
                        _ = stopped.changed() => None,
                    };
                    let Some(delivery) = delivery else { break };
                    let ctx = ctx.clone();
                    tokio::spawn(async move { ctx.delivered(delivery).await });
                }
            }));
        }
        let retry_ctx = ctx.clone();
        let mut stopped_retries = stopped.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let ran = retry_ctx.retry_due().await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "subscriber retries unavailable");
                    0
                });
                if ran > 0 {
                    continue;
                }
                // Sleep until the next retry is due (another process may schedule one
                // sooner: look again within RETRY_POLL at the latest), or one is scheduled here.
                let pause = retry_ctx
                    .next_due()
                    .await
                    .ok()
                    .flatten()
                    .map_or(RETRY_POLL, |at| {
                        Duration::from_millis(
                            (at - now_ms()).clamp(20, RETRY_POLL.as_millis() as i64) as u64,
                        )
                    });
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = retry_ctx.retry_scheduled.notified() => {}
                    _ = stopped_retries.changed() => break,
                }
            }
        }));
        Ok(SubscriberHandle { stop, tasks })
    }
}

/// Why a subscriber could not start.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// The longest the retry loop sleeps before looking at the retries table again (a retry
/// another process scheduled, or a lease that lapsed).
const RETRY_POLL: Duration = Duration::from_secs(1);
/// How long a claimed retry is someone's before another process may take it.
const RETRY_LEASE_MS: i64 = 30_000;

/// A running subscriber.
pub struct SubscriberHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SubscriberHandle {
    /// Stops taking events.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

struct Ctx {
    service: String,
    handlers: HashMap<String, Registered>,
    store: Arc<dyn Store>,
    relay_wake: Option<Arc<Notify>>,
    permits: Semaphore,
    /// Told when this process schedules a retry, so the retry loop looks at once.
    retry_scheduled: Notify,
}

/// How an attempt ended.
enum Attempted {
    Done,
    Unavailable,
}

impl Ctx {
    async fn delivered(&self, delivery: sagaflow_core::Delivery) {
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let event = match parse(&delivery.body) {
            Ok(event) => event,
            Err(reason) => {
                let kept = self
                    .store
                    .put_dead_letter(
                        &delivery.topic,
                        &delivery.body,
                        &reason,
                        delivery.redelivered + 1,
                        now_ms(),
                    )
                    .await;
                match kept {
                    Ok(_) => delivery.ack().await,
                    Err(_) => crate::participant::nack_later(delivery).await,
                }
                return;
            }
        };
        // A redelivery of an event already waiting for its retry changes nothing: the retry
        // loop owns it, with its count of attempts.
        match self.retry_pending(&event.message_id).await {
            Ok(true) => return delivery.ack().await,
            Ok(false) => {}
            Err(_) => return crate::participant::nack_later(delivery).await,
        }
        match self
            .attempt(&delivery.topic, &delivery.body, event, 1)
            .await
        {
            Attempted::Done => delivery.ack().await,
            Attempted::Unavailable => crate::participant::nack_later(delivery).await,
        }
    }

    /// Runs the handler once for `event` as attempt `attempt`, and settles what follows:
    /// committed with its inbox record, or a retry row, or the dead letters and the hook.
    async fn attempt(
        &self,
        topic: &str,
        body: &[u8],
        mut event: EventCall,
        attempt: u32,
    ) -> Attempted {
        event.attempt = attempt;
        let Some(registered) = self.handlers.get(&event.name) else {
            return Attempted::Done;
        };
        let mut tx = match self.store.begin().await {
            Ok(tx) => tx,
            Err(_) => return Attempted::Unavailable,
        };
        match tx.inbox_get(&self.service, &event.message_id).await {
            Ok(Some(_)) => {
                let _ = tx.rollback().await;
                let _ = self.duplicate(&event).await;
                return Attempted::Done;
            }
            Ok(None) => {}
            Err(_) => {
                let _ = tx.rollback().await;
                return Attempted::Unavailable;
            }
        }
        let mut out = Emitter::default();
        let handled = registered
            .handler
            .handle(&event, tx.as_mut(), &mut out)
            .await;
        let error = match handled {
            Ok(()) => match self.finish(tx, &event, out, "handled", None, true).await {
                Ok(()) => return Attempted::Done,
                Err(e) => e.to_string(),
            },
            Err(e) => {
                let _ = tx.rollback().await;
                e.0
            }
        };
        // A concurrent delivery of the same event may have committed first (its inbox record
        // refused this one, or its change made this handler fail): then this is the duplicate.
        match self.handled_already(&event.message_id).await {
            Ok(true) => {
                let _ = self.duplicate(&event).await;
                return Attempted::Done;
            }
            Ok(false) => {}
            Err(_) => return Attempted::Unavailable,
        }
        tracing::info!(service = %self.service, event = %event.name, attempt, error = %error, "event handling failed");
        let result = if attempt >= registered.retry.max_attempts.max(1) {
            self.exhaust(topic, body, &event, registered, &error, true)
                .await
        } else {
            self.schedule_retry(topic, body, &event, &registered.retry, &error)
                .await
        };
        match result {
            Ok(()) => Attempted::Done,
            Err(_) => Attempted::Unavailable,
        }
    }

    /// Commits a handling (or a compensation): emitted events, the flow entry, the inbox
    /// record (when `remember`), and no retry row left.
    async fn finish(
        &self,
        mut tx: Box<dyn ParticipantTx>,
        event: &EventCall,
        out: Emitter,
        outcome: &str,
        detail: Option<String>,
        remember: bool,
    ) -> Result<(), StoreError> {
        let emitted = !out.events.is_empty();
        let result = async {
            for e in &out.events {
                emit(tx.as_mut(), &self.service, e).await?;
            }
            flow::record(tx.as_mut(), self.record(event, outcome, detail)).await?;
            if remember {
                tx.inbox_put(&self.service, &event.message_id, b"handled")
                    .await?;
            }
            tx.execute(
                "DELETE FROM sagaflow_event_retries WHERE service = $1 AND message_id = $2",
                &[
                    self.service.as_str().into(),
                    event.message_id.as_str().into(),
                ],
            )
            .await?;
            Ok::<(), StoreError>(())
        }
        .await;
        match result {
            Ok(()) => tx.commit().await?,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
        if emitted {
            if let Some(wake) = &self.relay_wake {
                wake.notify_one();
            }
        }
        Ok(())
    }

    /// A failed attempt with attempts left: the next one is due after the backoff.
    async fn schedule_retry(
        &self,
        topic: &str,
        body: &[u8],
        event: &EventCall,
        retry: &RetryPolicy,
        error: &str,
    ) -> Result<(), StoreError> {
        let delay = retry.delay_ms(event.attempt, fastrand::f64());
        let mut tx = self.store.begin().await?;
        let detail = format!("{error}; attempt {} at +{delay} ms", event.attempt + 1);
        flow::record(tx.as_mut(), self.record(event, "failed", Some(detail))).await?;
        // Counted from after the failure's timeline entry was stamped, so the timeline
        // never shows two attempts closer together than the backoff.
        let next_at = now_ms() + delay;
        self.put_retry(tx.as_mut(), topic, body, event.attempt, next_at, error)
            .await?;
        tx.commit().await?;
        self.retry_scheduled.notify_one();
        Ok(())
    }

    async fn put_retry(
        &self,
        tx: &mut dyn ParticipantTx,
        topic: &str,
        body: &[u8],
        attempts: u32,
        next_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO sagaflow_event_retries (service, message_id, topic, body, attempts, next_at, last_error) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (service, message_id) DO UPDATE SET attempts = $5, next_at = $6, last_error = $7",
            &[
                self.service.as_str().into(),
                parse(body).map(|e| e.message_id).unwrap_or_default().into(),
                topic.into(),
                String::from_utf8_lossy(body).to_string().into(),
                i64::from(attempts).into(),
                next_at.into(),
                error.into(),
            ],
        )
        .await
        .map(|_| ())
    }

    /// The attempts are exhausted: the event goes to the dead letters (`first` time only),
    /// then the compensation hook runs, with the flow's entries, in one transaction. If the
    /// hook fails, the retry row records the exhaustion and only the hook is tried again
    /// later. The event is not kept in the inbox: a replay of its dead letter (an operator's
    /// decision) runs it afresh.
    async fn exhaust(
        &self,
        topic: &str,
        body: &[u8],
        event: &EventCall,
        registered: &Registered,
        error: &str,
        first: bool,
    ) -> Result<(), StoreError> {
        let reason = format!(
            "{} gave up on {} after {} attempts: {error}",
            self.service, event.name, event.attempt
        );
        if first {
            self.store
                .put_dead_letter(topic, body, &reason, event.attempt, now_ms())
                .await?;
        }
        let mut tx = self.store.begin().await?;
        flow::record(
            tx.as_mut(),
            self.record(event, "dead_lettered", Some(reason.clone())),
        )
        .await?;
        let mut out = Emitter::default();
        if let Err(e) = registered
            .handler
            .on_exhausted(event, error, tx.as_mut(), &mut out)
            .await
        {
            let _ = tx.rollback().await;
            tracing::error!(error = %e, event = %event.name, "the compensation hook failed; it is tried again later");
            let mut tx = self.store.begin().await?;
            let later = now_ms() + registered.retry.max_delay_ms.max(1_000) as i64;
            self.put_retry(tx.as_mut(), topic, body, event.attempt, later, error)
                .await?;
            tx.commit().await?;
            return Ok(());
        }
        self.finish(
            tx,
            event,
            out,
            "compensated",
            Some(error.to_string()),
            false,
        )
        .await
    }

    /// When this service's earliest retry is due, if it has any.
    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let mut tx = self.store.begin().await?;
        let rows = tx
            .query(
                "SELECT MIN(next_at) FROM sagaflow_event_retries WHERE service = $1",
                &[self.service.as_str().into()],
            )
            .await;
        let _ = tx.rollback().await;
        Ok(rows?
            .first()
            .and_then(|r| r.first())
            .and_then(SqlValue::as_i64))
    }

    async fn handled_already(&self, message_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        let found = tx.inbox_get(&self.service, message_id).await;
        let _ = tx.rollback().await;
        Ok(found?.is_some())
    }

    async fn retry_pending(&self, message_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        let rows = tx
            .query(
                "SELECT 1 FROM sagaflow_event_retries WHERE service = $1 AND message_id = $2",
                &[self.service.as_str().into(), message_id.into()],
            )
            .await;
        let _ = tx.rollback().await;
        Ok(!rows?.is_empty())
    }

    /// Runs retries that are due; returns how many ran.
    async fn retry_due(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        let rows = tx
            .query(
                "SELECT message_id, topic, body, attempts, next_at, last_error FROM sagaflow_event_retries WHERE service = $1 AND next_at <= $2 ORDER BY next_at LIMIT 16",
                &[self.service.as_str().into(), now.into()],
            )
            .await;
        let _ = tx.rollback().await;
        let text = |row: &[SqlValue], i: usize| {
            row.get(i)
                .and_then(SqlValue::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let mut ran = 0;
        for row in rows? {
            let (id, topic, body) = (text(&row, 0), text(&row, 1), text(&row, 2));
            let attempts = row.get(3).and_then(SqlValue::as_i64).unwrap_or(0) as u32;
            let due = row.get(4).and_then(SqlValue::as_i64).unwrap_or(0);
            let last_error = text(&row, 5);
            // Claim it: only the process whose update matched the due time runs it; the lease
            // runs from now, not from when the batch was read.
            let mut tx = self.store.begin().await?;
            let claimed = tx
                .execute(
                    "UPDATE sagaflow_event_retries SET next_at = $1 WHERE service = $2 AND message_id = $3 AND next_at = $4",
                    &[(now_ms() + RETRY_LEASE_MS).into(), self.service.as_str().into(), id.as_str().into(), due.into()],
                )
                .await?;
            tx.commit().await?;
            if claimed == 0 {
                continue;
            }
            ran += 1;
            let _permit = self.permits.acquire().await;
            let Ok(mut event) = parse(body.as_bytes()) else {
                // Only a good event gets a retry row; this one was altered: keep it aside.
                self.store
                    .put_dead_letter(
                        &topic,
                        body.as_bytes(),
                        "a retry row holds no event",
                        attempts,
                        now_ms(),
                    )
                    .await?;
                let mut tx = self.store.begin().await?;
                tx.execute(
                    "DELETE FROM sagaflow_event_retries WHERE service = $1 AND message_id = $2",
                    &[self.service.as_str().into(), id.as_str().into()],
                )
                .await?;
                tx.commit().await?;
                continue;
            };
            let exhausted = self
                .handlers
                .get(&event.name)
                .filter(|r| attempts >= r.retry.max_attempts.max(1));
            let outcome = match exhausted {
                // The handler gave up already; only its compensation hook is due again.
                Some(registered) => {
                    event.attempt = attempts;
                    match self
                        .exhaust(
                            &topic,
                            body.as_bytes(),
                            &event,
                            registered,
                            &last_error,
                            false,
                        )
                        .await
                    {
                        Ok(()) => Attempted::Done,
                        Err(_) => Attempted::Unavailable,
                    }
                }
                None => {
                    self.attempt(&topic, body.as_bytes(), event, attempts + 1)
                        .await
                }
            };
            if let Attempted::Unavailable = outcome {
                tracing::warn!(message_id = %id, "retry could not run; it comes back after its lease");
            }
        }
        Ok(ran)
    }

    fn record<'a>(
        &'a self,
        event: &'a EventCall,
        outcome: &'a str,
        detail: Option<String>,
    ) -> Record<'a> {
        Record {
            correlation_id: &event.correlation_id,
            service: &self.service,
            event: &event.name,
            message_id: &event.message_id,
            causation_id: event.causation_id.as_deref(),
            outcome,
            attempt: event.attempt,
            detail,
        }
    }

    /// A duplicate delivery: recorded, and any retry row of the event dropped (the handling
    /// that won made it moot).
    async fn duplicate(&self, event: &EventCall) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        flow::record(tx.as_mut(), self.record(event, "duplicate", None)).await?;
        tx.execute(
            "DELETE FROM sagaflow_event_retries WHERE service = $1 AND message_id = $2",
            &[
                self.service.as_str().into(),
                event.message_id.as_str().into(),
            ],
        )
        .await?;
        tx.commit().await
    }
}

/// An event from its envelope; why not, for the dead letters.
fn parse(body: &[u8]) -> Result<EventCall, String> {
    let env = Envelope::from_bytes(body)?;
    if env.kind != MessageKind::Event {
        return Err(format!("expected an event, got a {:?} message", env.kind));
    }
    let name = env
        .subject
        .strip_prefix("sagaflow.events.")
        .ok_or_else(|| {
            format!(
                "{} is not an event subject (sagaflow.events.NAME)",
                env.subject
            )
        })?
        .to_string();
    let correlation_id = env
        .correlation_id
        .clone()
        .ok_or("an event needs a correlation id")?;
    Ok(EventCall {
        name,
        message_id: env.message_id,
        correlation_id,
        causation_id: env.causation_id,
        payload: env.payload,
        attempt: 1,
        request_id: env.request_id,
        traceparent: env.traceparent,
    })
}
