//! The shop, through HTTP against the real server (`sagaflow serve`), on SQLite and on
//! PostgreSQL: the three waiting paths with the newest notification at each stage, cancel
//! while parked, and flow 2's happy path and each compensation, with balances, stock and
//! shipments checked afterwards.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use sagaflow_core::Store;
use serde_json::{json, Value};

mod support;
use support::{pg_url, Serve};

/// A running server, its store (for checking tables) and a client.
struct Shop {
    _server: Serve,
    base: String,
    http: Client,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    schema: Option<String>,
}

#[derive(Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

impl Shop {
    async fn start(db: Db, env: &[(&str, &str)]) -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let (url, schema) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.path().join("shop.db").display()),
                None,
            ),
            Db::Postgres => {
                let schema = format!("shop_{}", fastrand::u32(..));
                (format!("{}?schema={schema}", pg_url()), Some(schema))
            }
        };
        let server = Serve::start(&url, env);
        let store = sagaflow::store_url::open(&url)
            .await
            .expect("open the store");
        Shop {
            base: server.base.clone(),
            _server: server,
            http: Client::new(),
            store,
            _dir: dir,
            schema,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Registers and logs in a fresh user; returns the token.
    async fn user(&self) -> String {
        let email = format!("u{}@shop.test", fastrand::u64(..));
        let (s, v) = self
            .call(
                Method::POST,
                "/profile/register",
                None,
                Some(json!({"email": email, "password": "pw", "username": "u", "role": "user"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = self
            .call(
                Method::POST,
                "/profile/login",
                None,
                Some(json!({"email": email, "password": "pw"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    async fn newest_notification(&self, token: &str) -> String {
        let (_, v) = self
            .call(Method::GET, "/notification", Some(token), None)
            .await;
        v[0]["message"].as_str().unwrap_or_default().to_string()
    }

    async fn notifications(&self, token: &str) -> Vec<String> {
        let (_, v) = self
            .call(Method::GET, "/notification", Some(token), None)
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n["message"].as_str().unwrap().to_string())
            .collect()
    }

    async fn balance(&self, token: &str) -> i64 {
        self.call(Method::GET, "/billing/balance", Some(token), None)
            .await
            .1
            .as_i64()
            .unwrap()
    }

    async fn stock(&self, subscription: i64) -> i64 {
        let (_, v) = self.call(Method::GET, "/stock", None, None).await;
        v.as_array()
            .unwrap()
            .iter()
            .find(|s| s["subscription"] == subscription)
            .unwrap()["quantity"]
            .as_i64()
            .unwrap()
    }

    async fn place(&self, token: &str, subscription: i64) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/order/place?idSubscription={subscription}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        v.as_str().unwrap().to_string()
    }

    /// Waits until the order has `status` and (when given) the newest notification is `note`.
    async fn wait_order(&self, token: &str, order: &str, status: &str, note: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, v) = self
                .call(Method::GET, &format!("/order/{order}"), Some(token), None)
                .await;
            let newest = self.newest_notification(token).await;
            let saga_parked = self.saga_settled(order).await;
            if v["status"] == status && note.is_none_or(|n| newest == n) && saga_parked {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "order {order}: wanted {status} with {note:?}; it is {} and the newest notification is {newest:?}",
                v["status"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The saga is parked or ended (no attempt in flight).
    async fn saga_settled(&self, saga: &str) -> bool {
        let (_, v) = self
            .call(Method::GET, &format!("/api/v1/sagas/{saga}"), None, None)
            .await;
        matches!(
            v["status"].as_str(),
            Some("waiting" | "completed" | "compensated" | "failed")
        )
    }

    async fn wait_saga(&self, saga: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, v) = self
                .call(Method::GET, &format!("/api/v1/sagas/{saga}"), None, None)
                .await;
            if v["status"] == status {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "saga {saga} never became {status}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn sql_i64(&self, sql: &str, params: &[sagaflow_core::SqlValue]) -> Option<i64> {
        let mut tx = self.store.begin().await.unwrap();
        let rows = tx.query(sql, params).await.unwrap();
        let _ = tx.rollback().await;
        rows.first().and_then(|r| r[0].as_i64())
    }

    async fn sql_text(&self, sql: &str, params: &[sagaflow_core::SqlValue]) -> Option<String> {
        let mut tx = self.store.begin().await.unwrap();
        let rows = tx.query(sql, params).await.unwrap();
        let _ = tx.rollback().await;
        rows.first().and_then(|r| r[0].as_str().map(str::to_string))
    }

    async fn finish(self) {
        if let Some(schema) = self.schema.clone() {
            drop(self);
            let _ = sagaflow_postgres::drop_schema(&pg_url(), &schema).await;
        }
    }
}

const DELIVERED: &str = "Delivered";

async fn waiting_paths(db: Db) {
    let shop = Shop::start(db, &[]).await;

    // 1. Paid → reserved → delivered, all at once.
    let t = shop.user().await;
    assert_eq!(
        shop.newest_notification(&t).await,
        "Hello, You successfully registered"
    );
    let (s, v) = shop
        .call(Method::POST, "/billing/add-money?money=50", Some(&t), None)
        .await;
    assert_eq!((s, v.as_i64()), (StatusCode::OK, Some(50)));
    assert_eq!(
        shop.newest_notification(&t).await,
        "Hello! You successfully added money amount 50. You balance 50"
    );
    let o = shop.place(&t, 1).await;
    shop.wait_order(
        &t,
        &o,
        DELIVERED,
        Some(&format!(
            "Hello! Your order {o} successfully sent to delivery"
        )),
    )
    .await;
    assert_eq!(
        shop.notifications(&t).await[..3],
        [
            format!("Hello! Your order {o} successfully sent to delivery"),
            format!("Hello! Your order {o} successfully reserved"),
            "Hello! You pay for order. Order cost amount 10. You balance after 40".to_string(),
        ]
    );

    // 2. Paid → parked at stock → stock added → delivered.
    let t = shop.user().await;
    shop.call(Method::POST, "/billing/add-money?money=100", Some(&t), None)
        .await;
    let o = shop.place(&t, 2).await;
    shop.wait_order(
        &t,
        &o,
        "ValidatingStock",
        Some("Hello! You pay for order. Order cost amount 95. You balance after 5"),
    )
    .await;
    assert_eq!(
        shop.place(&t, 2).await,
        o,
        "the same subscription while unfinished: the same order"
    );
    let (s, _) = shop
        .call(
            Method::PUT,
            "/stock/add?idSubscription=2&count=1",
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    shop.wait_order(
        &t,
        &o,
        DELIVERED,
        Some(&format!(
            "Hello! Your order {o} successfully sent to delivery"
        )),
    )
    .await;
    assert_eq!(
        shop.notifications(&t).await[1],
        format!("Hello! Your order {o} successfully reserved")
    );
    assert_eq!(shop.stock(2).await, 0);

    // 3. Refused → money added → paid → parked at stock → stock added → reserved → parked at
    //    delivery → accepted → delivered.
    let t = shop.user().await;
    let o = shop.place(&t, 3).await;
    shop.wait_order(
        &t,
        &o,
        "ValidatingBilling",
        Some("Hello! You cannot pay for order. Order cost amount 1200. You balance 0"),
    )
    .await;
    shop.call(
        Method::POST,
        "/billing/add-money?money=1300",
        Some(&t),
        None,
    )
    .await;
    shop.wait_order(
        &t,
        &o,
        "ValidatingStock",
        Some("Hello! You pay for order. Order cost amount 1200. You balance after 100"),
    )
    .await;
    let (s, _) = shop
        .call(
            Method::PUT,
            &format!("/delivery/accept?idOrder={o}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "not waiting for a courier yet");
    shop.call(
        Method::PUT,
        "/stock/add?idSubscription=3&count=1",
        None,
        None,
    )
    .await;
    shop.wait_order(
        &t,
        &o,
        "ValidatingDelivery",
        Some(&format!("Hello! Your order {o} successfully reserved")),
    )
    .await;
    let (s, v) = shop
        .call(
            Method::PUT,
            &format!("/delivery/accept?idOrder={o}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    shop.wait_order(
        &t,
        &o,
        DELIVERED,
        Some(&format!(
            "Hello! Your order {o} successfully sent to delivery"
        )),
    )
    .await;
    let notes = shop.notifications(&t).await;
    assert_eq!(notes.len(), 6, "one per step, none for parking: {notes:?}");
    let (s, _) = shop
        .call(Method::POST, &format!("/order/{o}/cancel"), Some(&t), None)
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a delivered order cannot be cancelled"
    );
    shop.finish().await;
}

async fn cancel_while_parked(db: Db) {
    let shop = Shop::start(db, &[]).await;
    // Paid and reserved, waiting for a courier: cancel refunds and releases.
    let t = shop.user().await;
    shop.call(
        Method::POST,
        "/billing/add-money?money=1500",
        Some(&t),
        None,
    )
    .await;
    shop.call(
        Method::PUT,
        "/stock/add?idSubscription=3&count=2",
        None,
        None,
    )
    .await;
    let o = shop.place(&t, 3).await;
    shop.wait_order(&t, &o, "ValidatingDelivery", None).await;
    assert_eq!((shop.balance(&t).await, shop.stock(3).await), (300, 1));
    let (s, v) = shop
        .call(Method::POST, &format!("/order/{o}/cancel"), Some(&t), None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    shop.wait_saga(&o, "compensated").await;
    assert_eq!(
        (shop.balance(&t).await, shop.stock(3).await),
        (1500, 2),
        "refunded and released"
    );
    let (_, v) = shop
        .call(Method::GET, &format!("/order/{o}"), Some(&t), None)
        .await;
    assert_eq!(v["status"], "Cancelled");
    let (s, _) = shop
        .call(
            Method::PUT,
            &format!("/delivery/accept?idOrder={o}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Parked at billing: nothing to undo; another user cannot cancel it.
    let t2 = shop.user().await;
    let o2 = shop.place(&t2, 3).await;
    shop.wait_order(&t2, &o2, "ValidatingBilling", None).await;
    let (s, _) = shop
        .call(Method::POST, &format!("/order/{o2}/cancel"), Some(&t), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = shop
        .call(
            Method::POST,
            &format!("/order/{o2}/cancel"),
            Some(&t2),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    shop.wait_saga(&o2, "compensated").await;
    assert_eq!(shop.balance(&t2).await, 0);
    let (s, _) = shop.call(Method::GET, "/billing/balance", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = shop
        .call(
            Method::POST,
            "/billing/add-money?money=9223372036854775807",
            Some(&t2),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // A password is taken as given, spaces included.
    let email = format!("spaces{}@shop.test", fastrand::u64(..));
    let (s, _) = shop
        .call(
            Method::POST,
            "/profile/register",
            None,
            Some(json!({"email": email, "password": " pw ", "username": "s", "role": "user"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = shop
        .call(
            Method::POST,
            "/profile/login",
            None,
            Some(json!({"email": email, "password": " pw "})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = shop
        .call(
            Method::POST,
            "/profile/login",
            None,
            Some(json!({"email": email, "password": "pw"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = shop
        .call(
            Method::POST,
            "/profile/login",
            None,
            Some(json!({"email": "nobody@shop.test", "password": "pw"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    shop.finish().await;
}

async fn purchase(
    shop: &Shop,
    customer: &str,
    product: &str,
    quantity: i64,
    price: f64,
) -> (String, Value) {
    let (s, v) = shop
        .call(Method::POST, "/api/v1/orders", None, Some(json!({"customer_id": customer, "items": [{"product_id": product, "quantity": quantity, "price": price}]})))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["message"].as_str()),
        (Some("pending"), Some("Order creation started"))
    );
    (v["saga_id"].as_str().unwrap().to_string(), v)
}

async fn credit(shop: &Shop, customer: &str) -> Option<i64> {
    shop.sql_i64(
        "SELECT credit FROM shop_payments_customers WHERE customer_id = $1",
        &[customer.into()],
    )
    .await
}

async fn product(shop: &Shop, id: &str) -> i64 {
    shop.sql_i64(
        "SELECT quantity FROM shop_inventory_products WHERE product_id = $1",
        &[id.into()],
    )
    .await
    .unwrap_or(0)
}

async fn compensating_paths(db: Db) {
    let shop = Shop::start(db, &[]).await;
    // Bad requests.
    for (body, code) in [
        (
            json!({"items": [{"product_id": "product-1", "quantity": 1, "price": 1.0}]}),
            "missing_field",
        ),
        (json!({"customer_id": "c", "items": []}), "empty_order"),
        (
            json!({"customer_id": "c", "items": [{"product_id": "product-1", "quantity": 0, "price": 1.0}]}),
            "bad_quantity",
        ),
        (
            json!({"customer_id": "c", "items": [{"product_id": "product-1", "quantity": 1, "price": -1.0}]}),
            "bad_price",
        ),
        (
            json!({"customer_id": "c", "items": [{"product_id": "product-1", "quantity": 2, "price": 5e16}]}),
            "bad_price",
        ),
        (
            json!({"customer_id": "c", "items": [
                {"product_id": "product-1", "quantity": 1, "price": 1.0},
                {"product_id": "product-1", "quantity": 1, "price": 1.0}
            ]}),
            "duplicate_product",
        ),
    ] {
        let (s, v) = shop
            .call(Method::POST, "/api/v1/orders", None, Some(body))
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{v}"
        );
    }

    // The canonical request completes.
    let (saga, v) = purchase(&shop, "customer-123", "product-1", 2, 100.0).await;
    shop.wait_saga(&saga, "completed").await;
    let (_, order) = shop
        .call(
            Method::GET,
            &format!("/api/v1/orders/{}", v["order_id"].as_str().unwrap()),
            None,
            None,
        )
        .await;
    assert_eq!(order["status"], "completed");
    assert_eq!(
        credit(&shop, "customer-123").await,
        Some(80_000),
        "1 000.00 less 200.00, in cents"
    );
    assert_eq!(product(&shop, "product-1").await, 998);
    assert_eq!(
        shop.sql_text(
            "SELECT status FROM shop_shipping_shipments WHERE saga_id = $1",
            &[saga.as_str().into()]
        )
        .await
        .as_deref(),
        Some("created")
    );

    // Out of stock: refused at the first step, nothing else happens.
    let (saga, _) = purchase(&shop, "customer-out", "product-out", 1, 5.0).await;
    let s = shop.wait_saga(&saga, "compensated").await;
    assert!(
        s["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("out of stock"),
        "{s}"
    );
    assert_eq!(credit(&shop, "customer-out").await, None, "never charged");

    // Above the credit: refused at payment; the inventory comes back.
    let (saga, _) = purchase(&shop, "customer-poor", "product-2", 5, 300.0).await;
    let s = shop.wait_saga(&saga, "compensated").await;
    assert!(
        s["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("exceeds the customer's credit"),
        "{s}"
    );
    assert_eq!(product(&shop, "product-2").await, 1000, "released");
    assert_eq!(credit(&shop, "customer-poor").await, Some(100_000));
    let (_, h) = shop
        .call(
            Method::GET,
            &format!("/api/v1/sagas/{saga}/history"),
            None,
            None,
        )
        .await;
    assert!(h.to_string().contains("compensation"), "{h}");
    shop.finish().await;

    // The courier never answers: shipment fails (no retry), payment refunded, inventory released.
    let shop = Shop::start(db, &[("SAGAFLOW_SHOP_FLAKY_RATE", "1")]).await;
    let (saga, _) = purchase(&shop, "customer-unlucky", "product-3", 3, 10.0).await;
    shop.wait_saga(&saga, "compensated").await;
    assert_eq!(
        credit(&shop, "customer-unlucky").await,
        Some(100_000),
        "refunded"
    );
    assert_eq!(product(&shop, "product-3").await, 1000, "released");
    assert_eq!(
        shop.sql_i64(
            "SELECT refunded FROM shop_payments_charges WHERE saga_id = $1",
            &[saga.as_str().into()]
        )
        .await,
        Some(1)
    );
    assert_eq!(
        shop.sql_text(
            "SELECT status FROM shop_shipping_shipments WHERE saga_id = $1",
            &[saga.as_str().into()]
        )
        .await,
        None
    );
    shop.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_waiting_paths() {
    waiting_paths(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_waiting_paths() {
    waiting_paths(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cancel_while_parked_refunds_and_releases() {
    cancel_while_parked(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cancel_while_parked_refunds_and_releases() {
    cancel_while_parked(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_flow_two_completes_or_compensates() {
    compensating_paths(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_flow_two_completes_or_compensates() {
    compensating_paths(Db::Postgres).await;
}

/// The ids (or, for `/stock`, the subscriptions) of one page of a list endpoint.
async fn page_of(shop: &Shop, path: &str, token: Option<&str>, key: &str) -> Vec<Value> {
    let (s, v) = shop.call(Method::GET, path, token, None).await;
    assert_eq!(s, StatusCode::OK, "{path}: {v}");
    v.as_array()
        .unwrap_or_else(|| panic!("{path}: an array, got {v}"))
        .iter()
        .map(|row| row[key].clone())
        .collect()
}

/// `GET /order`, `/notification` and `/stock` are paged by `limit` and `offset`: pages of
/// the sizes asked, in the order of the whole list, never overlapping; bad values are 400.
async fn lists_are_paged(db: Db) {
    let shop = Shop::start(db, &[]).await;
    let t = shop.user().await;
    // 5 notifications, all written before each request answers: registered, then 4 top-ups.
    for _ in 0..4 {
        let (s, v) = shop
            .call(Method::POST, "/billing/add-money?money=1", Some(&t), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let all = page_of(&shop, "/notification", Some(&t), "id").await;
    assert_eq!(all.len(), 5, "{all:?}");
    let first = page_of(&shop, "/notification?limit=2", Some(&t), "id").await;
    let second = page_of(&shop, "/notification?limit=2&offset=2", Some(&t), "id").await;
    let last = page_of(&shop, "/notification?offset=4&limit=2", Some(&t), "id").await;
    assert_eq!((first.len(), second.len(), last.len()), (2, 2, 1));
    assert!(first.iter().all(|id| !second.contains(id)), "no overlap");
    assert_eq!(
        [first, second, last].concat(),
        all,
        "the pages are the list, in order"
    );
    assert!(page_of(&shop, "/notification?offset=5", Some(&t), "id")
        .await
        .is_empty());

    // 3 orders (a balance of 4 pays none: they all wait), each row written before `place`
    // answers. Compared by id: their status may move meanwhile.
    for subscription in 1..=3 {
        shop.place(&t, subscription).await;
    }
    let all = page_of(&shop, "/order", Some(&t), "id").await;
    assert_eq!(all.len(), 3, "{all:?}");
    let first = page_of(&shop, "/order?limit=2", Some(&t), "id").await;
    let second = page_of(&shop, "/order?limit=2&offset=2", Some(&t), "id").await;
    assert_eq!((first.len(), second.len()), (2, 1));
    assert!(!first.contains(&second[0]), "no overlap");
    assert_eq!([first, second].concat(), all);

    // The catalogue: subscriptions 1, 2, 3.
    assert_eq!(
        page_of(&shop, "/stock?limit=2", None, "subscription").await,
        [json!(1), json!(2)]
    );
    assert_eq!(
        page_of(&shop, "/stock?limit=2&offset=2", None, "subscription").await,
        [json!(3)]
    );

    for (path, token) in [
        ("/order", Some(t.as_str())),
        ("/notification", Some(t.as_str())),
        ("/stock", None),
    ] {
        for (query, names) in [
            ("limit=0", "limit"),
            ("limit=x", "limit"),
            ("limit=501", "limit"),
            ("limit=-1", "limit"),
            ("offset=-1", "offset"),
            ("offset=x", "offset"),
        ] {
            let (s, v) = shop
                .call(Method::GET, &format!("{path}?{query}"), token, None)
                .await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{path}?{query}: {v}");
            assert_eq!(v["code"], "bad_parameter", "{path}?{query}: {v}");
            assert!(
                v["detail"].as_str().unwrap_or_default().contains(names),
                "{path}?{query} names {names}: {v}"
            );
        }
    }
    let (s, v) = shop
        .call(Method::GET, "/order?limit=500", Some(&t), None)
        .await;
    assert_eq!(s, StatusCode::OK, "500 is allowed: {v}");
    shop.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lists_are_paged() {
    lists_are_paged(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lists_are_paged() {
    lists_are_paged(Db::Postgres).await;
}

/// `PUT /delivery/accept` wakes only the shop's own order saga waiting for a courier —
/// not another saga that waits at the same step for a signal of the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_courier_accepts_only_shop_orders() {
    let shop = Shop::start(Db::Sqlite, &[]).await;
    let def = json!({"name": "lookalike", "version": 1, "steps": [
        {"name": "a", "kind": "compensatable", "action": "ghost.a", "compensation": "ghost.undo_a"},
        {"name": "b", "kind": "compensatable", "action": "ghost.b", "compensation": "ghost.undo_b"},
        {"name": "c", "kind": "pivot", "action": "ghost.c"}
    ]});
    let (s, v) = shop
        .call(Method::POST, "/api/v1/definitions", None, Some(def))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = shop
        .call(
            Method::POST,
            "/api/v1/sagas",
            None,
            Some(json!({"definition": "lookalike", "input": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["saga_id"].as_str().unwrap().to_string();
    // Nobody serves `ghost`: the test answers for it, and parks step 2 for `accepted`.
    for (key, answer) in [
        (format!("{id}:a:1:action"), json!({"outcome": "succeeded"})),
        (format!("{id}:b:1:action"), json!({"outcome": "succeeded"})),
        (
            format!("{id}:c:1:action"),
            json!({"outcome": "park", "until": "accepted"}),
        ),
    ] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut body = answer.clone();
            body["key"] = json!(key);
            let (s, v) = shop
                .call(Method::POST, "/api/v1/replies", None, Some(body))
                .await;
            if s == StatusCode::ACCEPTED {
                break;
            }
            // Not sent yet (the previous answer is still being decided on).
            assert!(Instant::now() < deadline, "{key}: {s} {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (_, saga) = shop
        .call(Method::GET, &format!("/api/v1/sagas/{id}"), None, None)
        .await;
    assert_eq!(saga["status"], "waiting", "{saga}");
    let (s, v) = shop
        .call(
            Method::PUT,
            &format!("/delivery/accept?idOrder={id}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, saga) = shop
        .call(Method::GET, &format!("/api/v1/sagas/{id}"), None, None)
        .await;
    assert_eq!(saga["status"], "waiting", "left alone: {saga}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_script_walks_the_three_waiting_paths() {
    let shop = Shop::start(Db::Sqlite, &[]).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../apps/shop/demo.sh");
    let base = shop.base.clone();
    let out =
        tokio::task::spawn_blocking(move || Command::new("bash").arg(script).arg(base).output())
            .await
            .unwrap()
            .expect("run apps/shop/demo.sh (it needs curl)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo.sh failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "notification: Hello, You successfully registered",
        "notification: Hello! You pay for order. Order cost amount 10. You balance after 40",
        "notification: Hello! You cannot pay for order. Order cost amount 1200. You balance 0",
        "notification: Hello! You pay for order. Order cost amount 1200. You balance after 100",
        "successfully sent to delivery",
    ] {
        assert!(
            text.contains(expected),
            "demo.sh did not print {expected:?}:\n{text}"
        );
    }
    assert_eq!(text.matches("is Delivered").count(), 3, "{text}");
}
