//! The in-memory bus: the embedded transport. Messages live only in this process; the
//! outbox (a row per command until its attempt is resolved) is what makes that safe.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sagaflow_core::{Acker, Delivery, Subscription, Transport, TransportError};
use tokio::sync::Notify;

/// One consumer group's queue.
#[derive(Default)]
struct Queue {
    items: Mutex<VecDeque<(Vec<u8>, u32)>>,
    ready: Notify,
    closed: std::sync::atomic::AtomicBool,
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

#[derive(Default)]
struct Topic {
    groups: HashMap<String, Arc<Queue>>,
    /// Messages published before anyone subscribed: the first group gets them.
    unclaimed: VecDeque<Vec<u8>>,
}

/// An in-process transport: each topic fans out to its consumer groups; within a group each
/// message goes to one subscriber. Cheap to clone.
#[derive(Clone, Default)]
pub struct MemoryBus {
    topics: Arc<Mutex<HashMap<String, Topic>>>,
}

impl MemoryBus {
    /// A new, empty bus.
    pub fn new() -> Self {
        MemoryBus::default()
    }

    /// Closes every subscription: their `next` returns `None` once drained.
    pub fn close(&self) {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        for topic in topics.values() {
            for queue in topic.groups.values() {
                queue
                    .closed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                queue.ready.notify_waiters();
                queue.ready.notify_one();
            }
        }
    }
}

#[async_trait]
impl Transport for MemoryBus {
    async fn publish(&self, topic: &str, body: Vec<u8>) -> Result<(), TransportError> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let entry = topics.entry(topic.to_string()).or_default();
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
        }))
    }
}

struct MemorySubscription {
    topic: String,
    queue: Arc<Queue>,
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
                return Some(Delivery {
                    topic: self.topic.clone(),
                    body: body.clone(),
                    redelivered,
                    acker: Box::new(MemoryAcker {
                        queue: self.queue.clone(),
                        body,
                        redelivered,
                    }),
                });
            }
            if self.queue.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            notified.await;
        }
    }
}

struct MemoryAcker {
    queue: Arc<Queue>,
    body: Vec<u8>,
    redelivered: u32,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(self: Box<Self>) {}

    async fn nack(self: Box<Self>) {
        self.queue.push(self.body, self.redelivered + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_group_gets_each_message_once_and_nack_redelivers() {
        let bus = MemoryBus::new();
        bus.publish("t", b"early".to_vec()).await.unwrap();
        let mut a1 = bus.subscribe("t", "a").await.unwrap();
        let mut b = bus.subscribe("t", "b").await.unwrap();
        bus.publish("t", b"m".to_vec()).await.unwrap();
        assert_eq!(a1.next().await.unwrap().body, b"early");
        let first = a1.next().await.unwrap();
        assert_eq!(first.body, b"m");
        first.nack().await;
        let again = a1.next().await.unwrap();
        assert_eq!((again.body.as_slice(), again.redelivered), (&b"m"[..], 1));
        assert_eq!(b.next().await.unwrap().body, b"m");
        bus.close();
        assert!(b.next().await.is_none());
    }
}
