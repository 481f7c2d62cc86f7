//! The in-memory bus passes the transport conformance suite (the broker-restart check has no
//! broker to restart).

use std::sync::Arc;

use sagaflow_core::{DeadLetters, Transport};
use sagaflow_engine::{async_trait, MemoryBus};
use sagaflow_testkit::transport_conformance::{self, TransportUnderTest};

const MAX_DELIVER: u32 = 3;

struct Memory;

#[async_trait]
impl TransportUnderTest for Memory {
    async fn connect(&self, dead_letters: DeadLetters) -> Arc<dyn Transport> {
        Arc::new(MemoryBus::with_dead_letters(dead_letters, MAX_DELIVER))
    }

    fn max_deliver(&self) -> u32 {
        MAX_DELIVER
    }

    async fn restart_broker(&self) -> bool {
        false
    }
}

sagaflow_testkit::transport_conformance_tests!(Memory);

#[tokio::test]
async fn broker_restart_loses_nothing() {
    transport_conformance::broker_restart_loses_nothing(&Memory).await;
}
