//! The one writer: an OS thread that owns the write connection and runs every write job.
//!
//! SQLite has one write lock per database, so writers taking turns through it would only
//! queue on the lock. Instead, callers send jobs over a channel; the thread takes every job
//! queued at that moment and runs them all in ONE transaction (group commit), each inside
//! its own SAVEPOINT so a failing job is undone alone. Replies go out only after COMMIT, so
//! nobody hears "applied" about a write that could still be lost.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::thread::JoinHandle;

use rusqlite::Connection;
use sagaflow_core::StoreError;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::{self, Checkpointer};
use crate::connection::db;

/// Jobs waiting beyond this make callers wait (backpressure instead of unbounded memory).
const QUEUE: usize = 1024;

/// At most this many jobs share a transaction, bounding how long the first one waits.
const MAX_GROUP: usize = 512;

/// Runs after the group's transaction ended: `None` if it committed, else why it did not.
type Completion = Box<dyn FnOnce(Option<&str>) + Send>;

/// A write job: does its work on the writer and returns how to report the result.
type Job = Box<dyn FnOnce(&mut Writer) -> Completion + Send>;

/// The writer thread's state: the write connection and scratch space reused across writes.
pub(crate) struct Writer {
    /// The write connection.
    pub(crate) conn: Connection,
    /// Reused buffer for JSON, so serialising a state or event allocates nothing per write.
    pub(crate) json: Vec<u8>,
    /// Set when the group's transaction is lost; the remaining jobs fail with it.
    broken: Option<String>,
    /// Rows-ish written in the current group, for pacing checkpoints.
    pub(crate) writes: usize,
    checkpointer: Checkpointer,
}

impl Writer {
    /// Serialises `value` into the scratch buffer and returns it as text.
    pub(crate) fn to_json<'a, T: serde::Serialize + ?Sized>(
        json: &'a mut Vec<u8>,
        value: &T,
    ) -> Result<&'a str, StoreError> {
        json.clear();
        serde_json::to_writer(&mut *json, value)
            .map_err(|e| StoreError::Corrupt(format!("cannot serialise for storage: {e}")))?;
        std::str::from_utf8(json)
            .map_err(|e| StoreError::Corrupt(format!("serialised JSON is not UTF-8: {e}")))
    }

    fn exec(&self, sql: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(sql)
            .map_err(db)?
            .execute([])
            .map_err(db)?;
        Ok(())
    }

    /// Runs one job's work inside a savepoint: on error only that job's writes are undone.
    fn job<T>(
        &mut self,
        work: impl FnOnce(&mut Writer) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(why) = &self.broken {
            return Err(StoreError::Unavailable(why.clone()));
        }
        self.exec("SAVEPOINT job")?;
        self.writes += 1;
        // A panicking job must not take the writer (and with it every later commit) down:
        // it fails alone, its writes undone like any failed job's.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| work(self))).unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "a write job panicked; its writes were undone".into(),
                ))
            });
        let ended = if self.conn.is_autocommit() {
            // Some errors (disk full, I/O) make SQLite roll back the whole transaction.
            Err(StoreError::Unavailable(
                "the write transaction was rolled back by SQLite".into(),
            ))
        } else if result.is_ok() {
            self.exec("RELEASE job")
        } else {
            self.exec("ROLLBACK TO job")
                .and_then(|()| self.exec("RELEASE job"))
        };
        if let Err(e) = ended {
            self.broken = Some(e.to_string());
            return Err(e);
        }
        result
    }

    /// Runs a group of jobs in one transaction and reports to each after it ends.
    fn group(&mut self, jobs: &mut Vec<Job>, completions: &mut Vec<Completion>) {
        self.broken = self
            .exec("BEGIN IMMEDIATE")
            .err()
            .map(|e| format!("cannot begin a write transaction: {e}"));
        for job in jobs.drain(..) {
            completions.push(job(self));
        }
        let failed = match self.broken.take() {
            Some(why) => Some(why),
            None => self
                .exec("COMMIT")
                .err()
                .map(|e| format!("commit failed: {e}")),
        };
        if failed.is_some() && !self.conn.is_autocommit() {
            // Nothing of the group may stay half-applied for the next group to commit.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if failed.is_none() {
            self.checkpointer.wrote(self.writes);
        }
        self.writes = 0;
        for completion in completions.drain(..) {
            completion(failed.as_deref());
        }
    }
}

/// The handle callers send write jobs through. Dropping it stops the thread once the queued
/// jobs are done.
pub(crate) struct WriterHandle {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl WriterHandle {
    /// Starts the writer thread on `conn`, a connection to `path`, and its checkpointer.
    pub(crate) fn spawn(conn: Connection, path: &Path) -> Result<WriterHandle, StoreError> {
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            checkpoint::WRITER_AUTOCHECKPOINT_PAGES,
        )
        .map_err(db)?;
        // A burst can grow the WAL past the valve; shrink the file back when it restarts.
        conn.pragma_update(None, "journal_size_limit", checkpoint::WAL_SIZE_LIMIT_BYTES)
            .map_err(db)?;
        // Savepoints copy each page they first touch to a sub-journal: keep it in memory
        // rather than in a temp file written on the hot path.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(db)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            conn,
            json: Vec::with_capacity(4096),
            broken: None,
            writes: 0,
            checkpointer: Checkpointer::spawn(path)?,
        };
        let thread = std::thread::Builder::new()
            .name("sagaflow-sqlite-writer".into())
            .spawn(move || run(writer, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(WriterHandle {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `work` on the writer thread, in the next group transaction, and returns its
    /// result once that transaction committed.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |writer: &mut Writer| {
            let result = writer.job(work);
            Box::new(move |failed: Option<&str>| {
                let result = match (result, failed) {
                    (Ok(_), Some(why)) => Err(StoreError::Unavailable(why.to_string())),
                    (result, _) => result,
                };
                // The caller may have stopped waiting; its result has nowhere to go.
                let _ = reply.send(result);
            })
        });
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl WriterHandle {
    /// Stops taking jobs and waits for the thread to finish the queued ones (their callers
    /// are waiting for them) and close the write connection.
    pub(crate) fn stop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer thread has stopped".into())
}

fn run(mut writer: Writer, mut rx: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut completions: Vec<Completion> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        writer.group(&mut jobs, &mut completions);
    }
}
