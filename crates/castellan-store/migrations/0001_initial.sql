-- Initial castellan schema. Timestamps are unix milliseconds (UTC).
-- The SQL sticks to what SQLite and PostgreSQL both accept, apart from the
-- column types BLOB and AUTOINCREMENT, which a PostgreSQL migration spells
-- BYTEA and BIGSERIAL.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

-- Each secret version is sealed separately by the vault: `wrapped_key` is the
-- data key encrypted under the master key, `ciphertext` the sealed value.
CREATE TABLE secrets (
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    created_ms  INTEGER NOT NULL,
    wrapped_key BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    PRIMARY KEY (name, version)
);

-- Agent tokens are stored only as the hex SHA-256 of the token.
CREATE TABLE tokens (
    id           TEXT    PRIMARY KEY NOT NULL,
    agent        TEXT    NOT NULL,
    hash         TEXT    NOT NULL UNIQUE,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER,
    revoked_ms   INTEGER,
    last_used_ms INTEGER,
    canary       INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX tokens_agent ON tokens (agent);

CREATE TABLE agent_state (
    agent      TEXT    PRIMARY KEY NOT NULL,
    suspended  INTEGER NOT NULL,
    reason     TEXT,
    changed_ms INTEGER NOT NULL
);

-- One row whose version moves on every change a running gateway must reload.
CREATE TABLE changes (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);

INSERT INTO changes (id, version) VALUES (1, 0);

-- AUTOINCREMENT keeps seq from ever being reused, even after the newest rows
-- are deleted, so a reader following by seq never sees two records share one.
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms     INTEGER NOT NULL,
    request_id  TEXT    NOT NULL,
    agent       TEXT,
    token_id    TEXT,
    source      TEXT    NOT NULL,
    connection  TEXT,
    method      TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    decision    TEXT    NOT NULL CHECK (decision IN ('allow', 'deny', 'error')),
    rule        TEXT,
    reason      TEXT,
    status      INTEGER NOT NULL,
    bytes_in    INTEGER NOT NULL,
    bytes_out   INTEGER NOT NULL,
    duration_us INTEGER NOT NULL
);

CREATE INDEX audit_agent_seq ON audit (agent, seq);
CREATE INDEX audit_time ON audit (time_ms);
