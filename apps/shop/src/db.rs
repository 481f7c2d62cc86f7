//! The shop's tables and small helpers over the participant transaction (plain SQL that
//! SQLite and PostgreSQL both accept; `$1…` placeholders).

use std::sync::Arc;

use sagaflow_core::{ParticipantTx, SqlValue, Store, StoreError};

/// Every shop table, created if missing. Each service owns the tables named after it.
const SCHEMA: &[&str] = &[
    // identity
    "CREATE TABLE IF NOT EXISTS shop_identity_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shop_users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, username TEXT NOT NULL, role TEXT NOT NULL, password_hash TEXT NOT NULL, created_at BIGINT NOT NULL)",
    // billing
    "CREATE TABLE IF NOT EXISTS shop_billing_accounts (user_id TEXT PRIMARY KEY, balance BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shop_billing_payments (order_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, amount BIGINT NOT NULL, refunded BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS shop_billing_refusals (order_id TEXT PRIMARY KEY)",
    // stock
    "CREATE TABLE IF NOT EXISTS shop_stock_items (subscription BIGINT PRIMARY KEY, quantity BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shop_stock_reservations (order_id TEXT PRIMARY KEY, subscription BIGINT NOT NULL, released BIGINT NOT NULL DEFAULT 0)",
    // delivery
    "CREATE TABLE IF NOT EXISTS shop_delivery_slots (order_id TEXT PRIMARY KEY, subscription BIGINT NOT NULL, status TEXT NOT NULL)",
    // notifications
    "CREATE TABLE IF NOT EXISTS shop_notifications (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, message TEXT NOT NULL, date BIGINT NOT NULL)",
    // orders (flow 1)
    "CREATE TABLE IF NOT EXISTS shop_orders (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, subscription BIGINT NOT NULL, created_at BIGINT NOT NULL)",
    // flow 2: inventory, payments, shipping, orders
    "CREATE TABLE IF NOT EXISTS shop_inventory_products (product_id TEXT PRIMARY KEY, quantity BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shop_inventory_reservations (saga_id TEXT NOT NULL, product_id TEXT NOT NULL, quantity BIGINT NOT NULL, released BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (saga_id, product_id))",
    "CREATE TABLE IF NOT EXISTS shop_payments_customers (customer_id TEXT PRIMARY KEY, credit BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shop_payments_charges (saga_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, amount BIGINT NOT NULL, refunded BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS shop_shipping_shipments (saga_id TEXT PRIMARY KEY, status TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shop_purchase_orders (order_id TEXT PRIMARY KEY, saga_id TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL, total BIGINT NOT NULL, status TEXT NOT NULL, created_at BIGINT NOT NULL)",
];

/// Creates the tables and stocks the catalogue (only what is missing). Each table is
/// created in a transaction of its own, tried again on failure: processes starting together
/// race to create them, and PostgreSQL can refuse the loser of a concurrent
/// `CREATE TABLE IF NOT EXISTS`, which finds the table made on its next try.
pub async fn prepare(store: &Arc<dyn Store>) -> Result<(), StoreError> {
    for sql in SCHEMA {
        let mut tries = 0u64;
        loop {
            let mut tx = store.begin().await?;
            let done = match tx.execute(sql, &[]).await {
                Ok(_) => tx.commit().await,
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            match done {
                Ok(()) => break,
                Err(e) if tries >= 10 => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
                }
            }
        }
    }
    let mut tx = store.begin().await?;
    for (subscription, quantity) in crate::catalogue::INITIAL_STOCK {
        tx.execute(
            "INSERT INTO shop_stock_items (subscription, quantity) VALUES ($1, $2) ON CONFLICT (subscription) DO NOTHING",
            &[(*subscription).into(), (*quantity).into()],
        )
        .await?;
    }
    for product in crate::catalogue::STOCKED_PRODUCTS {
        tx.execute(
            "INSERT INTO shop_inventory_products (product_id, quantity) VALUES ($1, $2) ON CONFLICT (product_id) DO NOTHING",
            &[(*product).into(), crate::catalogue::PRODUCT_STOCK.into()],
        )
        .await?;
    }
    tx.commit().await
}

/// The first column of the first row as an integer.
pub async fn scalar_i64(
    tx: &mut dyn ParticipantTx,
    sql: &str,
    params: &[SqlValue],
) -> Result<Option<i64>, StoreError> {
    let rows = tx.query(sql, params).await?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .and_then(SqlValue::as_i64))
}

/// Text at column `i` of a row.
pub fn text(row: &[SqlValue], i: usize) -> String {
    row.get(i)
        .and_then(SqlValue::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Integer at column `i` of a row.
pub fn int(row: &[SqlValue], i: usize) -> i64 {
    row.get(i).and_then(SqlValue::as_i64).unwrap_or_default()
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs `f` in a transaction of its own and commits it.
pub async fn in_tx<T>(
    store: &Arc<dyn Store>,
    f: impl for<'a> FnOnce(
        &'a mut dyn ParticipantTx,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>,
    >,
) -> Result<T, StoreError> {
    let mut tx = store.begin().await?;
    match f(tx.as_mut()).await {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}
