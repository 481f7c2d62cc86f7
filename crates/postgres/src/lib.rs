//! sagaflow's Store on PostgreSQL, shared by many engine processes: group commit in one
//! transaction per batch, leases claimed with `FOR UPDATE SKIP LOCKED`, and LISTEN/NOTIFY
//! to wake the other processes when timers or outbox rows are committed.

mod claim;
mod commit;
mod dead_letter;
mod definition;
mod error;
mod escape;
mod listen;
mod migrate;
mod participant;
mod read;
mod sql_value;
mod stats;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sagaflow_core::{
    CommitOutcome, DeadLetter, Decision, Definition, JournalEntry, Millis, OutboxRow,
    ParticipantTx, SagaFilter, SagaId, SagaState, Store, StoreError, StoreStats, TimerRow,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::error::store_error;

/// How many connections one store opens at most. Group commit keeps the writers few; the
/// rest serve reads, claims, participant transactions and the listener.
const MAX_CONNECTIONS: u32 = 10;

/// Prepared statements kept per connection. Participant SQL shares the cache with ours, so
/// it is larger than sqlx's default to keep the hot-path statements from being evicted.
const STATEMENT_CACHE: usize = 512;

/// A [`Store`] on PostgreSQL. Cheap to clone; clones share one pool and one listener.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

/// What every clone shares.
struct Inner {
    pool: PgPool,
    /// The NOTIFY channel: named after the schema, so stores in other schemas of the same
    /// database (parallel tests, several deployments) do not wake each other.
    channel: String,
    /// The payload of this store's own notifications, so its listener can ignore them: the
    /// engine already wakes itself for its own commits.
    instance: String,
    wake: listen::Wakeup,
    /// How participant statements bind their NULLs, learnt per SQL text.
    nulls: Arc<participant::NullTyping>,
}

impl PgStore {
    /// Connects with the database's default `search_path` and applies pending migrations.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        Self::open(url, None).await
    }

    /// Connects inside `schema` (created if missing; every pooled connection's `search_path`
    /// is set to it) and applies pending migrations there.
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<PgStore, StoreError> {
        Self::open(url, Some(schema)).await
    }

    /// The connection pool, for callers that need plain SQL next to the store (tests, tools).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    async fn open(url: &str, schema: Option<&str>) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid database url: {e}")))?
            .application_name("sagaflow")
            .statement_cache_capacity(STATEMENT_CACHE);
        let quoted = schema.map(migrate::quote_schema).transpose()?;
        let search_path = quoted
            .as_ref()
            .map(|quoted| format!("SET search_path TO {quoted}"));
        // Migrate on a connection of its own first: an unreachable database fails here at
        // once, where the pool would retry until its acquire timeout.
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(store_error)?;
        if let Some(sql) = &search_path {
            conn.execute(sql.as_str()).await.map_err(store_error)?;
        }
        migrate::migrate(&mut conn, quoted.as_deref()).await?;
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the migration connection failed");
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // sqlx already pings each connection when it goes back to the pool; pinging
            // again on the way out would add a round trip to every operation. One that died
            // while idle fails its next use as Unavailable, which callers retry.
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    if let Some(sql) = search_path {
                        conn.execute(sql.as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        let channel = listen::channel_name(schema);
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                channel,
                instance: listen::instance_id(),
                wake: listen::Wakeup::default(),
                nulls: Arc::default(),
            }),
        })
    }
}

/// Drops `schema` and everything in it: the teardown of a scratch schema made by
/// [`PgStore::connect_in_schema`] (tests, benchmarks). Waits at most 5 s for locks.
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("invalid database url: {e}")))?;
    let quoted = migrate::quote_schema(schema)?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(store_error)?;
    // A leftover open transaction in the schema must not hang the teardown.
    let sql = format!("SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {quoted} CASCADE");
    let dropped = conn.execute(sqlx::raw_sql(&sql)).await.map_err(store_error);
    let _ = conn.close().await;
    dropped.map(|_| ())
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("channel", &self.inner.channel)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for PgStore {
    async fn commit(&self, decisions: Vec<Decision>) -> Result<Vec<CommitOutcome>, StoreError> {
        commit::commit(&self.inner, decisions).await
    }

    async fn load(&self, ids: &[SagaId]) -> Result<Vec<SagaState>, StoreError> {
        read::load(&self.inner.pool, ids).await
    }

    async fn journal(&self, id: &SagaId) -> Result<Vec<JournalEntry>, StoreError> {
        read::journal(&self.inner.pool, id).await
    }

    async fn saga_by_idempotency_key(&self, key: &str) -> Result<Option<SagaId>, StoreError> {
        read::saga_by_idempotency_key(&self.inner.pool, key).await
    }

    async fn list(&self, filter: &SagaFilter) -> Result<Vec<SagaState>, StoreError> {
        read::list(&self.inner.pool, filter).await
    }

    async fn versions_in_flight(&self) -> Result<Vec<(String, u32, u64)>, StoreError> {
        read::versions_in_flight(&self.inner.pool).await
    }

    async fn stale(
        &self,
        updated_before: Millis,
        limit: usize,
    ) -> Result<Vec<SagaState>, StoreError> {
        read::stale(&self.inner.pool, updated_before, limit).await
    }

    async fn activity(
        &self,
        since: Millis,
        bucket_ms: i64,
    ) -> Result<Vec<(Millis, u64, u64)>, StoreError> {
        read::activity(&self.inner.pool, since, bucket_ms).await
    }

    async fn waiting_by_correlation(&self, key: &str) -> Result<Vec<SagaId>, StoreError> {
        read::waiting_by_correlation(&self.inner.pool, key).await
    }

    async fn claim_timers(
        &self,
        now: Millis,
        owner: &str,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<TimerRow>, StoreError> {
        claim::claim_timers(&self.inner.pool, now, owner, lease_ms, limit).await
    }

    async fn next_timer_at(&self) -> Result<Option<Millis>, StoreError> {
        read::next_timer_at(&self.inner.pool).await
    }

    async fn claim_outbox(
        &self,
        now: Millis,
        owner: &str,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        claim::claim_outbox(&self.inner.pool, now, owner, lease_ms, limit).await
    }

    async fn put_dead_letter(
        &self,
        topic: &str,
        body: &[u8],
        reason: &str,
        attempts: u32,
        at: Millis,
    ) -> Result<i64, StoreError> {
        dead_letter::put(&self.inner.pool, topic, body, reason, attempts, at).await
    }

    async fn dead_letters(&self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        dead_letter::list(&self.inner.pool, after, limit).await
    }

    async fn take_dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        dead_letter::take(&self.inner.pool, id).await
    }

    async fn save_definition(&self, def: &Definition) -> Result<(), StoreError> {
        definition::save(&self.inner.pool, def).await
    }

    async fn definitions(&self) -> Result<Vec<Definition>, StoreError> {
        definition::list(&self.inner.pool).await
    }

    async fn stats(&self, now: Millis) -> Result<StoreStats, StoreError> {
        stats::stats(&self.inner.pool, now).await
    }

    async fn begin(&self) -> Result<Box<dyn ParticipantTx>, StoreError> {
        participant::begin(&self.inner.pool, &self.inner.nulls).await
    }

    async fn wakeup(&self) {
        self.inner
            .wake
            .wait(&self.inner.pool, &self.inner.channel, &self.inner.instance)
            .await
    }
}
