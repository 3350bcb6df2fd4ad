//! Every request ends in one audit record, whatever its outcome, and
//! `castellan audit tail --json` shows it with the fields filled in.

#![forbid(unsafe_code)]

mod support;

use std::net::TcpListener;
use std::time::Duration;

use serde_json::Value;

use support::castellan::{poll_until, Castellan};
use support::http::{get, get_as, send, send_as, Reply};
use support::peers::{spawn_httpbin, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-audit-Ns8Bv3Qf6Zr1";

/// Limit for a record to appear after its response. The gateway queues
/// each record when the response ends and a writer task stores it.
const AUDIT_LIMIT: Duration = Duration::from_secs(3);

/// Returns a loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn config(httpbin: &Peer) -> String {
    format!(
        r#"
[connections.httpbin]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "httpbin-key"

[connections.vaultless]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "never-set"

[connections.offline]
upstream = "http://127.0.0.1:{closed}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "httpbin-key"

[roles.reader]
allow = [
  {{ connection = "httpbin", methods = ["GET"], paths = ["/get"] }},
  {{ connection = "httpbin", methods = ["*"], paths = ["/anything/**"] }},
  {{ connection = "vaultless", methods = ["GET"], paths = ["/get"] }},
  {{ connection = "offline", methods = ["GET"], paths = ["/get"] }},
]
deny = [{{ connection = "httpbin", methods = ["DELETE"], paths = ["/**"] }}]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]
networks = ["127.0.0.0/8"]
"#,
        httpbin = httpbin.base_url(),
        closed = closed_port(),
    )
}

/// The audit record fields expected for one request.
struct Expected {
    case: &'static str,
    reply: Reply,
    agent: Option<&'static str>,
    connection: Option<&'static str>,
    path: &'static str,
    decision: &'static str,
    rule: Option<&'static str>,
    /// Text the reason must contain, or `None` for no reason.
    reason: Option<&'static str>,
}

fn request_id(reply: &Reply) -> String {
    reply
        .header("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id in a {} response", reply.status))
        .to_owned()
}

/// Waits until the audit log has a record for every id, and returns all
/// records.
fn await_records(castellan: &Castellan, ids: &[String]) -> Vec<Value> {
    let mut records = Vec::new();
    let complete = poll_until(AUDIT_LIMIT, || {
        records = castellan.audit_records();
        ids.iter()
            .all(|id| records.iter().any(|r| r["request_id"] == id.as_str()))
    });
    assert!(
        complete.is_some(),
        "records missing for {ids:?}: {records:#?}"
    );
    records
}

fn check_record(record: &Value, expected: &Expected, token_id: &str) {
    let case = expected.case;
    assert_eq!(record["status"], expected.reply.status, "{case}: {record}");
    assert_eq!(record["decision"], expected.decision, "{case}: {record}");
    assert_eq!(record["agent"].as_str(), expected.agent, "{case}: {record}");
    let expected_token = expected.agent.map(|_| token_id);
    assert_eq!(
        record["token_id"].as_str(),
        expected_token,
        "{case}: {record}"
    );
    assert_eq!(
        record["connection"].as_str(),
        expected.connection,
        "{case}: {record}"
    );
    assert_eq!(record["path"], expected.path, "{case}: {record}");
    assert_eq!(record["rule"].as_str(), expected.rule, "{case}: {record}");

    match expected.reason {
        Some(text) => {
            let reason = record["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains(text),
                "{case}: reason lacks {text:?}: {record}"
            );
        }
        None => assert!(record["reason"].is_null(), "{case}: {record}"),
    }

    let source = record["source"].as_str().unwrap_or_default();
    assert!(source.starts_with("127.0.0.1:"), "{case}: {record}");
    assert!(
        record["seq"].as_i64().is_some_and(|seq| seq > 0),
        "{case}: {record}"
    );
    assert!(
        record["time_ms"].as_i64().is_some_and(|t| t > 0),
        "{case}: {record}"
    );
    assert!(record["duration_us"].as_u64().is_some(), "{case}: {record}");
}

#[test]
fn audit_records_every_outcome() {
    let httpbin = spawn_httpbin();
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin));
    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    let issued = castellan.issue("reader-bot", None);
    let token = issued.token.as_str();
    let server = castellan.serve();
    let authorization = format!("Bearer {token}");
    let payload = "twelve bytes";

    let allowed = send(
        "POST",
        &server.url("/httpbin/anything/audit"),
        &[
            ("authorization", &authorization),
            ("content-type", "text/plain"),
        ],
        Some(payload),
    );
    let expectations = [
        Expected {
            case: "allowed",
            reply: allowed.clone(),
            agent: Some("reader-bot"),
            connection: Some("httpbin"),
            path: "/anything/audit",
            decision: "allow",
            rule: Some("roles.reader.allow[1]"),
            reason: None,
        },
        Expected {
            case: "no rule",
            reply: get_as(&server.url("/httpbin/status/200"), token),
            agent: Some("reader-bot"),
            connection: Some("httpbin"),
            path: "/status/200",
            decision: "deny",
            rule: None,
            reason: Some("no rule"),
        },
        Expected {
            case: "deny rule",
            reply: send_as("DELETE", &server.url("/httpbin/anything/audit"), token),
            agent: Some("reader-bot"),
            connection: Some("httpbin"),
            path: "/anything/audit",
            decision: "deny",
            rule: Some("roles.reader.deny[0]"),
            reason: Some("roles.reader.deny[0]"),
        },
        Expected {
            case: "no token",
            reply: get(&server.url("/httpbin/get"), &[]),
            agent: None,
            connection: Some("httpbin"),
            path: "/httpbin/get",
            decision: "deny",
            rule: None,
            reason: Some("token"),
        },
        Expected {
            case: "unknown connection",
            reply: get_as(&server.url("/nowhere/get"), token),
            agent: Some("reader-bot"),
            connection: None,
            path: "/nowhere/get",
            decision: "deny",
            rule: None,
            reason: Some("nowhere"),
        },
        Expected {
            case: "missing secret",
            reply: get_as(&server.url("/vaultless/get"), token),
            agent: Some("reader-bot"),
            connection: Some("vaultless"),
            path: "/get",
            decision: "error",
            rule: None,
            reason: Some("never-set"),
        },
        Expected {
            case: "upstream down",
            reply: get_as(&server.url("/offline/get"), token),
            agent: Some("reader-bot"),
            connection: Some("offline"),
            path: "/get",
            decision: "error",
            rule: None,
            reason: Some("offline"),
        },
    ];
    let statuses: Vec<u16> = expectations.iter().map(|e| e.reply.status).collect();
    assert_eq!(
        statuses,
        [200, 403, 403, 401, 404, 503, 502],
        "{}",
        server.logs()
    );

    let ids: Vec<String> = expectations.iter().map(|e| request_id(&e.reply)).collect();
    let records = await_records(&castellan, &ids);

    for (expected, id) in expectations.iter().zip(&ids) {
        let matching: Vec<&Value> = records
            .iter()
            .filter(|r| r["request_id"] == id.as_str())
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{}: one record per request: {matching:?}",
            expected.case
        );
        check_record(matching[0], expected, &issued.id);
    }
    let allowed_record = records.iter().find(|r| r["request_id"] == ids[0].as_str());
    let allowed_record = allowed_record.expect("the allowed record");
    assert_eq!(
        allowed_record["bytes_in"],
        payload.len(),
        "{allowed_record}"
    );
    assert_eq!(
        allowed_record["bytes_out"],
        allowed.body.len(),
        "{allowed_record}"
    );
}

#[test]
fn audit_tail_filters_by_agent() {
    let httpbin = spawn_httpbin();
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin));
    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    let token = castellan.issue_token("reader-bot");
    let server = castellan.serve();
    let anonymous = get(&server.url("/httpbin/get"), &[]);
    let allowed = get_as(&server.url("/httpbin/get"), &token);
    let ids = [request_id(&anonymous), request_id(&allowed)];
    await_records(&castellan, &ids);

    let stdout = castellan.cli_ok(&["audit", "tail", "--json", "--agent", "reader-bot"]);

    let records = support::castellan::json_lines_or_array(&stdout);
    assert!(
        records.iter().any(|r| r["request_id"] == ids[1].as_str()),
        "the agent's record is missing: {stdout}"
    );
    assert!(
        records.iter().all(|r| r["agent"] == "reader-bot"),
        "another agent's record was printed: {stdout}"
    );
    let limited = castellan.cli_ok(&["audit", "tail", "--json", "-n", "1"]);
    assert_eq!(
        support::castellan::json_lines_or_array(&limited).len(),
        1,
        "{limited}"
    );
}

#[test]
fn audit_follow_prints_new_records() {
    let httpbin = spawn_httpbin();
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin));
    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    let token = castellan.issue_token("reader-bot");
    let server = castellan.serve();
    let follow = castellan.spawn_cli(&["audit", "tail", "-f", "--json", "-n", "0"]);

    let reply = get_as(&server.url("/httpbin/status/200"), &token);
    let id = request_id(&reply);

    let deadline = std::time::Instant::now() + AUDIT_LIMIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Ok(line) = follow.lines.recv_timeout(left) else {
            break;
        };
        if line.contains(&id) {
            let record: Value = serde_json::from_str(&line).expect("a JSON line");
            assert_eq!(record["decision"], "deny", "{record}");
            return;
        }
        seen.push(line);
    }
    panic!("audit tail -f printed no record for {id} within {AUDIT_LIMIT:?}: {seen:?}");
}
