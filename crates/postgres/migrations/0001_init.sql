-- sagaflow on PostgreSQL: the first schema.
-- Times are unix milliseconds (BIGINT), like everywhere in sagaflow.
-- States and events are serde_json text. TEXT rather than JSONB on purpose: JSONB refuses
-- "\u0000" inside strings, so a saga input holding one would make a whole group commit fail;
-- TEXT also round-trips byte for byte and costs no parsing on the hot path.
-- Saga ids sort bytewise (COLLATE "C") whatever the database's locale, so keyset paging
-- orders ties the same way as every other store, and comparisons stay cheap.

CREATE TABLE sagas (
    saga_id         TEXT COLLATE "C" PRIMARY KEY,
    definition      TEXT NOT NULL,
    version         BIGINT NOT NULL,
    status          TEXT NOT NULL,
    correlation_key TEXT,
    idempotency_key TEXT UNIQUE,
    journal_version BIGINT NOT NULL,
    state           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    ended_at        BIGINT
) WITH (fillfactor = 80); -- room on each page so snapshot updates stay HOT

-- Listing is newest first with a keyset cursor, optionally by status or definition.
CREATE INDEX sagas_created ON sagas (created_at DESC, saga_id DESC);
CREATE INDEX sagas_status ON sagas (status, created_at DESC, saga_id DESC);
CREATE INDEX sagas_definition ON sagas (definition, created_at DESC, saga_id DESC);
CREATE INDEX sagas_correlation ON sagas (correlation_key, status)
    WHERE correlation_key IS NOT NULL;

CREATE TABLE journal (
    saga_id TEXT COLLATE "C" NOT NULL,
    seq     BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    type    TEXT NOT NULL,
    event   TEXT NOT NULL,
    PRIMARY KEY (saga_id, seq)
);

CREATE TABLE outbox (
    key         TEXT PRIMARY KEY,
    saga_id     TEXT NOT NULL,
    topic       TEXT NOT NULL,
    body        BYTEA NOT NULL,
    lease_owner TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
CREATE INDEX outbox_lease_until ON outbox (lease_until);

CREATE TABLE timers (
    saga_id     TEXT NOT NULL,
    slot        TEXT NOT NULL,
    fire_at     BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    PRIMARY KEY (saga_id, slot)
);
CREATE INDEX timers_fire_at ON timers (fire_at);
-- Leased timers are few; this finds when the earliest lease runs out (next_timer_at).
CREATE INDEX timers_leased ON timers (lease_until) WHERE lease_until IS NOT NULL;

CREATE TABLE inbox (
    consumer TEXT NOT NULL,
    key      TEXT NOT NULL,
    reply    BYTEA NOT NULL,
    -- Only for operators: the port gives no time here, so the database clock fills it.
    at       BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT,
    PRIMARY KEY (consumer, key)
);

CREATE TABLE dead_letters (
    id         BIGSERIAL PRIMARY KEY,
    topic      TEXT NOT NULL,
    body       BYTEA NOT NULL,
    reason     TEXT NOT NULL,
    attempts   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
