//! The store as a transport's dead-letter sink: a message that exhausted its deliveries is
//! kept in the store's dead letters, where operators list, replay or discard it.

use std::sync::Arc;

use async_trait::async_trait;
use sagaflow_core::{Clock, DeadLetterSink, DeadLetters, Store};

use crate::clock::SystemClock;

/// Keeps dead letters in a [`Store`].
pub struct StoreDeadLetters {
    store: Arc<dyn Store>,
}

impl StoreDeadLetters {
    /// A sink writing to `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreDeadLetters { store }
    }

    /// The same, shared, ready to hand to a transport.
    pub fn shared(store: Arc<dyn Store>) -> DeadLetters {
        Arc::new(StoreDeadLetters::new(store))
    }
}

#[async_trait]
impl DeadLetterSink for StoreDeadLetters {
    async fn dead_letter(
        &self,
        topic: &str,
        body: &[u8],
        reason: &str,
        attempts: u32,
    ) -> Result<(), String> {
        self.store
            .put_dead_letter(topic, body, reason, attempts, SystemClock.now())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
