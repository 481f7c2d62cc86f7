//! The reference system "shop": order placement across billing, stock and delivery, built
//! only on sagaflow's public API. It shows both ways a saga can treat a step that cannot
//! proceed, on the same kind of participants:
//!
//! - [`waiting`] (flow 1): the order **waits** — a step parks until a signal (money added,
//!   stock added, a courier accepts), and the customer may cancel meanwhile;
//! - [`compensating`] (flow 2): the order **compensates** — a refused or failed step undoes
//!   the steps before it, newest first.
//!
//! Services — identity, billing, stock, delivery and notifications for flow 1; inventory,
//! payments, shipping and orders for flow 2 — each own their `shop_<service>_*` tables in
//! the sagaflow database, and their saga handlers run in the participant SDK's transaction
//! with inbox de-duplication. [`router`] serves the HTTP endpoints; the `sagaflow` binary
//! mounts it at the root of its server and runs the participants in process (in-memory bus)
//! or as `sagaflow participant --app shop` processes (over a broker).

#![warn(missing_docs)]

use std::sync::Arc;

use sagaflow_api::Access::{ApiKey, OwnCredential, Public};
use sagaflow_api::{AppRoutes, Routes};
use sagaflow_core::{Definition, Store, StoreError};
use sagaflow_engine::{Engine, Participant};

pub mod catalogue;
pub mod compensating;
mod db;
pub mod http;
pub mod identity;
pub mod notifications;
pub mod waiting;

pub use db::prepare as prepare_tables;

/// How the shop behaves.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// The key tokens are signed with (HS256).
    pub jwt_secret: Vec<u8>,
    /// How long a login token is valid.
    pub token_ttl_secs: i64,
    /// The credit a flow 2 customer gets when first seen.
    pub demo_credit: f64,
    /// The share of shipment creations that fail (flow 2), to watch compensation.
    pub flaky_shipping_rate: f64,
}

impl ShopConfig {
    /// Reads `SAGAFLOW_SHOP_JWT_SECRET`, `SAGAFLOW_SHOP_DEMO_CREDIT` (default 1000) and
    /// `SAGAFLOW_SHOP_FLAKY_RATE` (0 to 1, default 0); a bad value names the variable.
    /// Without a secret the shop keeps a random one in its database (shared by every
    /// process on that database).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<ShopConfig, String> {
        let number = |var: &str, default: f64, range: std::ops::RangeInclusive<f64>| match env(var)
        {
            None => Ok(default),
            Some(v) => match v.parse::<f64>() {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => Err(format!(
                    "{var} = {v:?} must be a number from {} to {}",
                    range.start(),
                    range.end()
                )),
            },
        };
        Ok(ShopConfig {
            jwt_secret: env("SAGAFLOW_SHOP_JWT_SECRET")
                .unwrap_or_default()
                .into_bytes(),
            token_ttl_secs: 24 * 3600,
            demo_credit: number("SAGAFLOW_SHOP_DEMO_CREDIT", 1000.0, 0.0..=1e12)?,
            flaky_shipping_rate: number("SAGAFLOW_SHOP_FLAKY_RATE", 0.0, 0.0..=1.0)?,
        })
    }
}

impl Default for ShopConfig {
    fn default() -> Self {
        ShopConfig {
            jwt_secret: Vec::new(),
            token_ttl_secs: 24 * 3600,
            demo_credit: 1000.0,
            flaky_shipping_rate: 0.0,
        }
    }
}

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct ShopState {
    /// The engine the sagas run on.
    pub engine: Engine,
    /// The database the services keep their tables in.
    pub store: Arc<dyn Store>,
    /// Settings.
    pub config: Arc<ShopConfig>,
}

/// Creates the tables, stocks the catalogue, and settles the token key: the configured one,
/// or the one kept in the database (made at first start). Returns the config to use.
pub async fn prepare(
    store: &Arc<dyn Store>,
    mut config: ShopConfig,
) -> Result<ShopConfig, StoreError> {
    db::prepare(store).await?;
    if config.jwt_secret.is_empty() {
        config.jwt_secret = sagaflow_app_kit::sql::stored_secret(store, "shop").await?;
    }
    Ok(config)
}

/// Both flows' saga definitions.
pub fn definitions() -> Vec<Definition> {
    vec![waiting::definition(), compensating::definition()]
}

/// Every participant service of both flows.
pub fn participants(config: &ShopConfig) -> Vec<Participant> {
    let mut all = waiting::participants();
    all.extend(compensating::participants(config));
    all
}

/// The shop's HTTP endpoints, at the root.
pub fn router(state: ShopState) -> AppRoutes {
    routes().with_state(state)
}

/// The shop's routes without their state, each with who may call it: the customer's own
/// endpoints check the user's token; the simulations of the outside world (stock arriving,
/// a courier accepting) and the order API need an API key when keys are configured.
pub fn routes() -> Routes<ShopState> {
    Routes::new()
        .post("/profile/register", Public, identity::register)
        .post("/profile/login", Public, identity::login)
        .post("/billing/add-money", OwnCredential, waiting::add_money)
        .get("/billing/balance", OwnCredential, waiting::balance)
        .post("/order/place", OwnCredential, waiting::place)
        .get("/order", OwnCredential, waiting::list)
        .get("/order/{id}", OwnCredential, waiting::show)
        .post("/order/{id}/cancel", OwnCredential, waiting::cancel)
        .get("/notification", OwnCredential, notifications::list)
        .get("/stock", ApiKey, waiting::stock)
        .put("/stock/add", ApiKey, waiting::add_stock)
        .put("/delivery/accept", ApiKey, waiting::accept)
        .post("/api/v1/orders", ApiKey, compensating::create)
        .get("/api/v1/orders/{order_id}", ApiKey, compensating::show)
}
