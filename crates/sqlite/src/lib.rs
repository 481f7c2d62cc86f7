//! sagaflow's Store on SQLite: the embedded default.
//!
//! - **WAL, `synchronous=NORMAL`**: a returned commit survives the process being killed
//!   (kill -9, panic, OOM); only an OS crash or power loss may lose the latest commits, and
//!   never corrupts the file. Readers and the writer do not block each other.
//! - **One writer**: a dedicated thread owns the write connection. Commits, claims,
//!   dead-letter and definition writes are sent to it; it runs everything queued at that
//!   moment in one transaction (group commit) with a savepoint per request, and answers
//!   after COMMIT.
//! - **Reads** run on pooled connections via `spawn_blocking`, on any tokio runtime.
//! - **Participant transactions** take a pooled connection in `BEGIN IMMEDIATE`; their SQL
//!   uses PostgreSQL-style `$1` placeholders, translated here. An open one holds the
//!   database's only write lock, so every commit waits for it (up to the 10 s busy timeout):
//!   keep them short, and never await the engine inside one.
//! - The schema is embedded and migrated on open.
//!
//! One process per database file: [`Store::wakeup`] never fires, since every commit comes
//! from this process and the engine wakes itself for those.

#![warn(missing_docs)]

mod checkpoint;
mod claim;
mod commit;
mod connection;
mod dead_letter;
mod definition;
mod migrate;
mod participant;
mod read;
mod stats;
mod url;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::Connection;
use sagaflow_core::{
    definition_json, CommitOutcome, DeadLetter, Decision, Definition, JournalEntry, Millis,
    OutboxRow, ParticipantTx, SagaFilter, SagaId, SagaState, Store, StoreError, StoreStats,
    TimerRow,
};

use crate::connection::Pool;
use crate::participant::{blocking, SqliteTx};
use crate::url::Location;
use crate::writer::WriterHandle;

/// A [`Store`] on one SQLite database file.
pub struct SqliteStore {
    writer: WriterHandle,
    pool: Arc<Pool>,
    /// The file of a throwaway (`:memory:`) database, removed on drop.
    throwaway: Option<PathBuf>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `url`: `sqlite://./file.db`,
    /// `sqlite:file.db`, `sqlite:///abs/file.db`, a plain path, or `:memory:` (also
    /// `sqlite::memory:`) for a throwaway database private to this store.
    ///
    /// The file I/O runs on a blocking thread, so this is safe to await anywhere.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let url = url.to_string();
        blocking(move || Self::open_blocking(&url)).await
    }

    /// [`SqliteStore::open`] for code outside an async context; blocks on file I/O.
    pub fn open_blocking(url: &str) -> Result<SqliteStore, StoreError> {
        let (path, throwaway) = match url::parse(url)? {
            Location::File(path) => (path, false),
            // A temp file, not `mode=memory`: see `url::throwaway_path`.
            Location::Throwaway => (url::throwaway_path(), true),
        };
        let opened = Self::open_path(&path, throwaway);
        if opened.is_err() && throwaway {
            remove_database_files(&path);
        }
        opened
    }

    fn open_path(path: &std::path::Path, throwaway: bool) -> Result<SqliteStore, StoreError> {
        let mut conn: Connection = connection::open(path)?;
        connection::enable_wal(&conn, path)?;
        migrate::apply(&mut conn)?;
        Ok(SqliteStore {
            writer: WriterHandle::spawn(conn, path)?,
            pool: Pool::new(path.to_path_buf()),
            throwaway: throwaway.then(|| path.to_path_buf()),
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.pool.clone();
        blocking(move || {
            let conn = pool.get()?;
            f(&conn)
        })
        .await
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.writer.stop();
        self.pool.close_idle();
        if let Some(path) = &self.throwaway {
            remove_database_files(path);
        }
    }
}

fn remove_database_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        // Missing files are fine: not every one exists at every moment.
        let _ = std::fs::remove_file(file);
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, decisions: Vec<Decision>) -> Result<Vec<CommitOutcome>, StoreError> {
        if decisions.is_empty() {
            return Ok(Vec::new());
        }
        self.writer
            .run(move |writer| commit::apply_all(writer, &decisions))
            .await
    }

    async fn load(&self, ids: &[SagaId]) -> Result<Vec<SagaState>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.to_vec();
        self.read(move |conn| read::load(conn, &ids)).await
    }

    async fn journal(&self, id: &SagaId) -> Result<Vec<JournalEntry>, StoreError> {
        let id = id.clone();
        self.read(move |conn| read::journal(conn, &id)).await
    }

    async fn saga_by_idempotency_key(&self, key: &str) -> Result<Option<SagaId>, StoreError> {
        let key = key.to_string();
        self.read(move |conn| read::saga_by_idempotency_key(conn, &key))
            .await
    }

    async fn list(&self, filter: &SagaFilter) -> Result<Vec<SagaState>, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| read::list(conn, &filter)).await
    }

    async fn versions_in_flight(&self) -> Result<Vec<(String, u32, u64)>, StoreError> {
        self.read(read::versions_in_flight).await
    }

    async fn stale(
        &self,
        updated_before: Millis,
        limit: usize,
    ) -> Result<Vec<SagaState>, StoreError> {
        self.read(move |conn| read::stale(conn, updated_before, limit))
            .await
    }

    async fn activity(
        &self,
        since: Millis,
        bucket_ms: i64,
    ) -> Result<Vec<(Millis, u64, u64)>, StoreError> {
        self.read(move |conn| read::activity(conn, since, bucket_ms))
            .await
    }

    async fn waiting_by_correlation(&self, key: &str) -> Result<Vec<SagaId>, StoreError> {
        let key = key.to_string();
        self.read(move |conn| read::waiting_by_correlation(conn, &key))
            .await
    }

    async fn claim_timers(
        &self,
        now: Millis,
        owner: &str,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<TimerRow>, StoreError> {
        let owner = owner.to_string();
        self.writer
            .run(move |w| claim::claim_timers(&w.conn, now, &owner, lease_ms, limit))
            .await
    }

    async fn next_timer_at(&self) -> Result<Option<Millis>, StoreError> {
        self.read(read::next_timer_at).await
    }

    async fn claim_outbox(
        &self,
        now: Millis,
        owner: &str,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let owner = owner.to_string();
        self.writer
            .run(move |w| claim::claim_outbox(&w.conn, now, &owner, lease_ms, limit))
            .await
    }

    async fn put_dead_letter(
        &self,
        topic: &str,
        body: &[u8],
        reason: &str,
        attempts: u32,
        at: Millis,
    ) -> Result<i64, StoreError> {
        let (topic, body, reason) = (topic.to_string(), body.to_vec(), reason.to_string());
        self.writer
            .run(move |w| dead_letter::put(&w.conn, &topic, &body, &reason, attempts, at))
            .await
    }

    async fn dead_letters(&self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |conn| dead_letter::list(conn, after, limit))
            .await
    }

    async fn take_dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        self.writer
            .run(move |w| dead_letter::take(&w.conn, id))
            .await
    }

    async fn save_definition(&self, def: &Definition) -> Result<(), StoreError> {
        // Validated and serialised here, off the writer thread that every commit waits on.
        let body = definition_json(def)?;
        let def = def.clone();
        self.writer
            .run(move |w| definition::save(&w.conn, &def, &body))
            .await
    }

    async fn definitions(&self) -> Result<Vec<Definition>, StoreError> {
        self.read(definition::list).await
    }

    async fn stats(&self, now: Millis) -> Result<StoreStats, StoreError> {
        self.read(move |conn| stats::stats(conn, now)).await
    }

    async fn begin(&self) -> Result<Box<dyn ParticipantTx>, StoreError> {
        Ok(Box::new(SqliteTx::begin(self.pool.clone()).await?))
    }
}
