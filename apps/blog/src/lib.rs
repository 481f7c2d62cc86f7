//! The reference system "blog": publishing a post by choreography, built only on sagaflow's
//! public API. Nobody orchestrates the flow: each service reacts to the previous one's event
//! with the subscriber SDK (inbox de-duplication, persisted retries with backoff, dead letters
//! with a compensation hook), and every step is recorded under the flow's correlation id.
//!
//! `POST /api/articles/{id}/publish` moves the post to `PENDING_PUBLISH` and emits
//! `blog.publish_requested` in the same transaction → [`moderation`] approves
//! (`blog.post_approved`) or rejects → [`preview`] sets the preview URL
//! (`blog.preview_ready`) → [`publication`] publishes (`blog.post_published`) →
//! [`notification`] writes one push record per subscriber with a push key. See [`posts`] for
//! the lifecycle, [`users`], [`articles`] and [`internal`] for the HTTP endpoints.

#![warn(missing_docs)]

use std::sync::Arc;

use sagaflow_api::Access::{ApiKey, OwnCredential, Public};
use sagaflow_api::{AppRoutes, Routes};
use sagaflow_core::{RetryPolicy, Store, StoreError};
use sagaflow_engine::{Engine, Subscriber};

pub mod articles;
pub mod internal;
pub mod moderation;
pub mod notification;
pub mod posts;
pub mod preview;
pub mod publication;
pub mod users;

/// How the blog behaves.
#[derive(Debug, Clone)]
pub struct BlogConfig {
    /// The key user tokens are signed with (HS256).
    pub jwt_secret: Vec<u8>,
    /// How long a user token is valid.
    pub token_ttl_secs: i64,
    /// The share of posts that pass the content rules that moderation approves (0 to 1).
    pub approval_rate: f64,
    /// The seed of moderation's draw (the same seed, the same decisions).
    pub seed: u64,
    /// For demos and tests: the preview service fails this many attempts of every event
    /// before it works (`u32::MAX`: always).
    pub preview_failures: u32,
    /// Likewise for the notification service.
    pub notify_failures: u32,
    /// The first delay between attempts (then doubling, up to 5 s).
    pub retry_initial_ms: u64,
    /// The one-time token `init-keys` takes on a server without API keys
    /// (`SAGAFLOW_BLOG_INIT_TOKEN`; made up and printed at start when not given).
    pub init_token: Option<String>,
}

impl Default for BlogConfig {
    fn default() -> Self {
        BlogConfig {
            jwt_secret: Vec::new(),
            token_ttl_secs: 24 * 3600,
            approval_rate: 0.8,
            seed: 0,
            preview_failures: 0,
            notify_failures: 0,
            retry_initial_ms: 500,
            init_token: None,
        }
    }
}

impl BlogConfig {
    /// Reads `SAGAFLOW_BLOG_JWT_SECRET`, `SAGAFLOW_BLOG_APPROVAL_RATE` (0 to 1, default 0.8),
    /// `SAGAFLOW_BLOG_SEED`, `SAGAFLOW_BLOG_PREVIEW_FAILURES` and
    /// `SAGAFLOW_BLOG_NOTIFY_FAILURES` (a count, or `always`) and
    /// `SAGAFLOW_BLOG_RETRY_INITIAL_MS` (default 500); a bad value names the variable.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<BlogConfig, String> {
        let mut c = BlogConfig {
            jwt_secret: env("SAGAFLOW_BLOG_JWT_SECRET")
                .unwrap_or_default()
                .into_bytes(),
            ..BlogConfig::default()
        };
        if let Some(v) = env("SAGAFLOW_BLOG_APPROVAL_RATE") {
            c.approval_rate = v
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    format!("SAGAFLOW_BLOG_APPROVAL_RATE = {v:?} must be a number from 0 to 1")
                })?;
        }
        if let Some(v) = env("SAGAFLOW_BLOG_SEED") {
            c.seed = v
                .parse()
                .map_err(|_| format!("SAGAFLOW_BLOG_SEED = {v:?} must be a whole number"))?;
        }
        let failures = |name: &str| -> Result<u32, String> {
            match env(name) {
                None => Ok(0),
                Some(v) if v == "always" => Ok(u32::MAX),
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("{name} = {v:?} must be a count of attempts or `always`")),
            }
        };
        c.preview_failures = failures("SAGAFLOW_BLOG_PREVIEW_FAILURES")?;
        c.notify_failures = failures("SAGAFLOW_BLOG_NOTIFY_FAILURES")?;
        if let Some(v) = env("SAGAFLOW_BLOG_RETRY_INITIAL_MS") {
            c.retry_initial_ms = v
                .parse()
                .ok()
                .filter(|ms| *ms >= 1)
                .ok_or_else(|| format!("SAGAFLOW_BLOG_RETRY_INITIAL_MS = {v:?} must be a number of milliseconds, 1 or more"))?;
        }
        if let Some(v) = env("SAGAFLOW_BLOG_INIT_TOKEN") {
            if v.len() < 16 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(
                    "SAGAFLOW_BLOG_INIT_TOKEN must be at least 16 visible characters".to_string(),
                );
            }
            c.init_token = Some(v);
        }
        Ok(c)
    }

    /// The retry policy of a service: `attempts` in all, exponential backoff.
    pub fn retry(&self, attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            initial_delay_ms: self.retry_initial_ms,
            multiplier: 2.0,
            max_delay_ms: 5_000,
            jitter: 0.1,
        }
    }
}

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct BlogState {
    /// The engine (for the flow's timeline).
    pub engine: Engine,
    /// The database the services keep their tables in.
    pub store: Arc<dyn Store>,
    /// Settings.
    pub config: Arc<BlogConfig>,
    /// Wakes this process's event relay after a commit that emitted an event.
    pub relay_wake: Option<Arc<tokio::sync::Notify>>,
    /// How `init-keys` is authorised: by the server's `operate` key, checked at the edge
    /// (the server has API keys), or by a one-time token.
    pub init_keys: InitKeys,
}

/// Who may call `POST /api/internal/init-keys`.
#[derive(Clone)]
pub enum InitKeys {
    /// The server has API keys: the edge lets only an `operate` key through.
    OperateKey,
    /// An open server: the token in `X-Init-Token`, good once.
    OneTimeToken(Arc<std::sync::Mutex<Option<String>>>),
}

impl InitKeys {
    /// For a server with (`true`) or without API keys; an open one takes `token`, or a
    /// fresh one (see [`InitKeys::token`] to print it).
    pub fn new(server_has_keys: bool, token: Option<String>) -> InitKeys {
        if server_has_keys {
            InitKeys::OperateKey
        } else {
            let token = token.unwrap_or_else(sagaflow_app_kit::auth::random_secret);
            InitKeys::OneTimeToken(Arc::new(std::sync::Mutex::new(Some(token))))
        }
    }

    /// The one-time token, while it is unused.
    pub fn token(&self) -> Option<String> {
        match self {
            InitKeys::OperateKey => None,
            InitKeys::OneTimeToken(t) => t.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS blog_users (id BIGINT PRIMARY KEY, email TEXT NOT NULL UNIQUE, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, subscription_key TEXT, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blog_subscriptions (subscriber_id BIGINT NOT NULL, target_id BIGINT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (subscriber_id, target_id))",
    "CREATE TABLE IF NOT EXISTS blog_posts (id BIGINT PRIMARY KEY, slug TEXT NOT NULL UNIQUE, author_id BIGINT NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL, preview_url TEXT, reason TEXT, flow_id TEXT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blog_push (subscriber_id BIGINT NOT NULL, post_id BIGINT NOT NULL, push_key TEXT NOT NULL, message TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (subscriber_id, post_id))",
    "CREATE TABLE IF NOT EXISTS blog_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blog_api_keys (id TEXT PRIMARY KEY, key_sha256 TEXT NOT NULL UNIQUE, description TEXT NOT NULL, active BIGINT NOT NULL, expires_at BIGINT, created_at BIGINT NOT NULL, scopes TEXT NOT NULL DEFAULT 'read moderate preview publish keys')",
];

/// Keys made before keys had scopes keep every scope they had in effect.
const ADD_SCOPES: &str = "ALTER TABLE blog_api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'read moderate preview publish keys'";

/// Creates the tables and settles the token key. Returns the config to use.
pub async fn prepare(
    store: &Arc<dyn Store>,
    mut config: BlogConfig,
) -> Result<BlogConfig, StoreError> {
    sagaflow_app_kit::sql::create_tables(store, SCHEMA).await?;
    let has_scopes =
        sagaflow_app_kit::sql::read(store, "SELECT scopes FROM blog_api_keys WHERE 1 = 0", &[])
            .await
            .is_ok();
    if !has_scopes {
        sagaflow_app_kit::sql::create_tables(store, &[ADD_SCOPES]).await?;
    }
    sagaflow_engine::flow::prepare(store).await?;
    if config.jwt_secret.is_empty() {
        config.jwt_secret = sagaflow_app_kit::sql::stored_secret(store, "blog").await?;
    }
    Ok(config)
}

/// The four services, each a subscriber.
pub fn subscribers(config: &BlogConfig) -> Vec<Subscriber> {
    vec![
        moderation::subscriber(config),
        preview::subscriber(config),
        publication::subscriber(config),
        notification::subscriber(config),
    ]
}

/// The HTTP endpoints, at the root.
pub fn router(state: BlogState) -> AppRoutes {
    routes().with_state(state)
}

/// The routes without their state: the table of who may call what.
pub fn routes() -> Routes<BlogState> {
    Routes::new()
        .get("/health", Public, health)
        .post("/api/users", Public, users::create)
        .post("/api/users/login", Public, users::login)
        .put(
            "/api/users/me/subscription-key",
            OwnCredential,
            users::set_subscription_key,
        )
        .post("/api/users/subscribe", OwnCredential, users::subscribe)
        .get(
            "/api/users/me/notifications",
            OwnCredential,
            users::notifications,
        )
        .post("/api/articles", OwnCredential, articles::create)
        .get("/api/articles/{key}", Public, articles::get)
        .post(
            "/api/articles/{key}/publish",
            OwnCredential,
            articles::publish,
        )
        // Creating the first service keys is the operator's act.
        .post("/api/internal/init-keys", ApiKey, internal::init_keys)
        // The rest of the internal API checks the blog's service keys.
        .post("/api/internal/keys", OwnCredential, internal::create_key)
        .post(
            "/api/internal/keys/{id}/deactivate",
            OwnCredential,
            internal::deactivate_key,
        )
        .get("/api/internal/posts/{id}", OwnCredential, internal::show)
        .post(
            "/api/internal/posts/{id}/reject",
            OwnCredential,
            internal::reject,
        )
        .put(
            "/api/internal/posts/{id}/preview",
            OwnCredential,
            internal::preview,
        )
        .post(
            "/api/internal/posts/{id}/publish",
            OwnCredential,
            internal::publish,
        )
        .post(
            "/api/internal/posts/{id}/error",
            OwnCredential,
            internal::error,
        )
        .post(
            "/api/internal/posts/{id}/reset-to-draft",
            OwnCredential,
            internal::reset_to_draft,
        )
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// The next integer id of `table`: one more than the largest. Two inserts racing for it
/// collide on the primary key, and the loser tries again.
pub(crate) const NEXT_ID: &str = "COALESCE(MAX(id), 0) + 1";
