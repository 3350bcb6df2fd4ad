//! The operator's commands: `init`, `config check`, `policy explain` and
//! the listings of secrets and tokens, and how they and the gateway's log
//! print hostile text.

#![forbid(unsafe_code)]

mod support;

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::castellan::{json_lines_or_array, poll_until, Castellan};

const CONFIG: &str = r#"
[connections.httpbin]
upstream = "http://127.0.0.1:9"
allow_private = true
auth = { kind = "bearer" }
secret = "httpbin-key"

[roles.reader]
allow = [
  { connection = "httpbin", methods = ["GET"], paths = ["/get", "/headers"] },
  { connection = "httpbin", methods = ["*"], paths = ["/anything/**"] },
]
deny = [{ connection = "httpbin", methods = ["DELETE"], paths = ["/**"] }]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]
networks = ["127.0.0.0/8"]

[agents.office-bot]
owner = "ops@example.com"
roles = ["reader"]
networks = ["10.0.0.0/8"]
"#;

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Returns the 1-based line and column of the first `needle` in `text`.
fn locate(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} is not in the configuration"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
    (line, column)
}

#[test]
fn init_creates_private_data_dir() {
    let castellan = Castellan::init();
    let data_dir = castellan.data_dir();

    for file in ["castellan.db", "master.key", "castellan.toml"] {
        assert!(data_dir.join(file).is_file(), "init did not create {file}");
    }
    let mode = fs::metadata(data_dir.join("master.key"))
        .expect("stat master.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "master.key mode is {:o}", mode & 0o777);
    let example = castellan.cli(&["config", "check"]);
    assert!(
        example.status.success(),
        "the example configuration is invalid: {}",
        stderr(&example)
    );
}

#[test]
fn init_refuses_existing_data_dir() {
    let castellan = Castellan::init();
    let key_before = fs::read(castellan.data_dir().join("master.key")).expect("read master.key");
    let data_dir = castellan.data_dir().to_string_lossy().into_owned();

    let again = castellan.cli_bare(&["init", "--data-dir", &data_dir]);

    assert!(
        !again.status.success(),
        "a second init succeeded: {}",
        stdout(&again)
    );
    let message = stderr(&again);
    assert!(
        message.contains(&data_dir) && message.contains("already exists"),
        "the error must name the existing directory: {message}"
    );
    let key_after = fs::read(castellan.data_dir().join("master.key")).expect("read master.key");
    assert_eq!(
        key_before, key_after,
        "the second init changed the master key"
    );
}

#[test]
fn config_check_accepts_valid_config() {
    let castellan = Castellan::init();
    castellan.write_config(CONFIG);

    let output = castellan.cli(&["config", "check"]);

    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("valid"), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("httpbin-key"),
        "the missing secret deserves a warning: {}",
        stderr(&output)
    );
}

#[test]
fn config_check_reports_line_and_column() {
    // Each case breaks CONFIG by one replacement, and the error must point
    // at the replacement text.
    let cases = [
        (
            "undefined connection",
            r#"connection = "httpbin", methods = ["GET"]"#,
            r#"connection = "htpbin", methods = ["GET"]"#,
            "\"htpbin\"",
            "htpbin",
        ),
        (
            "lower-case method",
            r#"methods = ["GET"], paths = ["/get""#,
            r#"methods = ["get"], paths = ["/get""#,
            "\"get\"",
            "\"get\"",
        ),
        (
            "undefined role",
            r#"roles = ["reader"]"#,
            r#"roles = ["raeder"]"#,
            "\"raeder\"",
            "raeder",
        ),
        (
            "invalid network",
            r#"networks = ["10.0.0.0/8"]"#,
            r#"networks = ["10.0.0.1/8"]"#,
            "\"10.0.0.1/8\"",
            "10.0.0.1/8",
        ),
        (
            "unknown key",
            "secret = \"httpbin-key\"",
            "secrets = \"httpbin-key\"",
            "secrets",
            "secrets",
        ),
    ];
    let castellan = Castellan::init();

    for (case, original, broken, at, named) in cases {
        let toml = CONFIG.replacen(original, broken, 1);
        assert_ne!(toml, CONFIG, "{case}: the replacement did not apply");
        castellan.write_config(&toml);
        let (line, column) = locate(&toml, at);

        let output = castellan.cli(&["config", "check"]);

        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{case}: {message}");
        let position = format!("castellan.toml:{line}:{column}: ");
        let located = message.lines().find(|l| l.contains(&position));
        let located = located.unwrap_or_else(|| panic!("{case}: no {position:?} in:\n{message}"));
        assert!(
            located.contains(named),
            "{case}: the message must name {named}: {located}"
        );
        assert!(message.contains("hint:"), "{case}: no hint in:\n{message}");
    }
}

#[test]
fn config_check_rejects_repeated_role() {
    let castellan = Castellan::init();
    let toml = CONFIG.replacen(
        r#"roles = ["reader"]"#,
        r#"roles = ["reader", "reader"]"#,
        1,
    );
    assert_ne!(toml, CONFIG, "the replacement did not apply");
    castellan.write_config(&toml);
    // The first `"reader"]` is the repeated entry of reader-bot.
    let (line, column) = locate(&toml, r#""reader"]"#);

    let output = castellan.cli(&["config", "check"]);

    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    let expected = format!(
        "castellan.toml:{line}:{column}: agent \"reader-bot\" lists role \"reader\" more than once"
    );
    assert!(
        message.contains(&expected),
        "no {expected:?} in:\n{message}"
    );
    assert!(
        message.contains("hint: remove the repeated entry from roles"),
        "{message}"
    );
}

#[test]
fn invalid_config_error_printed_once() {
    let castellan = Castellan::init();
    castellan.write_config("[connections.httpbin\nupstream = \"http://127.0.0.1:9\"\n");
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];

    for args in [&["config", "check"][..], &serve[..]] {
        let output = castellan.cli(args);

        let message = stderr(&output);
        assert!(!output.status.success(), "{args:?} succeeded: {message}");
        assert_eq!(
            message.matches("invalid configuration").count(),
            1,
            "{args:?} must print the error once:\n{message}"
        );
        assert_eq!(
            message.matches("castellan.toml:1:").count(),
            1,
            "{args:?} must print the diagnostic once:\n{message}"
        );
    }
}

/// Returns the characters of `text` that a terminal would act on: C0
/// controls other than the line feed, DEL, C1 controls and bidirectional
/// formatting characters.
fn terminal_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| {
            (c.is_control() && *c != '\n')
                || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}')
                || ('\u{202A}'..='\u{202E}').contains(c)
                || ('\u{2066}'..='\u{2069}').contains(c)
        })
        .collect()
}

#[test]
fn stored_text_printed_escaped() {
    // An owner that retitles the terminal, reverses the text after it and
    // starts a C1 control sequence, written with TOML escapes.
    let owner = r"ops\u001B]0;owned\u0007\u202Ecom.elpmaxe\u009B31m@example.com";
    let escaped = r"ops\u{1b}]0;owned\u{7}\u{202e}com.elpmaxe\u{9b}31m@example.com";
    let castellan = Castellan::init();
    castellan.write_config(&format!(
        "{CONFIG}\n[gateway]\ndeparted_owners = [\"{owner}\"]\n\n[agents.hostile-bot]\nowner = \"{owner}\"\nroles = [\"reader\"]\n"
    ));
    let reason = "moved\u{1b}[2J\u{1b}[Hcursor\u{202e}";
    castellan.cli_ok(&["agent", "suspend", "hostile-bot", "--reason", reason]);
    castellan.issue("hostile-bot", Some("30d"));

    // JSON escapes C0 controls itself but leaves C1 controls and the
    // bidirectional characters raw unless the command escapes them.
    let commands: [&[&str]; 11] = [
        &["agent", "list"],
        &["agent", "token", "list"],
        &["inventory"],
        &["findings"],
        &["audit", "events"],
        &["agent", "list", "--json"],
        &["agent", "token", "list", "--json"],
        &["inventory", "--json"],
        &["findings", "--json"],
        &["audit", "events", "--json"],
        &["inventory", "--csv"],
    ];
    for args in commands {
        let output = castellan.cli(args);

        // CSV rows end in CRLF, as RFC 4180 specifies.
        let text = format!("{}{}", stdout(&output), stderr(&output)).replace("\r\n", "\n");
        assert_eq!(
            terminal_controls(&text),
            Vec::<char>::new(),
            "{args:?} printed raw terminal controls:\n{text:?}"
        );
        assert!(
            !output.stdout.contains(&0x1b) && !output.stderr.contains(&0x1b),
            "{args:?} printed a raw ESC byte"
        );
    }
    let agents = castellan.cli_ok(&["agent", "list"]);
    assert!(
        agents.contains(escaped),
        "the owner is not shown:\n{agents}"
    );
    let findings = stdout(&castellan.cli(&["findings"]));
    assert!(
        findings.contains(escaped),
        "the departed owner is not shown:\n{findings}"
    );
    let events = castellan.cli_ok(&["audit", "events"]);
    assert!(
        events.contains(r"moved\u{1b}[2J\u{1b}[Hcursor\u{202e}"),
        "the suspension reason is not shown:\n{events}"
    );
    // The escapes are JSON's own, so a parser reads the stored text back.
    let agents = castellan.cli_ok(&["agent", "list", "--json"]);
    let hostile = agents
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|agent| agent["agent"] == "hostile-bot")
        .expect("hostile-bot is listed");
    assert_eq!(
        hostile["owner"],
        "ops\u{1b}]0;owned\u{7}\u{202e}com.elpmaxe\u{9b}31m@example.com"
    );
}

/// Returns the HTTP status of one request with a raw path, which a client
/// library would not send.
fn raw_get_status(address: std::net::SocketAddr, path: &[u8], token: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect to the gateway");
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(path);
    request.extend_from_slice(
        format!(
            " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    stream.write_all(&request).expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("read the response");
    let response = String::from_utf8_lossy(&response);
    let status_line = response.lines().next().unwrap_or_default();
    status_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// The operator's suspension reason for hostile-bot.
const HOSTILE_REASON: &str = "moved\u{1b}[2J\u{1b}[Hcursor\u{202e}";

/// A path with a right-to-left override and a C1 control sequence
/// introducer, sent as raw UTF-8 bytes: the agent chooses this text.
const HOSTILE_PATH: &str = "/httpbin/get\u{202e}txt.exe\u{9b}31m";

/// Starts a gateway with `serve_args`, makes three requests whose log
/// lines quote hostile text, and returns the log once all are written.
/// The requests: a suspended agent's (the operator's reason), one with
/// [`HOSTILE_PATH`], and a canary's on that path. A canary is rejected
/// before its path is checked, so its alert summary quotes the raw path.
fn log_of_hostile_requests(serve_args: &[&str]) -> String {
    let castellan = Castellan::init();
    castellan.write_config(&format!(
        "{CONFIG}\n[agents.hostile-bot]\nowner = \"ops@example.com\"\nroles = [\"reader\"]\n"
    ));
    castellan.cli_ok(&[
        "agent",
        "suspend",
        "hostile-bot",
        "--reason",
        HOSTILE_REASON,
    ]);
    let suspended = castellan.issue_token("hostile-bot");
    let reader = castellan.issue_token("reader-bot");
    let canary = castellan.cli_ok(&["agent", "token", "issue", "backup-admin", "--canary"]);
    let canary = canary.trim();
    let server = castellan.serve_with(serve_args, &[]);

    let path = HOSTILE_PATH.as_bytes();
    assert_eq!(
        raw_get_status(server.agent_addr, b"/httpbin/get", &suspended),
        "403"
    );
    assert_eq!(raw_get_status(server.agent_addr, path, &reader), "400");
    assert_eq!(raw_get_status(server.agent_addr, path, canary), "401");

    let logged = poll_until(Duration::from_secs(10), || {
        let log = server.stderr();
        log.matches("request rejected").count() >= 3 && log.contains("alert opened")
    });
    let log = server.stderr();
    assert!(logged.is_some(), "the requests are not logged:\n{log}");
    assert_eq!(
        terminal_controls(&log),
        Vec::<char>::new(),
        "the gateway log contains raw terminal controls:\n{log:?}"
    );
    log
}

#[test]
fn gateway_log_escapes_request_text() {
    let log = log_of_hostile_requests(&[]);

    assert!(
        log.contains(r"moved\u{1b}[2J\u{1b}[Hcursor\u{202e}"),
        "the suspension reason is not logged:\n{log}"
    );
    let escaped_path = r"/httpbin/get\u{202e}txt.exe\u{9b}31m";
    assert!(
        log.lines()
            .any(|line| line.contains("request rejected") && line.contains(escaped_path)),
        "the path is not logged:\n{log}"
    );
    assert!(
        log.lines()
            .any(|line| line.contains("alert opened") && line.contains(escaped_path)),
        "the canary alert does not quote the path:\n{log}"
    );
}

#[test]
fn gateway_json_log_escapes_request_text() {
    let log = log_of_hostile_requests(&["--log-json"]);

    // The escapes are JSON's own, so a parser reads the original text.
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let field = |line: &serde_json::Value, name: &str| {
        line["fields"][name].as_str().unwrap_or("").to_owned()
    };
    let rejections: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| field(line, "message") == "request rejected")
        .collect();
    assert!(
        rejections
            .iter()
            .any(|line| field(line, "reason").contains(HOSTILE_REASON)),
        "the suspension reason is not logged:\n{log}"
    );
    assert!(
        rejections
            .iter()
            .any(|line| field(line, "path") == HOSTILE_PATH),
        "the path is not logged:\n{log}"
    );
    assert!(
        lines
            .iter()
            .any(|line| field(line, "message") == "alert opened"
                && field(line, "summary").contains(HOSTILE_PATH)),
        "the canary alert does not quote the path:\n{log}"
    );
}

#[test]
fn policy_explain_names_deciding_rule() {
    let castellan = Castellan::init();
    castellan.write_config(CONFIG);
    // (agent, method, URL, source, allowed, text that the rule line contains)
    let cases = [
        (
            "reader-bot",
            "GET",
            "/httpbin/anything/x",
            "127.0.0.1",
            true,
            "roles.reader.allow[1]",
        ),
        (
            "reader-bot",
            "GET",
            "/httpbin/get",
            "127.0.0.1",
            true,
            "roles.reader.allow[0]",
        ),
        (
            "reader-bot",
            "DELETE",
            "http://127.0.0.1:8750/httpbin/anything/x",
            "127.0.0.1",
            false,
            "roles.reader.deny[0]",
        ),
        (
            "reader-bot",
            "GET",
            "/httpbin/status/200",
            "127.0.0.1",
            false,
            "none",
        ),
        (
            "office-bot",
            "GET",
            "/httpbin/get",
            "10.1.2.3",
            true,
            "roles.reader.allow[0]",
        ),
        (
            "office-bot",
            "GET",
            "/httpbin/get",
            "127.0.0.1",
            false,
            "office-bot",
        ),
    ];

    for (agent, method, url, source, allowed, rule) in cases {
        let output = castellan.cli(&["policy", "explain", agent, method, url, "--source", source]);

        let text = stdout(&output);
        let case = format!("{agent} {method} {url} from {source}");
        assert_eq!(
            output.status.success(),
            allowed,
            "{case}: {text}{}",
            stderr(&output)
        );
        let verdict = if allowed { "ALLOW" } else { "DENY" };
        assert!(
            text.starts_with(verdict),
            "{case}: expected {verdict}: {text}"
        );
        let rule_line = text
            .lines()
            .find(|line| line.trim_start().starts_with("rule:"));
        let rule_line = rule_line.unwrap_or_else(|| panic!("{case}: no rule line: {text}"));
        assert!(
            rule_line.contains(rule),
            "{case}: the rule line must name {rule}: {rule_line}"
        );
    }

    // The gateway rejects a lower-case method with 400 before any rule, so
    // explain must not decide its upper-case form.
    let output = castellan.cli(&["policy", "explain", "reader-bot", "get", "/httpbin/get"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}{}", stdout(&output));
    assert!(
        text.contains("reject the method \"get\" with 400"),
        "{text}"
    );
    assert!(text.contains("send \"GET\""), "{text}");
}

#[test]
fn listings_show_names_never_values() {
    let castellan = Castellan::init();
    castellan.write_config(CONFIG);
    let value = "sk-e2e-listing-Pm4Tz9Rc2Wk6";
    castellan.set_secret("httpbin-key", value);
    let issued = castellan.issue("reader-bot", Some("30d"));

    let secrets = castellan.cli_ok(&["secret", "list", "--json"]);
    let secrets_table = castellan.cli_ok(&["secret", "list"]);
    let tokens = castellan.cli_ok(&["agent", "token", "list", "--json"]);

    assert!(secrets.contains("httpbin-key"), "{secrets}");
    for listing in [&secrets, &secrets_table, &tokens] {
        assert!(
            !listing.contains(value),
            "a listing shows the secret value: {listing}"
        );
        assert!(
            !listing.contains(&issued.token),
            "a listing shows the token: {listing}"
        );
    }
    let records = json_lines_or_array(&tokens);
    let record = records.iter().find(|r| r["id"] == issued.id.as_str());
    let record = record.unwrap_or_else(|| panic!("{} is not listed: {tokens}", issued.id));
    assert_eq!(record["agent"], "reader-bot", "{record}");
    assert_eq!(record["active"], true, "{record}");
    assert!(
        record["expires_ms"].as_i64().is_some(),
        "--ttl 30d sets an expiry: {record}"
    );

    castellan.cli_ok(&["agent", "token", "revoke", &issued.id]);
    let after = json_lines_or_array(&castellan.cli_ok(&["agent", "token", "list", "--json"]));
    let revoked = after.iter().find(|r| r["id"] == issued.id.as_str());
    assert_eq!(
        revoked.map(|r| r["active"].clone()),
        Some(false.into()),
        "{after:?}"
    );
}
