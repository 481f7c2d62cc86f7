//! A command delivered twice has no second effect: the shop's handlers run in the participant
//! SDK's transaction with inbox de-duplication, so a redelivered `pay` (or `reserve`, or
//! `deliver`) answers the recorded reply and changes nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sagaflow_core::{Envelope, Store, Subscription, Transport, TransportError, REPLY_TOPIC};
use sagaflow_engine::{async_trait, Engine, MemoryBus, StartSaga};
use sagaflow_shop::{ShopConfig, ShopState};
use serde_json::json;

/// The in-memory bus, recording what is published through it.
#[derive(Default)]
struct Tap {
    bus: MemoryBus,
    published: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl Transport for Tap {
    async fn publish(&self, topic: &str, id: &str, body: Vec<u8>) -> Result<(), TransportError> {
        self.published
            .lock()
            .unwrap()
            .push((topic.to_string(), id.to_string()));
        self.bus.publish(topic, id, body).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        self.bus.subscribe(topic, group).await
    }
}

async fn count(store: &Arc<dyn Store>, sql: &str) -> i64 {
    let mut tx = store.begin().await.unwrap();
    let rows = tx.query(sql, &[]).await.unwrap();
    let _ = tx.rollback().await;
    rows[0][0].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_commands_have_no_second_effect() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shop.db").display());
    let store: Arc<dyn Store> = Arc::new(sagaflow_sqlite::SqliteStore::open(&url).await.unwrap());
    let config = sagaflow_shop::prepare(&store, ShopConfig::default())
        .await
        .unwrap();
    let tap = Arc::new(Tap::default());
    // A second group on each flow 1 topic keeps a copy of every command.
    let mut spies = Vec::new();
    for service in ["shop-billing", "shop-stock", "shop-delivery"] {
        spies.push(
            tap.subscribe(&sagaflow_core::command_topic(service), "spy")
                .await
                .unwrap(),
        );
    }
    let mut handles = Vec::new();
    for p in sagaflow_shop::participants(&config) {
        handles.push(p.start(store.clone(), tap.clone()).await.unwrap());
    }
    let mut builder = Engine::builder(store.clone(), tap.clone());
    for d in sagaflow_shop::definitions() {
        builder = builder.register(d);
    }
    let engine = builder.start().await.unwrap();
    let _state = ShopState {
        engine: engine.clone(),
        store: store.clone(),
        config: Arc::new(config),
    };

    // A user with money, and an order that goes all the way.
    let mut tx = store.begin().await.unwrap();
    tx.execute(
        "INSERT INTO shop_billing_accounts (user_id, balance) VALUES ('u1', 100)",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let id = engine
        .start_saga(StartSaga::new(
            "shop-order",
            json!({"user_id": "u1", "subscription": 1, "cost": 10}),
        ))
        .await
        .unwrap()
        .saga_id;
    let mut ends = engine.watch_ends();
    let end = tokio::time::timeout(Duration::from_secs(20), ends.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (end.saga_id.clone(), end.status),
        (id.clone(), sagaflow_core::Status::Completed)
    );

    let effects = || async {
        (
            count(
                &store,
                "SELECT balance FROM shop_billing_accounts WHERE user_id = 'u1'",
            )
            .await,
            count(&store, "SELECT COUNT(*) FROM shop_billing_payments").await,
            count(&store, "SELECT COUNT(*) FROM shop_stock_reservations").await,
            count(&store, "SELECT COUNT(*) FROM shop_notifications").await,
        )
    };
    let before = effects().await;
    assert_eq!(before, (90, 1, 1, 3));

    // Every command once more, as a broker's redelivery would bring it.
    let mut keys = Vec::new();
    for (i, spy) in spies.iter_mut().enumerate() {
        let d = tokio::time::timeout(Duration::from_secs(5), spy.next())
            .await
            .unwrap()
            .unwrap();
        let key = Envelope::from_bytes(&d.body).unwrap().message_id;
        let topic = d.topic.clone();
        let body = d.body.clone();
        d.ack().await;
        tap.publish(&topic, &format!("redelivery-{i}"), body)
            .await
            .unwrap();
        keys.push(format!("{key}:reply"));
    }
    // Each is answered again, from the inbox.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let replies = tap
            .published
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, id)| t == REPLY_TOPIC && keys.iter().any(|k| id.starts_with(k.as_str())))
            .count();
        if replies >= 2 * keys.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the redeliveries were not answered ({replies})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        effects().await,
        before,
        "no second payment, reservation or notification"
    );
    engine.shutdown().await;
    for h in handles {
        h.shutdown().await;
    }
}
