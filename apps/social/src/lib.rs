//! The reference system "social": a social network's consistency problems solved with sagas,
//! built only on sagaflow's public API.
//!
//! [`registration`] (part A): a user registers and is stored *pending verification* (0); a
//! saga asks the **verifier** service to check the data, and the users service then sets
//! *verified* (100) or *verification failed* (10). Status updates only ever move up
//! 0 < 10 < 100, so duplicate and late events are harmless. While the verifier is down the
//! verification is attempted again with backoff, and completes once it is back.
//!
//! [`messages`] (part B): a message is stored *pending*, a saga asks the [`counters`] service
//! to raise the recipient's unread counter, and the message is then *committed* — or, when
//! the counter refuses, kept and flagged *failed*. Counters are read from a [`cache`] (Redis
//! when a URL is given, else in this process) that only ever follows the database, and
//! [`reconciliation`] repairs any drift and reports it.
//!
//! Services keep their `social_<service>_*` tables in the sagaflow database; [`router`]
//! serves the HTTP endpoints; the `sagaflow` binary mounts it at the root of its server.

#![warn(missing_docs)]

use std::sync::Arc;

use sagaflow_api::Access::{ApiKey, OwnCredential, Public};
use sagaflow_api::{AppRoutes, Routes};
use sagaflow_core::{Definition, Store, StoreError};
use sagaflow_engine::{Engine, Participant};

pub mod cache;
pub mod counters;
pub mod messages;
pub mod reconciliation;
pub mod registration;
pub mod verifier;

use cache::UnreadCache;

/// How the social network behaves.
#[derive(Clone)]
pub struct SocialConfig {
    /// The key login tokens are signed with (HS256).
    pub jwt_secret: Vec<u8>,
    /// How long a login token is valid.
    pub token_ttl_secs: i64,
    /// The share of registrations the verifier refuses for the demo, beyond its rules.
    pub rejection_rate: f64,
    /// How long one verification attempt may take before it is tried again.
    pub verify_timeout_ms: u64,
    /// The verification authority the verifier consults once its own rules pass (an HTTP
    /// endpoint answering `{"passed": bool, "reason": …}`); none: the rules decide alone.
    pub verifier_authority: Option<String>,
    /// Redis for the unread-counter cache; none: a cache in this process.
    pub redis_url: Option<String>,
    /// How often reconciliation runs in the background (0: never; it can still be asked
    /// for with `POST /counters/reconcile`).
    pub reconcile_every_secs: u64,
    /// The unread-counter cache ([`prepare`] connects it).
    pub cache: UnreadCache,
}

/// Shown without its secrets: the token key is left out and the Redis URL's password hidden.
impl std::fmt::Debug for SocialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocialConfig")
            .field("jwt_secret", &"***")
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("rejection_rate", &self.rejection_rate)
            .field("verify_timeout_ms", &self.verify_timeout_ms)
            .field("verifier_authority", &self.verifier_authority)
            .field(
                "redis_url",
                &self.redis_url.as_deref().map(sagaflow_core::redact_url),
            )
            .field("reconcile_every_secs", &self.reconcile_every_secs)
            .field("cache", &self.cache)
            .finish()
    }
}

impl Default for SocialConfig {
    fn default() -> Self {
        SocialConfig {
            jwt_secret: Vec::new(),
            token_ttl_secs: 24 * 3600,
            rejection_rate: 0.0,
            verify_timeout_ms: 5_000,
            verifier_authority: None,
            redis_url: None,
            reconcile_every_secs: 60,
            cache: UnreadCache::memory(),
        }
    }
}

impl SocialConfig {
    /// Reads `SAGAFLOW_SOCIAL_JWT_SECRET`, `SAGAFLOW_SOCIAL_REJECTION_RATE` (0 to 1,
    /// default 0), `SAGAFLOW_SOCIAL_VERIFY_TIMEOUT_MS` (default 5 000),
    /// `SAGAFLOW_SOCIAL_VERIFIER_AUTHORITY` (a URL), `SAGAFLOW_REDIS_URL` and
    /// `SAGAFLOW_SOCIAL_RECONCILE_SECS` (default 60); a bad value names the variable.
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
        let reconcile_every_secs = match env("SAGAFLOW_SOCIAL_RECONCILE_SECS") {
            None => 60,
            Some(v) => v.parse::<u64>().map_err(|_| {
                format!("SAGAFLOW_SOCIAL_RECONCILE_SECS = {v:?} must be a whole number of seconds (0: never)")
            })?,
        };
        let verify_timeout_ms = match env("SAGAFLOW_SOCIAL_VERIFY_TIMEOUT_MS") {
            None => 5_000,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= 100 => n,
                _ => {
                    return Err(format!(
                        "SAGAFLOW_SOCIAL_VERIFY_TIMEOUT_MS = {v:?} must be a number of milliseconds, 100 or more"
                    ))
                }
            },
        };
        let url = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        Ok(SocialConfig {
            jwt_secret: env("SAGAFLOW_SOCIAL_JWT_SECRET")
                .unwrap_or_default()
                .into_bytes(),
            rejection_rate,
            verifier_authority: url("SAGAFLOW_SOCIAL_VERIFIER_AUTHORITY"),
            redis_url: url("SAGAFLOW_REDIS_URL"),
            reconcile_every_secs,
            verify_timeout_ms,
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
    /// The keys the internal endpoints accept (the engine API's); none: they are open, as
    /// the engine API is.
    pub api_keys: Vec<sagaflow_api::ApiKey>,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS social_users (id TEXT PRIMARY KEY, first_name TEXT NOT NULL, second_name TEXT NOT NULL, birthdate TEXT NOT NULL, gender TEXT, biography TEXT, city TEXT, password_hash TEXT NOT NULL, status BIGINT NOT NULL, status_reason TEXT, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS social_verifier_checks (user_id TEXT PRIMARY KEY, passed BIGINT NOT NULL, reason TEXT NOT NULL, request_id TEXT, traceparent TEXT, checked_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS social_messages (id TEXT PRIMARY KEY, dialog_id TEXT NOT NULL, sender_id TEXT NOT NULL, recipient_id TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL, reason TEXT, read_state TEXT, created_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS social_messages_by_dialog ON social_messages (dialog_id, created_at)",
    "CREATE INDEX IF NOT EXISTS social_messages_by_read ON social_messages (read_state)",
    "CREATE TABLE IF NOT EXISTS social_message_reads (saga_id TEXT PRIMARY KEY, read_count BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS social_counters_unread (user_id TEXT NOT NULL, dialog_id TEXT NOT NULL, partner_id TEXT NOT NULL, unread BIGINT NOT NULL CHECK (unread >= 0), version BIGINT NOT NULL, PRIMARY KEY (user_id, dialog_id))",
    "CREATE TABLE IF NOT EXISTS social_jobs (name TEXT PRIMARY KEY, owner TEXT NOT NULL, until BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS social_counters_ops (op_id TEXT PRIMARY KEY, state TEXT NOT NULL)",
];

/// Creates the tables, settles the token key (the configured one, or one kept in the
/// database) and connects the cache (Redis when configured). Returns the config to use.
pub async fn prepare(
    store: &Arc<dyn Store>,
    mut config: SocialConfig,
) -> Result<SocialConfig, StoreError> {
    sagaflow_app_kit::sql::create_tables(store, SCHEMA).await?;
    if config.jwt_secret.is_empty() {
        config.jwt_secret = sagaflow_app_kit::sql::stored_secret(store, "social").await?;
    }
    if let Some(url) = &config.redis_url {
        config.cache = UnreadCache::redis(url)
            .await
            .map_err(StoreError::Unavailable)?;
    }
    Ok(config)
}

/// The saga definitions.
pub fn definitions(config: &SocialConfig) -> Vec<Definition> {
    vec![
        registration::definition(config),
        messages::send_definition(),
        messages::read_definition(),
    ]
}

/// Every participant service.
pub fn participants(config: &SocialConfig, store: &Arc<dyn Store>) -> Vec<Participant> {
    vec![
        verifier::participant(config, store.clone()),
        registration::participant(),
        messages::participant(),
        counters::participant(&config.cache),
    ]
}

/// Starts background reconciliation (unless configured off), reporting to the engine's
/// metrics.
pub fn spawn_jobs(state: &SocialState) -> Option<tokio::task::JoinHandle<()>> {
    let metrics = reconciliation::DriftMetrics::new(state.engine.metrics());
    (state.config.reconcile_every_secs > 0).then(|| {
        reconciliation::spawn(
            state.store.clone(),
            state.config.cache.clone(),
            metrics,
            std::time::Duration::from_secs(state.config.reconcile_every_secs),
        )
    })
}

/// The HTTP endpoints, at the root.
pub fn router(state: SocialState) -> AppRoutes {
    routes().with_state(state)
}

/// The routes without their state: the table of who may call what.
pub fn routes() -> Routes<SocialState> {
    Routes::new()
        .post("/user/register", Public, registration::register)
        .post("/login", Public, registration::login)
        .get("/user/get/{id}", Public, registration::get)
        .get("/api/dialog", OwnCredential, messages::dialogs)
        .post("/api/dialog/{partner}/send", OwnCredential, messages::send)
        .get("/api/dialog/{partner}/list", OwnCredential, messages::list)
        .post(
            "/api/dialog/{partner}/read",
            OwnCredential,
            messages::mark_read,
        )
        // The counters service is internal: other services and operators call it.
        .post("/counters/reconcile", ApiKey, reconcile)
        .get("/counters/{id}", ApiKey, counters::get)
        .post("/counters/{id}/increment", ApiKey, counters::increment)
        .post("/counters/{id}/reset", ApiKey, counters::reset)
}

/// `POST /counters/reconcile` (internal, API key): runs reconciliation now; 200 with what it
/// found (`checked`, `repaired`, `drift`, `skipped`).
async fn reconcile(
    axum::extract::State(state): axum::extract::State<SocialState>,
    headers: axum::http::HeaderMap,
) -> Result<axum::Json<reconciliation::Report>, sagaflow_api::Problem> {
    sagaflow_api::authorize(&state.api_keys, &headers, sagaflow_api::Right::Operate)?;
    let report = reconciliation::reconcile(&state.store, &state.config.cache)
        .await
        .map_err(sagaflow_app_kit::http::store_problem)?;
    reconciliation::DriftMetrics::new(state.engine.metrics()).record(&report);
    Ok(axum::Json(report))
}

#[cfg(test)]
mod secrets_tests {
    use super::SocialConfig;

    #[test]
    fn the_config_shows_no_secret() {
        let config = SocialConfig {
            jwt_secret: b"token-signing-secret".to_vec(),
            redis_url: Some("redis://:hunter2@127.0.0.1:6379/0".to_string()),
            ..SocialConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            !shown.contains("116, 111, 107"),
            "the token key's bytes: {shown}"
        );
        assert!(shown.contains("redis://:***@127.0.0.1:6379/0"), "{shown}");
    }
}
