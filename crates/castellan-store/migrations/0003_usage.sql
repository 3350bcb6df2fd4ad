-- Usage summaries kept up to date from the audit stream, so inventories and
-- posture checks read a few rows per agent instead of every audit record.
-- Each audit batch updates them in the transaction that inserts it.
-- Timestamps are unix milliseconds (UTC) and counters count audit records.

-- The User-Agent header of the request, at most 256 bytes with control
-- characters escaped; NULL when the request had none.
ALTER TABLE audit ADD COLUMN user_agent TEXT;

-- Requests of each agent that passed authentication, over all time.
CREATE TABLE agent_usage (
    agent         TEXT    PRIMARY KEY NOT NULL,
    first_used_ms INTEGER NOT NULL,
    last_used_ms  INTEGER NOT NULL,
    requests      INTEGER NOT NULL
);

-- Requests of each agent per connection and UTC day. `connection` is ''
-- for requests that named no declared connection; `day` counts days since
-- 1970-01-01. `denied` and `errors` count the records with those
-- decisions, so allowed requests are requests - denied - errors.
CREATE TABLE usage_daily (
    agent      TEXT    NOT NULL,
    connection TEXT    NOT NULL,
    day        INTEGER NOT NULL,
    requests   INTEGER NOT NULL,
    denied     INTEGER NOT NULL,
    errors     INTEGER NOT NULL,
    bytes_in   INTEGER NOT NULL,
    bytes_out  INTEGER NOT NULL,
    PRIMARY KEY (agent, connection, day)
);

CREATE INDEX usage_daily_day ON usage_daily (day);

-- Allowed requests per agent, connection, method and normalized path, the
-- input for finding unused rules and for `castellan policy suggest`.
CREATE TABLE route_usage (
    agent         TEXT    NOT NULL,
    connection    TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    first_used_ms INTEGER NOT NULL,
    last_used_ms  INTEGER NOT NULL,
    requests      INTEGER NOT NULL,
    PRIMARY KEY (agent, connection, method, path)
);

CREATE INDEX route_usage_last_used ON route_usage (last_used_ms);

-- Source networks of each credential (the audit `token_id`: a token id or
-- `certificate:<identity>`): IPv4 sources by /16, IPv6 sources by /48.
CREATE TABLE credential_networks (
    token_id      TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    network       TEXT    NOT NULL,
    first_used_ms INTEGER NOT NULL,
    last_used_ms  INTEGER NOT NULL,
    requests      INTEGER NOT NULL,
    PRIMARY KEY (token_id, network)
);

-- User-Agent values seen with each credential.
CREATE TABLE credential_user_agents (
    token_id      TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    user_agent    TEXT    NOT NULL,
    first_used_ms INTEGER NOT NULL,
    last_used_ms  INTEGER NOT NULL,
    requests      INTEGER NOT NULL,
    PRIMARY KEY (token_id, user_agent)
);

-- Databases that already hold audit records get the summaries computed from
-- them once, by the store right after this migration and in the same
-- transaction; this row asks for that and is removed when it is done.
INSERT INTO meta (key, value)
SELECT 'usage.backfill_pending', '1' WHERE EXISTS (SELECT 1 FROM audit);
