//! Opening connections with the settings every one needs, and the pool of connections that
//! serve reads and participant transactions (the writer thread owns its own).

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sagaflow_core::StoreError;

/// How long a connection waits for the write lock (held by the writer thread or a
/// participant transaction) before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle pooled connections kept open; more are opened under load and closed afterwards.
const MAX_IDLE: usize = 16;

/// Enough cached statements for every fixed query plus the list-filter combinations.
const STATEMENT_CACHE: usize = 96;

/// A database error as the Store port reports it.
pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Opens a connection with the per-connection settings.
///
/// `synchronous=NORMAL` in WAL mode: a commit is in the WAL (the OS page cache) when it
/// returns, so it survives the process being killed (kill -9, panic, OOM); only an OS crash
/// or power loss can lose the last commits, never corrupt the database. That trade buys
/// commits that need no fsync.
pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot open SQLite database {}: {e}",
            path.display()
        ))
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db)?;
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(db)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Switches the database to WAL (a property of the file, kept across opens), so readers
/// never block the writer nor the writer them.
pub(crate) fn enable_wal(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .map_err(db)?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "SQLite database {} cannot use WAL (journal_mode is {mode}); \
             WAL needs a local file system with shared memory",
            path.display()
        )))
    }
}

/// Connections for reads and participant transactions.
pub(crate) struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    /// A pool opening connections to `path`.
    pub(crate) fn new(path: PathBuf) -> Arc<Pool> {
        Arc::new(Pool {
            path,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// An idle connection, or a new one. Blocking: call from a blocking thread.
    pub(crate) fn get(self: &Arc<Self>) -> Result<Pooled, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open(&self.path)?,
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self.clone(),
        })
    }

    /// Closes the idle connections.
    pub(crate) fn close_idle(&self) {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

/// A connection borrowed from the pool; goes back when dropped.
pub(crate) struct Pooled {
    conn: Option<Connection>,
    pool: Arc<Pool>,
}

impl Deref for Pooled {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match &self.conn {
            Some(conn) => conn,
            // `conn` is only taken in `drop`.
            None => unreachable!("a pooled connection is present until dropped"),
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !conn.is_autocommit() {
            // An abandoned participant transaction: roll it back now, because a connection
            // idling in a transaction would hold the write lock and stall every commit.
            if conn.execute_batch("ROLLBACK").is_err() {
                return; // closing the connection rolls back instead
            }
        }
        let mut idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}
