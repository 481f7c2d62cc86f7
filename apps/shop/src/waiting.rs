//! Flow 1 — the order waits. An order goes ValidatingBilling → ValidatingStock →
//! ValidatingDelivery → Delivered; a step that cannot proceed parks until a signal instead
//! of failing: billing while the balance is short (`money_added`), stock while the product
//! is out (`stock_added`), delivery until a courier accepts (`accepted`). Cancel while it
//! waits compensates: the money is refunded and the stock released.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use sagaflow_api::Problem;
use sagaflow_core::{
    Definition, Outcome, ParticipantTx, Phase, SagaId, SagaState, Status, Step, StoreError,
};
use sagaflow_engine::{
    async_trait, CommandCall, EngineError, Participant, SignalTarget, StartSaga, TxHandler,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::db::{in_tx, int, scalar_i64, text};
use crate::http::{
    bad_request, engine_problem, store_problem, AuthUser, Page, Params, DEFAULT_LIMIT, MAX_LIMIT,
};
use crate::notifications::{self as note, notify};
use crate::ShopState;

/// The order saga's name.
pub const DEFINITION: &str = "shop-order";
/// Signal: the user added money.
pub const MONEY_ADDED: &str = "money_added";
/// Signal: units of the product arrived.
pub const STOCK_ADDED: &str = "stock_added";
/// Signal: a courier accepted the order.
pub const ACCEPTED: &str = "accepted";

const BILLING: usize = 0;
const STOCK: usize = 1;
const DELIVERY: usize = 2;

/// The order saga: pay (refund), reserve stock (release), hand to delivery (the pivot).
/// Signals find a user's orders by `user_id`.
pub fn definition() -> Definition {
    Definition::builder(DEFINITION, 1)
        .step(Step::compensatable(
            "billing",
            "shop-billing.pay",
            "shop-billing.refund",
        ))
        .step(Step::compensatable(
            "stock",
            "shop-stock.reserve",
            "shop-stock.release",
        ))
        .step(Step::pivot("delivery", "shop-delivery.deliver"))
        .correlation_key("user_id")
        .build()
        .expect("the shop order definition is valid")
}

/// The order's status, read from its saga.
pub fn order_status(saga: &SagaState) -> &'static str {
    match saga.status {
        Status::Completed => "Delivered",
        Status::Compensating | Status::Compensated => "Cancelled",
        Status::Failed => "Failed",
        Status::Running | Status::Waiting => match saga.current_step() {
            Some(BILLING) | None => "ValidatingBilling",
            Some(STOCK) => "ValidatingStock",
            _ => "ValidatingDelivery",
        },
    }
}

fn parked_at(saga: &SagaState, step: usize) -> bool {
    saga.status == Status::Waiting && saga.parked.as_ref().is_some_and(|p| p.step == step)
}

/// Parked at `step`, or still attempting it — an attempt that finds nothing may be about
/// to park, and the engine holds a signal for it so the wake-up is not lost.
fn waiting_or_trying(saga: &SagaState, step: usize) -> bool {
    parked_at(saga, step) || (saga.status == Status::Running && saga.current_step() == Some(step))
}

/// Signals one saga; `false` when it was no longer there to take it.
async fn wake(state: &ShopState, id: &str, signal: &str, payload: Value) -> Result<bool, Problem> {
    match state
        .engine
        .signal(SignalTarget::Saga(SagaId(id.to_string())), signal, payload)
        .await
    {
        Ok(_) => Ok(true),
        Err(EngineError::Refused(_)) => Ok(false),
        Err(e) => Err(engine_problem(e)),
    }
}

struct Call<'a> {
    order_id: &'a str,
    user_id: String,
    subscription: i64,
    cost: i64,
}

fn read(call: &CommandCall) -> Call<'_> {
    Call {
        order_id: &call.saga_id,
        user_id: call.context["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        subscription: call.context["subscription"].as_i64().unwrap_or_default(),
        cost: call.context["cost"].as_i64().unwrap_or_default(),
    }
}

/// Billing: pay for an order from the user's balance, or park until money is added; refund.
struct Billing;

#[async_trait]
impl TxHandler for Billing {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let c = read(call);
        match call.phase {
            Phase::Action => {
                let paid = scalar_i64(
                    tx,
                    "SELECT amount FROM shop_billing_payments WHERE order_id = $1",
                    &[c.order_id.into()],
                )
                .await?;
                if paid.is_some() {
                    return Ok(Outcome::ok(json!({ "paid": c.cost })));
                }
                let charged = tx
                    .execute(
                        "UPDATE shop_billing_accounts SET balance = balance - $1 WHERE user_id = $2 AND balance >= $1",
                        &[c.cost.into(), c.user_id.clone().into()],
                    )
                    .await?;
                let balance = balance_of(tx, &c.user_id).await?;
                if charged == 0 {
                    // Tell the user once per order; waiting again after a signal is silent.
                    let first = tx
                        .execute(
                            "INSERT INTO shop_billing_refusals (order_id) VALUES ($1) ON CONFLICT (order_id) DO NOTHING",
                            &[c.order_id.into()],
                        )
                        .await?;
                    if first == 1 {
                        notify(tx, &c.user_id, &note::cannot_pay(c.cost, balance)).await?;
                    }
                    return Ok(Outcome::park(MONEY_ADDED));
                }
                tx.execute(
                    "INSERT INTO shop_billing_payments (order_id, user_id, amount) VALUES ($1, $2, $3)",
                    &[c.order_id.into(), c.user_id.clone().into(), c.cost.into()],
                )
                .await?;
                notify(tx, &c.user_id, &note::paid(c.cost, balance)).await?;
                Ok(Outcome::ok(json!({ "paid": c.cost })))
            }
            Phase::Compensation => {
                let refunded = tx
                    .execute(
                        "UPDATE shop_billing_payments SET refunded = 1 WHERE order_id = $1 AND refunded = 0",
                        &[c.order_id.into()],
                    )
                    .await?;
                // A mark even when nothing was paid: a payment arriving late finds it.
                tx.execute(
                    "INSERT INTO shop_billing_payments (order_id, user_id, amount, refunded) VALUES ($1, $2, 0, 1) ON CONFLICT (order_id) DO NOTHING",
                    &[c.order_id.into(), c.user_id.clone().into()],
                )
                .await?;
                if refunded == 1 {
                    let amount = scalar_i64(
                        tx,
                        "SELECT amount FROM shop_billing_payments WHERE order_id = $1",
                        &[c.order_id.into()],
                    )
                    .await?
                    .unwrap_or_default();
                    tx.execute(
                        "UPDATE shop_billing_accounts SET balance = balance + $1 WHERE user_id = $2",
                        &[amount.into(), c.user_id.into()],
                    )
                    .await?;
                }
                Ok(Outcome::ok(Value::Null))
            }
        }
    }
}

async fn balance_of(tx: &mut dyn ParticipantTx, user_id: &str) -> Result<i64, StoreError> {
    Ok(scalar_i64(
        tx,
        "SELECT balance FROM shop_billing_accounts WHERE user_id = $1",
        &[user_id.into()],
    )
    .await?
    .unwrap_or_default())
}

/// Stock: reserve a unit, or park until stock is added; release.
struct Stock;

#[async_trait]
impl TxHandler for Stock {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let c = read(call);
        match call.phase {
            Phase::Action => {
                let held = scalar_i64(
                    tx,
                    "SELECT subscription FROM shop_stock_reservations WHERE order_id = $1",
                    &[c.order_id.into()],
                )
                .await?;
                if held.is_some() {
                    return Ok(Outcome::ok(Value::Null));
                }
                let taken = tx
                    .execute(
                        "UPDATE shop_stock_items SET quantity = quantity - 1 WHERE subscription = $1 AND quantity >= 1",
                        &[c.subscription.into()],
                    )
                    .await?;
                if taken == 0 {
                    return Ok(Outcome::park(STOCK_ADDED));
                }
                tx.execute(
                    "INSERT INTO shop_stock_reservations (order_id, subscription) VALUES ($1, $2)",
                    &[c.order_id.into(), c.subscription.into()],
                )
                .await?;
                notify(tx, &c.user_id, &note::reserved(c.order_id)).await?;
                Ok(Outcome::ok(Value::Null))
            }
            Phase::Compensation => {
                let released = tx
                    .execute(
                        "UPDATE shop_stock_reservations SET released = 1 WHERE order_id = $1 AND released = 0",
                        &[c.order_id.into()],
                    )
                    .await?;
                // A mark even when nothing was reserved: a reserve arriving late finds it.
                tx.execute(
                    "INSERT INTO shop_stock_reservations (order_id, subscription, released) VALUES ($1, $2, 1) ON CONFLICT (order_id) DO NOTHING",
                    &[c.order_id.into(), c.subscription.into()],
                )
                .await?;
                if released == 1 {
                    tx.execute(
                        "UPDATE shop_stock_items SET quantity = quantity + 1 WHERE subscription = $1",
                        &[c.subscription.into()],
                    )
                    .await?;
                }
                Ok(Outcome::ok(Value::Null))
            }
        }
    }
}

/// Delivery: a courier takes the order at once (subscriptions 1 and 2) or after
/// `PUT /delivery/accept`; the order waits for that.
struct Delivery;

#[async_trait]
impl TxHandler for Delivery {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let c = read(call);
        let rows = tx
            .query(
                "SELECT status FROM shop_delivery_slots WHERE order_id = $1",
                &[c.order_id.into()],
            )
            .await?;
        let status = rows.first().map(|r| text(r, 0));
        let auto = crate::catalogue::AUTO_ACCEPTED.contains(&c.subscription);
        match status.as_deref() {
            Some("delivered") => Ok(Outcome::ok(Value::Null)),
            Some("accepted") => {
                deliver(tx, &c).await?;
                Ok(Outcome::ok(Value::Null))
            }
            None if auto => {
                tx.execute(
                    "INSERT INTO shop_delivery_slots (order_id, subscription, status) VALUES ($1, $2, 'accepted')",
                    &[c.order_id.into(), c.subscription.into()],
                )
                .await?;
                deliver(tx, &c).await?;
                Ok(Outcome::ok(Value::Null))
            }
            None => {
                tx.execute(
                    "INSERT INTO shop_delivery_slots (order_id, subscription, status) VALUES ($1, $2, 'waiting')",
                    &[c.order_id.into(), c.subscription.into()],
                )
                .await?;
                Ok(Outcome::park(ACCEPTED))
            }
            Some(_) => Ok(Outcome::park(ACCEPTED)),
        }
    }
}

async fn deliver(tx: &mut dyn ParticipantTx, c: &Call<'_>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE shop_delivery_slots SET status = 'delivered' WHERE order_id = $1",
        &[c.order_id.into()],
    )
    .await?;
    notify(tx, &c.user_id, &note::sent_to_delivery(c.order_id)).await
}

/// The flow's participant services.
pub fn participants() -> Vec<Participant> {
    vec![
        Participant::new("shop-billing")
            .on_tx("pay", Billing)
            .on_tx("refund", Billing),
        Participant::new("shop-stock")
            .on_tx("reserve", Stock)
            .on_tx("release", Stock),
        Participant::new("shop-delivery").on_tx("deliver", Delivery),
    ]
}

// ---- HTTP ---------------------------------------------------------------------------------

/// The largest amount of money or stock one request adds.
const MAX_AMOUNT: i64 = 1_000_000_000;

/// `?money=N`
#[derive(Debug, Deserialize)]
pub struct Money {
    money: i64,
}

/// `POST /billing/add-money?money=N`: adds N, notifies, then wakes the user's orders parked
/// at billing. Answers the new balance.
pub async fn add_money(
    State(state): State<ShopState>,
    user: AuthUser,
    Params(Money { money }): Params<Money>,
) -> Result<Json<i64>, Problem> {
    if !(1..=MAX_AMOUNT).contains(&money) {
        return Err(bad_request(
            "bad_parameter",
            format!("money must be from 1 to {MAX_AMOUNT}, got {money}"),
        ));
    }
    let id = user.id.clone();
    let balance = in_tx(&state.store, move |tx| {
        Box::pin(async move {
            tx.execute(
                "UPDATE shop_billing_accounts SET balance = balance + $1 WHERE user_id = $2",
                &[money.into(), id.clone().into()],
            )
            .await?;
            let balance = scalar_i64(
                tx,
                "SELECT balance FROM shop_billing_accounts WHERE user_id = $1",
                &[id.clone().into()],
            )
            .await?
            .unwrap_or_default();
            notify(tx, &id, &note::money_added(money, balance)).await?;
            Ok(balance)
        })
    })
    .await
    .map_err(store_problem)?;
    // Every order of this user that waits for money, or is trying to pay right now.
    for (id, _, _) in user_orders(&state, &user.id, None).await? {
        if saga(&state, &id)
            .await?
            .is_some_and(|s| waiting_or_trying(&s, BILLING))
        {
            wake(&state, &id, MONEY_ADDED, json!({ "money": money })).await?;
        }
    }
    Ok(Json(balance))
}

/// `GET /billing/balance`: the balance, a JSON number.
pub async fn balance(State(state): State<ShopState>, user: AuthUser) -> Result<Json<i64>, Problem> {
    let mut tx = state.store.begin().await.map_err(store_problem)?;
    let balance = scalar_i64(
        tx.as_mut(),
        "SELECT balance FROM shop_billing_accounts WHERE user_id = $1",
        &[user.id.into()],
    )
    .await
    .map_err(store_problem)?;
    let _ = tx.rollback().await;
    Ok(Json(balance.unwrap_or_default()))
}

/// `?idSubscription=K`
#[derive(Debug, Deserialize)]
pub struct Place {
    #[serde(rename = "idSubscription")]
    id_subscription: i64,
}

/// An order as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    id: String,
    saga_id: String,
    subscription: i64,
    cost: i64,
    status: &'static str,
    /// When it was placed (RFC 3339, UTC).
    created_at: String,
}

async fn user_orders(
    state: &ShopState,
    user_id: &str,
    only: Option<&str>,
) -> Result<Vec<(String, i64, i64)>, Problem> {
    let mut tx = state.store.begin().await.map_err(store_problem)?;
    let (sql, params): (&str, Vec<sagaflow_core::SqlValue>) = match only {
        Some(id) => (
            "SELECT id, subscription, created_at FROM shop_orders WHERE user_id = $1 AND id = $2",
            vec![user_id.into(), id.into()],
        ),
        None => (
            "SELECT id, subscription, created_at FROM shop_orders WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
            vec![user_id.into()],
        ),
    };
    let rows = tx.query(sql, &params).await.map_err(store_problem)?;
    let _ = tx.rollback().await;
    Ok(rows
        .iter()
        .map(|r| (text(r, 0), int(r, 1), int(r, 2)))
        .collect())
}

async fn saga(state: &ShopState, id: &str) -> Result<Option<SagaState>, Problem> {
    state
        .engine
        .saga(&SagaId(id.to_string()))
        .await
        .map_err(engine_problem)
}

async fn view(
    state: &ShopState,
    (id, subscription, created_at): (String, i64, i64),
) -> Result<Order, Problem> {
    let status = saga(state, &id)
        .await?
        .map(|s| order_status(&s))
        .unwrap_or("ValidatingBilling");
    Ok(Order {
        saga_id: id.clone(),
        id,
        subscription,
        cost: crate::catalogue::price(subscription).unwrap_or_default(),
        status,
        created_at: sagaflow_api::rfc3339(created_at),
    })
}

/// `POST /order/place?idSubscription=K`: starts the order saga; placing the same
/// subscription again while that order is unfinished answers the same id.
pub async fn place(
    State(state): State<ShopState>,
    user: AuthUser,
    Params(Place { id_subscription }): Params<Place>,
) -> Result<(StatusCode, Json<String>), Problem> {
    let Some(cost) = crate::catalogue::price(id_subscription) else {
        return Err(bad_request(
            "unknown_subscription",
            format!("there is no subscription {id_subscription}; the shop sells 1, 2 and 3"),
        ));
    };
    let mine: Vec<_> = user_orders(&state, &user.id, None)
        .await?
        .into_iter()
        .filter(|(_, s, _)| *s == id_subscription)
        .collect();
    for (id, _, _) in &mine {
        if saga(&state, id).await?.is_some_and(|s| !s.status.is_end()) {
            return Ok((StatusCode::ACCEPTED, Json(id.clone())));
        }
    }
    // Two requests racing here compute the same key: the engine starts one saga.
    let key = format!("shop-order:{}:{id_subscription}:{}", user.id, mine.len());
    let started = state
        .engine
        .start_saga(
            StartSaga::new(
                DEFINITION,
                json!({ "user_id": user.id, "subscription": id_subscription, "cost": cost }),
            )
            .idempotency_key(key),
        )
        .await
        .map_err(engine_problem)?;
    let order_id = started.saga_id.0;
    let (id, uid) = (order_id.clone(), user.id.clone());
    in_tx(&state.store, move |tx| {
        Box::pin(async move {
            tx.execute(
                "INSERT INTO shop_orders (id, user_id, subscription, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                &[id.into(), uid.into(), id_subscription.into(), crate::db::now_ms().into()],
            )
            .await
            .map(|_| ())
        })
    })
    .await
    .map_err(store_problem)?;
    Ok((StatusCode::ACCEPTED, Json(order_id)))
}

/// `GET /order?limit&offset`: the user's orders, newest first, a page at a time (`limit` 1
/// to 500, default 100; `offset` default 0). The order rows are paged first, so a request
/// loads at most `limit` sagas.
pub async fn list(
    State(state): State<ShopState>,
    user: AuthUser,
    Params(page): Params<Page>,
) -> Result<Json<Vec<Order>>, Problem> {
    let (limit, offset) = page.bounds(DEFAULT_LIMIT, MAX_LIMIT)?;
    let mut tx = state.store.begin().await.map_err(store_problem)?;
    let rows = tx
        .query(
            "SELECT id, subscription, created_at FROM shop_orders WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
            &[user.id.as_str().into(), limit.into(), offset.into()],
        )
        .await
        .map_err(store_problem)?;
    let _ = tx.rollback().await;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(view(&state, (text(r, 0), int(r, 1), int(r, 2))).await?);
    }
    Ok(Json(out))
}

fn no_order(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "order_not_found",
        format!("you have no order {id}"),
    )
}

/// `GET /order/{id}`.
pub async fn show(
    State(state): State<ShopState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Order>, Problem> {
    let row = user_orders(&state, &user.id, Some(&id))
        .await?
        .pop()
        .ok_or_else(|| no_order(&id))?;
    Ok(Json(view(&state, row).await?))
}

/// `POST /order/{id}/cancel`: 202 while the order waits (money refunded, stock released);
/// 409 once it was delivered or ended.
pub async fn cancel(
    State(state): State<ShopState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    user_orders(&state, &user.id, Some(&id))
        .await?
        .pop()
        .ok_or_else(|| no_order(&id))?;
    match state
        .engine
        .cancel(&SagaId(id.clone()), "cancelled by the customer")
        .await
    {
        Ok(_) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "status": "Cancelled" })),
        )),
        Err(EngineError::Refused(r)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "cannot_cancel",
            format!("order {id} cannot be cancelled: {r}"),
        )),
        Err(e) => Err(engine_problem(e)),
    }
}

/// `?idSubscription=K&count=C`
#[derive(Debug, Deserialize)]
pub struct AddStock {
    #[serde(rename = "idSubscription")]
    id_subscription: i64,
    count: i64,
}

/// `PUT /stock/add?idSubscription=K&count=C`: adds C units, then wakes the orders parked
/// for that subscription, oldest first, as many as there are units.
pub async fn add_stock(
    State(state): State<ShopState>,
    Params(AddStock {
        id_subscription,
        count,
    }): Params<AddStock>,
) -> Result<Json<Value>, Problem> {
    if crate::catalogue::price(id_subscription).is_none() {
        return Err(bad_request(
            "unknown_subscription",
            format!("there is no subscription {id_subscription}"),
        ));
    }
    if !(1..=MAX_AMOUNT).contains(&count) {
        return Err(bad_request(
            "bad_parameter",
            format!("count must be from 1 to {MAX_AMOUNT}, got {count}"),
        ));
    }
    let units = in_tx(&state.store, move |tx| {
        Box::pin(async move {
            tx.execute(
                "UPDATE shop_stock_items SET quantity = quantity + $1 WHERE subscription = $2",
                &[count.into(), id_subscription.into()],
            )
            .await?;
            Ok(scalar_i64(
                tx,
                "SELECT quantity FROM shop_stock_items WHERE subscription = $1",
                &[id_subscription.into()],
            )
            .await?
            .unwrap_or_default())
        })
    })
    .await
    .map_err(store_problem)?;
    let mut tx = state.store.begin().await.map_err(store_problem)?;
    let rows = tx
        .query(
            "SELECT id FROM shop_orders WHERE subscription = $1 ORDER BY created_at, id",
            &[id_subscription.into()],
        )
        .await
        .map_err(store_problem)?;
    let _ = tx.rollback().await;
    let mut resumed = Vec::new();
    for row in rows {
        if resumed.len() as i64 >= units {
            break;
        }
        let id = text(&row, 0);
        if saga(&state, &id)
            .await?
            .is_some_and(|s| waiting_or_trying(&s, STOCK))
            && wake(&state, &id, STOCK_ADDED, json!({})).await?
        {
            resumed.push(id);
        }
    }
    Ok(Json(
        json!({ "subscription": id_subscription, "quantity": units, "resumed": resumed }),
    ))
}

/// `GET /stock?limit&offset`: units in stock per subscription, a page at a time (`limit` 1
/// to 500, default 100; `offset` default 0).
pub async fn stock(
    State(state): State<ShopState>,
    Params(page): Params<Page>,
) -> Result<Json<Value>, Problem> {
    let (limit, offset) = page.bounds(DEFAULT_LIMIT, MAX_LIMIT)?;
    let mut tx = state.store.begin().await.map_err(store_problem)?;
    let rows = tx
        .query(
            "SELECT subscription, quantity FROM shop_stock_items ORDER BY subscription LIMIT $1 OFFSET $2",
            &[limit.into(), offset.into()],
        )
        .await
        .map_err(store_problem)?;
    let _ = tx.rollback().await;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|r| json!({ "subscription": int(r, 0), "quantity": int(r, 1) }))
            .collect(),
    )))
}

/// `?idOrder=ID`
#[derive(Debug, Deserialize)]
pub struct Accept {
    #[serde(rename = "idOrder")]
    id_order: String,
}

/// `PUT /delivery/accept?idOrder=ID`: a courier takes an order that waits for one; 400 for
/// any other order.
pub async fn accept(
    State(state): State<ShopState>,
    Params(Accept { id_order }): Params<Accept>,
) -> Result<Json<Value>, Problem> {
    // Only the shop's own order saga, parked for a courier: never any saga that happens to
    // wait at the same step.
    let waiting = saga(&state, &id_order)
        .await?
        .is_some_and(|s| s.definition == DEFINITION && parked_at(&s, DELIVERY));
    if !waiting {
        return Err(bad_request(
            "not_waiting_for_courier",
            format!("order {id_order} is not waiting for a courier"),
        ));
    }
    let id = id_order.clone();
    in_tx(&state.store, move |tx| {
        Box::pin(async move {
            tx.execute(
                "UPDATE shop_delivery_slots SET status = 'accepted' WHERE order_id = $1 AND status = 'waiting'",
                &[id.into()],
            )
            .await
            .map(|_| ())
        })
    })
    .await
    .map_err(store_problem)?;
    match state
        .engine
        .signal(
            SignalTarget::Saga(SagaId(id_order.clone())),
            ACCEPTED,
            json!({}),
        )
        .await
    {
        Ok(_) => Ok(Json(json!({ "id": id_order, "status": "accepted" }))),
        Err(EngineError::Refused(r)) => Err(bad_request("not_waiting_for_courier", r.to_string())),
        Err(e) => Err(engine_problem(e)),
    }
}
