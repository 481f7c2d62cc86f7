//! The flow journal: what happened to a choreographed flow, by correlation id — each event
//! emitted, each handling (succeeded, failed and to be retried, dead-lettered, compensated,
//! a duplicate ignored) — so a flow nobody orchestrates can still be followed as one
//! timeline (`Engine::flow`, `GET /api/v1/flows/{correlation_id}`).
//!
//! Its rows are written by the subscriber SDK and by [`crate::emit`] in the same transaction
//! as what they record, in the tables of the choreography schema (see [`prepare`]).

use std::sync::Arc;

use sagaflow_core::{ParticipantTx, SqlValue, Store, StoreError};
use serde::Serialize;

/// The choreography tables, in the database every service shares: the event outbox, the
/// subscribers' persisted retries, and the flow journal. Written in portable SQL.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sagaflow_event_outbox (message_id TEXT PRIMARY KEY, topic TEXT NOT NULL, body TEXT NOT NULL, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sagaflow_event_retries (service TEXT NOT NULL, message_id TEXT NOT NULL, topic TEXT NOT NULL, body TEXT NOT NULL, attempts BIGINT NOT NULL, next_at BIGINT NOT NULL, last_error TEXT NOT NULL, PRIMARY KEY (service, message_id))",
    "CREATE TABLE IF NOT EXISTS sagaflow_flow_events (id TEXT PRIMARY KEY, correlation_id TEXT NOT NULL, at BIGINT NOT NULL, service TEXT NOT NULL, event TEXT NOT NULL, message_id TEXT NOT NULL, causation_id TEXT, outcome TEXT NOT NULL, attempt BIGINT NOT NULL, detail TEXT)",
    "CREATE INDEX IF NOT EXISTS sagaflow_flow_events_by_correlation ON sagaflow_flow_events (correlation_id, at)",
];

/// Creates the choreography tables if they are missing (several processes may race to).
pub async fn prepare(store: &Arc<dyn Store>) -> Result<(), StoreError> {
    for sql in SCHEMA {
        let mut last = None;
        for _ in 0..5 {
            let mut tx = store.begin().await?;
            match tx.execute(sql, &[]).await {
                Ok(_) => match tx.commit().await {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                },
                Err(e) => {
                    let _ = tx.rollback().await;
                    last = Some(e);
                }
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
    }
    Ok(())
}

/// One thing that happened in a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowEntry {
    /// When (milliseconds since the epoch).
    pub at: i64,
    /// The service that emitted or handled the event.
    pub service: String,
    /// The event's name.
    pub event: String,
    /// The event's message id.
    pub message_id: String,
    /// The message that caused it.
    pub causation_id: Option<String>,
    /// `emitted`, `handled`, `failed` (to be retried), `dead_lettered`, `compensated`,
    /// `duplicate`.
    pub outcome: String,
    /// Which attempt of the handler (0 for an emission).
    pub attempt: i64,
    /// The error, or the retry time, or what a compensation did.
    pub detail: Option<String>,
}

/// What to record.
pub(crate) struct Record<'a> {
    pub correlation_id: &'a str,
    pub service: &'a str,
    pub event: &'a str,
    pub message_id: &'a str,
    pub causation_id: Option<&'a str>,
    pub outcome: &'a str,
    pub attempt: u32,
    pub detail: Option<String>,
}

/// Records an entry in `tx`.
pub(crate) async fn record(tx: &mut dyn ParticipantTx, r: Record<'_>) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sagaflow_flow_events (id, correlation_id, at, service, event, message_id, causation_id, outcome, attempt, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            uuid::Uuid::now_v7().to_string().into(),
            r.correlation_id.into(),
            now_ms().into(),
            r.service.into(),
            r.event.into(),
            r.message_id.into(),
            r.causation_id.map(Into::into).unwrap_or(SqlValue::Null),
            r.outcome.into(),
            i64::from(r.attempt).into(),
            r.detail.map(Into::into).unwrap_or(SqlValue::Null),
        ],
    )
    .await
    .map(|_| ())
}

/// Rows of a read of the flow journal; the tables are made first when the read finds them
/// missing (a database no subscriber has used yet). Not made on every read: on PostgreSQL
/// even `CREATE … IF NOT EXISTS` takes locks that would queue behind busy handlers.
async fn read(
    store: &Arc<dyn Store>,
    sql: &str,
    params: &[SqlValue],
) -> Result<Vec<Vec<SqlValue>>, StoreError> {
    let once = || async {
        let mut tx = store.begin().await?;
        let rows = tx.query(sql, params).await;
        let _ = tx.rollback().await;
        rows
    };
    match once().await {
        Ok(rows) => Ok(rows),
        Err(StoreError::Unavailable(e)) => Err(StoreError::Unavailable(e)),
        Err(_) => {
            prepare(store).await?;
            once().await
        }
    }
}

/// Most entries [`entries`] returns.
pub const MAX_ENTRIES: usize = 10_000;

/// A flow's entries, oldest first (its first [`MAX_ENTRIES`]).
pub async fn entries(
    store: &Arc<dyn Store>,
    correlation_id: &str,
) -> Result<Vec<FlowEntry>, StoreError> {
    entries_page(store, correlation_id, 0, MAX_ENTRIES).await
}

/// A page of a flow's entries, oldest first: at most `limit`, after skipping `offset`.
pub async fn entries_page(
    store: &Arc<dyn Store>,
    correlation_id: &str,
    offset: u64,
    limit: usize,
) -> Result<Vec<FlowEntry>, StoreError> {
    let rows = read(
        store,
        "SELECT at, service, event, message_id, causation_id, outcome, attempt, detail FROM sagaflow_flow_events WHERE correlation_id = $1 ORDER BY at, id LIMIT $2 OFFSET $3",
        &[
            correlation_id.into(),
            SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
            SqlValue::Integer(i64::try_from(offset).unwrap_or(i64::MAX)),
        ],
    )
    .await;
    let text =
        |row: &[SqlValue], i: usize| row.get(i).and_then(SqlValue::as_str).map(str::to_string);
    Ok(rows?
        .iter()
        .map(|row| FlowEntry {
            at: row.first().and_then(SqlValue::as_i64).unwrap_or(0),
            service: text(row, 1).unwrap_or_default(),
            event: text(row, 2).unwrap_or_default(),
            message_id: text(row, 3).unwrap_or_default(),
            causation_id: text(row, 4),
            outcome: text(row, 5).unwrap_or_default(),
            attempt: row.get(6).and_then(SqlValue::as_i64).unwrap_or(0),
            detail: text(row, 7),
        })
        .collect())
}

/// A flow in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowSummary {
    /// Its correlation id.
    pub correlation_id: String,
    /// When it began.
    pub started_at: i64,
    /// When something last happened in it.
    pub last_at: i64,
    /// Entries recorded.
    pub entries: i64,
    /// Whether anything in it was dead-lettered.
    pub dead_lettered: bool,
}

/// The flows with the most recent activity first.
pub async fn recent(store: &Arc<dyn Store>, limit: usize) -> Result<Vec<FlowSummary>, StoreError> {
    let rows = read(
        store,
        "SELECT correlation_id, MIN(at), MAX(at), COUNT(*), SUM(CASE WHEN outcome = 'dead_lettered' THEN 1 ELSE 0 END) \
         FROM sagaflow_flow_events GROUP BY correlation_id ORDER BY MAX(at) DESC LIMIT $1",
        &[(limit.min(1000) as i64).into()],
    )
    .await;
    let int = |row: &[SqlValue], i: usize| row.get(i).and_then(SqlValue::as_i64).unwrap_or(0);
    Ok(rows?
        .iter()
        .map(|row| FlowSummary {
            correlation_id: row
                .first()
                .and_then(SqlValue::as_str)
                .unwrap_or_default()
                .to_string(),
            started_at: int(row, 1),
            last_at: int(row, 2),
            entries: int(row, 3),
            dead_lettered: int(row, 4) > 0,
        })
        .collect())
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
