//! `castellan rotation status|check` and `castellan secret rotate|rollback`
//! against a real data directory, and a running gateway that switches to a
//! rotated or rolled-back credential.

#![forbid(unsafe_code)]

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::castellan::{poll_until, Castellan, BINARY};
use support::http::get_as;
use support::leak::assert_no_secret;
use support::peers::{spawn_httpbin, Peer};

/// Two values of different lengths, so that the masked echo of the injected
/// credential shows which one the gateway sent.
const FIRST_KEY: &str = "sk-e2e-rotation-first-Qm4Vx8Lt2Rz";
const SECOND_KEY: &str = "sk-e2e-rotation-second-value-Hs7Wn3Pd9Kc5Jb1";

/// Maximum wait for a running gateway to use a newly stored version.
const RELOAD_LIMIT: Duration = Duration::from_secs(3);

fn config(upstream: &str, connection_rotate_every: &str, gateway: &str) -> String {
    format!(
        r#"
[gateway]
{gateway}

[connections.api]
upstream = "{upstream}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "api-key"
rotate_every = "{connection_rotate_every}"

[connections.billing]
upstream = "{upstream}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "billing-key"

[roles.reader]
allow = [{{ connection = "api", methods = ["GET"], paths = ["/**"] }}]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]
networks = ["127.0.0.0/8"]
"#
    )
}

/// Runs the CLI against `castellan`'s data directory with `stdin` piped in.
fn cli_with_stdin(castellan: &Castellan, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BINARY)
        .arg("--data-dir")
        .arg(castellan.data_dir())
        .arg("--config")
        .arg(castellan.config_path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("failed to start {BINARY} {args:?}: {error}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("write the value to stdin");
    child.wait_with_output().expect("wait for the CLI")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn status_rows(castellan: &Castellan) -> Vec<Value> {
    let stdout = castellan.cli_ok(&["rotation", "status", "--json"]);
    serde_json::from_str::<Value>(&stdout)
        .expect("rotation status --json prints JSON")
        .as_array()
        .expect("rotation status --json prints an array")
        .clone()
}

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|row| row["name"] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {rows:#?}"))
}

fn exit_code(output: &Output) -> i32 {
    output.status.code().expect("the CLI exited normally")
}

/// Returns the masked Authorization header that httpbin received through
/// the gateway.
fn injected_authorization(server: &support::castellan::Server, token: &str) -> String {
    let reply = get_as(&server.url("/api/headers"), token);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["headers"]
        .as_object()
        .expect("httpbin echoes a headers object")
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no Authorization header in the echo: {}", reply.body))
}

/// Returns what the gateway's response shows of `Bearer SECRET`: the same
/// number of `*`, because it masks the credential in echoed responses.
fn masked_bearer(secret: &str) -> String {
    "*".repeat("Bearer ".len() + secret.len())
}

fn assert_no_key_in(castellan: &Castellan, outputs: &[Output]) {
    for run in castellan.cli_runs() {
        for secret in [FIRST_KEY, SECOND_KEY] {
            assert_no_secret(&run.text(), secret, &format!("castellan {:?}", run.args));
        }
    }
    for output in outputs {
        for secret in [FIRST_KEY, SECOND_KEY] {
            assert_no_secret(&text(output), secret, "rotate or rollback output");
        }
    }
}

#[test]
fn status_and_check_report_states() {
    let castellan = Castellan::init();
    castellan.write_config(&config("http://127.0.0.1:9", "30d", ""));

    // billing-key is used but not stored: missing, and check fails.
    castellan.set_secret("api-key", FIRST_KEY);
    castellan.set_secret("orphan-key", SECOND_KEY);
    let rows = status_rows(&castellan);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(row(&rows, "api-key")["state"], "ok");
    assert_eq!(row(&rows, "api-key")["version"], 1);
    assert_eq!(row(&rows, "api-key")["rotate_every_secs"], 30 * 86_400);
    assert!(row(&rows, "api-key")["due_ms"].as_i64().is_some());
    assert_eq!(row(&rows, "billing-key")["state"], "missing");
    assert_eq!(row(&rows, "billing-key")["version"], Value::Null);
    assert_eq!(row(&rows, "orphan-key")["state"], "unused");
    assert_eq!(
        row(&rows, "orphan-key")["connections"],
        serde_json::json!([])
    );

    let check = castellan.cli(&["rotation", "check"]);
    assert_eq!(exit_code(&check), 1, "{}", text(&check));
    let report = text(&check);
    assert!(report.contains("missing: secret billing-key"), "{report}");
    assert!(
        !report.contains("api-key"),
        "ok secrets are not listed: {report}"
    );

    // Everything stored and fresh: check passes and lists only the notice.
    castellan.set_secret("billing-key", FIRST_KEY);
    let check = castellan.cli(&["rotation", "check"]);
    assert_eq!(exit_code(&check), 0, "{}", text(&check));
    assert!(text(&check).contains("unused: secret orphan-key"));

    // A 5-day period falls due within 7 days: due soon, still exit 0.
    castellan.write_config(&config("http://127.0.0.1:9", "5d", ""));
    assert_eq!(
        row(&status_rows(&castellan), "api-key")["state"],
        "due_soon"
    );
    let table = castellan.cli_ok(&["rotation", "status"]);
    assert!(table.contains("due soon"), "{table}");
    let check = castellan.cli(&["rotation", "check"]);
    assert_eq!(exit_code(&check), 0, "{}", text(&check));
    assert!(text(&check).contains("due soon: secret api-key"));

    // A 1-second period is over after 2 s: overdue, exit 1.
    castellan.write_config(&config("http://127.0.0.1:9", "1s", ""));
    thread::sleep(Duration::from_secs(2));
    let rows = status_rows(&castellan);
    assert_eq!(row(&rows, "api-key")["state"], "overdue");
    assert_eq!(row(&rows, "billing-key")["state"], "ok");
    let check = castellan.cli(&["rotation", "check"]);
    assert_eq!(exit_code(&check), 1, "{}", text(&check));
    assert!(text(&check).contains("overdue: secret api-key version 1"));

    let table = castellan.cli_ok(&["rotation", "status"]);
    assert!(table.contains("overdue"), "{table}");
    assert!(table.contains("unused"), "{table}");

    // An invalid configuration is an error, not a failed check.
    castellan.write_config(&config("http://127.0.0.1:9", "soon", ""));
    let check = castellan.cli(&["rotation", "check"]);
    assert_eq!(exit_code(&check), 2, "{}", text(&check));
    assert!(text(&check).contains("invalid rotate_every"));

    assert_no_key_in(&castellan, &[]);
}

#[test]
fn findings_use_connection_rotate_every() {
    let castellan = Castellan::init();
    castellan.write_config(&config("http://127.0.0.1:9", "1s", ""));
    castellan.set_secret("api-key", FIRST_KEY);
    castellan.set_secret("billing-key", SECOND_KEY);
    thread::sleep(Duration::from_secs(2));

    let output = castellan.cli(&["findings", "--json"]);
    let report: Value = serde_json::from_slice(&output.stdout).expect("findings --json");
    let stale: Vec<&str> = report["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .filter(|finding| finding["kind"] == "secret-not-rotated")
        .filter_map(|finding| finding["object"]["name"].as_str())
        .collect();
    assert_eq!(stale, ["api-key"], "{report:#}");
    assert_no_key_in(&castellan, &[]);
}

#[test]
fn rotate_rejects_unknown_secret() {
    let castellan = Castellan::init();
    castellan.write_config(&config("http://127.0.0.1:9", "30d", ""));
    let output = cli_with_stdin(&castellan, &["secret", "rotate", "api-key"], FIRST_KEY);
    assert_eq!(exit_code(&output), 2, "{}", text(&output));
    assert!(text(&output).contains("castellan secret set api-key"));
    let rows = status_rows(&castellan);
    assert_eq!(row(&rows, "api-key")["state"], "missing");

    let output = cli_with_stdin(&castellan, &["secret", "rollback", "api-key"], "");
    assert_eq!(exit_code(&output), 2, "{}", text(&output));
    assert!(text(&output).contains("not in the vault"));
    assert_no_key_in(&castellan, &[output]);
}

#[test]
fn rollback_needs_previous_version_within_grace() {
    let castellan = Castellan::init();
    castellan.write_config(&config(
        "http://127.0.0.1:9",
        "30d",
        "rotation_grace = \"1s\"",
    ));
    castellan.set_secret("api-key", FIRST_KEY);

    let only_one = cli_with_stdin(&castellan, &["secret", "rollback", "api-key"], "");
    assert_eq!(exit_code(&only_one), 2, "{}", text(&only_one));
    assert!(text(&only_one).contains("no version before version 1"));

    let rotated = cli_with_stdin(&castellan, &["secret", "rotate", "api-key"], SECOND_KEY);
    assert_eq!(exit_code(&rotated), 0, "{}", text(&rotated));
    thread::sleep(Duration::from_secs(2));
    let late = cli_with_stdin(&castellan, &["secret", "rollback", "api-key"], "");
    assert_eq!(exit_code(&late), 2, "{}", text(&late));
    assert!(text(&late).contains("rotation_grace"), "{}", text(&late));
    assert!(text(&late).contains("castellan secret rotate api-key"));
    assert_eq!(row(&status_rows(&castellan), "api-key")["version"], 2);
    assert_no_key_in(&castellan, &[only_one, rotated, late]);
}

#[test]
fn gateway_follows_rotate_and_rollback() {
    let httpbin: Peer = spawn_httpbin();
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin.base_url(), "30d", ""));
    castellan.set_secret("api-key", FIRST_KEY);
    castellan.set_secret("billing-key", FIRST_KEY);
    let token = castellan.issue_token("reader-bot");
    let server = castellan.serve();
    assert_eq!(
        injected_authorization(&server, &token),
        masked_bearer(FIRST_KEY)
    );

    let rotated = cli_with_stdin(&castellan, &["secret", "rotate", "api-key"], SECOND_KEY);
    assert_eq!(exit_code(&rotated), 0, "{}", text(&rotated));
    assert!(text(&rotated).contains("version 2"), "{}", text(&rotated));
    let switched = poll_until(RELOAD_LIMIT, || {
        injected_authorization(&server, &token) == masked_bearer(SECOND_KEY)
    });
    assert!(switched.is_some(), "the gateway kept the old credential");
    assert_eq!(row(&status_rows(&castellan), "api-key")["version"], 2);

    let rolled_back = cli_with_stdin(&castellan, &["secret", "rollback", "api-key"], "");
    assert_eq!(exit_code(&rolled_back), 0, "{}", text(&rolled_back));
    let message = text(&rolled_back);
    assert!(message.contains("Restored version 1"), "{message}");
    assert!(message.contains("as version 3"), "{message}");
    let restored = poll_until(RELOAD_LIMIT, || {
        injected_authorization(&server, &token) == masked_bearer(FIRST_KEY)
    });
    assert!(
        restored.is_some(),
        "the gateway did not restore the old credential"
    );
    assert_eq!(row(&status_rows(&castellan), "api-key")["version"], 3);

    for secret in [FIRST_KEY, SECOND_KEY] {
        assert_no_secret(&server.logs(), secret, "the gateway's logs");
    }
    assert_no_key_in(&castellan, &[rotated, rolled_back]);
}

/// Requests of one load thread, by outcome.
#[derive(Debug, Default)]
struct LoadTally {
    first_key: u64,
    second_key: u64,
    /// Anything else: a status other than 200, a transport error, or an
    /// Authorization header that matches neither key.
    failures: Vec<String>,
}

#[test]
fn rotation_under_load_fails_no_request() {
    let castellan = Castellan::init();
    let upstream = spawn_httpbin();
    castellan.write_config(&config(&upstream.base_url(), "30d", ""));
    castellan.set_secret("api-key", FIRST_KEY);
    let token = castellan.issue_token("reader-bot");
    let server = castellan.serve();
    assert_eq!(
        injected_authorization(&server, &token),
        masked_bearer(FIRST_KEY)
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = server.url("/api/headers");
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            let url = url.clone();
            let token = token.clone();
            thread::spawn(move || {
                let mut tally = LoadTally::default();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let reply = get_as(&url, &token);
                    let authorization = (reply.status == 200)
                        .then(|| {
                            reply.json()["headers"]["Authorization"]
                                .as_str()
                                .map(str::to_owned)
                        })
                        .flatten();
                    match authorization {
                        Some(seen) if seen == masked_bearer(FIRST_KEY) => tally.first_key += 1,
                        Some(seen) if seen == masked_bearer(SECOND_KEY) => tally.second_key += 1,
                        _ => tally
                            .failures
                            .push(format!("{} {}", reply.status, reply.body)),
                    }
                }
                tally
            })
        })
        .collect();

    thread::sleep(Duration::from_millis(800));
    let rotate = cli_with_stdin(&castellan, &["secret", "rotate", "api-key"], SECOND_KEY);
    assert!(rotate.status.success(), "{}", text(&rotate));
    let switched = poll_until(RELOAD_LIMIT, || {
        injected_authorization(&server, &token) == masked_bearer(SECOND_KEY)
    });
    assert!(switched.is_some(), "the gateway did not switch keys");
    thread::sleep(Duration::from_millis(800));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let tallies: Vec<LoadTally> = workers
        .into_iter()
        .map(|worker| worker.join().expect("load thread"))
        .collect();
    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.failures).collect();
    let first: u64 = tallies.iter().map(|t| t.first_key).sum();
    let second: u64 = tallies.iter().map(|t| t.second_key).sum();
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(first > 0, "no request used the first key");
    assert!(second > 0, "no request used the second key");
    assert_no_key_in(&castellan, &[rotate]);
}

/// Key the upstream accepts; the rotation command prints it.
const PROVIDED_KEY: &str = "sk-e2e-provided-by-command-Yt6Mb3Qw8Zs1";

/// Writes an executable script that prints `key`, and returns its path.
fn key_script(castellan: &Castellan, name: &str, key: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = castellan.scratch_dir().join(name);
    std::fs::write(&path, format!("#!/bin/sh\nprintf '%s\\n' '{key}'\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    path
}

fn provider_config(upstream: &str, command: &std::path::Path, revoked: &std::path::Path) -> String {
    format!(
        r#"
[gateway]
rotation_grace = "1s"

[connections.api]
upstream = "{upstream}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "api-key"

[connections.api.rotation]
command = ["{command}"]
verify = "GET /v1/models"
revoke_command = ["/bin/sh", "-c", "cat >> '{revoked}'; echo >> '{revoked}'"]
timeout = "10s"

[roles.reader]
allow = [{{ connection = "api", methods = ["GET"], paths = ["/**"] }}]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]
"#,
        command = command.display(),
        revoked = revoked.display()
    )
}

#[test]
fn command_rotation_verifies_switches_and_revokes() {
    let castellan = Castellan::init();
    let upstream = support::peers::spawn_openai_upstream(PROVIDED_KEY);
    let revoked = castellan.scratch_dir().join("revoked-key");
    let script = key_script(&castellan, "new-key.sh", PROVIDED_KEY);
    castellan.write_config(&provider_config(&upstream.base_url(), &script, &revoked));
    castellan.set_secret("api-key", FIRST_KEY);
    // A rotation by hand first: both older versions get revoked later.
    let by_hand = cli_with_stdin(&castellan, &["secret", "rotate", "api-key"], SECOND_KEY);
    assert!(by_hand.status.success(), "{}", text(&by_hand));

    let rotated = castellan.cli(&["secret", "rotate", "api-key", "--command"]);
    assert!(rotated.status.success(), "{}", text(&rotated));
    assert_eq!(row(&status_rows(&castellan), "api-key")["version"], 3);

    // The grace period is one second: once it is over, serve's first
    // rotation check runs the revoke command with the old key on stdin.
    thread::sleep(Duration::from_millis(1200));
    let token = castellan.issue_token("reader-bot");
    let server = castellan.serve();
    let reply = get_as(&server.url("/api/v1/models"), &token);
    assert_eq!(
        reply.status, 200,
        "the gateway sends the provided key: {}",
        reply.body
    );
    let revoked_now = poll_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&revoked)
            .is_ok_and(|text| text == format!("{FIRST_KEY}\n{SECOND_KEY}\n"))
    });
    assert!(
        revoked_now.is_some(),
        "old keys not revoked\n{}",
        server.logs()
    );
    let events = castellan.cli_ok(&["audit", "events", "--json"]);
    assert!(events.contains("secret.rotate"), "{events}");
    assert!(events.contains("secret.revoke"), "{events}");

    let outputs = format!("{}\n{events}\n{}", server.logs(), text(&rotated));
    for key in [FIRST_KEY, SECOND_KEY, PROVIDED_KEY] {
        assert_no_secret(&outputs, key, "logs, events and CLI output");
    }
}

#[test]
fn failed_command_rotation_keeps_old_key() {
    let castellan = Castellan::init();
    let upstream = support::peers::spawn_openai_upstream(PROVIDED_KEY);
    let revoked = castellan.scratch_dir().join("revoked-key");
    // The command prints a key the upstream rejects.
    let script = key_script(&castellan, "bad-key.sh", SECOND_KEY);
    castellan.write_config(&provider_config(&upstream.base_url(), &script, &revoked));
    castellan.set_secret("api-key", FIRST_KEY);

    let rotated = castellan.cli(&["secret", "rotate", "api-key", "--command"]);
    assert!(!rotated.status.success(), "{}", text(&rotated));
    assert!(text(&rotated).contains("401"), "{}", text(&rotated));
    assert_eq!(row(&status_rows(&castellan), "api-key")["version"], 1);

    let alerts = castellan.cli_ok(&["alerts", "--json"]);
    assert!(alerts.contains("rotation_failed"), "{alerts}");
    let events = castellan.cli_ok(&["audit", "events", "--json"]);
    assert!(events.contains("secret.rotate_failed"), "{events}");
    assert!(!revoked.exists(), "nothing is revoked after a failure");

    let outputs = format!("{alerts}\n{events}\n{}", text(&rotated));
    for key in [FIRST_KEY, SECOND_KEY] {
        assert_no_secret(&outputs, key, "alerts, events and CLI output");
    }
}
