//! The shop's tables and small helpers over the participant transaction (plain SQL that
//! SQLite and PostgreSQL both accept; `$1…` placeholders).

use std::sync::Arc;

use sagaflow_core::{Store, StoreError};

pub use sagaflow_app_kit::sql::{in_tx, int, now_ms, scalar_i64, text};

/// Every shop table, created if missing. Each service owns the tables named after it.
const SCHEMA: &[&str] = &[
    // identity
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

/// Creates the tables and stocks the catalogue (only what is missing).
pub async fn prepare(store: &Arc<dyn Store>) -> Result<(), StoreError> {
    sagaflow_app_kit::sql::create_tables(store, SCHEMA).await?;
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
