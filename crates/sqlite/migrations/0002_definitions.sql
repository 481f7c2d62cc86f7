-- sagaflow on SQLite, schema version 2: definitions kept in the store, so one registered at
-- runtime survives restarts and the engine can check, on start, that it has every version
-- a saga in flight needs.

-- One row per (name, version); a version, once stored, never changes: sagas in flight run
-- on it. The body is the Definition as JSON.
CREATE TABLE definitions (
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT    NOT NULL,
    -- Only for operators: the port gives no time here, so the database clock fills it (ms).
    created_at INTEGER NOT NULL
        DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)),
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
