//! Usage summaries folded from audit batches: last use of tokens and agents,
//! daily counters, allowed routes, and the networks and user agents seen
//! with each credential. [`Store::insert_audit_batch`] applies them in the
//! transaction that stores the batch.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use sqlx::SqliteConnection;

use crate::audit::{audit_from_row, SqliteQuery, SELECT_OLDEST};
use crate::audit_record::{AuditDecision, AuditRecord};
use crate::error::{db_error, StoreError};
use crate::rows::to_i64;

/// Milliseconds in one UTC day. Unix time has no leap seconds, so every
/// day has exactly this many.
const MS_PER_DAY: i64 = 86_400_000;

/// Audit records read per query while summarizing an existing audit log.
const BACKFILL_CHUNK: i64 = 10_000;

/// Meta key that migration 0003 sets when the audit log needs summarizing.
const BACKFILL_PENDING: &str = "usage.backfill_pending";

/// Returns the UTC day of a unix millisecond time, counted from 1970-01-01,
/// the `day` of the daily usage rows.
pub fn utc_day(time_ms: i64) -> i64 {
    time_ms.div_euclid(MS_PER_DAY)
}

/// Returns the network a request source belongs to for reuse detection:
/// the /16 of an IPv4 address or the /48 of an IPv6 address, such as
/// `10.1.0.0/16` or `2001:db8:1::/48`.
///
/// `source` is an audit record's `ip:port` (or a bare address). IPv4-mapped
/// IPv6 addresses count as IPv4. Returns `None` for text that is no address.
///
/// NOTE: loopback gets no special case, so an agent that reaches a
/// dual-stack listener over both 127.0.0.1 and ::1 shows two networks.
pub fn source_network(source: &str) -> Option<String> {
    let ip = match source.parse::<SocketAddr>() {
        Ok(address) => address.ip(),
        Err(_) => source.parse::<IpAddr>().ok()?,
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    Some(match ip {
        IpAddr::V4(v4) => {
            let [a, b, _, _] = v4.octets();
            format!("{a}.{b}.0.0/16")
        }
        IpAddr::V6(v6) => {
            let [a, b, c, ..] = v6.segments();
            format!("{}/48", Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0))
        }
    })
}

/// First use, last use and number of uses of one summary row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub first_ms: i64,
    pub last_ms: i64,
    pub requests: i64,
}

impl Span {
    fn new(time_ms: i64) -> Span {
        Span {
            first_ms: time_ms,
            last_ms: time_ms,
            requests: 1,
        }
    }

    fn add(&mut self, time_ms: i64) {
        self.first_ms = self.first_ms.min(time_ms);
        self.last_ms = self.last_ms.max(time_ms);
        self.requests = self.requests.saturating_add(1);
    }
}

/// Counters of one agent, connection and day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DailyCounts {
    pub requests: i64,
    pub denied: i64,
    pub errors: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
}

/// Key of a daily row: agent, connection (`""` for none) and UTC day.
type DailyKey<'a> = (&'a str, &'a str, i64);
/// Key of a route row: agent, connection, method and path.
type RouteKey<'a> = (&'a str, &'a str, &'a str, &'a str);

/// The summary rows one audit batch changes, each merged in memory so the
/// batch costs one statement per distinct row.
#[derive(Debug, Default)]
pub(crate) struct UsageBatch<'a> {
    /// Latest use per token id.
    pub tokens: HashMap<&'a str, i64>,
    pub agents: HashMap<&'a str, Span>,
    pub daily: HashMap<DailyKey<'a>, DailyCounts>,
    /// Allowed requests only.
    pub routes: HashMap<RouteKey<'a>, Span>,
    /// Keyed by credential id and network, with the credential's agent.
    pub networks: HashMap<(&'a str, String), (&'a str, Span)>,
    /// Keyed by credential id and user agent, with the credential's agent.
    pub user_agents: HashMap<(&'a str, &'a str), (&'a str, Span)>,
}

impl<'a> UsageBatch<'a> {
    /// Summarizes `records`. Records without an authenticated agent (failed
    /// authentication, undeclared or suspended agents) change nothing,
    /// because they cannot be attributed to an agent.
    pub(crate) fn from_records(records: &'a [AuditRecord]) -> UsageBatch<'a> {
        let mut batch = UsageBatch::default();
        for record in records {
            batch.add(record);
        }
        batch
    }

    fn add(&mut self, record: &'a AuditRecord) {
        let Some(agent) = record.agent.as_deref() else {
            return;
        };
        let time_ms = record.time_ms;
        let connection = record.connection.as_deref().unwrap_or("");
        merge_span(self.agents.entry(agent), time_ms);

        let daily = self
            .daily
            .entry((agent, connection, utc_day(time_ms)))
            .or_default();
        daily.requests = daily.requests.saturating_add(1);
        match record.decision {
            AuditDecision::Allow => {}
            AuditDecision::Deny => daily.denied = daily.denied.saturating_add(1),
            AuditDecision::Error => daily.errors = daily.errors.saturating_add(1),
        }
        daily.bytes_in = daily.bytes_in.saturating_add(to_i64(record.bytes_in));
        daily.bytes_out = daily.bytes_out.saturating_add(to_i64(record.bytes_out));

        if record.decision == AuditDecision::Allow && !connection.is_empty() {
            let key = (
                agent,
                connection,
                record.method.as_str(),
                record.path.as_str(),
            );
            merge_span(self.routes.entry(key), time_ms);
        }

        let Some(token_id) = record.token_id.as_deref() else {
            return;
        };
        let latest = self.tokens.entry(token_id).or_insert(time_ms);
        *latest = (*latest).max(time_ms);
        if let Some(network) = source_network(&record.source) {
            merge_owned_span(self.networks.entry((token_id, network)), agent, time_ms);
        }
        if let Some(user_agent) = record.user_agent.as_deref() {
            merge_owned_span(
                self.user_agents.entry((token_id, user_agent)),
                agent,
                time_ms,
            );
        }
    }

    /// Returns the number of summary rows [`UsageBatch::apply`] writes.
    #[cfg(test)]
    pub(crate) fn statement_count(&self) -> usize {
        self.tokens.len()
            + self.agents.len()
            + self.daily.len()
            + self.routes.len()
            + self.networks.len()
            + self.user_agents.len()
    }

    /// Adds the batch to the stored summaries inside the caller's transaction,
    /// in one round trip to the driver's worker thread.
    pub(crate) async fn apply(
        &self,
        conn: &mut SqliteConnection,
        operation: &'static str,
    ) -> Result<(), StoreError> {
        self.bind(sqlx::query(APPLY_USAGE), operation)?
            .execute(&mut *conn)
            .await
            .map_err(|error| db_error(operation, error))?;
        Ok(())
    }

    /// Binds the six parameters of [`APPLY_USAGE`], the rows of each summary
    /// table as one JSON array, to `query`, whose text starts with it.
    pub(crate) fn bind<'q>(
        &self,
        query: SqliteQuery<'q>,
        operation: &'static str,
    ) -> Result<SqliteQuery<'q>, StoreError> {
        let tokens: Vec<_> = self.tokens.iter().collect();
        let agents: Vec<_> = self
            .agents
            .iter()
            .map(|(agent, span)| (agent, span.first_ms, span.last_ms, span.requests))
            .collect();
        let daily: Vec<_> = self
            .daily
            .iter()
            .map(|((agent, connection, day), counts)| {
                (
                    agent,
                    connection,
                    day,
                    counts.requests,
                    counts.denied,
                    counts.errors,
                    counts.bytes_in,
                    counts.bytes_out,
                )
            })
            .collect();
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|((agent, connection, method, path), span)| {
                (
                    agent,
                    connection,
                    method,
                    path,
                    span.first_ms,
                    span.last_ms,
                    span.requests,
                )
            })
            .collect();
        let networks: Vec<_> = self
            .networks
            .iter()
            .map(|((token_id, network), (agent, span))| sighting(token_id, agent, network, span))
            .collect();
        let user_agents: Vec<_> = self
            .user_agents
            .iter()
            .map(|((token_id, user_agent), (agent, span))| {
                sighting(token_id, agent, user_agent, span)
            })
            .collect();
        Ok(query
            .bind(json_rows(&tokens, operation)?)
            .bind(json_rows(&agents, operation)?)
            .bind(json_rows(&daily, operation)?)
            .bind(json_rows(&routes, operation)?)
            .bind(json_rows(&networks, operation)?)
            .bind(json_rows(&user_agents, operation)?))
    }
}

/// A credential sighting as [`APPLY_USAGE`] reads it: token id, agent, the
/// value seen (network or user agent), first use, last use and count.
type Sighting<'a> = (&'a str, &'a str, &'a str, i64, i64, i64);

fn sighting<'a>(token_id: &'a str, agent: &'a str, value: &'a str, span: &Span) -> Sighting<'a> {
    (
        token_id,
        agent,
        value,
        span.first_ms,
        span.last_ms,
        span.requests,
    )
}

/// Encodes summary rows as a JSON array of arrays, one parameter of
/// [`APPLY_USAGE`].
fn json_rows<T: serde::Serialize>(
    rows: &[T],
    operation: &'static str,
) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|error| StoreError::Database {
        operation,
        source: Box::new(error),
    })
}

fn merge_span<K>(entry: std::collections::hash_map::Entry<'_, K, Span>, time_ms: i64) {
    entry
        .and_modify(|span| span.add(time_ms))
        .or_insert_with(|| Span::new(time_ms));
}

fn merge_owned_span<'a, K>(
    entry: std::collections::hash_map::Entry<'_, K, (&'a str, Span)>,
    agent: &'a str,
    time_ms: i64,
) {
    entry
        .and_modify(|(_, span)| span.add(time_ms))
        .or_insert_with(|| (agent, Span::new(time_ms)));
}

/// Keeps the earlier first use and the later last use, and adds the counts.
macro_rules! merge_span_sql {
    ($table:literal) => {
        concat!(
            "first_used_ms = min(excluded.first_used_ms, ",
            $table,
            ".first_used_ms), last_used_ms = max(excluded.last_used_ms, ",
            $table,
            ".last_used_ms), requests = ",
            $table,
            ".requests + excluded.requests"
        )
    };
}

/// Adds one batch's summary rows to the six summary tables, one statement
/// per table, each reading its rows from a JSON array parameter with
/// `json_each` (`value ->> N` is column N of a row).
///
/// The text is the same for every batch, so sqlx prepares it once per
/// connection, and the whole summary costs one round trip to the worker
/// thread however many rows it has. An empty array changes nothing. The
/// `WHERE true` makes SQLite parse `ON CONFLICT` as an upsert clause
/// rather than as a join constraint of the `SELECT`.
///
/// The first statement moves each token's last use forward, as
/// `touch_token_used` does for one.
pub(crate) const APPLY_USAGE: &str = concat!(
    "UPDATE tokens SET last_used_ms = used.value ->> 1 FROM json_each(?) AS used \
     WHERE tokens.id = used.value ->> 0 \
     AND (tokens.last_used_ms IS NULL OR tokens.last_used_ms < used.value ->> 1); ",
    "INSERT INTO agent_usage (agent, first_used_ms, last_used_ms, requests) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) WHERE true \
     ON CONFLICT (agent) DO UPDATE SET ",
    merge_span_sql!("agent_usage"),
    "; INSERT INTO usage_daily \
     (agent, connection, day, requests, denied, errors, bytes_in, bytes_out) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6, value ->> 7 FROM json_each(?) WHERE true \
     ON CONFLICT (agent, connection, day) DO UPDATE SET \
     requests = usage_daily.requests + excluded.requests, \
     denied = usage_daily.denied + excluded.denied, \
     errors = usage_daily.errors + excluded.errors, \
     bytes_in = usage_daily.bytes_in + excluded.bytes_in, \
     bytes_out = usage_daily.bytes_out + excluded.bytes_out; ",
    "INSERT INTO route_usage \
     (agent, connection, method, path, first_used_ms, last_used_ms, requests) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6 FROM json_each(?) WHERE true \
     ON CONFLICT (agent, connection, method, path) DO UPDATE SET ",
    merge_span_sql!("route_usage"),
    "; INSERT INTO credential_networks \
     (token_id, agent, network, first_used_ms, last_used_ms, requests) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 \
     FROM json_each(?) WHERE true \
     ON CONFLICT (token_id, network) DO UPDATE SET ",
    merge_span_sql!("credential_networks"),
    "; INSERT INTO credential_user_agents \
     (token_id, agent, user_agent, first_used_ms, last_used_ms, requests) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 \
     FROM json_each(?) WHERE true \
     ON CONFLICT (token_id, user_agent) DO UPDATE SET ",
    merge_span_sql!("credential_user_agents"),
);

/// Summarizes the audit records stored before the usage tables existed,
/// when migration 0003 asked for it, inside the migration's transaction.
///
/// This reads the whole audit log once, in chunks of [`BACKFILL_CHUNK`]
/// records. Later batches update the summaries as they are inserted.
pub(crate) async fn run_pending_backfill(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let operation = "summarize existing audit records";
    let pending: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(BACKFILL_PENDING)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|error| db_error(operation, error))?;
    if pending.is_none() {
        return Ok(());
    }
    let mut after_seq = 0_i64;
    loop {
        let rows = sqlx::query(SELECT_OLDEST)
            .bind(after_seq)
            .bind(BACKFILL_CHUNK)
            .fetch_all(&mut *conn)
            .await
            .map_err(|error| db_error(operation, error))?;
        let records = rows
            .iter()
            .map(audit_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(last_seq) = records.last().and_then(|record| record.seq) else {
            break;
        };
        after_seq = last_seq;
        UsageBatch::from_records(&records)
            .apply(conn, operation)
            .await?;
    }
    sqlx::query("DELETE FROM meta WHERE key = $1")
        .bind(BACKFILL_PENDING)
        .execute(&mut *conn)
        .await
        .map_err(|error| db_error(operation, error))?;
    tracing::info!(
        records_through_seq = after_seq,
        "summarized existing audit records"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(agent: Option<&str>, time_ms: i64) -> AuditRecord {
        AuditRecord {
            seq: None,
            time_ms,
            request_id: format!("req-{time_ms}"),
            agent: agent.map(str::to_owned),
            token_id: agent.map(|a| format!("tok-{a}")),
            source: "10.1.2.3:40000".to_owned(),
            connection: Some("github".to_owned()),
            method: "GET".to_owned(),
            path: "/repos/acme/app".to_owned(),
            decision: AuditDecision::Allow,
            rule: Some("roles.reader.allow[0]".to_owned()),
            reason: None,
            status: 200,
            bytes_in: 10,
            bytes_out: 100,
            duration_us: 500,
            findings: Vec::new(),
            user_agent: Some("python-httpx/0.27".to_owned()),
        }
    }

    #[test]
    fn batch_merges_repeated_keys() {
        let day = 20_000 * MS_PER_DAY;
        let records: Vec<AuditRecord> = (0..100)
            .map(|i| record(Some("alpha"), day + 1_000 * i))
            .collect();

        let batch = UsageBatch::from_records(&records);

        assert_eq!(batch.statement_count(), 6);
        assert_eq!(batch.tokens["tok-alpha"], day + 99_000);
        let span = batch.agents["alpha"];
        assert_eq!(span.first_ms, day);
        assert_eq!(span.last_ms, day + 99_000);
        assert_eq!(span.requests, 100);
        let counts = batch.daily[&("alpha", "github", 20_000)];
        assert_eq!(counts.requests, 100);
        assert_eq!(counts.bytes_in, 1_000);
        assert_eq!(counts.bytes_out, 10_000);
        let route = batch.routes[&("alpha", "github", "GET", "/repos/acme/app")];
        assert_eq!(route.requests, 100);
        let (agent, network) = &batch.networks[&("tok-alpha", "10.1.0.0/16".to_owned())];
        assert_eq!(*agent, "alpha");
        assert_eq!(network.requests, 100);
    }

    #[test]
    fn batch_splits_days_and_decisions() {
        let midnight = 20_000 * MS_PER_DAY;
        let mut denied = record(Some("alpha"), midnight - 1);
        denied.decision = AuditDecision::Deny;
        let mut failed = record(Some("alpha"), midnight);
        failed.decision = AuditDecision::Error;
        let allowed = record(Some("alpha"), midnight + 1);
        let records = [denied, failed, allowed];

        let batch = UsageBatch::from_records(&records);

        let before = batch.daily[&("alpha", "github", 19_999)];
        assert_eq!((before.requests, before.denied, before.errors), (1, 1, 0));
        let after = batch.daily[&("alpha", "github", 20_000)];
        assert_eq!((after.requests, after.denied, after.errors), (2, 0, 1));
        let route = batch.routes[&("alpha", "github", "GET", "/repos/acme/app")];
        assert_eq!(route.requests, 1, "only the allowed record counts");
        assert_eq!(route.first_ms, midnight + 1);
    }

    #[test]
    fn unauthenticated_records_change_nothing() {
        let records = [record(None, 1_000)];

        let batch = UsageBatch::from_records(&records);

        assert_eq!(batch.statement_count(), 0);
    }

    #[test]
    fn records_without_connection_skip_routes() {
        let mut unknown = record(Some("alpha"), 1_000);
        unknown.connection = None;
        unknown.user_agent = None;
        let records = [unknown];

        let batch = UsageBatch::from_records(&records);

        assert!(batch.daily.contains_key(&("alpha", "", 0)));
        assert!(batch.routes.is_empty());
        assert!(batch.user_agents.is_empty());
    }

    #[test]
    fn networks_group_by_prefix() {
        let cases = [
            ("10.1.2.3:40000", Some("10.1.0.0/16")),
            ("10.1.255.9:1", Some("10.1.0.0/16")),
            ("10.2.0.1:1", Some("10.2.0.0/16")),
            ("[::ffff:192.168.7.1]:80", Some("192.168.0.0/16")),
            ("[2001:db8:1:2::9]:443", Some("2001:db8:1::/48")),
            ("[2001:db8:1:ffff::1]:443", Some("2001:db8:1::/48")),
            ("[::1]:8750", Some("::/48")),
            ("127.0.0.1", Some("127.0.0.0/16")),
            ("not an address", None),
        ];
        for (source, expected) in cases {
            assert_eq!(source_network(source).as_deref(), expected, "for {source}");
        }
    }

    #[test]
    fn days_count_from_epoch() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(MS_PER_DAY - 1), 0);
        assert_eq!(utc_day(MS_PER_DAY), 1);
        assert_eq!(utc_day(-1), -1);
    }

    /// The summary statements read their rows from `json_each`, which SQLite
    /// cannot index. Each must look up the summary table by its key for each
    /// JSON row, never scan the table: the token table can hold 100,000 rows.
    #[tokio::test]
    async fn summary_statements_search_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::create(&dir.path().join("castellan.db"))
            .await
            .unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let statements: Vec<&str> = APPLY_USAGE
            .split(';')
            .map(str::trim)
            .filter(|statement| !statement.is_empty())
            .collect();
        assert_eq!(statements.len(), 6, "{APPLY_USAGE}");
        for statement in statements {
            // Rows of id, parent, an unused column and the step's text.
            let plan: Vec<String> = sqlx::query_as::<_, (i64, i64, i64, String)>(&format!(
                "EXPLAIN QUERY PLAN {statement}"
            ))
            .fetch_all(&mut *conn)
            .await
            .map_err(|error| format!("{error}: {statement}"))
            .unwrap()
            .into_iter()
            .map(|(_, _, _, detail)| detail)
            .collect();
            let scans: Vec<&String> = plan
                .iter()
                .filter(|step| step.starts_with("SCAN") && !step.contains("VIRTUAL TABLE"))
                .collect();
            assert!(scans.is_empty(), "{statement}\nscans: {scans:?}");
        }
    }
}
