//! HTTP participants: a service bound to a base URL instead of a broker queue.
//!
//! [`HttpParticipants`] is a [`Transport`] in front of another one (the in-memory bus or a
//! broker). A command for a bound service is not put on a queue: the relay's publish hands
//! it to a task that `POST`s the command payload to `{url}/{command}` (headers
//! `Idempotency-Key`, `traceparent`, `X-Request-ID` and the CloudEvents binary-mode `ce-*`
//! attributes) and publishes what the answer means (see [`answer`]) as the reply, on the
//! transport behind, where the engine consumes replies as from any participant. Everything
//! else goes straight through, so the same definition runs unchanged whether a service is
//! bound to HTTP or to a broker.
//!
//! Delivery is at-least-once, like every command: the outbox row stays until its attempt
//! is answered, and is published again (the same `Idempotency-Key`) when its lease ends —
//! after a crash of sagaflow, after a 202 whose answer has not come yet, or while the
//! endpoint's circuit was open. A call already under way for a key is not made twice by
//! this process. At most `max_in_flight` calls per service run at once; one that keeps
//! failing opens its circuit breaker ([`breaker`]) and is left alone for a cool-down.

pub mod answer;
pub mod breaker;
pub mod service;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use sagaflow_core::{
    command_topic, CloudEventAttributes, CommandPayload, EndpointHealth, Envelope, MessageKind,
    Subscription, Transport, TransportError, REPLY_TOPIC,
};
use tokio::sync::Semaphore;

pub use answer::Verdict;
pub use breaker::Breaker;
pub use service::HttpService;

/// The largest answer read from a participant; a longer one is a failed attempt.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How long a call may wait for one of its service's `max_in_flight` places. Past it the
/// call is dropped: the outbox sends the command again when its lease ends (10 s by
/// default) if the attempt is still open, so a call never goes out after its attempt was
/// settled by a timeout, a retry or a compensation.
const MAX_QUEUED: Duration = Duration::from_secs(5);

/// One bound service: its settings, its concurrency, its breaker and its counters.
struct Endpoint {
    service: HttpService,
    permits: Semaphore,
    /// Keys with a call queued or under way in this process.
    keys: Mutex<HashSet<String>>,
    breaker: Mutex<Breaker>,
    active: AtomicUsize,
    calls: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Endpoint {
    /// Takes `key` for a call; false when one is already queued or under way.
    fn claim(&self, key: &str) -> bool {
        lock(&self.keys).insert(key.to_string())
    }

    fn release(&self, key: &str) {
        lock(&self.keys).remove(key);
    }

    fn record(&self, verdict: &Verdict) {
        if verdict.endpoint_failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
            lock(&self.breaker).failed(Instant::now());
            if let Some(sagaflow_core::Outcome::Failed { error, .. }) = &verdict.outcome {
                *lock(&self.last_error) = Some(error.clone());
            }
        } else {
            lock(&self.breaker).succeeded();
        }
    }
}

/// The transport that calls HTTP participants, in front of the transport for everything else.
#[derive(Clone)]
pub struct HttpParticipants {
    inner: Arc<dyn Transport>,
    /// By command topic.
    endpoints: Arc<HashMap<String, Arc<Endpoint>>>,
    client: reqwest::Client,
    answer_limit: usize,
}

impl HttpParticipants {
    /// Binds `services` to their URLs; every other topic goes to `inner`.
    pub fn new(inner: Arc<dyn Transport>, services: Vec<HttpService>) -> Result<Self, String> {
        let mut endpoints = HashMap::new();
        let mut most = 1;
        for service in services {
            most = most.max(service.max_in_flight);
            let topic = command_topic(&service.name);
            if endpoints.contains_key(&topic) {
                return Err(format!(
                    "service {:?} is bound twice; bind each service to one URL",
                    service.name
                ));
            }
            endpoints.insert(
                topic,
                Arc::new(Endpoint {
                    permits: Semaphore::new(service.max_in_flight),
                    service,
                    keys: Mutex::default(),
                    breaker: Mutex::default(),
                    active: AtomicUsize::new(0),
                    calls: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    last_error: Mutex::default(),
                }),
            );
        }
        let client = reqwest::Client::builder()
            // A redirect is answered, not followed: the binding names the final URL.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(most)
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("sagaflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpParticipants {
            inner,
            endpoints: Arc::new(endpoints),
            client,
            answer_limit: MAX_ANSWER_BYTES,
        })
    }

    /// Reads at most `bytes` of an answer (tests use a small limit).
    pub fn answer_limit(mut self, bytes: usize) -> Self {
        self.answer_limit = bytes.max(1);
        self
    }

    /// The names of the bound services.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .endpoints
            .values()
            .map(|e| e.service.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Makes the call for one command and publishes its reply; the key is released at the end.
    async fn deliver(
        self,
        endpoint: Arc<Endpoint>,
        message_id: String,
        envelope: Envelope,
        payload: CommandPayload,
    ) {
        let key = payload.key.clone();
        let verdict = {
            // A call that waited its turn this long is left to the outbox, which sends it
            // again while its attempt is still open (never after it was settled).
            let Ok(Ok(_permit)) =
                tokio::time::timeout(MAX_QUEUED, endpoint.permits.acquire()).await
            else {
                endpoint.release(&key);
                return;
            };
            if !lock(&endpoint.breaker).admit(Instant::now()) {
                // The circuit opened while this call waited: the outbox sends it again later.
                endpoint.release(&key);
                return;
            }
            endpoint.active.fetch_add(1, Ordering::Relaxed);
            endpoint.calls.fetch_add(1, Ordering::Relaxed);
            let verdict = self.call(&endpoint, &envelope, &payload).await;
            endpoint.active.fetch_sub(1, Ordering::Relaxed);
            endpoint.record(&verdict);
            verdict
        };
        if let Some(outcome) = verdict.outcome {
            if let sagaflow_core::Outcome::Failed { error, .. } = &outcome {
                tracing::info!(service = %endpoint.service.name, %key, %error, "HTTP participant attempt failed");
            }
            let reply_id = if message_id == key {
                format!("{key}:reply")
            } else {
                format!("{message_id}:reply")
            };
            let body =
                Envelope::reply_to(&envelope, &payload, outcome, reply_id.clone()).to_bytes();
            let mut wait = Duration::from_millis(50);
            for attempt in 1..=4 {
                match self
                    .inner
                    .publish(REPLY_TOPIC, &reply_id, body.clone())
                    .await
                {
                    Ok(()) => break,
                    Err(e) if attempt == 4 => {
                        // The command is sent again when its outbox lease ends, and the
                        // participant answers the same key the same way.
                        tracing::warn!(%key, error = %e, "publishing an HTTP participant's reply failed");
                    }
                    Err(_) => {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
        }
        endpoint.release(&key);
    }

    /// One exchange with the participant, bounded in time and size.
    async fn call(
        &self,
        endpoint: &Endpoint,
        envelope: &Envelope,
        payload: &CommandPayload,
    ) -> Verdict {
        let service = &endpoint.service;
        let url = format!("{}/{}", service.url, payload.command);
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let mut request = self
            .client
            .post(&url)
            .header("idempotency-key", &payload.key)
            .body(body);
        for (name, value) in CloudEventAttributes::of(envelope).headers() {
            request = request.header(name, value);
        }
        let limit = self.answer_limit;
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let retry_after = header("retry-after");
            let location = header("location");
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > limit {
                    return Ok(Err(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Ok((status, retry_after, location, body)))
        };
        match tokio::time::timeout(service.timeout, exchange).await {
            Err(_) => Verdict::endpoint_failure(
                format!(
                    "{} gave no complete answer within {} ms ({url})",
                    service.name,
                    service.timeout.as_millis()
                ),
                None,
                true,
            ),
            // A connection that never opened (or a request never built) carried nothing;
            // one that broke later may have carried the whole request.
            Ok(Err(e)) => Verdict::endpoint_failure(
                format!("cannot call {} at {url}: {}", service.name, error_chain(&e)),
                None,
                !(e.is_connect() || e.is_builder()),
            ),
            Ok(Ok(Err(limit))) => Verdict::endpoint_failure(
                format!(
                    "{}'s answer is larger than {limit} bytes ({url})",
                    service.name
                ),
                None,
                true,
            ),
            Ok(Ok(Ok((status, retry_after, location, body)))) => answer::classify(
                &service.name,
                status,
                retry_after.as_deref(),
                location.as_deref(),
                &body,
                SystemTime::now(),
            ),
        }
    }
}

/// An error and its causes, for the journal.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[async_trait]
impl Transport for HttpParticipants {
    async fn publish(
        &self,
        topic: &str,
        message_id: &str,
        body: Vec<u8>,
    ) -> Result<(), TransportError> {
        let Some(endpoint) = self.endpoints.get(topic) else {
            return self.inner.publish(topic, message_id, body).await;
        };
        if lock(&endpoint.breaker).is_open(Instant::now()) {
            return Err(TransportError::Unavailable(format!(
                "{} keeps failing; its circuit is open, and the command waits in the outbox",
                endpoint.service.name
            )));
        }
        let envelope = Envelope::from_bytes(&body).map_err(TransportError::Invalid)?;
        if envelope.kind != MessageKind::Command {
            return Err(TransportError::Invalid(format!(
                "only commands go to {}",
                endpoint.service.name
            )));
        }
        let payload = serde_json::from_value::<CommandPayload>(envelope.payload.clone())
            .map_err(|e| TransportError::Invalid(format!("not a command payload: {e}")))?;
        if endpoint.claim(&payload.key) {
            tokio::spawn(self.clone().deliver(
                endpoint.clone(),
                message_id.to_string(),
                envelope,
                payload,
            ));
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        self.inner.subscribe(topic, group).await
    }

    async fn ready(&self) -> Result<(), TransportError> {
        self.inner.ready().await
    }

    fn endpoints(&self) -> Vec<EndpointHealth> {
        let now = Instant::now();
        let mut all: Vec<EndpointHealth> = self
            .endpoints
            .values()
            .map(|e| {
                let breaker = lock(&e.breaker);
                EndpointHealth {
                    service: e.service.name.clone(),
                    url: e.service.url.clone(),
                    circuit: breaker.state(now),
                    in_flight: e.active.load(Ordering::Relaxed),
                    max_in_flight: e.service.max_in_flight,
                    consecutive_failures: breaker.consecutive,
                    calls: e.calls.load(Ordering::Relaxed),
                    failures: e.failures.load(Ordering::Relaxed),
                    last_error: lock(&e.last_error).clone(),
                }
            })
            .collect();
        all.extend(self.inner.endpoints());
        all.sort_by(|a, b| a.service.cmp(&b.service));
        all
    }
}
