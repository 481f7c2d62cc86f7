-- Definitions kept in the store, so one registered at runtime survives restarts and every
-- engine sharing the database knows it (and can check, on start, that it has every version
-- a saga in flight needs).
-- One row per (name, version); a version, once stored, never changes: sagas in flight run
-- on it. The body is the Definition as serde_json text (TEXT, not JSONB: compared by
-- parsed value in Rust, and kept byte for byte).
-- Names sort bytewise (COLLATE "C"), so every store lists definitions in the same order.

CREATE TABLE definitions (
    name       TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL,
    body       TEXT NOT NULL,
    -- Only for operators: the port gives no time here, so the database clock fills it.
    created_at BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT,
    PRIMARY KEY (name, version)
);
