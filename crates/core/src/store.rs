//! The Store port: where journals, snapshots, the outbox, timers, inboxes and dead letters
//! live. One decision is one transaction; many decisions may share one (group commit).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::clock::Millis;
use crate::definition::Definition;
use crate::effects::{TimerChange, TimerSlot};
use crate::event::JournalEntry;
use crate::input::TimerKind;
use crate::state::{SagaId, SagaState, Status};

/// A store failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the operation; trying again may help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (a bug or a foreign write).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A participant's SQL was refused.
    #[error("query failed: {0}")]
    Query(String),
    /// A participant's SQL broke a constraint of its tables (a check, a unique key, a foreign
    /// key, a trigger's refusal): the data says no, and trying again the same way will not
    /// help — a handler may treat it as a business answer.
    #[error("constraint refused the change: {0}")]
    Constraint(String),
    /// The caller's input was refused and nothing was written (a definition that clashes
    /// with the one stored under its name and version, …). Trying again the same way fails
    /// the same way; the message says what to change.
    #[error("{0}")]
    Invalid(String),
}

/// A definition as stores keep it: validated, then serialised to JSON.
///
/// Validated here rather than trusted, because every engine sharing the database loads what
/// is stored when it starts: a definition that cannot run must be refused to the caller who
/// registers it, not to every later restart.
pub fn definition_json(def: &Definition) -> Result<String, StoreError> {
    def.validate()
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    serde_json::to_string(def).map_err(|e| {
        StoreError::Invalid(format!(
            "definition {} v{} cannot be serialised: {e}",
            def.name, def.version
        ))
    })
}

/// Reads back the definition stored under `(name, version)`; a body that no longer parses,
/// or that names another definition than its row, is corrupt.
pub fn parse_stored_definition(
    name: &str,
    version: i64,
    body: &str,
) -> Result<Definition, StoreError> {
    let def: Definition = serde_json::from_str(body).map_err(|e| {
        StoreError::Corrupt(format!(
            "stored definition {name} v{version} is unreadable: {e}"
        ))
    })?;
    if def.name != name || i64::from(def.version) != version {
        return Err(StoreError::Corrupt(format!(
            "the definition stored as {name} v{version} says it is {} v{}",
            def.name, def.version
        )));
    }
    Ok(def)
}

/// Decides a save that found `(name, version)` already stored: the same definition is a
/// no-op, a different one is refused. `new_body` is [`definition_json`] of the definition
/// being saved.
///
/// Compared by parsed value, not text: JSON from another build may order or space fields
/// differently and still be the same definition. Both sides are parsed from JSON so that a
/// float is compared as it will be read back, not as it was before serialising.
pub fn check_same_definition(
    name: &str,
    version: i64,
    new_body: &str,
    stored_body: &str,
) -> Result<(), StoreError> {
    let stored = parse_stored_definition(name, version, stored_body)?;
    let new = parse_stored_definition(name, version, new_body)?;
    if stored == new {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "definition {name} v{version} is already stored with different steps: \
             register a new version instead"
        )))
    }
}

/// Everything one decision writes, atomically.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The saga.
    pub saga_id: SagaId,
    /// The journal length the decision was made on (0 for a new saga). If the stored journal
    /// is longer, the decision is refused as a conflict and nothing of it is written.
    pub expected_version: u64,
    /// Events to append, numbered from `expected_version + 1`.
    pub events: Vec<JournalEntry>,
    /// The snapshot after the events.
    pub state: SagaState,
    /// Commands to put in the outbox.
    pub outbox: Vec<OutboxRow>,
    /// Outbox keys to delete: their attempts no longer wait for a reply.
    pub resolved: Vec<String>,
    /// Timer changes.
    pub timers: Vec<TimerChange>,
    /// For a new saga: its start idempotency key, unique across sagas.
    pub idempotency_key: Option<String>,
}

/// What happened to one decision in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Written.
    Applied,
    /// The journal moved on; nothing written. Reload and decide again.
    Conflict {
        /// The stored journal length.
        actual_version: u64,
    },
    /// A new saga whose idempotency key (or id) is taken; nothing written.
    DuplicateStart {
        /// The saga that has it.
        existing: SagaId,
    },
}

/// A command waiting in the outbox until its attempt is resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// The attempt's idempotency key; unique.
    pub key: String,
    /// The saga.
    pub saga_id: SagaId,
    /// Where to publish it.
    pub topic: String,
    /// The envelope, as JSON.
    pub body: Vec<u8>,
    /// Nobody else publishes it before this time (the committing engine publishes it itself).
    pub lease_until: Millis,
    /// Who holds the lease.
    pub lease_owner: String,
}

/// A timer due to fire.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerRow {
    /// The saga.
    pub saga_id: SagaId,
    /// Which slot.
    pub slot: TimerSlot,
    /// When it was due.
    pub fire_at: Millis,
    /// What it means.
    pub kind: TimerKind,
}

/// A filter for listing sagas, newest first.
#[derive(Debug, Clone, Default)]
pub struct SagaFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this definition.
    pub definition: Option<String>,
    /// Only this correlation key value.
    pub correlation_key: Option<String>,
    /// Created at or after.
    pub created_after: Option<Millis>,
    /// Created before.
    pub created_before: Option<Millis>,
    /// Keyset cursor: only sagas strictly older than this `(created_at, saga_id)`.
    pub before: Option<(Millis, SagaId)>,
    /// At most this many (0 means 100).
    pub limit: usize,
}

/// A message that could not be processed, kept with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id in the store.
    pub id: i64,
    /// The topic it came from (and is replayed to).
    pub topic: String,
    /// The raw body, possibly not even JSON.
    pub body: Vec<u8>,
    /// Why it is here.
    pub reason: String,
    /// Delivery attempts before it was given up.
    pub attempts: u32,
    /// When.
    pub created_at: Millis,
}

/// Gauges for metrics, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Unfinished and finished sagas by definition name and status.
    pub sagas: Vec<(String, Status, u64)>,
    /// How long the oldest outbox row whose lease has expired has been due (ms, 0 if none).
    pub outbox_lag_ms: i64,
    /// Outbox rows in all.
    pub outbox_rows: u64,
    /// How long the oldest due, claimable timer has been due (ms, 0 if none).
    pub timer_lag_ms: i64,
    /// Dead letters kept.
    pub dead_letters: u64,
}

/// A value bound to, or read from, participant SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// An integer (booleans are 0 and 1).
    Integer(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
}

impl SqlValue {
    /// The integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SqlValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The text, if it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Integer(v)
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_string())
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}

/// A participant's own transaction: its effects and its inbox commit together, so a
/// redelivered command has no second effect. SQL uses `$1, $2, …` placeholders on every
/// store; keep to SQL both SQLite and PostgreSQL accept.
#[async_trait]
pub trait ParticipantTx: Send {
    /// Runs a statement; returns the rows changed.
    async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError>;
    /// Runs a query; returns its rows.
    async fn query(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Vec<SqlValue>>, StoreError>;
    /// The reply recorded for this consumer and idempotency key, if it was handled before.
    async fn inbox_get(&mut self, consumer: &str, key: &str)
        -> Result<Option<Vec<u8>>, StoreError>;
    /// Records the reply for this consumer and key.
    async fn inbox_put(
        &mut self,
        consumer: &str,
        key: &str,
        reply: &[u8],
    ) -> Result<(), StoreError>;
    /// Commits. An inbox key recorded meanwhile by a concurrent delivery of the same command
    /// makes this fail; the caller then reads the recorded reply.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// Abandons everything.
    async fn rollback(self: Box<Self>) -> Result<(), StoreError>;
}

/// The Store port.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Commits decisions in one transaction where possible (group commit). Each gets its own
    /// outcome; a conflicting decision writes nothing while the others are written.
    async fn commit(&self, decisions: Vec<Decision>) -> Result<Vec<CommitOutcome>, StoreError>;

    /// The snapshots of these sagas (the ones that exist, in any order).
    async fn load(&self, ids: &[SagaId]) -> Result<Vec<SagaState>, StoreError>;

    /// One saga's journal, in order.
    async fn journal(&self, id: &SagaId) -> Result<Vec<JournalEntry>, StoreError>;

    /// The saga started with this idempotency key, if any.
    async fn saga_by_idempotency_key(&self, key: &str) -> Result<Option<SagaId>, StoreError>;

    /// Sagas matching the filter, newest first.
    async fn list(&self, filter: &SagaFilter) -> Result<Vec<SagaState>, StoreError>;

    /// Unfinished sagas (not Completed/Compensated/Failed) grouped by definition and version.
    async fn versions_in_flight(&self) -> Result<Vec<(String, u32, u64)>, StoreError>;

    /// Unfinished sagas (running, waiting, compensating) not changed since before
    /// `updated_before`, the longest untouched first, at most `limit` (the stuck ones).
    async fn stale(
        &self,
        updated_before: Millis,
        limit: usize,
    ) -> Result<Vec<SagaState>, StoreError>;

    /// Sagas started and ended in each window of `bucket_ms` from `since` on:
    /// `(window start, started, ended)`, oldest first, windows with neither left out.
    async fn activity(
        &self,
        since: Millis,
        bucket_ms: i64,
    ) -> Result<Vec<(Millis, u64, u64)>, StoreError>;

    /// Waiting sagas whose correlation key has this value.
    async fn waiting_by_correlation(&self, key: &str) -> Result<Vec<SagaId>, StoreError>;

    /// Claims up to `limit` timers due at `now` whose lease is free or expired, leasing them to
    /// `owner` until `now + lease_ms`. The decision that handles a timer removes or replaces it.
    async fn claim_timers(
        &self,
        now: Millis,
        owner: &str,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<TimerRow>, StoreError>;

    /// When the earliest timer can be claimed, if any (for a leased timer: when its lease ends).
    async fn next_timer_at(&self) -> Result<Option<Millis>, StoreError>;

    /// Claims up to `limit` outbox rows whose lease expired at `now` (their publisher may have
    /// died, or the reply got lost), leasing them to `owner` until `now + lease_ms`.
    async fn claim_outbox(
        &self,
        now: Millis,
        owner: &str,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError>;

    /// Keeps a message that could not be processed.
    async fn put_dead_letter(
        &self,
        topic: &str,
        body: &[u8],
        reason: &str,
        attempts: u32,
        at: Millis,
    ) -> Result<i64, StoreError>;

    /// Dead letters with an id above `after` (0: from the first), oldest first, at most
    /// `limit`: a page, the next one after the last id seen.
    async fn dead_letters(&self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Removes a dead letter and returns it (to replay or discard it).
    async fn take_dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StoreError>;

    /// Keeps `def` under its `(name, version)`, so it survives restarts and every engine
    /// sharing the database knows it. Saving an equal definition again is a no-op; a
    /// different one under a taken name and version is refused with
    /// [`StoreError::Invalid`] (sagas in flight may run on the stored one), as is one that
    /// does not validate. Of concurrent saves of one new `(name, version)`, exactly one
    /// content is stored.
    async fn save_definition(&self, def: &Definition) -> Result<(), StoreError>;

    /// Every stored definition, ordered by name (bytewise), then version.
    async fn definitions(&self) -> Result<Vec<Definition>, StoreError>;

    /// Gauges for the metrics endpoint, read from one consistent snapshot:
    ///
    /// - `sagas`: how many sagas there are of each definition (every version together) in
    ///   each status, ends included; only pairs with at least one saga, ordered by
    ///   definition name (bytewise), then status name.
    /// - `outbox_lag_ms`: `now` minus the `lease_until` of the outbox row whose lease ended
    ///   first, among rows whose lease has ended by `now` (those [`Store::claim_outbox`]
    ///   would hand out): how long the oldest unanswered command has waited to be
    ///   re-published. 0 when there is none.
    /// - `outbox_rows`: every outbox row, leased or not (commands awaiting their reply).
    /// - `timer_lag_ms`: `now` minus the earliest time a timer became claimable, among
    ///   timers [`Store::claim_timers`] would hand out at `now`: due and unleased, or due
    ///   with an expired lease. A timer becomes claimable at the later of its `fire_at`
    ///   and its `lease_until`. 0 when there is none.
    /// - `dead_letters`: dead letters kept (not yet taken).
    ///
    /// Lags are never negative. `now` is the caller's clock, like the claims'.
    async fn stats(&self, now: Millis) -> Result<StoreStats, StoreError>;

    /// Begins a participant transaction on this database.
    async fn begin(&self) -> Result<Box<dyn ParticipantTx>, StoreError>;

    /// Resolves when another process may have committed timers or outbox rows (PostgreSQL:
    /// LISTEN/NOTIFY). Stores with a single process never resolve it; the engine also wakes
    /// itself for its own commits and for due timers.
    async fn wakeup(&self) {
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Step;

    fn order(retry_attempts: u32) -> Definition {
        Definition::builder("order", 1)
            .step(
                Step::compensatable("reserve", "stock.reserve", "stock.release").retry(
                    crate::retry::RetryPolicy {
                        jitter: 0.1,
                        ..crate::retry::RetryPolicy::attempts(retry_attempts, 100)
                    },
                ),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn stored_definitions_compare_by_value_not_text() {
        let def = order(3);
        let body = definition_json(&def).unwrap();
        // The same definition written by another serialiser: other field order and spacing.
        let mut reordered: serde_json::Value = serde_json::from_str(&body).unwrap();
        let steps = reordered["steps"].take();
        let other = serde_json::json!({ "steps": steps, "version": 1, "name": "order" });
        let other = serde_json::to_string_pretty(&other).unwrap();
        assert_ne!(other, body);
        check_same_definition("order", 1, &body, &other).unwrap();
        let changed = definition_json(&order(4)).unwrap();
        let e = check_same_definition("order", 1, &changed, &body).unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "definition order v1 is already stored with different steps: \
             register a new version instead"
        );
    }

    #[test]
    fn unreadable_or_misfiled_rows_are_corrupt_and_invalid_definitions_are_refused() {
        let body = definition_json(&order(3)).unwrap();
        let e = parse_stored_definition("order", 2, &body).unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt(m) if m.contains("order v2")),
            "{e:?}"
        );
        let e = parse_stored_definition("order", 1, "{not json").unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt(m) if m.contains("order v1")),
            "{e:?}"
        );
        let mut bad = order(3);
        bad.version = 0;
        assert!(matches!(definition_json(&bad), Err(StoreError::Invalid(_))));
    }
}
