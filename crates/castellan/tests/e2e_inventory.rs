//! `castellan inventory`: agents, connections and usage counted from real
//! requests through a running gateway, in the text, JSON and CSV forms, and
//! the JSON fields exactly as docs/inventory.md lists them.

#![forbid(unsafe_code)]

mod schema_doc;
mod support;

use std::net::TcpListener;
use std::time::Duration;

use serde_json::Value;

use support::castellan::{poll_until, Castellan};
use support::http::{get_as, send, send_as};
use support::leak::assert_no_secret;
use support::peers::{spawn_httpbin, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-inventory-Hq7Tz2Wc9Lm4";
const MIRROR_KEY: &str = "mk-e2e-inventory-Pr3Xv8Ns1Kd6";

/// Limit for audit records (and the usage summaries written with them) to
/// be stored after their responses.
const AUDIT_LIMIT: Duration = Duration::from_secs(5);

const DAY_MS: i64 = 86_400_000;

/// Returns a loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Returns the configuration, with `extra` (more agents) appended.
fn config(httpbin: &Peer, closed: u16, extra: &str) -> String {
    format!(
        r#"
[connections.httpbin]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "httpbin-key"

[connections.mirror]
upstream = "{httpbin}/anything"
allow_private = true
auth = {{ kind = "header", name = "x-api-key" }}
secret = "mirror-key"

[connections.offline]
upstream = "http://127.0.0.1:{closed}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "offline-key"

[connections.unset]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "query", name = "key" }}
secret = "never-set"

[roles.reader]
allow = [
  {{ connection = "httpbin", methods = ["GET"], paths = ["/get", "/anything/**"] }},
  {{ connection = "mirror", methods = ["GET", "POST"], paths = ["/**"] }},
  {{ connection = "offline", methods = ["GET"], paths = ["/get"] }},
]
deny = [{{ connection = "httpbin", methods = ["DELETE"], paths = ["/**"] }}]

[agents.reader-bot]
owner = "+ops@example.com"
roles = ["reader"]
expires = "2999-01-31"

[agents.idle-bot]
owner = "sam@example.com"
roles = ["reader"]

[agents.paused-bot]
owner = "ops@example.com"
roles = ["reader"]

[agents.retired-bot]
owner = "ops@example.com"
roles = ["reader"]
expires = "2020-01-01"
{extra}
"#,
        httpbin = httpbin.base_url(),
    )
}

/// Waits until the audit log contains `count` records.
fn await_audit(castellan: &Castellan, count: usize) -> Vec<Value> {
    let mut records = Vec::new();
    let stored = poll_until(AUDIT_LIMIT, || {
        records = castellan.audit_records();
        records.len() >= count
    });
    assert!(
        stored.is_some(),
        "expected {count} audit records, got {}: {records:#?}",
        records.len()
    );
    records
}

fn token_created_ms(castellan: &Castellan, id: &str) -> i64 {
    let stdout = castellan.cli_ok(&["agent", "token", "list", "--json"]);
    stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON line"))
        .find(|token| token["id"] == id)
        .and_then(|token| token["created_ms"].as_i64())
        .unwrap_or_else(|| panic!("token {id} not listed: {stdout}"))
}

fn inventory_json(castellan: &Castellan, extra: &[&str]) -> Value {
    let mut args = vec!["inventory", "--json"];
    args.extend_from_slice(extra);
    let stdout = castellan.cli_ok(&args);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("inventory --json is not JSON ({error}): {stdout}"))
}

fn entry<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_array()
        .expect("array")
        .iter()
        .find(|item| item[key] == name)
        .unwrap_or_else(|| panic!("no entry with {key} = {name} in {list:#}"))
}

fn usage<'a>(inventory: &'a Value, agent: &str, connection: Option<&str>) -> &'a Value {
    inventory["usage"]
        .as_array()
        .expect("usage array")
        .iter()
        .find(|u| u["agent"] == agent && u["connection"].as_str() == connection)
        .unwrap_or_else(|| panic!("no usage for {agent} on {connection:?}: {inventory:#}"))
}

/// A data directory with four declared agents and one undeclared agent
/// that still has a token, and six requests by reader-bot through a
/// gateway (two allowed, one denied by a rule, one to a closed upstream,
/// one with a body, one to an unknown connection), and one by the
/// suspended paused-bot.
struct Fixture {
    _httpbin: Peer,
    castellan: Castellan,
    reader_token: String,
    reader_first_token: String,
    started_ms: i64,
    tokens: Vec<String>,
}

fn fixture() -> Fixture {
    let httpbin = spawn_httpbin();
    let closed = closed_port();
    let castellan = Castellan::init();
    let ghost = "\n[agents.ghost-bot]\nowner = \"ops@example.com\"\n";
    castellan.write_config(&config(&httpbin, closed, ghost));
    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    castellan.set_secret("mirror-key", MIRROR_KEY);
    castellan.set_secret("offline-key", UPSTREAM_KEY);
    let started_ms = castellan_store::now_ms();
    let first = castellan.issue("reader-bot", Some("30d"));
    let second = castellan.issue("reader-bot", Some("90d"));
    let idle = castellan.issue("idle-bot", Some("never"));
    let paused = castellan.issue("paused-bot", None);
    let ghost_token = castellan.issue("ghost-bot", None);
    castellan.write_config(&config(&httpbin, closed, ""));
    castellan.cli_ok(&["agent", "suspend", "paused-bot"]);

    let server = castellan.serve();
    let token = second.token.as_str();
    assert_eq!(get_as(&server.url("/httpbin/get"), token).status, 200);
    assert_eq!(
        get_as(&server.url("/httpbin/anything/1"), token).status,
        200
    );
    let denied = send_as("DELETE", &server.url("/httpbin/anything/1"), token);
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(get_as(&server.url("/offline/get"), token).status, 502);
    let authorization = format!("Bearer {token}");
    let posted = send(
        "POST",
        &server.url("/mirror/items"),
        &[("authorization", &authorization)],
        Some("hello"),
    );
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(get_as(&server.url("/nowhere/x"), token).status, 404);
    // The paused agent is denied before it counts as authenticated.
    assert_eq!(
        get_as(&server.url("/httpbin/get"), &paused.token).status,
        403
    );
    await_audit(&castellan, 7);
    drop(server);

    Fixture {
        _httpbin: httpbin,
        castellan,
        reader_token: second.token.clone(),
        reader_first_token: first.id.clone(),
        started_ms,
        tokens: vec![
            first.token,
            second.token,
            idle.token,
            paused.token,
            ghost_token.token,
        ],
    }
}

/// Asserts that no CLI output contains an upstream key or an agent token
/// (`agent token issue` prints its token by design, so it is skipped).
fn assert_no_leaks(fixture: &Fixture) {
    for run in fixture.castellan.cli_runs() {
        if run.args.iter().any(|arg| arg == "issue") {
            continue;
        }
        let place = format!("output of castellan {:?}", run.args);
        let text = run.text();
        for secret in [UPSTREAM_KEY, MIRROR_KEY] {
            assert_no_secret(&text, secret, &place);
        }
        for token in &fixture.tokens {
            assert_no_secret(&text, token, &place);
        }
    }
}

#[test]
fn inventory_json_matches_schema_doc() {
    let fixture = fixture();

    let inventory = inventory_json(&fixture.castellan, &[]);

    schema_doc::assert_matches_doc(&inventory, "### Inventory JSON fields");
    assert_eq!(inventory["schema_version"], 1);
    let keys: Vec<&str> = inventory
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "schema_version",
            "generated_ms",
            "as_of_ms",
            "agents",
            "connections",
            "usage"
        ],
        "top-level keys in a fixed order"
    );
    assert_no_leaks(&fixture);
}

#[test]
fn inventory_lists_agents_with_status_and_tokens() {
    let fixture = fixture();
    let castellan = &fixture.castellan;
    let first_created = token_created_ms(castellan, &fixture.reader_first_token);

    let inventory = inventory_json(castellan, &[]);

    let agents = &inventory["agents"];
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "idle-bot",
            "paused-bot",
            "reader-bot",
            "retired-bot",
            "ghost-bot"
        ],
        "declared agents by name, then undeclared ones"
    );
    let reader = entry(agents, "name", "reader-bot");
    assert_eq!(reader["owner"], "+ops@example.com");
    assert_eq!(reader["roles"], serde_json::json!(["reader"]));
    assert_eq!(reader["status"], "active");
    assert_eq!(reader["created_ms"], first_created);
    assert_eq!(reader["requests"], 6, "{reader}");
    let last_used = reader["last_used_ms"]
        .as_i64()
        .expect("reader-bot was used");
    assert!(last_used >= fixture.started_ms, "{reader}");
    assert_eq!(reader["tokens"]["active"], 2);
    assert_eq!(reader["tokens"]["total"], 2);
    assert_eq!(reader["tokens"]["oldest_active_created_ms"], first_created);
    assert_eq!(reader["tokens"]["oldest_active_age_days"], 0);
    assert!(reader["expires_ms"].as_i64().is_some(), "{reader}");

    let idle = entry(agents, "name", "idle-bot");
    assert_eq!(idle["status"], "active");
    assert!(idle["last_used_ms"].is_null(), "{idle}");
    assert_eq!(idle["requests"], 0);
    assert!(idle["expires_ms"].is_null());
    assert_eq!(entry(agents, "name", "paused-bot")["status"], "suspended");
    assert!(
        entry(agents, "name", "paused-bot")["last_used_ms"].is_null(),
        "a suspended agent's denied request is not a use"
    );
    let retired = entry(agents, "name", "retired-bot");
    assert_eq!(retired["status"], "expired");
    assert!(retired["created_ms"].is_null(), "no tokens: {retired}");
    assert_eq!(retired["tokens"]["total"], 0);
    let ghost = entry(agents, "name", "ghost-bot");
    assert_eq!(ghost["status"], "undeclared");
    assert!(ghost["owner"].is_null());
    assert_eq!(ghost["roles"], serde_json::json!([]));
    assert_eq!(ghost["tokens"]["active"], 1);
    assert_no_leaks(&fixture);
}

#[test]
fn inventory_lists_connections_and_secrets() {
    let fixture = fixture();

    let inventory = inventory_json(&fixture.castellan, &[]);

    let connections = &inventory["connections"];
    let mirror = entry(connections, "name", "mirror");
    assert!(
        mirror["upstream"].as_str().unwrap().ends_with("/anything"),
        "{mirror}"
    );
    assert_eq!(mirror["auth"], "header");
    assert_eq!(mirror["secret"], "mirror-key");
    assert_eq!(mirror["secret_version"], 1);
    assert_eq!(mirror["secret_age_days"], 0);
    let created = mirror["secret_created_ms"].as_i64().unwrap();
    assert!(created <= fixture.started_ms, "{mirror}");
    let unset = entry(connections, "name", "unset");
    assert_eq!(unset["auth"], "query");
    assert!(unset["secret_version"].is_null(), "{unset}");
    assert!(unset["secret_age_days"].is_null(), "{unset}");
    assert_no_leaks(&fixture);
}

#[test]
fn inventory_counts_usage_per_connection() {
    let fixture = fixture();

    let inventory = inventory_json(&fixture.castellan, &[]);

    let httpbin = usage(&inventory, "reader-bot", Some("httpbin"));
    for window in ["last_1d", "last_7d", "last_30d"] {
        assert_eq!(httpbin[window]["requests"], 3, "{window}: {httpbin}");
        assert_eq!(httpbin[window]["denied"], 1, "{window}: {httpbin}");
        assert_eq!(httpbin[window]["errors"], 0, "{window}: {httpbin}");
    }
    assert!(httpbin["last_1d"]["bytes_out"].as_u64().unwrap() > 0);
    let offline = usage(&inventory, "reader-bot", Some("offline"));
    assert_eq!(offline["last_1d"]["requests"], 1);
    assert_eq!(offline["last_1d"]["errors"], 1);
    let mirror = usage(&inventory, "reader-bot", Some("mirror"));
    assert_eq!(mirror["last_1d"]["requests"], 1);
    assert_eq!(mirror["last_1d"]["bytes_in"], 5);
    let unknown = usage(&inventory, "reader-bot", None);
    assert_eq!(unknown["last_1d"]["requests"], 1);
    assert_eq!(unknown["last_1d"]["denied"], 1);
    let usage_agents: Vec<&str> = inventory["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["agent"].as_str().unwrap())
        .collect();
    assert!(
        usage_agents.iter().all(|agent| *agent == "reader-bot"),
        "only reader-bot made authenticated requests: {usage_agents:?}"
    );
    assert_no_leaks(&fixture);
}

#[test]
fn inventory_as_of_moves_ages_and_windows() {
    let fixture = fixture();
    let castellan = &fixture.castellan;

    let later = inventory_json(castellan, &["--as-of", "+40d"]);

    assert!(later["as_of_ms"].as_i64().unwrap() >= fixture.started_ms + 40 * DAY_MS);
    let reader = entry(&later["agents"], "name", "reader-bot");
    assert_eq!(
        reader["tokens"]["active"], 1,
        "the 30-day token has expired by then: {reader}"
    );
    assert_eq!(reader["tokens"]["oldest_active_age_days"], 40);
    let mirror = entry(&later["connections"], "name", "mirror");
    assert_eq!(mirror["secret_age_days"], 40);
    assert_eq!(
        later["usage"],
        serde_json::json!([]),
        "today's requests are outside the 30 days before then"
    );
    let inside = inventory_json(castellan, &["--as-of", "+6d"]);
    let httpbin = usage(&inside, "reader-bot", Some("httpbin"));
    assert_eq!(httpbin["last_1d"]["requests"], 0, "{httpbin}");
    assert_eq!(httpbin["last_7d"]["requests"], 3, "{httpbin}");
    assert_eq!(httpbin["last_30d"]["requests"], 3, "{httpbin}");

    let past = castellan.cli(&["inventory", "--as-of", "2001-01-01"]);
    assert_eq!(past.status.code(), Some(2));
    let message = String::from_utf8_lossy(&past.stderr);
    assert!(message.contains("in the past"), "{message}");
    assert_no_leaks(&fixture);
}

/// Splits one CSV line without quoted cells (the fixture has none).
fn cells(line: &str) -> Vec<&str> {
    assert!(!line.contains('"'), "unexpected quoting in {line:?}");
    line.split(',').collect()
}

#[test]
fn inventory_csv_has_one_row_per_item() {
    let fixture = fixture();
    let json = inventory_json(&fixture.castellan, &[]);

    let csv = fixture.castellan.cli_ok(&["inventory", "--csv"]);

    assert!(csv.ends_with("\r\n"), "RFC 4180 line endings: {csv:?}");
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    let header = cells(lines[0]);
    assert_eq!(header[0], "type");
    assert_eq!(header.len(), 26, "{header:?}");
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| cells(l)).collect();
    assert!(rows.iter().all(|row| row.len() == header.len()));
    let count = |kind: &str| rows.iter().filter(|row| row[0] == kind).count();
    assert_eq!(count("agent"), json["agents"].as_array().unwrap().len());
    assert_eq!(
        count("connection"),
        json["connections"].as_array().unwrap().len()
    );
    assert_eq!(count("usage"), json["usage"].as_array().unwrap().len());
    let column = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let reader = rows
        .iter()
        .find(|row| row[0] == "agent" && row[column("name")] == "reader-bot")
        .expect("reader-bot row");
    assert_eq!(
        reader[column("owner")],
        "'+ops@example.com",
        "a leading + is defused for spreadsheets"
    );
    assert_eq!(reader[column("status")], "active");
    assert_eq!(reader[column("active_tokens")], "2");
    assert!(reader[column("last_used")].ends_with('Z'), "{reader:?}");
    assert_eq!(reader[column("upstream")], "", "not an agent column");
    let mirror = rows
        .iter()
        .find(|row| row[0] == "usage" && row[column("connection")] == "mirror")
        .expect("usage row for mirror");
    assert_eq!(mirror[column("agent")], "reader-bot");
    assert_eq!(mirror[column("requests_30d")], "1");
    assert_eq!(mirror[column("bytes_in_30d")], "5");
    assert_no_leaks(&fixture);
}

#[test]
fn inventory_text_shows_three_tables() {
    let fixture = fixture();

    let text = fixture.castellan.cli_ok(&["inventory"]);

    for heading in ["Agents", "Connections", "Usage"] {
        assert!(
            text.lines().any(|line| line.starts_with(heading)),
            "no {heading} table: {text}"
        );
    }
    for name in [
        "reader-bot",
        "ghost-bot",
        "undeclared",
        "mirror-key",
        "not set",
    ] {
        assert!(text.contains(name), "{name} missing: {text}");
    }
    let both = fixture.castellan.cli(&["inventory", "--json", "--csv"]);
    assert_eq!(both.status.code(), Some(2), "--json and --csv conflict");
    assert_no_secret(&text, &fixture.reader_token, "inventory text");
    assert_no_leaks(&fixture);
}
