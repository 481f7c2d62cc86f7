//! Group commit: the decisions of many sagas in one transaction, in a fixed number of round
//! trips whatever the batch size (every multi-row write binds arrays and `UNNEST`s them).
//!
//! 1. Lock and read the journal versions of the existing sagas the batch continues.
//! 2. Insert the new sagas with `ON CONFLICT DO NOTHING`: a start whose id or idempotency
//!    key another process took meanwhile loses quietly instead of aborting the batch.
//! 3. Only if some start lost: look up who holds its id or key.
//! 4. Decide each decision's outcome in memory, in batch order.
//! 5. Write journal rows, snapshots, outbox and timer changes of the applied decisions in
//!    one statement, with a NOTIFY when other processes have something to claim.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sagaflow_core::{CommitOutcome, Decision, SagaId, StoreError, TimerChange};
use sqlx::{Postgres, Transaction};

use crate::error::{corrupt_number, is_transient, store_error};
use crate::escape::escape;
use crate::Inner;

/// How often a batch that hit a deadlock or serialization failure runs again.
const RETRIES: usize = 3;

const LOCK_EXISTING: &str = "SELECT saga_id, journal_version FROM sagas
     WHERE saga_id = ANY($1::text[]) ORDER BY saga_id FOR UPDATE";

const INSERT_NEW: &str = "INSERT INTO sagas (saga_id, definition, version, status,
         correlation_key, idempotency_key, journal_version, state, created_at, updated_at, ended_at)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
         $6::text[], $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[])
     ON CONFLICT DO NOTHING
     RETURNING saga_id";

const HOLDERS: &str = "SELECT saga_id, idempotency_key FROM sagas
     WHERE saga_id = ANY($1::text[]) OR idempotency_key = ANY($2::text[])";

// Data-modifying CTEs all see the same snapshot, so no two of them may touch the same row:
// the outbox keys deleted and upserted, and the timers cleared and set, are made disjoint
// before binding.
const WRITE: &str = "WITH
     journal_rows AS (
         INSERT INTO journal (saga_id, seq, at, type, event)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[])
     ),
     snapshots AS (
         UPDATE sagas AS s SET status = u.status, correlation_key = u.correlation_key,
             journal_version = u.journal_version, state = u.state,
             updated_at = u.updated_at, ended_at = u.ended_at
         FROM UNNEST($6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[],
             $11::bigint[], $12::bigint[])
             AS u(saga_id, status, correlation_key, journal_version, state, updated_at, ended_at)
         WHERE s.saga_id = u.saga_id
     ),
     outbox_resolved AS (
         DELETE FROM outbox WHERE key = ANY($13::text[])
     ),
     outbox_added AS (
         INSERT INTO outbox (key, saga_id, topic, body, lease_owner, lease_until)
         SELECT * FROM UNNEST($14::text[], $15::text[], $16::text[], $17::bytea[],
             $18::text[], $19::bigint[])
         ON CONFLICT (key) DO UPDATE SET saga_id = EXCLUDED.saga_id, topic = EXCLUDED.topic,
             body = EXCLUDED.body, lease_owner = EXCLUDED.lease_owner,
             lease_until = EXCLUDED.lease_until
     ),
     timers_cleared AS (
         DELETE FROM timers AS t USING UNNEST($20::text[], $21::text[]) AS u(saga_id, slot)
         WHERE t.saga_id = u.saga_id AND t.slot = u.slot
     ),
     timers_set AS (
         INSERT INTO timers (saga_id, slot, fire_at, kind, lease_owner, lease_until)
         SELECT u.saga_id, u.slot, u.fire_at, u.kind, NULL, NULL
         FROM UNNEST($22::text[], $23::text[], $24::bigint[], $25::text[])
             AS u(saga_id, slot, fire_at, kind)
         ON CONFLICT (saga_id, slot) DO UPDATE SET fire_at = EXCLUDED.fire_at,
             kind = EXCLUDED.kind, lease_owner = NULL, lease_until = NULL
     )
     SELECT pg_notify($26, $27) WHERE $28";

/// Commits a batch; see the module doc.
pub(crate) async fn commit(
    inner: &Inner,
    decisions: Vec<Decision>,
) -> Result<Vec<CommitOutcome>, StoreError> {
    if decisions.is_empty() {
        return Ok(Vec::new());
    }
    // Encoding happens once, outside the retry loop.
    let batch = decisions
        .iter()
        .map(Encoded::new)
        .collect::<Result<Vec<_>, _>>()?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match run(inner, &batch).await {
            Ok(outcomes) => return Ok(outcomes),
            Err(Failure::Sql(e)) if is_transient(&e) && attempt <= RETRIES => {
                tracing::debug!(attempt, error = %e, "group commit rolled back; running it again");
            }
            Err(Failure::Sql(e)) => return Err(store_error(e)),
            Err(Failure::Store(e)) => return Err(e),
        }
    }
}

/// Why one run of the transaction failed: the database (maybe worth a rerun) or our reading
/// of what it returned.
enum Failure {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Sql(e)
    }
}

/// One decision, serialized and numbered.
struct Encoded<'a> {
    decision: &'a Decision,
    expected: i64,
    /// The journal version once applied.
    next: i64,
    /// `(seq, at, type, event json)` of each event.
    events: Vec<(i64, i64, &'static str, String)>,
    state: String,
    version: i64,
    /// `(slot, Some((fire_at, kind json)))` to set, `None` to clear, in order.
    timers: Vec<(&'static str, Option<(i64, String)>)>,
}

impl<'a> Encoded<'a> {
    fn new(decision: &'a Decision) -> Result<Self, StoreError> {
        let expected = i64::try_from(decision.expected_version).map_err(|_| {
            StoreError::Corrupt(format!(
                "saga {}: expected version {} out of range",
                decision.saga_id, decision.expected_version
            ))
        })?;
        let mut events = Vec::with_capacity(decision.events.len());
        let mut seq = expected;
        for entry in &decision.events {
            seq += 1;
            let json =
                serde_json::to_string(&entry.event).map_err(|e| encode_error(decision, e))?;
            events.push((seq, entry.at, entry.event.type_name(), json));
        }
        let state =
            serde_json::to_string(&decision.state).map_err(|e| encode_error(decision, e))?;
        let timers = decision
            .timers
            .iter()
            .map(|change| match change {
                TimerChange::Set {
                    slot,
                    fire_at,
                    kind,
                } => serde_json::to_string(kind)
                    .map(|kind| (slot.as_str(), Some((*fire_at, kind))))
                    .map_err(|e| encode_error(decision, e)),
                TimerChange::Clear { slot } => Ok((slot.as_str(), None)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Encoded {
            decision,
            expected,
            next: seq,
            events,
            state,
            version: i64::from(decision.state.version),
            timers,
        })
    }

    fn id(&self) -> &'a str {
        &self.decision.saga_id.0
    }

    fn is_start(&self) -> bool {
        self.expected == 0
    }
}

fn encode_error(decision: &Decision, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("saga {}: cannot encode: {e}", decision.saga_id))
}

/// One run of the transaction.
async fn run(inner: &Inner, batch: &[Encoded<'_>]) -> Result<Vec<CommitOutcome>, Failure> {
    let mut tx = inner.pool.begin().await?;

    // 1. Existing sagas this batch continues, locked in id order (no deadlock between two
    //    batches that share sagas).
    let continued: BTreeSet<&str> = batch
        .iter()
        .filter(|e| !e.is_start())
        .map(|e| e.id())
        .collect();
    let mut versions: HashMap<&str, i64> = HashMap::new();
    if !continued.is_empty() {
        let ids: Vec<&str> = continued.iter().copied().collect();
        let rows: Vec<(String, i64)> = sqlx::query_as(LOCK_EXISTING)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        for (id, version) in rows {
            if let Some(id) = continued.get(id.as_str()) {
                versions.insert(id, version);
            }
        }
    }

    // 2. New sagas: the first start per id and per key is a candidate.
    let inserted = insert_starts(&mut tx, batch, &versions).await?;

    // 3. Who holds what a losing start wanted.
    let losers: Vec<&Encoded> = batch
        .iter()
        .enumerate()
        .filter(|(i, e)| e.is_start() && !inserted.contains(i) && !versions.contains_key(e.id()))
        .map(|(_, e)| e)
        .collect();
    let holders = if losers.is_empty() {
        Holders::default()
    } else {
        Holders::fetch(&mut tx, &losers).await?
    };

    // 4. Outcomes, in batch order.
    let mut writes = Writes::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut started_keys: HashMap<&str, &str> = HashMap::new();
    for (i, e) in batch.iter().enumerate() {
        let outcome = if e.is_start() {
            if inserted.contains(&i) {
                if let Some(key) = &e.decision.idempotency_key {
                    started_keys.insert(key, e.id());
                }
                writes.inserted.insert(e.id(), i);
                CommitOutcome::Applied
            } else {
                holders.refuse_start(e, &versions, &started_keys)
            }
        } else {
            let actual = versions.get(e.id()).copied().unwrap_or(0);
            if actual == e.expected {
                CommitOutcome::Applied
            } else {
                CommitOutcome::Conflict {
                    actual_version: u64::try_from(actual)
                        .map_err(|_| Failure::Store(corrupt_number("journal_version", actual)))?,
                }
            }
        };
        if outcome == CommitOutcome::Applied {
            versions.insert(e.id(), e.next);
            writes.add(i, e);
        }
        outcomes.push(outcome);
    }

    // 5. Everything else, in one statement.
    writes.execute(&mut tx, batch, inner).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// Inserts the candidate starts; returns the indexes of those inserted.
async fn insert_starts(
    tx: &mut Transaction<'static, Postgres>,
    batch: &[Encoded<'_>],
    versions: &HashMap<&str, i64>,
) -> Result<HashSet<usize>, sqlx::Error> {
    let mut ids_seen = HashSet::new();
    let mut keys_seen = HashSet::new();
    let mut candidates: Vec<usize> = Vec::new();
    for (i, e) in batch.iter().enumerate() {
        if !e.is_start() || versions.contains_key(e.id()) || !ids_seen.insert(e.id()) {
            continue;
        }
        if let Some(key) = &e.decision.idempotency_key {
            if !keys_seen.insert(key.as_str()) {
                continue;
            }
        }
        candidates.push(i);
    }
    if candidates.is_empty() {
        return Ok(HashSet::new());
    }
    // Two batches starting sagas with the same keys insert them in the same order, so they
    // queue behind each other instead of deadlocking.
    candidates.sort_by(|a, b| {
        let (a, b) = (&batch[*a], &batch[*b]);
        (&a.decision.idempotency_key, a.id()).cmp(&(&b.decision.idempotency_key, b.id()))
    });
    let mut cols = StartColumns::default();
    for i in &candidates {
        cols.push(&batch[*i]);
    }
    let won: Vec<String> = sqlx::query_scalar(INSERT_NEW)
        .bind(&cols.id)
        .bind(&cols.definition)
        .bind(&cols.version)
        .bind(&cols.status)
        .bind(&cols.correlation_key)
        .bind(&cols.idempotency_key)
        .bind(&cols.journal_version)
        .bind(&cols.state)
        .bind(&cols.created_at)
        .bind(&cols.updated_at)
        .bind(&cols.ended_at)
        .fetch_all(&mut **tx)
        .await?;
    let won: HashSet<&str> = won.iter().map(String::as_str).collect();
    Ok(candidates
        .into_iter()
        .filter(|i| won.contains(batch[*i].id()))
        .collect())
}

/// Column arrays for inserting new sagas.
#[derive(Default)]
struct StartColumns<'a> {
    id: Vec<&'a str>,
    definition: Vec<&'a str>,
    version: Vec<i64>,
    status: Vec<&'static str>,
    correlation_key: Vec<Option<Cow<'a, str>>>,
    idempotency_key: Vec<Option<Cow<'a, str>>>,
    journal_version: Vec<i64>,
    state: Vec<&'a str>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
    ended_at: Vec<Option<i64>>,
}

impl<'a> StartColumns<'a> {
    fn push(&mut self, e: &'a Encoded<'a>) {
        let s = &e.decision.state;
        self.id.push(e.id());
        self.definition.push(&s.definition);
        self.version.push(e.version);
        self.status.push(s.status.as_str());
        self.correlation_key
            .push(s.correlation_key.as_deref().map(escape));
        self.idempotency_key
            .push(e.decision.idempotency_key.as_deref().map(escape));
        self.journal_version.push(e.next);
        self.state.push(&e.state);
        self.created_at.push(s.created_at);
        self.updated_at.push(s.updated_at);
        self.ended_at.push(s.ended_at);
    }
}

/// Sagas holding the ids or idempotency keys that losing starts wanted.
#[derive(Default)]
struct Holders {
    ids: HashSet<String>,
    /// By stored (escaped) key.
    keys: HashMap<String, String>,
}

impl Holders {
    async fn fetch(
        tx: &mut Transaction<'static, Postgres>,
        losers: &[&Encoded<'_>],
    ) -> Result<Self, sqlx::Error> {
        let ids: Vec<&str> = losers.iter().map(|e| e.id()).collect();
        let keys: Vec<Cow<str>> = losers
            .iter()
            .filter_map(|e| e.decision.idempotency_key.as_deref().map(escape))
            .collect();
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(HOLDERS)
            .bind(&ids)
            .bind(&keys)
            .fetch_all(&mut **tx)
            .await?;
        let mut holders = Holders::default();
        for (id, key) in rows {
            if let Some(key) = key {
                holders.keys.insert(key, id.clone());
            }
            holders.ids.insert(id);
        }
        Ok(holders)
    }

    /// The outcome of a start that was not inserted.
    fn refuse_start(
        &self,
        e: &Encoded<'_>,
        versions: &HashMap<&str, i64>,
        started_keys: &HashMap<&str, &str>,
    ) -> CommitOutcome {
        if versions.contains_key(e.id()) || self.ids.contains(e.id()) {
            return CommitOutcome::DuplicateStart {
                existing: e.decision.saga_id.clone(),
            };
        }
        let holder = e.decision.idempotency_key.as_deref().and_then(|key| {
            started_keys
                .get(key)
                .map(|id| id.to_string())
                .or_else(|| self.keys.get(escape(key).as_ref()).cloned())
        });
        match holder {
            Some(id) => CommitOutcome::DuplicateStart {
                existing: SagaId(id),
            },
            // A conflicting row always exists once ON CONFLICT skipped ours; if it somehow
            // vanished, the engine reloads and decides again.
            None => CommitOutcome::Conflict { actual_version: 0 },
        }
    }
}

/// The net writes of the applied decisions.
#[derive(Default)]
struct Writes<'a> {
    journal: Vec<usize>,
    /// The last applied decision of each saga, whose state becomes the snapshot.
    snapshot: BTreeMap<&'a str, usize>,
    /// The decision that inserted each new saga's row (with its state already).
    inserted: HashMap<&'a str, usize>,
    outbox_added: BTreeMap<&'a str, usize>,
    outbox_resolved: BTreeSet<&'a str>,
    timers: BTreeMap<(&'a str, &'static str), Option<(i64, &'a str)>>,
}

impl<'a> Writes<'a> {
    fn add(&mut self, i: usize, e: &'a Encoded<'a>) {
        self.journal.push(i);
        self.snapshot.insert(e.id(), i);
        // Later decisions win, and an upserted key is not also deleted: the CTEs of one
        // statement must not touch the same row twice.
        for row in &e.decision.outbox {
            self.outbox_resolved.remove(row.key.as_str());
            self.outbox_added.insert(&row.key, i);
        }
        for key in &e.decision.resolved {
            self.outbox_added.remove(key.as_str());
            self.outbox_resolved.insert(key);
        }
        for (slot, set) in &e.timers {
            let set = set.as_ref().map(|(at, kind)| (*at, kind.as_str()));
            self.timers.insert((e.id(), slot), set);
        }
    }

    async fn execute(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        batch: &'a [Encoded<'a>],
        inner: &Inner,
    ) -> Result<(), sqlx::Error> {
        let mut journal = (vec![], vec![], vec![], vec![], vec![]);
        for e in self.journal.iter().map(|i| &batch[*i]) {
            for (seq, at, kind, event) in &e.events {
                journal.0.push(e.id());
                journal.1.push(*seq);
                journal.2.push(*at);
                journal.3.push(*kind);
                journal.4.push(event.as_str());
            }
        }
        let mut snap = (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for (id, i) in &self.snapshot {
            if self.inserted.get(id) == Some(i) {
                continue;
            }
            let e = &batch[*i];
            let s = &e.decision.state;
            snap.0.push(*id);
            snap.1.push(s.status.as_str());
            snap.2.push(s.correlation_key.as_deref().map(escape));
            snap.3.push(e.next);
            snap.4.push(e.state.as_str());
            snap.5.push(s.updated_at);
            snap.6.push(s.ended_at);
        }
        let resolved: Vec<&str> = self.outbox_resolved.iter().copied().collect();
        let mut outbox = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (key, i) in &self.outbox_added {
            if let Some(row) = batch[*i].decision.outbox.iter().rfind(|r| r.key == *key) {
                outbox.0.push(row.key.as_str());
                outbox.1.push(row.saga_id.0.as_str());
                outbox.2.push(row.topic.as_str());
                outbox.3.push(row.body.as_slice());
                outbox.4.push(row.lease_owner.as_str());
                outbox.5.push(row.lease_until);
            }
        }
        let mut cleared = (vec![], vec![]);
        let mut set = (vec![], vec![], vec![], vec![]);
        for ((id, slot), change) in &self.timers {
            match change {
                None => {
                    cleared.0.push(*id);
                    cleared.1.push(*slot);
                }
                Some((fire_at, kind)) => {
                    set.0.push(*id);
                    set.1.push(*slot);
                    set.2.push(*fire_at);
                    set.3.push(*kind);
                }
            }
        }
        let notify = !outbox.0.is_empty() || !set.0.is_empty();
        sqlx::query(WRITE)
            .bind(&journal.0)
            .bind(&journal.1)
            .bind(&journal.2)
            .bind(&journal.3)
            .bind(&journal.4)
            .bind(&snap.0)
            .bind(&snap.1)
            .bind(&snap.2)
            .bind(&snap.3)
            .bind(&snap.4)
            .bind(&snap.5)
            .bind(&snap.6)
            .bind(&resolved)
            .bind(&outbox.0)
            .bind(&outbox.1)
            .bind(&outbox.2)
            .bind(&outbox.3)
            .bind(&outbox.4)
            .bind(&outbox.5)
            .bind(&cleared.0)
            .bind(&cleared.1)
            .bind(&set.0)
            .bind(&set.1)
            .bind(&set.2)
            .bind(&set.3)
            .bind(&inner.channel)
            .bind(&inner.instance)
            .bind(notify)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}
