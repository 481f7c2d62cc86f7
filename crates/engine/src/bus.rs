//! The in-memory bus: the embedded transport. Messages live only in this process; the
//! outbox (a row per command until its attempt is resolved) is what makes that safe.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sagaflow_core::{Acker, DeadLetters, Delivery, Subscription, Transport, TransportError};
use tokio::sync::Notify;

/// One consumer group's queue.
#[derive(Default)]
struct Queue {
    items: Mutex<VecDeque<(Vec<u8>, u32)>>,
    ready: Notify,
    closed: AtomicBool,
}

impl Queue {
    fn push(&self, body: Vec<u8>, redelivered: u32) {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((body, redelivered));
        self.ready.notify_one();
    }
}

/// Messages kept for a topic nobody consumes yet; older ones are dropped past this (the
/// outbox publishes unanswered commands again, so nothing is lost for good).
const UNCLAIMED_MAX: usize = 10_000;
/// How many recent message ids per topic are remembered to drop a duplicate publish.
const DEDUPE_WINDOW: usize = 100_000;

#[derive(Default)]
struct Topic {
    groups: HashMap<String, Arc<Queue>>,
    /// Messages published before anyone subscribed: the first group gets them.
    unclaimed: VecDeque<Vec<u8>>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
}

impl Topic {
    /// Remembers `id`; false when it was published already.
    fn first_time(&mut self, id: &str) -> bool {
        if !self.seen.insert(id.to_string()) {
            return false;
        }
        self.seen_order.push_back(id.to_string());
        if self.seen_order.len() > DEDUPE_WINDOW {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// An in-process transport: each topic fans out to its consumer groups; within a group each
/// message goes to one subscriber. A delivery dropped without being settled comes again.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct MemoryBus {
    topics: Arc<Mutex<HashMap<String, Topic>>>,
    dead_letters: Option<(DeadLetters, u32)>,
}

impl MemoryBus {
    /// A new, empty bus that redelivers a nacked message without limit.
    pub fn new() -> Self {
        MemoryBus::default()
    }

    /// A new bus that hands a message delivered `max_deliver` times without an ack to
    /// `dead_letters`.
    pub fn with_dead_letters(dead_letters: DeadLetters, max_deliver: u32) -> Self {
        MemoryBus {
            topics: Arc::default(),
            dead_letters: Some((dead_letters, max_deliver.max(1))),
        }
    }

    /// Closes every subscription: their `next` returns `None` once drained.
    pub fn close(&self) {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        for topic in topics.values() {
            for queue in topic.groups.values() {
                queue.closed.store(true, Ordering::SeqCst);
                queue.ready.notify_waiters();
                queue.ready.notify_one();
            }
        }
    }
}

#[async_trait]
impl Transport for MemoryBus {
    async fn publish(
        &self,
        topic: &str,
        message_id: &str,
        body: Vec<u8>,
    ) -> Result<(), TransportError> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let entry = topics.entry(topic.to_string()).or_default();
        if !entry.first_time(message_id) {
            return Ok(());
        }
        // A group whose every subscription is gone holds only the map's reference: drop it
        // rather than queue for nobody.
        entry.groups.retain(|_, queue| Arc::strong_count(queue) > 1);
        if entry.groups.is_empty() {
            if entry.unclaimed.len() >= UNCLAIMED_MAX {
                entry.unclaimed.pop_front();
                tracing::warn!(topic, "no consumer; dropping the oldest unclaimed message");
            }
            entry.unclaimed.push_back(body);
            return Ok(());
        }
        let last = entry.groups.len() - 1;
        for (i, queue) in entry.groups.values().enumerate() {
            if i == last {
                queue.push(body, 0);
                break;
            }
            queue.push(body.clone(), 0);
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let entry = topics.entry(topic.to_string()).or_default();
        let queue = entry.groups.entry(group.to_string()).or_default().clone();
        for body in entry.unclaimed.drain(..) {
            queue.push(body, 0);
        }
        Ok(Box::new(MemorySubscription {
            topic: topic.to_string(),
            queue,
            dead_letters: self.dead_letters.clone(),
        }))
    }
}

struct MemorySubscription {
    topic: String,
    queue: Arc<Queue>,
    dead_letters: Option<(DeadLetters, u32)>,
}

impl MemorySubscription {
    /// Hands an exhausted message to the dead letters; false (and back in the queue) when
    /// the sink refused it.
    async fn exhausted(&self, body: &[u8], redelivered: u32) -> bool {
        let Some((sink, max)) = &self.dead_letters else {
            return false;
        };
        if redelivered < *max {
            return false;
        }
        let reason = format!("delivered {redelivered} times without an ack (max_deliver {max})");
        match sink
            .dead_letter(&self.topic, body, &reason, redelivered)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, topic = %self.topic, "could not keep a dead letter");
                false
            }
        }
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let notified = self.queue.ready.notified();
            let item = self
                .queue
                .items
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            if let Some((body, redelivered)) = item {
                if self.exhausted(&body, redelivered).await {
                    continue;
                }
                return Some(Delivery {
                    topic: self.topic.clone(),
                    body: body.clone(),
                    redelivered,
                    acker: Box::new(MemoryAcker {
                        queue: self.queue.clone(),
                        body: Some(body),
                        redelivered,
                    }),
                });
            }
            if self.queue.closed.load(Ordering::SeqCst) {
                return None;
            }
            notified.await;
        }
    }
}

/// Settles a delivery; dropped unsettled, it puts the message back (its consumer went away).
struct MemoryAcker {
    queue: Arc<Queue>,
    body: Option<Vec<u8>>,
    redelivered: u32,
}

impl MemoryAcker {
    fn requeue(&mut self) {
        if let Some(body) = self.body.take() {
            self.queue.push(body, self.redelivered + 1);
        }
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        self.requeue();
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) {
        self.body = None;
    }

    async fn nack(mut self: Box<Self>) {
        self.requeue();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_group_gets_each_message_once_and_nack_redelivers() {
        let bus = MemoryBus::new();
        bus.publish("t", "0", b"early".to_vec()).await.unwrap();
        let mut a1 = bus.subscribe("t", "a").await.unwrap();
        let mut b = bus.subscribe("t", "b").await.unwrap();
        bus.publish("t", "1", b"m".to_vec()).await.unwrap();
        let early = a1.next().await.unwrap();
        assert_eq!(early.body, b"early");
        early.ack().await;
        let first = a1.next().await.unwrap();
        assert_eq!(first.body, b"m");
        first.nack().await;
        let again = a1.next().await.unwrap();
        assert_eq!((again.body.as_slice(), again.redelivered), (&b"m"[..], 1));
        again.ack().await;
        let to_b = b.next().await.unwrap();
        assert_eq!(to_b.body, b"m");
        to_b.ack().await;
        bus.close();
        assert!(b.next().await.is_none());
    }
}
