//! `castellan inventory`: every agent, connection and their usage, from the
//! configuration and the store's usage summaries. docs/inventory.md
//! describes the JSON document, whose keys change only with
//! [`SCHEMA_VERSION`].

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use castellan_store::{now_ms, utc_day, Store, UsageTotals};
use serde::Serialize;

use crate::cli::InventoryArgs;
use crate::commands::posture::{days_between, parse_as_of, AgentSummary, Posture};
use crate::data_dir::DataDir;
use crate::output::{self, printable};

/// Version of the `--json` document. It moves when a key is renamed,
/// removed or changes meaning; new keys may be added without it.
pub const SCHEMA_VERSION: u32 = 1;

/// Lengths of the usage windows in UTC days, ending with the report's day.
const WINDOWS: [i64; 3] = [1, 7, 30];

pub async fn run(data_dir: &DataDir, args: &InventoryArgs) -> Result<ExitCode> {
    let as_of_ms = parse_as_of(args.as_of.as_deref())?;
    let store = data_dir.open_store().await?;
    let posture = Posture::load(data_dir, &store, as_of_ms).await?;
    let inventory = build(&posture, &store).await?;
    if args.json {
        println!("{}", crate::output::json_pretty(&inventory)?);
    } else if args.csv {
        print!("{}", to_csv(&inventory));
    } else {
        print_tables(&inventory);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct Inventory {
    schema_version: u32,
    generated_ms: i64,
    as_of_ms: i64,
    agents: Vec<AgentEntry>,
    connections: Vec<ConnectionEntry>,
    usage: Vec<UsageEntry>,
}

#[derive(Debug, Serialize)]
struct AgentEntry {
    name: String,
    owner: Option<String>,
    roles: Vec<String>,
    status: &'static str,
    created_ms: Option<i64>,
    last_used_ms: Option<i64>,
    requests: u64,
    tokens: TokenCounts,
    expires_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
struct TokenCounts {
    active: usize,
    total: usize,
    oldest_active_created_ms: Option<i64>,
    oldest_active_age_days: Option<i64>,
}

#[derive(Debug, Serialize)]
struct ConnectionEntry {
    name: String,
    upstream: String,
    auth: &'static str,
    secret: String,
    secret_version: Option<u32>,
    secret_created_ms: Option<i64>,
    secret_age_days: Option<i64>,
}

#[derive(Debug, Serialize)]
struct UsageEntry {
    agent: String,
    connection: Option<String>,
    last_1d: Counters,
    last_7d: Counters,
    last_30d: Counters,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Counters {
    requests: u64,
    denied: u64,
    errors: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl From<&UsageTotals> for Counters {
    fn from(totals: &UsageTotals) -> Counters {
        Counters {
            requests: totals.requests,
            denied: totals.denied,
            errors: totals.errors,
            bytes_in: totals.bytes_in,
            bytes_out: totals.bytes_out,
        }
    }
}

async fn build(posture: &Posture, store: &Store) -> Result<Inventory> {
    let agents = posture
        .agents()
        .iter()
        .map(|summary| agent_entry(summary, posture.as_of_ms))
        .collect();
    let connections = connection_entries(posture);
    let usage = usage_entries(store, posture.as_of_ms).await?;
    Ok(Inventory {
        schema_version: SCHEMA_VERSION,
        generated_ms: now_ms(),
        as_of_ms: posture.as_of_ms,
        agents,
        connections,
        usage,
    })
}

fn agent_entry(summary: &AgentSummary<'_>, as_of_ms: i64) -> AgentEntry {
    let agent = summary.agent;
    AgentEntry {
        name: summary.name.to_string(),
        owner: agent.map(|a| a.owner.clone()),
        roles: agent.map(|a| a.roles.clone()).unwrap_or_default(),
        status: summary.status.as_str(),
        created_ms: summary.created_ms,
        last_used_ms: summary.last_used_ms,
        requests: summary.requests,
        tokens: TokenCounts {
            active: summary.active_tokens.len(),
            total: summary.total_tokens,
            oldest_active_created_ms: summary.oldest_active_token_ms,
            oldest_active_age_days: summary
                .oldest_active_token_ms
                .map(|created| days_between(created, as_of_ms)),
        },
        expires_ms: agent
            .and_then(|a| a.expires)
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)),
    }
}

fn connection_entries(posture: &Posture) -> Vec<ConnectionEntry> {
    posture
        .config
        .connections
        .values()
        .map(|connection| {
            let secret = posture.secrets.iter().find(|s| s.name == connection.secret);
            ConnectionEntry {
                name: connection.name.clone(),
                upstream: connection.upstream.to_string(),
                auth: connection.auth.kind(),
                secret: connection.secret.clone(),
                secret_version: secret.map(|s| s.latest_version),
                secret_created_ms: secret.map(|s| s.created_ms),
                secret_age_days: secret.map(|s| days_between(s.created_ms, posture.as_of_ms)),
            }
        })
        .collect()
}

/// Reads the totals of each window. The 30-day window contains the shorter
/// ones, so its keys are every key.
async fn usage_entries(store: &Store, as_of_ms: i64) -> Result<Vec<UsageEntry>> {
    let today = utc_day(as_of_ms);
    let mut windows = Vec::with_capacity(WINDOWS.len());
    for days in WINDOWS {
        let totals = store.usage_totals(today - days + 1).await?;
        let by_key: BTreeMap<(String, Option<String>), Counters> = totals
            .iter()
            .map(|t| ((t.agent.clone(), t.connection.clone()), Counters::from(t)))
            .collect();
        windows.push(by_key);
    }
    let [day, week, month] = [&windows[0], &windows[1], &windows[2]];
    Ok(month
        .iter()
        .map(|(key, counters)| UsageEntry {
            agent: key.0.clone(),
            connection: key.1.clone(),
            last_1d: day.get(key).copied().unwrap_or_default(),
            last_7d: week.get(key).copied().unwrap_or_default(),
            last_30d: *counters,
        })
        .collect())
}

fn optional_time(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_string(), output::time)
}

fn print_tables(inventory: &Inventory) {
    let mut agents = output::table(&[
        "agent",
        "owner",
        "roles",
        "status",
        "created",
        "last used",
        "tokens (active/all)",
        "oldest active token",
        "expires",
    ]);
    for agent in &inventory.agents {
        agents.add_row(vec![
            printable(&agent.name).into_owned(),
            agent
                .owner
                .as_deref()
                .map_or_else(|| "-".to_string(), |owner| printable(owner).into_owned()),
            printable(&agent.roles.join(", ")).into_owned(),
            agent.status.to_string(),
            optional_time(agent.created_ms),
            optional_time(agent.last_used_ms),
            format!("{}/{}", agent.tokens.active, agent.tokens.total),
            agent
                .tokens
                .oldest_active_age_days
                .map_or_else(|| "-".to_string(), |days| format!("{days}d")),
            agent
                .expires_ms
                .map_or_else(|| "never".to_string(), output::time),
        ]);
    }
    println!("Agents\n{agents}\n");

    let mut connections = output::table(&[
        "connection",
        "upstream",
        "auth",
        "secret",
        "version",
        "secret age",
    ]);
    for connection in &inventory.connections {
        connections.add_row(vec![
            printable(&connection.name).into_owned(),
            printable(&connection.upstream).into_owned(),
            connection.auth.to_string(),
            printable(&connection.secret).into_owned(),
            connection
                .secret_version
                .map_or_else(|| "not set".to_string(), |v| v.to_string()),
            connection
                .secret_age_days
                .map_or_else(|| "-".to_string(), |days| format!("{days}d")),
        ]);
    }
    println!("Connections\n{connections}\n");

    let mut usage = output::table(&[
        "agent",
        "connection",
        "requests 1d",
        "requests 7d",
        "requests 30d",
        "denied 30d",
        "errors 30d",
        "bytes in 30d",
        "bytes out 30d",
    ]);
    for entry in &inventory.usage {
        usage.add_row(vec![
            printable(&entry.agent).into_owned(),
            entry
                .connection
                .as_deref()
                .map_or_else(|| "-".to_string(), |name| printable(name).into_owned()),
            entry.last_1d.requests.to_string(),
            entry.last_7d.requests.to_string(),
            entry.last_30d.requests.to_string(),
            entry.last_30d.denied.to_string(),
            entry.last_30d.errors.to_string(),
            entry.last_30d.bytes_in.to_string(),
            entry.last_30d.bytes_out.to_string(),
        ]);
    }
    println!(
        "Usage (UTC days ending {})\n{usage}",
        output::time(inventory.as_of_ms)
    );
}

/// Columns of `--csv`. Each row fills the columns of its `type` (`agent`,
/// `connection` or `usage`) and leaves the others empty.
const CSV_COLUMNS: [&str; 26] = [
    "type",
    "name",
    "owner",
    "roles",
    "status",
    "created",
    "last_used",
    "requests",
    "active_tokens",
    "total_tokens",
    "oldest_active_token_age_days",
    "expires",
    "upstream",
    "auth",
    "secret",
    "secret_version",
    "secret_age_days",
    "agent",
    "connection",
    "requests_1d",
    "requests_7d",
    "requests_30d",
    "denied_30d",
    "errors_30d",
    "bytes_in_30d",
    "bytes_out_30d",
];

fn to_csv(inventory: &Inventory) -> String {
    let mut out = String::new();
    push_csv_row(&mut out, CSV_COLUMNS.iter().map(|c| (*c).to_string()));
    for agent in &inventory.agents {
        let mut row = csv_row("agent");
        row.set("name", &agent.name);
        row.set("owner", agent.owner.as_deref().unwrap_or(""));
        row.set("roles", &agent.roles.join(" "));
        row.set("status", agent.status);
        row.set_optional("created", agent.created_ms.map(output::time));
        row.set_optional("last_used", agent.last_used_ms.map(output::time));
        row.set("requests", &agent.requests.to_string());
        row.set("active_tokens", &agent.tokens.active.to_string());
        row.set("total_tokens", &agent.tokens.total.to_string());
        row.set_optional(
            "oldest_active_token_age_days",
            agent.tokens.oldest_active_age_days.map(|d| d.to_string()),
        );
        row.set_optional("expires", agent.expires_ms.map(output::time));
        push_csv_row(&mut out, row.cells);
    }
    for connection in &inventory.connections {
        let mut row = csv_row("connection");
        row.set("name", &connection.name);
        row.set("upstream", &connection.upstream);
        row.set("auth", connection.auth);
        row.set("secret", &connection.secret);
        row.set_optional(
            "secret_version",
            connection.secret_version.map(|v| v.to_string()),
        );
        row.set_optional(
            "secret_age_days",
            connection.secret_age_days.map(|d| d.to_string()),
        );
        push_csv_row(&mut out, row.cells);
    }
    for entry in &inventory.usage {
        let mut row = csv_row("usage");
        row.set("agent", &entry.agent);
        row.set("connection", entry.connection.as_deref().unwrap_or(""));
        row.set("requests_1d", &entry.last_1d.requests.to_string());
        row.set("requests_7d", &entry.last_7d.requests.to_string());
        row.set("requests_30d", &entry.last_30d.requests.to_string());
        row.set("denied_30d", &entry.last_30d.denied.to_string());
        row.set("errors_30d", &entry.last_30d.errors.to_string());
        row.set("bytes_in_30d", &entry.last_30d.bytes_in.to_string());
        row.set("bytes_out_30d", &entry.last_30d.bytes_out.to_string());
        push_csv_row(&mut out, row.cells);
    }
    out
}

struct CsvRow {
    cells: Vec<String>,
}

impl CsvRow {
    /// Sets `column`, which must be one of [`CSV_COLUMNS`]: callers pass
    /// literals, so another name is a bug that panics in every test run.
    fn set(&mut self, column: &str, value: &str) {
        let index = CSV_COLUMNS
            .iter()
            .position(|c| *c == column)
            .unwrap_or_else(|| panic!("{column} is not a CSV column"));
        self.cells[index] = value.to_string();
    }

    fn set_optional(&mut self, column: &str, value: Option<String>) {
        if let Some(value) = value {
            self.set(column, &value);
        }
    }
}

fn csv_row(kind: &str) -> CsvRow {
    let mut row = CsvRow {
        cells: vec![String::new(); CSV_COLUMNS.len()],
    };
    row.set("type", kind);
    row
}

/// Appends one RFC 4180 row with CRLF line ending. Cells are escaped with
/// [`printable`] first, because the rows go to stdout, often a terminal.
fn push_csv_row(out: &mut String, cells: impl IntoIterator<Item = String>) {
    let cells: Vec<String> = cells
        .into_iter()
        .map(|cell| csv_cell(&printable(&cell)))
        .collect();
    out.push_str(&cells.join(","));
    out.push_str("\r\n");
}

/// Quotes a cell when it needs it, and defuses text that a spreadsheet
/// would run as a formula (a leading `=`, `+`, `-`, `@`, tab or carriage
/// return) by putting a `'` in front.
fn csv_cell(value: &str) -> String {
    let defused = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_quoted_and_defused() {
        let cases = [
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("+1", "'+1"),
            ("@sum", "'@sum"),
            ("", ""),
        ];
        for (value, expected) in cases {
            assert_eq!(csv_cell(value), expected, "for {value:?}");
        }
    }

    #[test]
    fn csv_rows_fill_known_columns() {
        let mut row = csv_row("usage");
        row.set("agent", "bot");
        row.set("bytes_out_30d", "9");
        assert_eq!(row.cells[0], "usage");
        assert_eq!(row.cells[17], "bot");
        assert_eq!(row.cells[25], "9");
        assert_eq!(row.cells.iter().filter(|c| !c.is_empty()).count(), 3);
    }
}
