//! The engine handle: register definitions, start sagas, and cancel, resume or signal them.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use sagaflow_core::{
    Clock, DeadLetter, Definition, Event, Input, JournalEntry, Millis, Outcome, Phase, Reply,
    SagaFilter, SagaId, SagaState, StartMeta, Status, Store, Transport,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::applier::{Applier, Work};
use crate::clock::SystemClock;
use crate::error::EngineError;
use crate::registry::Registry;

/// Tuning knobs; the defaults suit one process on a small machine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Names this engine process in leases (defaults to a fresh id).
    pub owner: String,
    /// At most this many inputs are decided and committed together.
    pub batch_max: usize,
    /// An outbox row still unresolved this long after it was published is published again
    /// (the reply was lost, or its engine died).
    pub redeliver_after_ms: i64,
    /// How long a claimed timer belongs to this engine before another may take it.
    pub timer_lease_ms: i64,
    /// Upper bound on how long the timer and outbox loops sleep when nothing wakes them,
    /// so work of engines that died is picked up.
    pub poll_ms: u64,
    /// Inputs waiting for the decision loop before senders wait (backpressure).
    pub queue_capacity: usize,
    /// Claim due timers and unanswered outbox rows. Off for a short-lived engine (a command
    /// line repair) that must not take leases from the engine serving the participants, and
    /// for an API-only process.
    pub claims: bool,
    /// Consume participants' replies. Off for an API-only process: the engine processes
    /// sharing its database take the replies.
    pub consume_replies: bool,
    /// Publish the commands this engine's decisions send. Off for an API-only process: its
    /// outbox rows are committed ready to claim, and the engine processes' relays, woken by
    /// the store (LISTEN/NOTIFY on PostgreSQL), publish them.
    pub publish: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            owner: format!("engine-{}", uuid::Uuid::new_v4().simple()),
            batch_max: 1024,
            redeliver_after_ms: 10_000,
            timer_lease_ms: 10_000,
            poll_ms: 1_000,
            queue_capacity: 65_536,
            claims: true,
            consume_replies: true,
            publish: true,
        }
    }
}

impl EngineConfig {
    /// The configuration of a process that serves the API only: it decides what callers ask
    /// (starts, cancels, signals) and leaves replies, timers and publishing to the engine
    /// processes sharing its database.
    pub fn api_only() -> Self {
        EngineConfig {
            claims: false,
            consume_replies: false,
            publish: false,
            ..EngineConfig::default()
        }
    }
}

/// A request to start a saga.
#[derive(Debug, Clone)]
pub struct StartSaga {
    /// Definition name.
    pub definition: String,
    /// Definition version; the newest registered when `None`.
    pub version: Option<u32>,
    /// The initial context.
    pub input: Value,
    /// Same key → same saga, no second one.
    pub idempotency_key: Option<String>,
    /// The request id and trace context carried in every message of the saga.
    pub meta: StartMeta,
}

impl StartSaga {
    /// Starts the newest version of `definition` with `input`.
    pub fn new(definition: &str, input: Value) -> Self {
        StartSaga {
            definition: definition.to_string(),
            version: None,
            input,
            idempotency_key: None,
            meta: StartMeta::default(),
        }
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Pins the definition version.
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Sets the saga's correlation key (otherwise read from the input at the definition's
    /// `correlation_key` path): signals by correlation key and list filters use it.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.meta.correlation_id = Some(id.into());
        self
    }

    /// Sets the request id carried in every message of the saga.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.meta.request_id = Some(id.into());
        self
    }

    /// Sets the W3C trace context carried in every message of the saga.
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.meta.traceparent = Some(traceparent.into());
        self
    }
}

/// The answer to a start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The saga.
    pub saga_id: SagaId,
    /// Its status right after the start.
    pub status: Status,
    /// False when the idempotency key named an existing saga.
    pub created: bool,
}

/// Where a signal goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalTarget {
    /// One saga.
    Saga(SagaId),
    /// Every waiting saga whose correlation key has this value.
    Correlation(String),
}

/// A saga reached an end (or a Failed state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaEnd {
    /// The saga.
    pub saga_id: SagaId,
    /// How it ended.
    pub status: Status,
    /// When it started.
    pub created_at: Millis,
    /// When it ended.
    pub ended_at: Millis,
}

pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub transport: Arc<dyn Transport>,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    pub config: EngineConfig,
    /// Wakes the timer loop when a timer earlier than its next wake-up was set, or another
    /// process committed timers.
    pub timer_wake: Notify,
    /// Wakes the outbox relay when another process committed outbox rows.
    pub outbox_wake: Notify,
    pub next_timer_wake: AtomicI64,
    pub end_watchers: Mutex<Vec<mpsc::UnboundedSender<SagaEnd>>>,
    pub stopping: AtomicBool,
    /// Counters kept as decisions commit.
    pub metrics: crate::metrics::Metrics,
    /// Set once nothing feeds the decision loop any more: it empties its queue and stops.
    pub draining: AtomicBool,
}

impl Shared {
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    pub fn notify_ends(&self, ends: &[SagaEnd]) {
        if ends.is_empty() {
            return;
        }
        let mut watchers = self.end_watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.retain(|w| ends.iter().all(|e| w.send(e.clone()).is_ok()));
    }

    /// Called after a commit set a timer at `fire_at`.
    pub fn timer_set(&self, fire_at: Millis) {
        if fire_at < self.next_timer_wake.load(Ordering::Acquire) {
            self.next_timer_wake.store(fire_at, Ordering::Release);
            self.timer_wake.notify_one();
        }
    }
}

/// Keeps a definition in the store; a different one under the same name and version there is
/// [`EngineError::DefinitionChanged`].
async fn save_definition(store: &dyn Store, def: &Definition) -> Result<(), EngineError> {
    match store.save_definition(def).await {
        Ok(()) => Ok(()),
        Err(sagaflow_core::StoreError::Invalid(_)) => Err(EngineError::DefinitionChanged {
            name: def.name.clone(),
            version: def.version,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Builds and starts an [`Engine`].
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    pending: Vec<Definition>,
}

impl EngineBuilder {
    /// Registers a definition before start (several versions may be registered).
    pub fn register(mut self, def: Definition) -> Self {
        self.pending.push(def);
        self
    }

    /// Uses this clock instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses this configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Validates the definitions, checks that every saga in flight has its definition version
    /// here, and starts the loops.
    pub async fn start(self) -> Result<Engine, EngineError> {
        // Definitions in code are validated and kept in the store; the ones other engines
        // (or earlier runs) registered there are known here too.
        for def in self.pending {
            let def = self.registry.register(def)?;
            save_definition(&*self.store, &def).await?;
        }
        for def in self.store.definitions().await? {
            self.registry.register(def)?;
        }
        let missing: Vec<String> = self
            .store
            .versions_in_flight()
            .await?
            .into_iter()
            .filter(|(name, version, _)| self.registry.get(name, Some(*version)).is_err())
            .map(|(name, version, count)| {
                format!(
                    "{count} saga(s) in flight run on {name} v{version}, which is not registered"
                )
            })
            .collect();
        if !missing.is_empty() {
            return Err(EngineError::MissingDefinitions(format!(
                "{}; register those versions (definitions are kept side by side) and start again",
                missing.join("; ")
            )));
        }
        let shared = Arc::new(Shared {
            store: self.store,
            transport: self.transport,
            registry: self.registry,
            clock: self.clock,
            config: self.config,
            timer_wake: Notify::new(),
            outbox_wake: Notify::new(),
            next_timer_wake: AtomicI64::new(i64::MAX),
            end_watchers: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            metrics: crate::metrics::Metrics::default(),
            draining: AtomicBool::new(false),
        });
        let (work_tx, work_rx) = mpsc::channel(shared.config.queue_capacity.max(16));
        let (publish_tx, publish_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let replies = if shared.config.consume_replies {
            Some(crate::reply::subscribe(&shared).await?)
        } else {
            None
        };
        let applier = tokio::spawn(Applier::new(shared.clone(), work_rx, publish_tx).run());
        let relay = tokio::spawn(crate::outbox::relay(
            shared.clone(),
            publish_rx,
            stop_rx.clone(),
        ));
        let mut inputs = Vec::new();
        if let Some(replies) = replies {
            inputs.push(tokio::spawn(crate::reply::consume(
                shared.clone(),
                replies,
                work_tx.clone(),
                stop_rx.clone(),
            )));
        }
        if shared.config.claims {
            inputs.push(tokio::spawn(crate::timer::run(
                shared.clone(),
                work_tx.clone(),
                stop_rx.clone(),
            )));
            inputs.push(tokio::spawn(wake_on_store(shared.clone(), stop_rx)));
        }
        let tasks = Tasks {
            inputs,
            applier: Some(applier),
            relay: Some(relay),
        };
        Ok(Engine {
            shared,
            work_tx,
            stop_tx,
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }
}

/// Passes the store's wake-ups (another process committed timers or outbox rows) on to the
/// timer loop and the outbox relay; each keeps the wake-up until it looks, so none is missed.
async fn wake_on_store(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shared.store.wakeup() => {
                shared.timer_wake.notify_one();
                shared.outbox_wake.notify_one();
            }
            _ = stop.changed() => return,
        }
    }
}

/// A running engine. Cheap to clone; every clone talks to the same loops.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    work_tx: mpsc::Sender<Work>,
    stop_tx: watch::Sender<bool>,
    tasks: Arc<Mutex<Tasks>>,
}

/// The engine's loops, stopped in order: first what feeds the decision loop, then the
/// decision loop once its queue is empty, then the relay once it published what was committed.
struct Tasks {
    inputs: Vec<JoinHandle<()>>,
    applier: Option<JoinHandle<()>>,
    relay: Option<JoinHandle<()>>,
}

impl Tasks {
    fn take(&mut self) -> Tasks {
        Tasks {
            inputs: std::mem::take(&mut self.inputs),
            applier: self.applier.take(),
            relay: self.relay.take(),
        }
    }
}

impl Engine {
    /// An engine over this store and transport.
    pub fn builder(store: Arc<dyn Store>, transport: Arc<dyn Transport>) -> EngineBuilder {
        EngineBuilder {
            store,
            transport,
            registry: Arc::new(Registry::default()),
            clock: Arc::new(SystemClock),
            config: EngineConfig::default(),
            pending: Vec::new(),
        }
    }

    /// The registered definitions.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Validates a definition and keeps it in the store, so it survives restarts and every
    /// engine sharing the store can drive its sagas; then registers it here.
    pub async fn register(&self, def: Definition) -> Result<Arc<Definition>, EngineError> {
        def.validate()?;
        if let Ok(existing) = self.shared.registry.get(&def.name, Some(def.version)) {
            if *existing != def {
                return Err(EngineError::DefinitionChanged {
                    name: def.name,
                    version: def.version,
                });
            }
        }
        save_definition(&*self.shared.store, &def).await?;
        self.shared.registry.register(def)
    }

    /// The store this engine writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// This engine's lease owner name.
    pub fn owner(&self) -> &str {
        &self.shared.config.owner
    }

    /// A stream of sagas reaching an end (Completed, Compensated or Failed) in this engine.
    pub fn watch_ends(&self) -> mpsc::UnboundedReceiver<SagaEnd> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared
            .end_watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        rx
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Work,
    ) -> Result<T, EngineError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        let (tx, rx) = oneshot::channel();
        self.work_tx
            .send(make(tx))
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)
    }

    /// Starts a saga; returns once its start is committed. A request id or trace context the
    /// start leaves unset is the [caller](crate::caller)'s being served, if any.
    pub async fn start_saga(&self, mut request: StartSaga) -> Result<Started, EngineError> {
        if let Some(caller) = crate::caller::current() {
            let meta = &mut request.meta;
            meta.request_id = meta.request_id.take().or(caller.request_id);
            meta.traceparent = meta.traceparent.take().or(caller.traceparent);
        }
        let def = self
            .shared
            .registry
            .get(&request.definition, request.version)?;
        if let Some(key) = &request.idempotency_key {
            if let Some(existing) = self.shared.store.saga_by_idempotency_key(key).await? {
                let status = self
                    .saga(&existing)
                    .await?
                    .map(|s| s.status)
                    .unwrap_or(Status::Running);
                return Ok(Started {
                    saga_id: existing,
                    status,
                    created: false,
                });
            }
        }
        let saga_id = SagaId(uuid::Uuid::now_v7().to_string());
        let started = self
            .submit(|respond| Work::Start {
                def,
                saga_id,
                input: request.input,
                idempotency_key: request.idempotency_key,
                meta: request.meta,
                respond,
            })
            .await??;
        if started.created {
            return Ok(started);
        }
        // Lost a race with another start using the same key: report that saga as it is.
        let status = self
            .saga(&started.saga_id)
            .await?
            .map(|s| s.status)
            .unwrap_or(started.status);
        Ok(Started { status, ..started })
    }

    async fn apply(&self, saga_id: &SagaId, input: Input) -> Result<SagaState, EngineError> {
        self.submit(|respond| Work::Input {
            saga_id: saga_id.clone(),
            input,
            fired: None,
            origin: None,
            respond: Some(respond),
            retries: 0,
        })
        .await?
    }

    /// Compensates what the saga did. Refused once its pivot succeeded or it ended.
    pub async fn cancel(&self, saga_id: &SagaId, reason: &str) -> Result<SagaState, EngineError> {
        self.apply(
            saga_id,
            Input::Cancel {
                reason: reason.to_string(),
            },
        )
        .await
    }

    /// A Failed saga retries what failed; a Waiting one attempts its step again now.
    pub async fn resume(&self, saga_id: &SagaId) -> Result<SagaState, EngineError> {
        self.apply(saga_id, Input::Resume).await
    }

    /// Delivers an external event to parked sagas; returns the sagas it woke. For one saga a
    /// refusal is an error; for a correlation key, sagas that cannot take it are passed over.
    pub async fn signal(
        &self,
        target: SignalTarget,
        name: &str,
        payload: Value,
    ) -> Result<Vec<SagaId>, EngineError> {
        let input = Input::Signal {
            name: name.to_string(),
            payload,
        };
        match target {
            SignalTarget::Saga(id) => {
                self.apply(&id, input).await?;
                Ok(vec![id])
            }
            SignalTarget::Correlation(key) => {
                let mut woken = Vec::new();
                for id in self.shared.store.waiting_by_correlation(&key).await? {
                    match self.apply(&id, input.clone()).await {
                        Ok(_) => woken.push(id),
                        Err(EngineError::Refused(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(woken)
            }
        }
    }

    /// A participant's answer to one command, by the command's idempotency key
    /// (`saga:step:attempt:phase`): what `POST /api/v1/replies` does for a participant that
    /// answered 202 or prefers to answer over HTTP. A key that names no command sent is
    /// [`EngineError::UnknownKey`]; one whose attempt was already answered, timed out or
    /// superseded is [`EngineError::NotAwaited`], and changes nothing.
    pub async fn answer(&self, key: &str, outcome: Outcome) -> Result<SagaState, EngineError> {
        let unknown = |reason: &str| EngineError::UnknownKey {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = key.rsplitn(4, ':');
        let (Some(phase), Some(attempt), Some(step_name), Some(saga_id)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unknown("a command key is saga_id:step:attempt:phase"));
        };
        let phase = match phase {
            "action" => Phase::Action,
            "compensation" => Phase::Compensation,
            _ => return Err(unknown("its phase is neither action nor compensation")),
        };
        let attempt: u32 = attempt
            .parse()
            .ok()
            .filter(|a| *a > 0)
            .ok_or_else(|| unknown("its attempt is not a number from 1"))?;
        let saga_id = SagaId(saga_id.to_string());
        let state = self
            .saga(&saga_id)
            .await?
            .ok_or_else(|| unknown("no saga has this id"))?;
        let def = self
            .shared
            .registry
            .get(&state.definition, Some(state.version))?;
        let step = def
            .steps
            .iter()
            .position(|s| s.name == step_name)
            .ok_or_else(|| unknown("the saga's definition has no step of this name"))?;
        let sent = match phase {
            Phase::Action => state.steps[step].attempts,
            Phase::Compensation => state.steps[step].compensation_attempts,
        };
        if attempt > sent {
            return Err(unknown("this attempt was never sent"));
        }
        let awaited = state
            .in_flight
            .as_ref()
            .is_some_and(|f| f.step == step && f.attempt == attempt && f.phase == phase);
        if !awaited {
            let reason = if state.status.is_end() {
                format!("the saga already ended as {}", state.status)
            } else if attempt < sent {
                format!("superseded by attempt {sent}")
            } else {
                "the attempt was already answered or timed out".to_string()
            };
            return Err(EngineError::NotAwaited {
                key: key.to_string(),
                reason,
            });
        }
        let checked_at = state.journal_version;
        let after = self
            .apply(
                &saga_id,
                Input::Reply(Reply {
                    step,
                    attempt,
                    phase,
                    outcome,
                }),
            )
            .await?;
        // Another answer, a timeout or a cancel may have settled the attempt between the
        // check above and the decision: then the decision ignored this one, and the caller
        // must hear so rather than that its answer was taken.
        let ignored = self
            .journal(&saga_id)
            .await?
            .into_iter()
            .filter(|entry| entry.seq > checked_at)
            .any(|entry| {
                matches!(entry.event, Event::ReplyIgnored { step: s, attempt: a, phase: p, .. }
                    if s == step && a == attempt && p == phase)
            });
        if ignored {
            return Err(EngineError::NotAwaited {
                key: key.to_string(),
                reason: "the attempt was settled by something else meanwhile".to_string(),
            });
        }
        Ok(after)
    }

    /// The transport this engine sends through.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.shared.transport
    }

    /// A saga's current state.
    pub async fn saga(&self, saga_id: &SagaId) -> Result<Option<SagaState>, EngineError> {
        Ok(self
            .shared
            .store
            .load(std::slice::from_ref(saga_id))
            .await?
            .pop())
    }

    /// A saga's journal.
    pub async fn journal(&self, saga_id: &SagaId) -> Result<Vec<JournalEntry>, EngineError> {
        Ok(self.shared.store.journal(saga_id).await?)
    }

    /// Sagas matching a filter, newest first.
    pub async fn list(&self, filter: &SagaFilter) -> Result<Vec<SagaState>, EngineError> {
        Ok(self.shared.store.list(filter).await?)
    }

    /// Dead letters with an id above `after` (0: from the first), oldest first, at most
    /// `limit`.
    pub async fn dead_letters(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, EngineError> {
        Ok(self.shared.store.dead_letters(after, limit).await?)
    }

    /// Publishes a dead letter again to the topic it came from and removes it; `None` when
    /// there is no such dead letter. If publishing fails it is kept.
    pub async fn replay_dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, EngineError> {
        let Some(letter) = self.shared.store.take_dead_letter(id).await? else {
            return Ok(None);
        };
        if let Err(e) = self
            .shared
            .transport
            .publish(
                &letter.topic,
                &format!("dead-letter-{id}-replay"),
                letter.body.clone(),
            )
            .await
        {
            let now = self.shared.now();
            self.shared
                .store
                .put_dead_letter(
                    &letter.topic,
                    &letter.body,
                    &letter.reason,
                    letter.attempts,
                    now,
                )
                .await?;
            return Err(e.into());
        }
        Ok(Some(letter))
    }

    /// Removes a dead letter for good; `None` when there is no such dead letter.
    pub async fn discard_dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, EngineError> {
        Ok(self.shared.store.take_dead_letter(id).await?)
    }

    /// A choreographed flow's timeline: every event emitted and every handling recorded
    /// under `correlation_id`, oldest first (empty for a flow nobody recorded).
    pub async fn flow(
        &self,
        correlation_id: &str,
    ) -> Result<Vec<crate::flow::FlowEntry>, EngineError> {
        Ok(crate::flow::entries(&self.shared.store, correlation_id).await?)
    }

    /// A page of a flow's timeline: at most `limit` entries after the first `offset`.
    pub async fn flow_page(
        &self,
        correlation_id: &str,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<crate::flow::FlowEntry>, EngineError> {
        Ok(crate::flow::entries_page(&self.shared.store, correlation_id, offset, limit).await?)
    }

    /// The engine clock's time now (unix ms).
    pub fn now(&self) -> sagaflow_core::Millis {
        self.shared.now()
    }

    /// This engine's metrics, where an application adds its own (`app_metric`).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }

    /// The metrics in the Prometheus text format.
    pub async fn metrics_text(&self) -> Result<String, EngineError> {
        let stats = self.shared.store.stats(self.shared.now()).await?;
        Ok(self.shared.metrics.render(&stats))
    }

    /// Whether the engine takes work and its store answers (for readiness checks).
    pub async fn ready(&self) -> Result<(), EngineError> {
        if self.shared.stopping.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        self.shared.store.next_timer_at().await?;
        self.shared.transport.ready().await?;
        Ok(())
    }

    /// Stops taking work, finishes the decisions already taken, publishes what they sent,
    /// and returns when every loop has stopped.
    pub async fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.stop_tx.send(true);
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).take();
        for task in tasks.inputs {
            let _ = task.await;
        }
        self.shared.draining.store(true, Ordering::Release);
        for task in [tasks.applier, tasks.relay].into_iter().flatten() {
            let _ = task.await;
        }
    }

    /// Stops at once without finishing anything, as a crash would (for tests).
    pub fn abort(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).take();
        for task in tasks
            .inputs
            .into_iter()
            .chain(tasks.applier)
            .chain(tasks.relay)
        {
            task.abort();
        }
    }
}
