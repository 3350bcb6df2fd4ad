//! `castellan findings` and `castellan policy suggest` on usage that real
//! requests through a running gateway produced: each finding kind appears
//! where its condition is met and stays away from a control object next to
//! it, the exit status follows the severities, and a suggested role allows
//! exactly what the agent used.

#![forbid(unsafe_code)]

mod schema_doc;
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use support::castellan::{poll_until, Castellan, Server};
use support::http::send_as;
use support::leak::assert_no_secret;
use support::peers::{spawn_httpbin, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-findings-Tb4Yw9Kq2Jx7";
const SOLO_KEY: &str = "sk-e2e-findings-solo-Vn6Rc1Hm8Gz3";

const AUDIT_LIMIT: Duration = Duration::from_secs(5);

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const SDK: &str = "python-httpx/0.27.0";
const UUID: &str = "123e4567-e89b-12d3-a456-426614174000";

fn connections(httpbin: &Peer) -> String {
    format!(
        r#"
[connections.httpbin]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "httpbin-key"

[connections.mirror]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "httpbin-key"

[connections.solo]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "solo-key"
"#,
        httpbin = httpbin.base_url()
    )
}

const ROLES_AND_AGENTS: &str = r#"
[gateway]
departed_owners = ["sam@example.com"]

[roles.reader]
allow = [
  { connection = "httpbin", methods = ["GET"], paths = ["/get"] },
  { connection = "httpbin", methods = ["GET"], paths = ["/headers"] },
  { connection = "httpbin", methods = ["GET", "POST", "PUT"], paths = ["/anything/**"] },
]
deny = [{ connection = "httpbin", methods = ["DELETE"], paths = ["/**"] }]

[roles.writer]
allow = [{ connection = "mirror", methods = ["POST", "DELETE"], paths = ["/anything/**"] }]

[roles.everything]
allow = [{ connection = "solo", methods = ["*"], paths = ["/**"] }]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]

[agents.writer-bot]
owner = "ops@example.com"
roles = ["writer"]

[agents.wide-bot]
owner = "ops@example.com"
roles = ["everything"]

[agents.idle-bot]
owner = "SAM@example.com"
roles = ["reader"]

[agents.paused-bot]
owner = "sam@example.com"
roles = ["reader"]
"#;

const GHOSTS: &str = r#"
[agents.ghost-bot]
owner = "ops@example.com"

[agents.gone-bot]
owner = "ops@example.com"
"#;

/// Sends `METHOD path` as `token` over a connection from `source` (a
/// loopback address), with `user_agent`, and returns the status code.
fn request_from(
    source: Ipv4Addr,
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    user_agent: &str,
) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a runtime for the client socket");
    let target = server.agent_addr;
    let mut stream = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
            let stream = socket.connect(target).await?;
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            Ok::<_, std::io::Error>(stream)
        })
        .unwrap_or_else(|error| panic!("connect from {source} to {target}: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set the read timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {target}\r\nAuthorization: Bearer {token}\r\n\
         User-Agent: {user_agent}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .expect("write the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8_lossy(&raw);
    support::http::raw_status(&text)
}

/// A gateway's worth of traffic and the data directory it left behind:
///
/// - reader-bot: GET and POST under /anything (never PUT), ids in paths,
///   and one request with a browser user agent from 127.1.0.1, a second
///   /16 network;
/// - writer-bot: every method it may use, from two addresses of one /16,
///   with an SDK's user agent;
/// - idle-bot: a token that never expires, never used, owner departed;
/// - wide-bot: a 365-day token, never used, a role with `/**`;
/// - paused-bot: suspended, owner departed;
/// - ghost-bot and gone-bot: tokens, then removed from the configuration,
///   gone-bot's token revoked first.
struct Fixture {
    httpbin: Peer,
    castellan: Castellan,
    tokens: Vec<String>,
    reader_token_id: String,
    writer_token_id: String,
    idle_token_id: String,
    wide_token_id: String,
}

fn fixture() -> Fixture {
    let httpbin = spawn_httpbin();
    let castellan = Castellan::init();
    let base = format!("{}{ROLES_AND_AGENTS}", connections(&httpbin));
    castellan.write_config(&format!("{base}{GHOSTS}"));
    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    castellan.set_secret("solo-key", SOLO_KEY);
    let reader = castellan.issue("reader-bot", Some("30d"));
    let writer = castellan.issue("writer-bot", Some("30d"));
    let idle = castellan.issue("idle-bot", Some("never"));
    let wide = castellan.issue("wide-bot", Some("365d"));
    let paused = castellan.issue("paused-bot", Some("30d"));
    let ghost = castellan.issue("ghost-bot", Some("30d"));
    let gone = castellan.issue("gone-bot", Some("30d"));
    castellan.cli_ok(&["agent", "token", "revoke", &gone.id]);
    castellan.write_config(&base);
    castellan.cli_ok(&["agent", "suspend", "paused-bot"]);

    let server = castellan.serve();
    let home = Ipv4Addr::LOCALHOST;
    let token = reader.token.as_str();
    for path in [
        "/httpbin/get".to_owned(),
        "/httpbin/anything/1".to_owned(),
        "/httpbin/anything/items/42".to_owned(),
        "/httpbin/anything/items/43".to_owned(),
        format!("/httpbin/anything/items/{UUID}"),
    ] {
        assert_eq!(
            request_from(home, &server, "GET", &path, token, SDK),
            200,
            "{path}"
        );
    }
    let posted = request_from(home, &server, "POST", "/httpbin/anything/2", token, SDK);
    assert_eq!(posted, 200);
    let denied = send_as("DELETE", &server.url("/httpbin/anything/2"), token);
    assert_eq!(denied.status, 403, "{}", denied.body);
    let away = Ipv4Addr::new(127, 1, 0, 1);
    let browsed = request_from(away, &server, "GET", "/httpbin/get", token, FIREFOX);
    assert_eq!(browsed, 200);

    let token = writer.token.as_str();
    let near = Ipv4Addr::new(127, 0, 9, 9);
    for (source, method) in [(home, "POST"), (near, "DELETE")] {
        let status = request_from(source, &server, method, "/mirror/anything/a", token, SDK);
        assert_eq!(status, 200, "{method} from {source}");
    }
    // A suspended agent is rejected before it counts as a use.
    let rejected = request_from(home, &server, "GET", "/httpbin/get", &paused.token, FIREFOX);
    assert_eq!(rejected, 403);
    await_audit(&castellan, 11);
    drop(server);

    Fixture {
        httpbin,
        castellan,
        tokens: vec![
            reader.token,
            writer.token,
            idle.token,
            wide.token,
            paused.token,
            ghost.token,
            gone.token,
        ],
        reader_token_id: reader.id,
        writer_token_id: writer.id,
        idle_token_id: idle.id,
        wide_token_id: wide.id,
    }
}

fn await_audit(castellan: &Castellan, count: usize) {
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
}

/// Runs `findings --json EXTRA...` and returns the report and exit code.
fn findings(castellan: &Castellan, extra: &[&str]) -> (Value, i32) {
    let mut args = vec!["findings", "--json"];
    args.extend_from_slice(extra);
    let output = castellan.cli(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "findings --json is not JSON ({error}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (report, output.status.code().expect("exit code"))
}

/// Returns the findings of `kind`.
fn of_kind<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

/// Returns the object names of the findings of `kind`, sorted.
fn names(report: &Value, kind: &str) -> Vec<String> {
    let mut names: Vec<String> = of_kind(report, kind)
        .iter()
        .map(|f| f["object"]["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

/// Asserts that every finding of `kind` has this category and severity.
fn assert_classified(report: &Value, kind: &str, category: &str, severity: &str) {
    let found = of_kind(report, kind);
    assert!(!found.is_empty(), "no {kind} finding: {report:#}");
    for finding in found {
        assert_eq!(finding["category"], category, "{finding:#}");
        assert_eq!(finding["severity"], severity, "{finding:#}");
        for text in ["summary", "why", "fix"] {
            let value = finding[text].as_str().unwrap_or_default();
            assert!(!value.is_empty(), "{kind} has no {text}: {finding:#}");
        }
    }
}

fn assert_no_leaks(fixture: &Fixture) {
    for run in fixture.castellan.cli_runs() {
        if run.args.iter().any(|arg| arg == "issue") {
            continue;
        }
        let place = format!("output of castellan {:?}", run.args);
        let text = run.text();
        for secret in [UPSTREAM_KEY, SOLO_KEY] {
            assert_no_secret(&text, secret, &place);
        }
        for token in &fixture.tokens {
            assert_no_secret(&text, token, &place);
        }
    }
}

#[test]
fn findings_json_matches_schema_doc() {
    let fixture = fixture();

    let (report, code) = findings(&fixture.castellan, &["--as-of", "+100d"]);

    schema_doc::assert_matches_doc(&report, "### Findings JSON fields");
    assert_eq!(report["schema_version"], 1);
    assert_eq!(code, 1, "high findings fail the command");
    let severities: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["severity"].as_str().unwrap())
        .collect();
    let rank = |s: &str| {
        ["critical", "high", "medium", "low"]
            .iter()
            .position(|r| *r == s)
    };
    assert!(
        severities.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "most severe first: {severities:?}"
    );
    let high = severities.iter().filter(|s| **s == "high").count();
    assert_eq!(report["counts"]["high"], high);
    assert_no_leaks(&fixture);
}

#[test]
fn token_without_expiry_reported() {
    let fixture = fixture();

    let (report, code) = findings(&fixture.castellan, &[]);

    assert_classified(&report, "token-without-expiry", "NHI7", "high");
    assert_eq!(
        names(&report, "token-without-expiry"),
        [fixture.idle_token_id.as_str()],
        "only the token issued with --ttl never"
    );
    assert_eq!(code, 1);
    assert_no_leaks(&fixture);
}

#[test]
fn old_tokens_reported_after_90_days() {
    let fixture = fixture();
    let castellan = &fixture.castellan;

    let (before, _) = findings(castellan, &["--as-of", "+89d"]);
    let (after, _) = findings(castellan, &["--as-of", "+91d"]);

    assert!(names(&before, "token-too-old").is_empty(), "{before:#}");
    assert_classified(&after, "token-too-old", "NHI7", "medium");
    assert_eq!(
        names(&after, "token-too-old"),
        [fixture.wide_token_id.as_str()],
        "30-day tokens have expired and the never-expiring one is reported as such"
    );
    assert_eq!(
        names(&after, "token-without-expiry"),
        [fixture.idle_token_id.as_str()]
    );
    assert_no_leaks(&fixture);
}

#[test]
fn stale_secrets_reported_after_30_days() {
    let fixture = fixture();
    let castellan = &fixture.castellan;

    let (now, _) = findings(castellan, &[]);
    let (before, _) = findings(castellan, &["--as-of", "+29d"]);
    let (after, _) = findings(castellan, &["--as-of", "+31d"]);

    assert!(names(&now, "secret-not-rotated").is_empty());
    assert!(names(&before, "secret-not-rotated").is_empty());
    assert_classified(&after, "secret-not-rotated", "NHI7", "medium");
    assert_eq!(
        names(&after, "secret-not-rotated"),
        ["httpbin-key", "solo-key"]
    );
    let summary = of_kind(&after, "secret-not-rotated")[0]["summary"]
        .as_str()
        .unwrap();
    assert!(summary.contains("httpbin, mirror"), "{summary}");
    assert_no_leaks(&fixture);
}

#[test]
fn unused_agents_reported_after_30_days() {
    let fixture = fixture();
    let castellan = &fixture.castellan;

    let (now, _) = findings(castellan, &[]);
    let (before, _) = findings(castellan, &["--as-of", "+29d"]);
    let (after, _) = findings(castellan, &["--as-of", "+31d"]);

    assert!(names(&now, "agent-unused").is_empty(), "{now:#}");
    assert!(names(&before, "agent-unused").is_empty(), "{before:#}");
    assert_eq!(
        names(&after, "agent-unused"),
        ["idle-bot", "reader-bot", "wide-bot", "writer-bot"],
        "the suspended agent is not reported"
    );
    for finding in of_kind(&after, "agent-unused") {
        assert_eq!(finding["category"], "NHI1");
        let expected = match finding["object"]["name"].as_str().unwrap() {
            // Their 30-day tokens have expired, so nothing is left to use.
            "reader-bot" | "writer-bot" => "low",
            _ => "medium",
        };
        assert_eq!(finding["severity"], expected, "{finding:#}");
    }
    let reader = of_kind(&after, "agent-unused")
        .into_iter()
        .find(|f| f["object"]["name"] == "reader-bot")
        .unwrap();
    assert!(
        reader["summary"].as_str().unwrap().contains("last request"),
        "{reader:#}"
    );
    assert_no_leaks(&fixture);
}

#[test]
fn departed_owner_reported() {
    let fixture = fixture();

    let (report, _) = findings(&fixture.castellan, &[]);

    assert_eq!(
        names(&report, "owner-departed"),
        ["idle-bot", "paused-bot"],
        "owners compare ignoring case; ops@example.com has not left"
    );
    for finding in of_kind(&report, "owner-departed") {
        assert_eq!(finding["category"], "NHI1");
        let expected = if finding["object"]["name"] == "paused-bot" {
            "medium"
        } else {
            "high"
        };
        assert_eq!(finding["severity"], expected, "{finding:#}");
    }
    assert!(names(&report, "owner-missing").is_empty());
    assert_no_leaks(&fixture);
}

#[test]
fn empty_owner_rejected_by_configuration() {
    let castellan = Castellan::init();
    castellan.write_config(
        r#"
[connections.api]
upstream = "https://api.example.com"
auth = { kind = "bearer" }
secret = "api-key"

[agents.orphan-bot]
owner = " "
"#,
    );

    let output = castellan.cli(&["findings", "--json"]);

    assert_eq!(output.status.code(), Some(2), "an error, not a report");
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("agent \"orphan-bot\" has an empty owner"),
        "{message}"
    );
}

#[test]
fn undeclared_agent_tokens_reported() {
    let fixture = fixture();

    let (report, _) = findings(&fixture.castellan, &[]);

    assert_classified(&report, "token-of-undeclared-agent", "NHI1", "medium");
    assert_eq!(
        names(&report, "token-of-undeclared-agent"),
        ["ghost-bot"],
        "gone-bot's only token is revoked"
    );
    assert_no_leaks(&fixture);
}

#[test]
fn unused_and_whole_connection_rules_reported() {
    let fixture = fixture();

    let (report, _) = findings(&fixture.castellan, &[]);

    assert_classified(&report, "rule-unused", "NHI5", "low");
    assert_eq!(
        names(&report, "rule-unused"),
        ["roles.everything.allow[0]", "roles.reader.allow[1]"],
        "allow[0] and allow[2] of reader and writer's rule were used"
    );
    assert_classified(&report, "rule-whole-connection", "NHI5", "high");
    assert_eq!(
        names(&report, "rule-whole-connection"),
        ["roles.everything.allow[0]"],
        "/anything/** is not a whole connection"
    );
    let whole = of_kind(&report, "rule-whole-connection")[0];
    assert_eq!(whole["object"]["connection"], "solo");
    assert_no_leaks(&fixture);
}

#[test]
fn unused_write_methods_reported() {
    let fixture = fixture();

    let (report, _) = findings(&fixture.castellan, &[]);

    assert_classified(&report, "write-method-unused", "NHI5", "medium");
    let found = of_kind(&report, "write-method-unused");
    let subjects: Vec<(&str, &str)> = found
        .iter()
        .map(|f| {
            (
                f["object"]["agent"].as_str().unwrap(),
                f["object"]["connection"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        subjects,
        [
            ("idle-bot", "httpbin"),
            ("reader-bot", "httpbin"),
            ("wide-bot", "solo")
        ],
        "writer-bot used both of its write methods"
    );
    let idle = found[0]["summary"].as_str().unwrap();
    assert!(idle.contains("may send POST, PUT to"), "{idle}");
    let reader = found[1]["summary"].as_str().unwrap();
    assert!(reader.contains("may send PUT to"), "{reader}");
    assert!(
        !reader.contains("POST") && !reader.contains("DELETE"),
        "POST was used and DELETE is denied on /**: {reader}"
    );
    let wide = found[2]["summary"].as_str().unwrap();
    assert!(wide.contains("POST, PUT, PATCH, DELETE"), "{wide}");
    assert_no_leaks(&fixture);
}

#[test]
fn shared_secret_reported() {
    let fixture = fixture();

    let (report, _) = findings(&fixture.castellan, &[]);

    assert_classified(&report, "secret-shared", "NHI9", "medium");
    assert_eq!(names(&report, "secret-shared"), ["httpbin-key"]);
    let summary = of_kind(&report, "secret-shared")[0]["summary"]
        .as_str()
        .unwrap();
    assert!(summary.contains("httpbin, mirror"), "{summary}");
    assert_no_leaks(&fixture);
}

#[test]
fn token_on_two_networks_reported() {
    let fixture = fixture();

    let (report, _) = findings(&fixture.castellan, &[]);

    assert_classified(&report, "credential-many-networks", "NHI9", "high");
    assert_eq!(
        names(&report, "credential-many-networks"),
        [fixture.reader_token_id.as_str()],
        "writer-bot's two addresses share one /16"
    );
    let finding = of_kind(&report, "credential-many-networks")[0];
    assert_eq!(finding["object"]["agent"], "reader-bot");
    let summary = finding["summary"].as_str().unwrap();
    assert!(
        summary.contains("127.0.0.0/16") && summary.contains("127.1.0.0/16"),
        "{summary}"
    );
    assert!(!summary.contains(&fixture.writer_token_id), "{summary}");
    assert_no_leaks(&fixture);
}

#[test]
fn browser_user_agent_reported() {
    let fixture = fixture();

    let (report, _) = findings(&fixture.castellan, &[]);

    assert_classified(&report, "browser-user-agent", "NHI10", "high");
    assert_eq!(
        names(&report, "browser-user-agent"),
        [fixture.reader_token_id.as_str()],
        "the SDK's user agent and the suspended agent's rejected request do not count"
    );
    let summary = of_kind(&report, "browser-user-agent")[0]["summary"]
        .as_str()
        .unwrap();
    assert!(summary.contains("made 1 request with"), "{summary}");
    assert!(summary.contains("Firefox/128.0"), "{summary}");

    // The audit log has the user agent in JSON but not in the text line.
    let json = fixture.castellan.audit_records();
    assert!(
        json.iter().any(|r| r["user_agent"] == FIREFOX),
        "no record with the browser's user agent"
    );
    let text = fixture.castellan.cli_ok(&["audit", "tail", "-n", "50"]);
    assert!(!text.contains("Firefox"), "{text}");
    assert_no_leaks(&fixture);
}

#[test]
fn plaintext_upstream_reported() {
    let castellan = Castellan::init();
    castellan.write_config(
        r#"
[connections.remote]
upstream = "http://api.example.com/v1"
auth = { kind = "bearer" }
secret = "remote-key"

[connections.local-name]
upstream = "http://localhost:9"
auth = { kind = "bearer" }
secret = "local-name-key"

[connections.local-ip]
upstream = "http://[::1]:9"
auth = { kind = "bearer" }
secret = "local-ip-key"

[connections.tls]
upstream = "https://api.example.com"
auth = { kind = "bearer" }
secret = "tls-key"
"#,
    );

    let (report, code) = findings(&castellan, &[]);

    assert_classified(&report, "plaintext-upstream", "NHI4", "critical");
    assert_eq!(names(&report, "plaintext-upstream"), ["remote"]);
    assert_eq!(report["counts"]["critical"], 1);
    assert_eq!(code, 1);
}

#[test]
fn low_and_medium_findings_exit_zero() {
    let castellan = Castellan::init();
    castellan.write_config(
        r#"
[connections.api]
upstream = "https://api.example.com"
auth = { kind = "bearer" }
secret = "api-key"

[roles.reader]
allow = [{ connection = "api", methods = ["GET"], paths = ["/v1/models"] }]

[agents.new-bot]
owner = "ops@example.com"
roles = ["reader"]
"#,
    );

    let (report, code) = findings(&castellan, &[]);

    assert_eq!(names(&report, "rule-unused"), ["roles.reader.allow[0]"]);
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    assert_eq!(code, 0, "a low finding does not fail the command");
    let text = castellan.cli(&["findings"]);
    assert_eq!(text.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("LOW"), "{stdout}");
    assert!(stdout.contains("NHI5"), "{stdout}");
    assert!(
        stdout.contains("1 finding: 0 critical, 0 high, 0 medium, 1 low."),
        "{stdout}"
    );
}

/// Writes a configuration with the fixture's connections, `suggestion` and
/// reader-bot holding only the suggested role, and returns its path.
fn suggested_config(fixture: &Fixture, suggestion: &str) -> String {
    let path = fixture.castellan.scratch_dir().join("suggested.toml");
    let text = format!(
        "{}\n{suggestion}\n[agents.reader-bot]\nowner = \"ops@example.com\"\nroles = [\"reader-bot-suggested\"]\n",
        connections(&fixture.httpbin)
    );
    std::fs::write(&path, text).expect("write the suggested configuration");
    path.to_string_lossy().into_owned()
}

/// Runs `policy explain` against the configuration at `config` and returns
/// whether it allowed the request.
fn explain_allows(fixture: &Fixture, config: &str, method: &str, url: &str) -> bool {
    let data_dir = fixture.castellan.data_dir().to_string_lossy().into_owned();
    let output = fixture.castellan.cli_bare(&[
        "--data-dir",
        &data_dir,
        "--config",
        config,
        "policy",
        "explain",
        "reader-bot",
        method,
        url,
    ]);
    match output.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!(
            "policy explain {method} {url} exited with {other:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[test]
fn suggested_role_allows_only_used_routes() {
    let fixture = fixture();
    let config_before = std::fs::read(fixture.castellan.config_path()).unwrap();

    let suggestion = fixture
        .castellan
        .cli_ok(&["policy", "suggest", "reader-bot", "--days", "30"]);

    assert!(
        suggestion.contains(
            r#"{ connection = "httpbin", methods = ["GET", "POST"], paths = ["/anything/*"] },"#
        ),
        "{suggestion}"
    );
    assert!(
        suggestion.contains(
            r#"{ connection = "httpbin", methods = ["GET"], paths = ["/anything/items/*", "/get"] },"#
        ),
        "ids 42, 43 and a UUID became one `*`: {suggestion}"
    );
    assert!(
        suggestion
            .contains(r#"{ connection = "httpbin", methods = ["DELETE"], paths = ["/**"] },"#),
        "the deny rule is copied: {suggestion}"
    );
    assert_eq!(
        std::fs::read(fixture.castellan.config_path()).unwrap(),
        config_before,
        "the configuration is never written"
    );

    let config = suggested_config(&fixture, &suggestion);
    let data_dir = fixture.castellan.data_dir().to_string_lossy().into_owned();
    let check = fixture.castellan.cli_bare(&[
        "--data-dir",
        &data_dir,
        "--config",
        &config,
        "config",
        "check",
    ]);
    assert!(
        check.status.success(),
        "the suggestion is valid configuration: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let cases = [
        ("GET", "/httpbin/anything/items/77", true),
        ("GET", "/httpbin/anything/9", true),
        ("POST", "/httpbin/anything/9", true),
        ("GET", "/httpbin/get", true),
        ("PUT", "/httpbin/anything/9", false),
        ("POST", "/httpbin/anything/items/77", false),
        ("GET", "/httpbin/headers", false),
        ("GET", "/httpbin/anything/items/77/more", false),
        ("DELETE", "/httpbin/anything/9", false),
    ];
    for (method, url, allowed) in cases {
        assert_eq!(
            explain_allows(&fixture, &config, method, url),
            allowed,
            "{method} {url} under the suggested role"
        );
    }
    assert_no_leaks(&fixture);
}

#[test]
fn suggestion_lists_removed_rules() {
    let fixture = fixture();

    let suggestion = fixture
        .castellan
        .cli_ok(&["policy", "suggest", "reader-bot"]);

    let expected = [
        "#   roles.reader.allow[0] httpbin GET /get  (kept)",
        "# - roles.reader.allow[1] httpbin GET /headers  (removed: no allowed request in the last 30 days)",
        "#   roles.reader.allow[2] httpbin GET /anything/**  (narrowed to: GET /anything/*, GET /anything/items/*)",
        "#   roles.reader.allow[2] httpbin POST /anything/**  (narrowed to: POST /anything/*)",
        "# - roles.reader.allow[2] httpbin PUT /anything/**  (removed: no allowed request in the last 30 days)",
    ];
    for line in expected {
        assert!(
            suggestion.lines().any(|l| l == line),
            "missing line {line:?} in:\n{suggestion}"
        );
    }
    assert!(
        !suggestion.contains("/anything/2\"") && !suggestion.contains("/items/42"),
        "identifiers are generalized: {suggestion}"
    );

    let unknown = fixture.castellan.cli(&["policy", "suggest", "nobody-bot"]);
    assert_eq!(unknown.status.code(), Some(2));
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        message.contains("\"nobody-bot\" is not declared"),
        "{message}"
    );
    let idle = fixture.castellan.cli_ok(&["policy", "suggest", "idle-bot"]);
    assert!(
        idle.contains("allow = []"),
        "no requests, nothing allowed: {idle}"
    );
    assert_no_leaks(&fixture);
}
