//! The checkpointer: copies committed pages from the WAL back into the database file on its
//! own thread and connection, so the writer thread (the serial bottleneck) does not.
//!
//! SQLite's default is for the committing connection to checkpoint once the WAL passes 1000
//! pages — page writes plus an fsync on the hot path, about a tenth of the writer's time
//! under load. Here the writer only nudges this thread every so often. A PASSIVE checkpoint
//! runs alongside writes and readers without blocking them. The writer keeps a much higher
//! auto-checkpoint as a safety valve: should this thread fall behind, the WAL still stops
//! growing there (and the writer's checkpoint is cheap, most pages already copied).

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use rusqlite::Connection;
use sagaflow_core::StoreError;

use crate::connection::{self, db};

/// WAL pages at which the writer checkpoints itself (16 MiB of 4 KiB pages).
pub(crate) const WRITER_AUTOCHECKPOINT_PAGES: i64 = 4096;

/// The WAL file is truncated to this size when it restarts (it is otherwise never shrunk).
pub(crate) const WAL_SIZE_LIMIT_BYTES: i64 = 64 << 20;

/// Writes (decisions, claims, …) between nudges to the checkpointer.
const WRITES_PER_CHECKPOINT: usize = 1000;

/// The writer's side: counts writes and nudges the checkpointer.
pub(crate) struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    writes: usize,
}

impl Checkpointer {
    /// Starts the checkpointer thread on its own connection to `path`.
    pub(crate) fn spawn(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = connection::open(path)?;
        // This connection only checkpoints; it must never checkpoint on its own schedule.
        conn.pragma_update(None, "wal_autocheckpoint", 0i64)
            .map_err(db)?;
        // One pending nudge is enough: a checkpoint copies everything committed so far.
        let (nudge, nudged) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("sagaflow-sqlite-checkpoint".into())
            .spawn(move || run(conn, nudged))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}"))
            })?;
        Ok(Checkpointer {
            nudge: Some(nudge),
            thread: Some(thread),
            writes: 0,
        })
    }

    /// Records that a group committed `writes` writes; nudges the thread when enough piled up.
    pub(crate) fn wrote(&mut self, writes: usize) {
        self.writes += writes;
        if self.writes < WRITES_PER_CHECKPOINT {
            return;
        }
        self.writes = 0;
        if let Some(nudge) = &self.nudge {
            match nudge.try_send(()) {
                // Full: a checkpoint is already due, and it will copy these pages too.
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => self.nudge = None,
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.nudge = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: Connection, nudged: Receiver<()>) {
    while nudged.recv().is_ok() {
        // PASSIVE never waits for readers or the writer; what it cannot copy now, the next
        // nudge (or the writer's safety valve) will. A failure here loses nothing.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "background WAL checkpoint failed");
        }
    }
}
