//! The notifications service: messages to a user, newest first. Other services write one
//! inside their own transaction, so a notification exists exactly when its effect does.

use axum::extract::State;
use axum::Json;
use sagaflow_core::{ParticipantTx, StoreError};
use serde::Serialize;

use crate::db::{int, text};
use crate::http::{store_problem, AuthUser, Page, Params, DEFAULT_LIMIT, MAX_LIMIT};
use crate::ShopState;

/// `Hello, You successfully registered`
pub fn registered() -> String {
    "Hello, You successfully registered".to_string()
}

/// After money was added.
pub fn money_added(money: i64, balance: i64) -> String {
    format!("Hello! You successfully added money amount {money}. You balance {balance}")
}

/// After an order was paid.
pub fn paid(cost: i64, balance: i64) -> String {
    format!("Hello! You pay for order. Order cost amount {cost}. You balance after {balance}")
}

/// When the balance is short.
pub fn cannot_pay(cost: i64, balance: i64) -> String {
    format!("Hello! You cannot pay for order. Order cost amount {cost}. You balance {balance}")
}

/// After stock was reserved.
pub fn reserved(order_id: &str) -> String {
    format!("Hello! Your order {order_id} successfully reserved")
}

/// After a courier took the order.
pub fn sent_to_delivery(order_id: &str) -> String {
    format!("Hello! Your order {order_id} successfully sent to delivery")
}

/// Writes a notification in the caller's transaction.
pub async fn notify(
    tx: &mut dyn ParticipantTx,
    user_id: &str,
    message: &str,
) -> Result<(), StoreError> {
    // A v7 uuid sorts by time: newest first is descending id.
    let id = uuid::Uuid::now_v7().to_string();
    tx.execute(
        "INSERT INTO shop_notifications (id, user_id, message, date) VALUES ($1, $2, $3, $4)",
        &[
            id.into(),
            user_id.into(),
            message.into(),
            crate::db::now_ms().into(),
        ],
    )
    .await?;
    Ok(())
}

/// One notification as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    id: String,
    user_id: String,
    message: String,
    /// When (RFC 3339, UTC).
    date: String,
}

/// `GET /notification?limit&offset`: the caller's notifications, newest first, a page at a
/// time (`limit` 1 to 500, default 100; `offset` default 0).
pub async fn list(
    State(state): State<ShopState>,
    user: AuthUser,
    Params(page): Params<Page>,
) -> Result<Json<Vec<Notification>>, sagaflow_api::Problem> {
    let (limit, offset) = page.bounds(DEFAULT_LIMIT, MAX_LIMIT)?;
    let mut tx = state.store.begin().await.map_err(store_problem)?;
    // `id` is the key (and a v7 uuid, newest last): pages never overlap.
    let rows = tx
        .query(
            "SELECT id, user_id, message, date FROM shop_notifications WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
            &[user.id.as_str().into(), limit.into(), offset.into()],
        )
        .await
        .map_err(store_problem)?;
    let _ = tx.rollback().await;
    Ok(Json(
        rows.iter()
            .map(|r| Notification {
                id: text(r, 0),
                user_id: text(r, 1),
                message: text(r, 2),
                date: sagaflow_api::rfc3339(int(r, 3)),
            })
            .collect(),
    ))
}
