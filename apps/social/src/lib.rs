//! The reference system "social": a social network's consistency problems solved with sagas,
//! built only on sagaflow's public API.
//!
//! [`registration`] (part A): a user registers and is stored *pending verification* (0); a
//! saga asks the **verifier** service to check the data, and the users service then sets
//! *verified* (100) or *verification failed* (10). Status updates only ever move up
//! 0 < 10 < 100, so duplicate and late events are harmless. While the verifier is down the
//! verification is attempted again with backoff, and completes once it is back.
//!
//! Services keep their `social_<service>_*` tables in the sagaflow database; [`router`]
//! serves the HTTP endpoints; the `sagaflow` binary mounts it at the root of its server.

#![warn(missing_docs)]

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use sagaflow_core::{Definition, Store, StoreError};
use sagaflow_engine::{Engine, Participant};

pub mod registration;
pub mod verifier;

/// How the social network behaves.
#[derive(Debug, Clone)]
pub struct SocialConfig {
    /// The key login tokens are signed with (HS256).
    pub jwt_secret: Vec<u8>,
    /// How long a login token is valid.
    pub token_ttl_secs: i64,
    /// The share of registrations the verifier refuses for the demo, beyond its rules.
    pub rejection_rate: f64,
    /// How long one verification attempt may take before it is tried again.
    pub verify_timeout_ms: u64,
}

impl Default for SocialConfig {
    fn default() -> Self {
        SocialConfig {
            jwt_secret: Vec::new(),
            token_ttl_secs: 24 * 3600,
            rejection_rate: 0.0,
            verify_timeout_ms: 5_000,
        }
    }
}

impl SocialConfig {
    /// Reads `SAGAFLOW_SOCIAL_JWT_SECRET` and `SAGAFLOW_SOCIAL_REJECTION_RATE` (0 to 1,
    /// default 0); a bad value names the variable.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<SocialConfig, String> {
        let rejection_rate = match env("SAGAFLOW_SOCIAL_REJECTION_RATE") {
            None => 0.0,
            Some(v) => match v.parse::<f64>() {
                Ok(n) if (0.0..=1.0).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "SAGAFLOW_SOCIAL_REJECTION_RATE = {v:?} must be a number from 0 to 1"
                    ))
                }
            },
        };
        Ok(SocialConfig {
            jwt_secret: env("SAGAFLOW_SOCIAL_JWT_SECRET")
                .unwrap_or_default()
                .into_bytes(),
            rejection_rate,
            ..SocialConfig::default()
        })
    }
}

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct SocialState {
    /// The engine the sagas run on.
    pub engine: Engine,
    /// The database the services keep their tables in.
    pub store: Arc<dyn Store>,
    /// Settings.
    pub config: Arc<SocialConfig>,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS social_users (id TEXT PRIMARY KEY, first_name TEXT NOT NULL, second_name TEXT NOT NULL, birthdate TEXT NOT NULL, gender TEXT, biography TEXT, city TEXT, password_hash TEXT NOT NULL, status BIGINT NOT NULL, status_reason TEXT, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS social_verifier_checks (user_id TEXT PRIMARY KEY, passed BIGINT NOT NULL, reason TEXT NOT NULL, request_id TEXT, traceparent TEXT, checked_at BIGINT NOT NULL)",
];

/// Creates the tables and settles the token key (the configured one, or one kept in the
/// database). Returns the config to use.
pub async fn prepare(
    store: &Arc<dyn Store>,
    mut config: SocialConfig,
) -> Result<SocialConfig, StoreError> {
    sagaflow_app_kit::sql::create_tables(store, SCHEMA).await?;
    if config.jwt_secret.is_empty() {
        config.jwt_secret = sagaflow_app_kit::sql::stored_secret(store, "social").await?;
    }
    Ok(config)
}

/// The saga definitions.
pub fn definitions(config: &SocialConfig) -> Vec<Definition> {
    vec![registration::definition(config)]
}

/// Every participant service.
pub fn participants(config: &SocialConfig) -> Vec<Participant> {
    vec![verifier::participant(config), registration::participant()]
}

/// The HTTP endpoints, at the root.
pub fn router(state: SocialState) -> Router {
    Router::new()
        .route("/user/register", post(registration::register))
        .route("/login", post(registration::login))
        .route("/user/get/{id}", get(registration::get))
        .with_state(state)
}
