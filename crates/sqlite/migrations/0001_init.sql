-- sagaflow on SQLite, schema version 1.

-- One row per saga: the snapshot (a fold of its journal) plus the columns lists filter on.
CREATE TABLE sagas (
    saga_id         TEXT    NOT NULL PRIMARY KEY,
    definition      TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    correlation_key TEXT,
    idempotency_key TEXT    UNIQUE,
    -- The journal length: the optimistic concurrency check compares against it.
    journal_version INTEGER NOT NULL,
    -- The SagaState as JSON.
    state           TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    ended_at        INTEGER
);
-- Listing is newest first with a (created_at, saga_id) keyset cursor; each filter has an
-- index in that order so a page is an index range scan, not a sort.
CREATE INDEX sagas_by_created ON sagas (created_at DESC, saga_id DESC);
CREATE INDEX sagas_by_status ON sagas (status, created_at DESC, saga_id DESC);
CREATE INDEX sagas_by_definition ON sagas (definition, created_at DESC, saga_id DESC);
CREATE INDEX sagas_by_correlation ON sagas (correlation_key, created_at DESC, saga_id DESC)
    WHERE correlation_key IS NOT NULL;

-- Every event, in order. WITHOUT ROWID: the primary key is the only access path, so one
-- B-tree write per event instead of two.
CREATE TABLE journal (
    saga_id TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    type    TEXT    NOT NULL,
    event   TEXT    NOT NULL,
    PRIMARY KEY (saga_id, seq)
) WITHOUT ROWID;

-- Commands waiting for their attempt to be resolved; re-published when the lease expires.
CREATE TABLE outbox (
    key         TEXT    NOT NULL PRIMARY KEY,
    saga_id     TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    lease_owner TEXT    NOT NULL,
    lease_until INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX outbox_by_lease ON outbox (lease_until);

-- At most one timer per saga and slot (`step`, `deadline`). A NULL lease means unclaimed.
CREATE TABLE timers (
    saga_id     TEXT    NOT NULL,
    slot        TEXT    NOT NULL,
    fire_at     INTEGER NOT NULL,
    -- The TimerKind as JSON.
    kind        TEXT    NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    PRIMARY KEY (saga_id, slot)
) WITHOUT ROWID;
CREATE INDEX timers_by_fire_at ON timers (fire_at);
CREATE INDEX timers_by_lease ON timers (lease_until) WHERE lease_until IS NOT NULL;

-- Commands a participant handled, with the reply it gave (exactly-once effects).
CREATE TABLE inbox (
    consumer TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    reply    BLOB    NOT NULL,
    at       INTEGER NOT NULL,
    PRIMARY KEY (consumer, key)
) WITHOUT ROWID;

-- Messages that could not be processed. AUTOINCREMENT: an id is never reused, so a
-- replayed-and-removed letter can never be confused with a later one.
CREATE TABLE dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    body       BLOB    NOT NULL,
    reason     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
