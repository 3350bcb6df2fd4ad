//! `castellan alerts` and `castellan audit events`: alerts raised through
//! the store as the detector raises them, listed, shown, acknowledged and
//! resolved from the CLI, administrative changes recorded without secret
//! values, and commands whose stdout reader goes away early.

#![forbid(unsafe_code)]

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use castellan_model::{AlertKind, Severity};
use castellan_store::{AuditDecision, AuditRecord, NewSignal, Store};
use serde_json::Value;

use support::castellan::{Castellan, BINARY};
use support::leak::assert_no_secret;

const FIRST_KEY: &str = "sk-e2e-alerts-Vb8Qm2Zt5Rw1";
const SECOND_KEY: &str = "sk-e2e-alerts-Jn4Hc7Xp3Ds9";

/// User name the CLI runs of these tests report as their actor.
const OPERATOR: &str = "alert-tester";

/// Base of the signal times: 2023-11-14T22:13:20Z.
const T0: i64 = 1_700_000_000_000;

const CONFIG: &str = r#"
[connections.api]
upstream = "https://api.example.com"
auth = { kind = "bearer" }
secret = "api-key"

[roles.reader]
allow = [{ connection = "api", methods = ["GET"], paths = ["/**"] }]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]
"#;

/// Ids of the alerts [`raise_alerts`] creates.
struct Raised {
    rate_spike: i64,
    canary: i64,
    stuffing: i64,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a Tokio runtime")
}

fn open_store(castellan: &Castellan) -> Store {
    let path = castellan.data_dir().join("castellan.db");
    runtime()
        .block_on(Store::open(&path))
        .expect("open the data directory's store")
}

/// Raises alerts through the store API, as the detector does: a rate spike
/// with two signals from two networks, a canary token use and credential
/// stuffing from an address with no agent.
fn raise_alerts(castellan: &Castellan) -> Raised {
    let path = castellan.data_dir().join("castellan.db");
    runtime().block_on(async {
        let store = Store::open(&path).await.expect("open the store");
        let signal = |kind, severity, agent, subject, seq: i64, summary| NewSignal {
            kind,
            severity,
            agent,
            subject,
            source: Some("203.0.113.0/24"),
            seq,
            time_ms: T0 + seq * 1000,
            summary,
        };
        let first = signal(
            AlertKind::RateSpike,
            Severity::Medium,
            Some("reader-bot"),
            "reader-bot",
            10,
            "120 requests per minute, 8x the baseline",
        );
        let rate_spike = store.raise_alert(&first).await.expect("raise").id;
        let mut second = signal(
            AlertKind::RateSpike,
            Severity::High,
            Some("reader-bot"),
            "reader-bot",
            11,
            "300 requests per minute, 20x the baseline",
        );
        second.source = Some("198.51.100.0/24");
        let folded = store.raise_alert(&second).await.expect("raise");
        assert_eq!(folded.id, rate_spike, "the second signal folds in");
        let canary = signal(
            AlertKind::CanaryToken,
            Severity::Critical,
            Some("reader-bot"),
            "reader-bot",
            12,
            "canary token tok_canary presented",
        );
        let canary = store.raise_alert(&canary).await.expect("raise").id;
        let stuffing = signal(
            AlertKind::CredentialStuffing,
            Severity::High,
            None,
            "192.0.2.7",
            13,
            "40 failed authentications in a minute",
        );
        let stuffing = store.raise_alert(&stuffing).await.expect("raise").id;
        store.close().await;
        Raised {
            rate_spike,
            canary,
            stuffing,
        }
    })
}

/// Runs the CLI as [`OPERATOR`], with `stdin` piped in when given.
fn cli_as_operator(castellan: &Castellan, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BINARY)
        .arg("--data-dir")
        .arg(castellan.data_dir())
        .arg("--config")
        .arg(castellan.config_path())
        .args(args)
        .env("USER", OPERATOR)
        .env_remove("CASTELLAN_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("failed to start {BINARY} {args:?}: {error}"));
    let mut pipe = child.stdin.take().expect("stdin is piped");
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("wait for the CLI")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {}: {}",
        output.status,
        stderr(output)
    );
}

fn alerts_json(castellan: &Castellan, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["alerts", "--json"];
    args.extend_from_slice(extra);
    let text = castellan.cli_ok(&args);
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("alerts --json is not JSON ({error}): {text}"));
    value.as_array().expect("a JSON array").clone()
}

fn by_id(alerts: &[Value], id: i64) -> &Value {
    alerts
        .iter()
        .find(|alert| alert["id"] == id)
        .unwrap_or_else(|| panic!("alert {id} not listed: {alerts:?}"))
}

fn setup() -> Castellan {
    let castellan = Castellan::init();
    castellan.write_config(CONFIG);
    castellan.set_secret("api-key", FIRST_KEY);
    castellan
}

#[test]
fn alerts_table_lists_every_alert() {
    let castellan = setup();
    let raised = raise_alerts(&castellan);
    let table = castellan.cli_ok(&["alerts"]);
    for header in ["id", "severity", "kind", "agent/subject", "count", "status"] {
        assert!(table.contains(header), "no {header} column:\n{table}");
    }
    for text in [
        "rate_spike",
        "canary_token",
        "credential_stuffing",
        "192.0.2.7",
        "reader-bot",
        "300 requests per minute, 20x the baseline",
        "2023-11-14T22:13:30Z",
    ] {
        assert!(table.contains(text), "{text} missing:\n{table}");
    }
    assert!(
        !table.contains("120 requests per minute"),
        "the summary is the latest signal's:\n{table}"
    );
    let rows: Vec<&str> = table.lines().filter(|line| line.contains("┆")).collect();
    // The header and one row per alert, newest last_seen first.
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[1].contains(&raised.stuffing.to_string()), "{table}");
    assert!(rows[2].contains(&raised.canary.to_string()), "{table}");
    assert!(rows[3].contains("rate_spike"), "{table}");
    assert!(rows[3].contains(" 2 "), "count of 2:\n{table}");
}

#[test]
fn alerts_json_has_every_field() {
    let castellan = setup();
    let raised = raise_alerts(&castellan);
    let alerts = alerts_json(&castellan, &[]);
    assert_eq!(alerts.len(), 3);
    let ids: Vec<i64> = alerts.iter().filter_map(|a| a["id"].as_i64()).collect();
    assert_eq!(ids, [raised.stuffing, raised.canary, raised.rate_spike]);

    let alert = by_id(&alerts, raised.rate_spike);
    assert_eq!(alert["kind"], "rate_spike");
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["agent"], "reader-bot");
    assert_eq!(alert["subject"], "reader-bot");
    assert_eq!(alert["status"], "open");
    assert_eq!(alert["first_seen_ms"], T0 + 10_000);
    assert_eq!(alert["first_seen"], "2023-11-14T22:13:30Z");
    assert_eq!(alert["last_seen_ms"], T0 + 11_000);
    assert_eq!(alert["last_seen"], "2023-11-14T22:13:31Z");
    assert_eq!(alert["count"], 2);
    assert_eq!(alert["evidence"], serde_json::json!([10, 11]));
    assert_eq!(
        alert["summary"],
        "300 requests per minute, 20x the baseline"
    );
    assert_eq!(
        alert["sources"],
        serde_json::json!(["203.0.113.0/24", "198.51.100.0/24"])
    );
    assert_eq!(alert["acknowledged_by"], Value::Null);
    assert_eq!(alert["resolved_by"], Value::Null);
    assert!(alert["updated_ms"].as_i64().is_some_and(|ms| ms > T0));
    assert!(alert["updated"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(alert.as_object().map(|fields| fields.len()), Some(18));

    let stuffing = by_id(&alerts, raised.stuffing);
    assert_eq!(stuffing["agent"], Value::Null);
    assert_eq!(stuffing["subject"], "192.0.2.7");
    assert_eq!(by_id(&alerts, raised.canary)["severity"], "critical");

    let limited = alerts_json(&castellan, &["--limit", "1"]);
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["id"], raised.stuffing);

    let shown = castellan.cli_ok(&["alerts", "show", &raised.rate_spike.to_string(), "--json"]);
    let shown: Value = serde_json::from_str(&shown).expect("alerts show --json is JSON");
    assert_eq!(shown["evidence"], alert["evidence"]);
    assert_eq!(shown["summary"], alert["summary"]);
    let text = castellan.cli_ok(&["alerts", "show", &raised.rate_spike.to_string()]);
    assert!(text.contains("audit seq 10, 11"), "{text}");
    assert!(text.contains("198.51.100.0/24"), "{text}");
}

#[test]
fn ack_and_resolve_change_status() {
    let castellan = setup();
    let raised = raise_alerts(&castellan);
    let id = raised.rate_spike.to_string();

    let acked = cli_as_operator(&castellan, &["alerts", "ack", &id], None);
    assert_ok(&acked, "alerts ack");
    assert!(stderr(&acked).contains(&format!("Acknowledged alert {id}")));
    let alert = by_id(&alerts_json(&castellan, &[]), raised.rate_spike).clone();
    assert_eq!(alert["status"], "acknowledged");
    assert_eq!(alert["acknowledged_by"], OPERATOR);

    let resolved = cli_as_operator(&castellan, &["alerts", "resolve", &id], None);
    assert_ok(&resolved, "alerts resolve");
    let alert = by_id(&alerts_json(&castellan, &[]), raised.rate_spike).clone();
    assert_eq!(alert["status"], "resolved");
    assert_eq!(alert["resolved_by"], OPERATOR);

    let open = alerts_json(&castellan, &["--open"]);
    let open_ids: Vec<i64> = open.iter().filter_map(|a| a["id"].as_i64()).collect();
    assert_eq!(open_ids, [raised.stuffing, raised.canary]);

    let again = cli_as_operator(&castellan, &["alerts", "ack", &id], None);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(
        stderr(&again).contains(&format!("alert {id} is already resolved")),
        "{}",
        stderr(&again)
    );
    let unknown = cli_as_operator(&castellan, &["alerts", "resolve", "999"], None);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("no alert with id 999"),
        "{}",
        stderr(&unknown)
    );
    let shown = cli_as_operator(&castellan, &["alerts", "show", "999"], None);
    assert_eq!(shown.status.code(), Some(2));
    assert!(stderr(&shown).contains("no alert with id 999"));
    for output in [&again, &unknown, &shown] {
        assert!(!stderr(output).contains("panicked"), "{}", stderr(output));
    }
}

#[test]
fn audit_events_record_changes_without_secrets() {
    let castellan = setup();
    let raised = raise_alerts(&castellan);
    let id = raised.canary.to_string();
    let mut outputs = vec![
        cli_as_operator(
            &castellan,
            &["agent", "suspend", "reader-bot", "--reason", "canary used"],
            None,
        ),
        cli_as_operator(&castellan, &["agent", "resume", "reader-bot"], None),
        cli_as_operator(&castellan, &["alerts", "ack", &id], None),
        cli_as_operator(&castellan, &["alerts", "resolve", &id], None),
        cli_as_operator(
            &castellan,
            &["secret", "rotate", "api-key"],
            Some(SECOND_KEY),
        ),
        cli_as_operator(&castellan, &["secret", "rollback", "api-key"], None),
    ];
    for output in &outputs {
        assert_ok(output, "an administrative command");
    }

    let events = cli_as_operator(&castellan, &["audit", "events", "--json"], None);
    assert_ok(&events, "audit events --json");
    let list: Vec<Value> = serde_json::from_str(&stdout(&events)).expect("a JSON array");
    let rows: Vec<(&str, &str, Option<&str>)> = list
        .iter()
        .map(|event| {
            (
                event["action"].as_str().unwrap_or_default(),
                event["target"].as_str().unwrap_or_default(),
                event["detail"].as_str(),
            )
        })
        .collect();
    let about = "canary_token reader-bot";
    assert_eq!(
        rows,
        [
            ("secret.set", "api-key", Some("version 1")),
            ("agent.suspend", "reader-bot", Some("canary used")),
            ("agent.resume", "reader-bot", None),
            ("alert.acknowledge", id.as_str(), Some(about)),
            ("alert.resolve", id.as_str(), Some(about)),
            ("secret.rotate", "api-key", Some("version 2")),
            (
                "secret.rollback",
                "api-key",
                Some("version 3, restoring version 1")
            ),
        ]
    );
    // The secret was stored by the fixture, not by the operator.
    for event in &list[1..] {
        assert_eq!(event["actor"], OPERATOR);
        assert!(event["seq"].as_i64().is_some());
        assert!(event["time_ms"].as_i64().is_some_and(|ms| ms > T0));
    }

    let table = cli_as_operator(&castellan, &["audit", "events", "--limit", "2"], None);
    assert_ok(&table, "audit events");
    let text = stdout(&table);
    assert!(text.contains("secret.rollback"), "{text}");
    assert!(
        !text.contains("agent.suspend"),
        "--limit 2 keeps the newest:\n{text}"
    );

    outputs.extend([events, table]);
    for output in &outputs {
        for secret in [FIRST_KEY, SECOND_KEY] {
            assert_no_secret(&stdout(output), secret, "stdout");
            assert_no_secret(&stderr(output), secret, "stderr");
        }
    }
    for run in castellan.cli_runs() {
        for secret in [FIRST_KEY, SECOND_KEY] {
            assert_no_secret(&run.text(), secret, "a CLI run");
        }
    }
}

/// Runs `args` with stdout connected to a pipe whose reader is already
/// closed, so the first write fails with EPIPE.
fn run_into_closed_pipe(castellan: &Castellan, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("create a pipe");
    drop(reader);
    Command::new(BINARY)
        .arg("--data-dir")
        .arg(castellan.data_dir())
        .arg("--config")
        .arg(castellan.config_path())
        .args(args)
        .env_remove("CASTELLAN_LOG")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|error| panic!("failed to start {BINARY} {args:?}: {error}"))
}

#[test]
fn closed_stdout_exits_quietly() {
    let castellan = setup();
    raise_alerts(&castellan);
    castellan.cli_ok(&["agent", "suspend", "reader-bot"]);
    let store = open_store(&castellan);
    let record = AuditRecord {
        seq: None,
        time_ms: T0,
        request_id: "req-1".into(),
        agent: Some("reader-bot".into()),
        token_id: None,
        source: "127.0.0.1:50000".into(),
        connection: Some("api".into()),
        method: "GET".into(),
        path: "/v1/items".into(),
        decision: AuditDecision::Allow,
        rule: None,
        reason: None,
        status: 200,
        bytes_in: 0,
        bytes_out: 10,
        duration_us: 100,
        findings: Vec::new(),
        user_agent: None,
    };
    runtime()
        .block_on(store.insert_audit_batch(&[record]))
        .expect("insert an audit record");

    let commands: [&[&str]; 6] = [
        &["inventory"],
        &["alerts"],
        &["alerts", "--json"],
        &["audit", "tail"],
        &["audit", "tail", "--json"],
        &["audit", "events"],
    ];
    for args in commands {
        let output = run_into_closed_pipe(&castellan, args);
        let errors = stderr(&output);
        assert!(!errors.contains("panicked"), "{args:?} panicked: {errors}");
        assert!(!errors.contains("error"), "{args:?} reported: {errors}");
        let code = output.status.code();
        assert!(
            matches!(code, Some(0 | 141)),
            "{args:?} exited with {:?}",
            output.status
        );
    }
}
