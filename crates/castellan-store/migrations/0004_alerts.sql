-- Alerts raised by the behaviour detectors, and the log of administrative
-- changes. Timestamps are unix milliseconds (UTC).

-- One row per alert. Signals of the same kind and subject are folded into
-- the alert until it is resolved, so `count` counts signals. `evidence` is
-- a JSON array of audit seqs and `sources` a JSON array of source network
-- strings, both capped by the store (see alerts.rs).
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT    NOT NULL,
    severity        TEXT    NOT NULL
                    CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    agent           TEXT,
    subject         TEXT    NOT NULL,
    status          TEXT    NOT NULL
                    CHECK (status IN ('open', 'acknowledged', 'resolved')),
    first_seen_ms   INTEGER NOT NULL,
    last_seen_ms    INTEGER NOT NULL,
    count           INTEGER NOT NULL,
    evidence        TEXT    NOT NULL,
    summary         TEXT    NOT NULL,
    sources         TEXT    NOT NULL,
    acknowledged_by TEXT,
    resolved_by     TEXT,
    updated_ms      INTEGER NOT NULL
);

-- At most one unresolved alert per kind and subject, the one new signals
-- fold into.
CREATE UNIQUE INDEX alerts_unresolved ON alerts (kind, subject)
    WHERE status <> 'resolved';
CREATE INDEX alerts_last_seen ON alerts (last_seen_ms);

-- Administrative changes: suspensions, secret rotations, alert
-- acknowledgements and automatic responses. Never contains secret values.
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    detail  TEXT
);
