//! Flow 2 — the order compensates. `POST /api/v1/orders` starts an orchestrated saga:
//! `reserve_inventory` (30 s timeout; 3 attempts, 1 s doubling), `process_payment` (30 s; 2
//! attempts), `create_shipment` (30 s; no retry), `complete_order` (the pivot); a 5 minute
//! deadline. A failure compensates in reverse: cancel the shipment, refund the payment,
//! release the inventory. Follow it through the engine's `/api/v1/sagas/{id}`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use sagaflow_api::Problem;
use sagaflow_core::{
    Definition, Outcome, ParticipantTx, Phase, RetryPolicy, SagaId, Status, Step, StoreError,
};
use sagaflow_engine::{async_trait, CommandCall, Participant, StartSaga, TxHandler};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::db::{in_tx, int, scalar_i64, text};
use crate::http::{bad_request, engine_problem, store_problem};
use crate::{ShopConfig, ShopState};

/// The purchase saga's name.
pub const DEFINITION: &str = "shop-purchase";

fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_delay_ms: 1_000,
        multiplier: 2.0,
        max_delay_ms: 8_000,
        jitter: 0.0,
    }
}

/// The purchase saga.
pub fn definition() -> Definition {
    Definition::builder(DEFINITION, 1)
        .step(
            Step::compensatable(
                "reserve_inventory",
                "shop-inventory.reserve",
                "shop-inventory.release",
            )
            .timeout_ms(30_000)
            .retry(retry(3)),
        )
        .step(
            Step::compensatable(
                "process_payment",
                "shop-payments.charge",
                "shop-payments.refund",
            )
            .timeout_ms(30_000)
            .retry(retry(2)),
        )
        .step(
            Step::compensatable(
                "create_shipment",
                "shop-shipping.create",
                "shop-shipping.cancel",
            )
            .timeout_ms(30_000)
            .retry(retry(1)),
        )
        .step(Step::pivot("complete_order", "shop-orders.complete"))
        .deadline_ms(5 * 60 * 1000)
        .build()
        .expect("the purchase definition is valid")
}

/// Money in the API is a decimal amount; inside, whole cents.
fn cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

/// The largest price and the largest order total accepted (in the API's units).
const MAX_AMOUNT: f64 = 1e9;
/// The largest quantity of one item accepted.
const MAX_QUANTITY: i64 = 1_000_000;

/// The order's items, sorted by product so concurrent orders lock products in one order.
fn items(call: &CommandCall) -> Vec<(String, i64)> {
    let mut items: Vec<(String, i64)> = call.context["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    (
                        i["product_id"].as_str().unwrap_or_default().to_string(),
                        i["quantity"].as_i64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    items.sort();
    items
}

/// Inventory: reserve every item or none; release. A release leaves a mark even when nothing
/// was held, so a reserve that arrives after its compensation (it timed out, then ran late)
/// does nothing.
struct Inventory;

#[async_trait]
impl TxHandler for Inventory {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let saga = call.saga_id.as_str();
        match call.phase {
            Phase::Action => {
                let held = scalar_i64(
                    tx,
                    "SELECT COUNT(*) FROM shop_inventory_reservations WHERE saga_id = $1",
                    &[saga.into()],
                )
                .await?
                .unwrap_or_default();
                if held > 0 {
                    return Ok(Outcome::ok(Value::Null));
                }
                let wanted = items(call);
                for (product, quantity) in &wanted {
                    let have = scalar_i64(
                        tx,
                        "SELECT quantity FROM shop_inventory_products WHERE product_id = $1",
                        &[product.as_str().into()],
                    )
                    .await?
                    .unwrap_or_default();
                    if have < *quantity {
                        return Ok(Outcome::rejected(format!(
                            "product {product} is out of stock ({have} left, {quantity} wanted)"
                        )));
                    }
                }
                let mut taken_so_far: Vec<(&String, i64)> = Vec::new();
                for (product, quantity) in &wanted {
                    let taken = tx
                        .execute(
                            "UPDATE shop_inventory_products SET quantity = quantity - $1 WHERE product_id = $2 AND quantity >= $1",
                            &[(*quantity).into(), product.as_str().into()],
                        )
                        .await?;
                    if taken == 0 {
                        // Another order took the units since the check: give back what this
                        // attempt took, and fail it (retryable: the step tries again).
                        for (p, q) in taken_so_far {
                            tx.execute(
                                "UPDATE shop_inventory_products SET quantity = quantity + $1 WHERE product_id = $2",
                                &[q.into(), p.as_str().into()],
                            )
                            .await?;
                        }
                        return Ok(Outcome::failed(format!(
                            "product {product} ran out meanwhile"
                        )));
                    }
                    taken_so_far.push((product, *quantity));
                }
                for (product, quantity) in &wanted {
                    tx.execute(
                        "INSERT INTO shop_inventory_reservations (saga_id, product_id, quantity) VALUES ($1, $2, $3)",
                        &[saga.into(), product.as_str().into(), (*quantity).into()],
                    )
                    .await?;
                }
                Ok(Outcome::ok(json!({ "reserved": wanted.len() })))
            }
            Phase::Compensation => {
                let rows = tx
                    .query(
                        "SELECT product_id, quantity FROM shop_inventory_reservations WHERE saga_id = $1 AND released = 0",
                        &[saga.into()],
                    )
                    .await?;
                for row in rows {
                    tx.execute(
                        "UPDATE shop_inventory_products SET quantity = quantity + $1 WHERE product_id = $2",
                        &[int(&row, 1).into(), text(&row, 0).into()],
                    )
                    .await?;
                }
                tx.execute(
                    "UPDATE shop_inventory_reservations SET released = 1 WHERE saga_id = $1",
                    &[saga.into()],
                )
                .await?;
                tx.execute(
                    "INSERT INTO shop_inventory_reservations (saga_id, product_id, quantity, released) VALUES ($1, '', 0, 1) ON CONFLICT (saga_id, product_id) DO NOTHING",
                    &[saga.into()],
                )
                .await?;
                Ok(Outcome::ok(Value::Null))
            }
        }
    }
}

/// Payments: charge the customer's credit (a first-time customer gets the demo credit);
/// refund. A refund leaves a mark even when nothing was charged, so a charge that arrives
/// after its compensation does nothing.
struct Payments {
    demo_credit_cents: i64,
}

#[async_trait]
impl TxHandler for Payments {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let saga = call.saga_id.as_str();
        let customer = call.context["customer_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let total = call.context["total_cents"].as_i64().unwrap_or_default();
        match call.phase {
            Phase::Action => {
                if scalar_i64(
                    tx,
                    "SELECT amount FROM shop_payments_charges WHERE saga_id = $1",
                    &[saga.into()],
                )
                .await?
                .is_some()
                {
                    return Ok(Outcome::ok(Value::Null));
                }
                tx.execute(
                    "INSERT INTO shop_payments_customers (customer_id, credit) VALUES ($1, $2) ON CONFLICT (customer_id) DO NOTHING",
                    &[customer.clone().into(), self.demo_credit_cents.into()],
                )
                .await?;
                let charged = tx
                    .execute(
                        "UPDATE shop_payments_customers SET credit = credit - $1 WHERE customer_id = $2 AND credit >= $1",
                        &[total.into(), customer.clone().into()],
                    )
                    .await?;
                if charged == 0 {
                    let credit = scalar_i64(
                        tx,
                        "SELECT credit FROM shop_payments_customers WHERE customer_id = $1",
                        &[customer.into()],
                    )
                    .await?
                    .unwrap_or_default();
                    return Ok(Outcome::rejected(format!(
                        "the order total {:.2} exceeds the customer's credit {:.2}",
                        total as f64 / 100.0,
                        credit as f64 / 100.0
                    )));
                }
                tx.execute(
                    "INSERT INTO shop_payments_charges (saga_id, customer_id, amount) VALUES ($1, $2, $3)",
                    &[saga.into(), customer.into(), total.into()],
                )
                .await?;
                Ok(Outcome::ok(json!({ "charged_cents": total })))
            }
            Phase::Compensation => {
                let refunded = tx
                    .execute(
                        "UPDATE shop_payments_charges SET refunded = 1 WHERE saga_id = $1 AND refunded = 0",
                        &[saga.into()],
                    )
                    .await?;
                tx.execute(
                    "INSERT INTO shop_payments_charges (saga_id, customer_id, amount, refunded) VALUES ($1, $2, 0, 1) ON CONFLICT (saga_id) DO NOTHING",
                    &[saga.into(), customer.clone().into()],
                )
                .await?;
                if refunded == 1 {
                    let amount = scalar_i64(
                        tx,
                        "SELECT amount FROM shop_payments_charges WHERE saga_id = $1",
                        &[saga.into()],
                    )
                    .await?
                    .unwrap_or_default();
                    tx.execute(
                        "UPDATE shop_payments_customers SET credit = credit + $1 WHERE customer_id = $2",
                        &[amount.into(), customer.into()],
                    )
                    .await?;
                }
                Ok(Outcome::ok(Value::Null))
            }
        }
    }
}

/// Shipping: create a shipment (failing at the configured flaky rate); cancel it.
struct Shipping {
    flaky_rate: f64,
}

#[async_trait]
impl TxHandler for Shipping {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let saga = call.saga_id.as_str();
        match call.phase {
            Phase::Action => {
                if self.flaky_rate > 0.0 && fastrand::f64() < self.flaky_rate {
                    return Ok(Outcome::failed(
                        "the courier service did not answer (flaky rate)",
                    ));
                }
                tx.execute(
                    "INSERT INTO shop_shipping_shipments (saga_id, status) VALUES ($1, 'created') ON CONFLICT (saga_id) DO NOTHING",
                    &[saga.into()],
                )
                .await?;
                Ok(Outcome::ok(json!({ "shipment": saga })))
            }
            Phase::Compensation => {
                // Cancelled even if never created: a late create then finds it cancelled.
                tx.execute(
                    "INSERT INTO shop_shipping_shipments (saga_id, status) VALUES ($1, 'cancelled') ON CONFLICT (saga_id) DO UPDATE SET status = 'cancelled'",
                    &[saga.into()],
                )
                .await?;
                Ok(Outcome::ok(Value::Null))
            }
        }
    }
}

/// Orders: mark the order completed (the pivot).
struct Orders;

#[async_trait]
impl TxHandler for Orders {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        tx.execute(
            "UPDATE shop_purchase_orders SET status = 'completed' WHERE saga_id = $1",
            &[call.saga_id.as_str().into()],
        )
        .await?;
        Ok(Outcome::ok(Value::Null))
    }
}

/// The flow's participant services.
pub fn participants(config: &ShopConfig) -> Vec<Participant> {
    vec![
        Participant::new("shop-inventory")
            .on_tx("reserve", Inventory)
            .on_tx("release", Inventory),
        Participant::new("shop-payments")
            .on_tx(
                "charge",
                Payments {
                    demo_credit_cents: cents(config.demo_credit),
                },
            )
            .on_tx(
                "refund",
                Payments {
                    demo_credit_cents: cents(config.demo_credit),
                },
            ),
        Participant::new("shop-shipping")
            .on_tx(
                "create",
                Shipping {
                    flaky_rate: config.flaky_shipping_rate,
                },
            )
            .on_tx("cancel", Shipping { flaky_rate: 0.0 }),
        Participant::new("shop-orders").on_tx("complete", Orders),
    ]
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    customer_id: Option<String>,
    items: Option<Vec<Item>>,
}

#[derive(Debug, Deserialize)]
struct Item {
    product_id: Option<String>,
    quantity: Option<i64>,
    price: Option<f64>,
}

/// `POST /api/v1/orders`: validates and starts the purchase saga.
pub async fn create(
    State(state): State<ShopState>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let order: NewOrder =
        sagaflow_api::parse_json(&bytes).map_err(|p| bad_request(&p.code, p.detail))?;
    let customer = match order.customer_id.map(|c| c.trim().to_string()) {
        Some(c) if !c.is_empty() => c,
        _ => return Err(bad_request("missing_field", "customer_id is required")),
    };
    let items = order.items.unwrap_or_default();
    if items.is_empty() {
        return Err(bad_request(
            "empty_order",
            "items must hold at least one item",
        ));
    }
    let mut lines = Vec::new();
    // Products seen so far: one look-up per line, however long the list.
    let mut seen = std::collections::HashSet::new();
    let mut total = 0i64;
    for (i, item) in items.iter().enumerate() {
        let product = match item.product_id.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => p.to_string(),
            _ => {
                return Err(bad_request(
                    "missing_field",
                    format!("items[{i}].product_id is required"),
                ))
            }
        };
        let quantity = item.quantity.ok_or_else(|| {
            bad_request("missing_field", format!("items[{i}].quantity is required"))
        })?;
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(bad_request(
                "bad_quantity",
                format!("items[{i}].quantity must be from 1 to {MAX_QUANTITY}, got {quantity}"),
            ));
        }
        let price = item
            .price
            .ok_or_else(|| bad_request("missing_field", format!("items[{i}].price is required")))?;
        if !price.is_finite() || !(0.0..=MAX_AMOUNT).contains(&price) {
            return Err(bad_request(
                "bad_price",
                format!("items[{i}].price must be from 0 to {MAX_AMOUNT}, got {price}"),
            ));
        }
        if !seen.insert(product.clone()) {
            return Err(bad_request(
                "duplicate_product",
                format!("items[{i}]: product {product} is listed twice; give one line per product"),
            ));
        }
        total = match cents(price)
            .checked_mul(quantity)
            .and_then(|line| total.checked_add(line))
        {
            Some(t) if t as f64 <= MAX_AMOUNT * 100.0 => t,
            _ => {
                return Err(bad_request(
                    "bad_total",
                    format!("the order total is above {MAX_AMOUNT}"),
                ))
            }
        };
        lines.push(
            json!({ "product_id": product, "quantity": quantity, "price_cents": cents(price) }),
        );
    }
    let order_id = uuid::Uuid::now_v7().to_string();
    let started = state
        .engine
        .start_saga(StartSaga::new(
            DEFINITION,
            json!({ "order_id": order_id, "customer_id": customer, "items": lines, "total_cents": total }),
        ))
        .await
        .map_err(engine_problem)?;
    let saga_id = started.saga_id.0.clone();
    let (o, s, c) = (order_id.clone(), saga_id.clone(), customer.clone());
    in_tx(&state.store, move |tx| {
        Box::pin(async move {
            tx.execute(
                "INSERT INTO shop_purchase_orders (order_id, saga_id, customer_id, total, status, created_at) VALUES ($1, $2, $3, $4, 'pending', $5)",
                &[o.into(), s.into(), c.into(), total.into(), crate::db::now_ms().into()],
            )
            .await
            .map(|_| ())
        })
    })
    .await
    .map_err(store_problem)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({ "saga_id": saga_id, "order_id": order_id, "status": "pending", "message": "Order creation started" }),
        ),
    ))
}

/// `GET /api/v1/orders/{order_id}`: the order with its saga's status.
pub async fn show(
    State(state): State<ShopState>,
    Path(order_id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let mut tx = state.store.begin().await.map_err(store_problem)?;
    let rows = tx
        .query(
            "SELECT saga_id, customer_id, total FROM shop_purchase_orders WHERE order_id = $1",
            &[order_id.as_str().into()],
        )
        .await
        .map_err(store_problem)?;
    let _ = tx.rollback().await;
    let row = rows.first().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "order_not_found",
            format!("no order {order_id}"),
        )
    })?;
    let saga_id = text(row, 0);
    let saga = state
        .engine
        .saga(&SagaId(saga_id.clone()))
        .await
        .map_err(engine_problem)?;
    let status = match saga.as_ref().map(|s| s.status) {
        Some(Status::Completed) => "completed",
        Some(Status::Compensated) => "cancelled",
        Some(Status::Failed) => "failed",
        Some(Status::Compensating) => "cancelling",
        _ => "pending",
    };
    Ok(Json(json!({
        "order_id": order_id,
        "saga_id": saga_id,
        "customer_id": text(row, 1),
        "total": int(row, 2) as f64 / 100.0,
        "status": status,
        "reason": saga.and_then(|s| s.reason),
    })))
}
