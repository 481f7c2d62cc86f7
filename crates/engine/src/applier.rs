//! The decision loop: takes inputs in batches, decides each against the saga's latest state,
//! and commits every decision of the batch in one store call (group commit). Inputs for one
//! saga are applied one after another; a version conflict (another engine moved the saga)
//! reloads and decides again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sagaflow_core::decide::decide_with_state;
use sagaflow_core::{
    command_topic, effects, start_with, Acker, CommandPayload, CommitOutcome, DecideContext,
    Decision, Definition, Envelope, Event, Input, JournalEntry, MessageKind, OutboxRow, Refusal,
    SagaId, SagaState, StartMeta, Status, StoreError, TimerChange, TimerSlot,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{SagaEnd, Shared, Started};
use crate::error::EngineError;

/// How many times an input is decided again after version conflicts before giving up.
const MAX_CONFLICT_RETRIES: u8 = 16;
/// Cached saga states kept between batches before the cache starts over.
const CACHE_MAX: usize = 200_000;

/// Where a message-borne input came from, so it can be dead-lettered with a reason, and
/// how to settle its delivery: acked once its decision is committed (or it was refused for
/// good), nacked when the store failed, so the broker delivers it again.
pub(crate) struct Origin {
    pub topic: String,
    pub body: Vec<u8>,
    pub acker: Option<Box<dyn Acker>>,
    /// How many times the message was delivered before.
    pub redelivered: u32,
}

/// Deliveries to settle once a batch is done: ack (`None`), or nack after a pause while the
/// store is down (`Some(redelivered)`, which sets the pause).
type Settle = Vec<(Box<dyn Acker>, Option<u32>)>;

/// Settles a batch's deliveries off the decision loop.
fn settle(deliveries: Settle) {
    if deliveries.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let pause = deliveries
            .iter()
            .filter_map(|(_, nack)| nack.map(crate::participant::unavailable_backoff))
            .max();
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        for (acker, nack) in deliveries {
            match nack {
                None => acker.ack().await,
                Some(_) => acker.nack().await,
            }
        }
    });
}

/// Adds an input's delivery, if it came by message, to the batch's settle list.
fn settle_later(settling: &mut Settle, origin: Option<Origin>, ok: bool) {
    if let Some(o) = origin {
        if let Some(acker) = o.acker {
            settling.push((acker, (!ok).then_some(o.redelivered)));
        }
    }
}

/// Where a start's answer goes.
type StartReply = oneshot::Sender<Result<Started, EngineError>>;

/// One unit of work for the decision loop.
pub(crate) enum Work {
    Start {
        def: Arc<Definition>,
        saga_id: SagaId,
        input: Value,
        idempotency_key: Option<String>,
        meta: StartMeta,
        respond: StartReply,
    },
    Input {
        saga_id: SagaId,
        input: Input,
        fired: Option<TimerSlot>,
        origin: Option<Origin>,
        respond: Option<oneshot::Sender<Result<SagaState, EngineError>>>,
        retries: u8,
    },
}

/// An input applied in this batch, kept so it can be answered or retried.
struct Applied {
    input: Input,
    fired: Option<TimerSlot>,
    origin: Option<Origin>,
    respond: Option<oneshot::Sender<Result<SagaState, EngineError>>>,
    retries: u8,
}

/// One saga's decision being assembled from the batch's inputs.
struct Pending {
    def: Arc<Definition>,
    base: Option<SagaState>,
    state: SagaState,
    events: Vec<Event>,
    fired: Vec<TimerSlot>,
    inputs: Vec<Applied>,
    start: Option<(Option<String>, StartReply)>,
}

pub(crate) struct Applier {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Work>,
    publish: mpsc::UnboundedSender<Vec<OutboxRow>>,
    cache: HashMap<SagaId, SagaState>,
    carry: VecDeque<Work>,
}

impl Applier {
    pub fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Work>,
        publish: mpsc::UnboundedSender<Vec<OutboxRow>>,
    ) -> Self {
        Applier {
            shared,
            rx,
            publish,
            cache: HashMap::new(),
            carry: VecDeque::new(),
        }
    }

    pub async fn run(mut self) {
        let max = self.shared.config.batch_max.max(1);
        loop {
            let mut batch = Vec::with_capacity(64);
            while batch.len() < max {
                match self.carry.pop_front() {
                    Some(w) => batch.push(w),
                    None => break,
                }
            }
            if batch.is_empty() {
                if self.shared.draining.load(Ordering::Acquire) {
                    // Nothing feeds the queue any more: finish what is in it, then stop.
                    match self.rx.try_recv() {
                        Ok(w) => batch.push(w),
                        Err(_) => return,
                    }
                } else {
                    let tick = tokio::time::sleep(std::time::Duration::from_millis(200));
                    tokio::select! {
                        w = self.rx.recv() => match w {
                            Some(w) => batch.push(w),
                            None => return,
                        },
                        _ = tick => continue,
                    }
                }
            }
            while batch.len() < max {
                match self.rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            self.process(batch).await;
        }
    }

    async fn process(&mut self, batch: Vec<Work>) {
        let now = self.shared.now();
        let ctx = || DecideContext {
            now,
            random: fastrand::f64(),
        };
        if self.cache.len() > CACHE_MAX {
            self.cache.clear();
        }
        let unavailable = self.load_missing(&batch).await;
        let mut settling: Settle = Vec::new();

        let mut order: Vec<SagaId> = Vec::new();
        let mut pending: HashMap<SagaId, Pending> = HashMap::new();
        for work in batch {
            match work {
                Work::Start {
                    def,
                    saga_id,
                    input,
                    idempotency_key,
                    meta,
                    respond,
                } => {
                    let (events, state) = start_with(&def, saga_id.clone(), input, meta, ctx());
                    order.push(saga_id.clone());
                    pending.insert(
                        saga_id,
                        Pending {
                            def,
                            base: None,
                            state,
                            events,
                            fired: Vec::new(),
                            inputs: Vec::new(),
                            start: Some((idempotency_key, respond)),
                        },
                    );
                }
                Work::Input {
                    saga_id,
                    input,
                    fired,
                    origin,
                    respond,
                    retries,
                } => {
                    let uncached =
                        !pending.contains_key(&saga_id) && !self.cache.contains_key(&saga_id);
                    if let Some(e) = unavailable.as_ref().filter(|_| uncached) {
                        // Not "not found": the store could not say. A reply comes back with
                        // its outbox row's redelivery; a caller gets the error.
                        tracing::warn!(saga = %saga_id, error = %e, "saga could not be loaded");
                        settle_later(&mut settling, origin, false);
                        if let Some(r) = respond {
                            let _ =
                                r.send(Err(EngineError::Store(StoreError::Unavailable(e.clone()))));
                        }
                        continue;
                    }
                    if !pending.contains_key(&saga_id) {
                        let Some(state) = self.cache.get(&saga_id).cloned() else {
                            let reason = format!("saga {saga_id} not found");
                            self.reject(
                                origin,
                                true,
                                respond,
                                EngineError::NotFound(saga_id),
                                &reason,
                                &mut settling,
                            )
                            .await;
                            continue;
                        };
                        let def = match self.definition(&state.definition, state.version).await {
                            Ok(def) => def,
                            Err(e) => {
                                let reason = format!("saga {saga_id}: {e}");
                                self.reject(origin, true, respond, e, &reason, &mut settling)
                                    .await;
                                continue;
                            }
                        };
                        order.push(saga_id.clone());
                        pending.insert(
                            saga_id.clone(),
                            Pending {
                                def,
                                base: Some(state.clone()),
                                state,
                                events: Vec::new(),
                                fired: Vec::new(),
                                inputs: Vec::new(),
                                start: None,
                            },
                        );
                    }
                    let Some(p) = pending.get_mut(&saga_id) else {
                        continue;
                    };
                    match decide_with_state(&p.state, &p.def, &input, ctx()) {
                        Ok((events, state)) => {
                            p.events.extend(events);
                            p.state = state;
                            p.fired.extend(fired);
                            p.inputs.push(Applied {
                                input,
                                fired,
                                origin,
                                respond,
                                retries,
                            });
                        }
                        Err(refusal) => {
                            let reason = refusal.to_string();
                            let dead = matches!(refusal, Refusal::MalformedReply { .. });
                            self.reject(
                                origin,
                                dead,
                                respond,
                                EngineError::Refused(refusal),
                                &reason,
                                &mut settling,
                            )
                            .await;
                        }
                    }
                }
            }
        }

        let mut decisions = Vec::with_capacity(order.len());
        let mut committing = Vec::with_capacity(order.len());
        for id in order {
            let Some(p) = pending.remove(&id) else {
                continue;
            };
            match self.decision(&p, now) {
                Some(decision) => {
                    decisions.push(decision);
                    committing.push(p);
                }
                None => answer(p, None, &mut settling),
            }
        }
        if decisions.is_empty() {
            settle(settling);
            return;
        }
        let rows: Vec<Vec<OutboxRow>> = decisions.iter().map(|d| d.outbox.clone()).collect();
        let timers: Vec<Option<i64>> = decisions
            .iter()
            .map(|d| {
                d.timers
                    .iter()
                    .filter_map(|t| match t {
                        TimerChange::Set { fire_at, .. } => Some(*fire_at),
                        TimerChange::Clear { .. } => None,
                    })
                    .min()
            })
            .collect();
        let outcomes = match self.shared.store.commit(decisions).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::warn!(error = %e, "commit failed; inputs will be retried from their leases");
                self.shared.metrics.commit_failed();
                for p in committing {
                    self.cache.remove(&p.state.saga_id);
                    fail(p, &e.to_string(), &mut settling);
                }
                settle(settling);
                return;
            }
        };
        let mut to_publish = Vec::new();
        let mut ends = Vec::new();
        for (((p, outcome), rows), timer) in
            committing.into_iter().zip(outcomes).zip(rows).zip(timers)
        {
            match outcome {
                CommitOutcome::Applied => {
                    // One span per committed decision, in the saga's trace.
                    let span = tracing::info_span!(
                        "decision",
                        saga_id = %p.state.saga_id,
                        definition = %p.def.name,
                        version = p.def.version,
                        status = p.state.status.as_str(),
                        request_id = p.state.request_id.as_deref().unwrap_or(""),
                    );
                    crate::trace::join(&span, p.state.traceparent.as_deref());
                    span.in_scope(|| {
                        tracing::debug!(
                            events = ?p.events.iter().map(Event::type_name).collect::<Vec<_>>(),
                            "decision committed"
                        )
                    });
                    self.shared.metrics.committed(
                        &p.def,
                        p.base.as_ref(),
                        &p.events,
                        &p.state,
                        now,
                    );
                    to_publish.extend(rows);
                    if let Some(at) = timer {
                        self.shared.timer_set(at);
                    }
                    let s = &p.state;
                    if p.events.iter().any(|e| matches!(e, Event::Ended { .. })) {
                        ends.push(SagaEnd {
                            saga_id: s.saga_id.clone(),
                            status: s.status,
                            created_at: s.created_at,
                            ended_at: s.ended_at.unwrap_or(now),
                        });
                    }
                    if s.status.is_end() {
                        self.cache.remove(&s.saga_id);
                    } else {
                        self.cache.insert(s.saga_id.clone(), s.clone());
                    }
                    answer(p, None, &mut settling);
                }
                CommitOutcome::Conflict { .. } => {
                    self.shared.metrics.conflict();
                    self.cache.remove(&p.state.saga_id);
                    self.retry(p, &mut settling);
                }
                CommitOutcome::DuplicateStart { existing } => {
                    answer(p, Some(existing), &mut settling);
                }
            }
        }
        if !to_publish.is_empty() && self.shared.config.publish {
            let _ = self.publish.send(to_publish);
        }
        settle(settling);
        self.shared.notify_ends(&ends);
    }

    /// The definition a saga runs on. One this engine lacks may have been registered by
    /// another engine sharing the store since this one started: look there before refusing.
    async fn definition(&self, name: &str, version: u32) -> Result<Arc<Definition>, EngineError> {
        let registry = &self.shared.registry;
        if let Ok(def) = registry.get(name, Some(version)) {
            return Ok(def);
        }
        for def in self.shared.store.definitions().await? {
            if registry.get(&def.name, Some(def.version)).is_err() {
                registry.register(def)?;
            }
        }
        registry.get(name, Some(version))
    }

    /// Loads the states this batch needs: those the cache lacks, and those of requests from
    /// callers, which are always read afresh — a refusal writes nothing, so a state cached
    /// while another engine moved the saga on would never be corrected by a version check.
    /// Returns the error when the store could not be read.
    async fn load_missing(&mut self, batch: &[Work]) -> Option<String> {
        let mut missing: Vec<SagaId> = batch
            .iter()
            .filter_map(|w| match w {
                Work::Input {
                    saga_id, respond, ..
                } if respond.is_some() || !self.cache.contains_key(saga_id) => {
                    Some(saga_id.clone())
                }
                _ => None,
            })
            .collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return None;
        }
        match self.shared.store.load(&missing).await {
            Ok(states) => {
                for id in &missing {
                    self.cache.remove(id);
                }
                for s in states {
                    self.cache.insert(s.saga_id.clone(), s);
                }
                None
            }
            Err(e) => {
                for id in &missing {
                    self.cache.remove(id);
                }
                Some(e.to_string())
            }
        }
    }

    /// Builds the decision for one saga, or `None` when nothing needs writing.
    fn decision(&self, p: &Pending, now: i64) -> Option<Decision> {
        let fx = effects(p.base.as_ref(), &p.state, &p.events, &p.def, &p.fired);
        if p.events.is_empty() && fx.timers.is_empty() && fx.resolved.is_empty() {
            return None;
        }
        let base_version = p.base.as_ref().map(|b| b.journal_version).unwrap_or(0);
        let events = p
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| JournalEntry {
                seq: base_version + 1 + i as u64,
                at: now,
                event: e.clone(),
            })
            .collect();
        let s = &p.state;
        let correlation = s
            .correlation_key
            .clone()
            .unwrap_or_else(|| s.saga_id.0.clone());
        let outbox = fx
            .dispatch
            .into_iter()
            .map(|d| {
                let payload = CommandPayload {
                    saga_id: s.saga_id.0.clone(),
                    definition: s.definition.clone(),
                    version: s.version,
                    step: d.step,
                    step_name: d.step_name.clone(),
                    attempt: d.attempt,
                    phase: d.phase,
                    command: d.command.name.clone(),
                    key: d.key.clone(),
                    context: s.context.clone(),
                };
                let envelope = Envelope {
                    protocol: sagaflow_core::PROTOCOL_VERSION,
                    message_id: d.key.clone(),
                    kind: MessageKind::Command,
                    subject: d.command.subject(),
                    saga_id: Some(s.saga_id.0.clone()),
                    correlation_id: Some(correlation.clone()),
                    causation_id: None,
                    step: Some(d.step_name),
                    attempt: Some(d.attempt),
                    traceparent: s.traceparent.clone(),
                    request_id: s.request_id.clone(),
                    payload: serde_json::to_value(&payload).unwrap_or(Value::Null),
                };
                OutboxRow {
                    key: d.key,
                    saga_id: s.saga_id.clone(),
                    topic: command_topic(&d.command.service),
                    body: envelope.to_bytes(),
                    // An engine that publishes holds the lease while it does; one that does
                    // not leaves the row for the others to claim at once.
                    lease_until: if self.shared.config.publish {
                        now + self.shared.config.redeliver_after_ms
                    } else {
                        now
                    },
                    lease_owner: if self.shared.config.publish {
                        self.shared.config.owner.clone()
                    } else {
                        String::new()
                    },
                }
            })
            .collect();
        Some(Decision {
            saga_id: s.saga_id.clone(),
            expected_version: base_version,
            events,
            state: s.clone(),
            outbox,
            resolved: fx.resolved,
            timers: fx.timers,
            idempotency_key: p.start.as_ref().and_then(|(k, _)| k.clone()),
        })
    }

    /// Queues a conflicted saga's inputs to be decided again on fresh state.
    fn retry(&mut self, p: Pending, settling: &mut Settle) {
        if let Some((_, respond)) = p.start {
            let _ = respond.send(Err(EngineError::Contended(p.state.saga_id.clone())));
        }
        for a in p.inputs {
            if a.retries >= MAX_CONFLICT_RETRIES {
                if let Some(r) = a.respond {
                    let _ = r.send(Err(EngineError::Contended(p.state.saga_id.clone())));
                }
                settle_later(settling, a.origin, false);
                continue;
            }
            self.carry.push_back(Work::Input {
                saga_id: p.state.saga_id.clone(),
                input: a.input,
                fired: a.fired,
                origin: a.origin,
                respond: a.respond,
                retries: a.retries + 1,
            });
        }
    }

    /// Answers a refused input; a message that cannot apply (`dead`) goes to the dead
    /// letters, and is delivered again if they cannot take it. A refused message that is
    /// merely late (a duplicate reply, one for an attempt already resolved) is acked.
    async fn reject(
        &self,
        origin: Option<Origin>,
        dead: bool,
        respond: Option<oneshot::Sender<Result<SagaState, EngineError>>>,
        error: EngineError,
        reason: &str,
        settling: &mut Settle,
    ) {
        if let Some(o) = origin {
            let mut kept = true;
            if dead {
                let now = self.shared.now();
                if let Err(e) = self
                    .shared
                    .store
                    .put_dead_letter(&o.topic, &o.body, reason, 1, now)
                    .await
                {
                    tracing::error!(error = %e, reason, "could not keep a dead letter");
                    kept = false;
                }
            }
            settle_later(settling, Some(o), kept);
        }
        match respond {
            Some(r) => {
                let _ = r.send(Err(error));
            }
            None => tracing::debug!(reason, "input refused"),
        }
    }
}

/// Answers everyone waiting on a committed (or unchanged) saga.
fn answer(p: Pending, duplicate_of: Option<SagaId>, settling: &mut Settle) {
    if let Some((_, respond)) = p.start {
        let started = match duplicate_of {
            Some(existing) => Started {
                saga_id: existing,
                status: Status::Running,
                created: false,
            },
            None => Started {
                saga_id: p.state.saga_id.clone(),
                status: p.state.status,
                created: true,
            },
        };
        let _ = respond.send(Ok(started));
    }
    for a in p.inputs {
        if let Some(r) = a.respond {
            let _ = r.send(Ok(p.state.clone()));
        }
        settle_later(settling, a.origin, true);
    }
}

fn fail(p: Pending, error: &str, settling: &mut Settle) {
    let err = || EngineError::Store(StoreError::Unavailable(error.to_string()));
    if let Some((_, respond)) = p.start {
        let _ = respond.send(Err(err()));
    }
    for a in p.inputs {
        if let Some(r) = a.respond {
            let _ = r.send(Err(err()));
        }
        settle_later(settling, a.origin, false);
    }
}
