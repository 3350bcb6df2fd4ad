//! Detection end to end. The real gateway is called from two loopback
//! addresses that a test geolocation database places on two continents,
//! and the tests check the impossible-travel alert, its webhook delivery to
//! a loopback receiver, the automatic suspension and its lifting. Other
//! tests cover canary tokens, rotation reminders, and startup with a
//! missing or corrupt geolocation database.

#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::castellan::{poll_until, Castellan};
use support::http::raw_status;
use support::leak::assert_no_secret;
use support::peers::{spawn_httpbin, write_geo_database};

/// Maximum wait for the monitor to judge a record and act on it: one poll
/// interval, an alert, a suspension and the gateway's reload, with margin
/// for a loaded machine.
const DETECTION_LIMIT: Duration = Duration::from_secs(15);

const UPSTREAM_KEY: &str = "sk-e2e-detect-upstream-Vb7Qp2Lm9Xr4";

const SYDNEY: &str = "127.0.0.2";
const LONDON: &str = "127.0.0.3";

/// A loopback webhook receiver that responds 200 and keeps each body.
struct Receiver {
    address: SocketAddr,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
        let address = listener.local_addr().expect("receiver address");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&bodies);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = Arc::clone(&log);
                thread::spawn(move || serve_connection(stream, &log));
            }
        });
        Receiver { address, bodies }
    }

    fn url(&self) -> String {
        format!("http://{}/castellan", self.address)
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .expect("receiver lock")
            .iter()
            .map(|body| serde_json::from_str(body).expect("webhook body is JSON"))
            .collect()
    }
}

/// Reads HTTP/1.1 requests with a Content-Length from `stream` until it
/// closes, responding to each with 200.
fn serve_connection(stream: TcpStream, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut writer = stream;
    loop {
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        log.lock()
            .expect("receiver lock")
            .push(String::from_utf8_lossy(&body).into_owned());
        let reply = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Sends `GET path` with `token` from the loopback address `source` and
/// returns the raw response.
fn get_from(source: &str, gateway: SocketAddr, path: &str, token: &str) -> String {
    let source: IpAddr = source.parse().expect("source address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {gateway}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .unwrap_or_else(|error| panic!("bind {source}: {error}"));
        let mut stream = socket
            .connect(gateway)
            .await
            .expect("connect to the gateway");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
            .await
            .expect("response within 20 s")
            .expect("read the response");
        String::from_utf8_lossy(&raw).into_owned()
    })
}

fn config(upstream: &str, geo: &str, extra: &str) -> String {
    format!(
        r#"
[connections.api]
upstream = "{upstream}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "api-key"

[roles.reader]
allow = [{{ connection = "api", methods = ["GET"], paths = ["/**"] }}]

[agents.travel-bot]
owner = "ops@example.com"
roles = ["reader"]
networks = ["127.0.0.0/8"]

[detect]
geoip_database = "{geo}"
{extra}
"#
    )
}

fn alerts(castellan: &Castellan) -> Vec<Value> {
    let text = castellan.cli_ok(&["alerts", "--json"]);
    match serde_json::from_str(&text).expect("alerts --json prints JSON") {
        Value::Array(alerts) => alerts,
        other => panic!("alerts --json printed {other}"),
    }
}

#[test]
fn impossible_travel_alerts_notifies_and_suspends() {
    let castellan = Castellan::init();
    let upstream = spawn_httpbin();
    let receiver = Receiver::start();
    let geo = castellan.scratch_dir().join("cities.mmdb");
    write_geo_database(
        &geo,
        &[
            (&format!("{SYDNEY}/32"), -33.87, 151.21, "Sydney"),
            (&format!("{LONDON}/32"), 51.51, -0.13, "London"),
        ],
    );
    let responses = format!(
        r#"
[webhooks.ops]
url = "{url}"

[[responses]]
kinds = ["impossible_travel"]
webhooks = ["ops"]
suspend = true
"#,
        url = receiver.url()
    );
    castellan.write_config(&config(
        &upstream.base_url(),
        &geo.to_string_lossy(),
        &responses,
    ));
    castellan.set_secret("api-key", UPSTREAM_KEY);
    let token = castellan.issue_token("travel-bot");
    let server = castellan.serve();

    let first = get_from(SYDNEY, server.agent_addr, "/api/get", &token);
    assert_eq!(raw_status(&first), 200, "{first}");
    let second = get_from(LONDON, server.agent_addr, "/api/get", &token);
    assert_eq!(raw_status(&second), 200, "{second}");

    let delivered = poll_until(DETECTION_LIMIT, || !receiver.bodies().is_empty());
    assert!(
        delivered.is_some(),
        "no webhook within {DETECTION_LIMIT:?}\n{}",
        server.logs()
    );
    let body = &receiver.bodies()[0];
    assert_eq!(body["type"], "alert");
    assert_eq!(body["alert"]["kind"], "impossible_travel");
    assert_eq!(body["alert"]["agent"], "travel-bot");
    assert_eq!(body["alert"]["severity"], "high");
    assert_eq!(body["agent_suspended"], true);
    let alert_id = body["alert"]["id"].as_i64().expect("alert id");

    // The gateway reloads the suspension and names the alert.
    let mut denied = String::new();
    let suspended = poll_until(DETECTION_LIMIT, || {
        denied = get_from(LONDON, server.agent_addr, "/api/get", &token);
        raw_status(&denied) == 403
    });
    assert!(suspended.is_some(), "still allowed: {denied}");
    assert!(
        denied.contains(&format!("alert {alert_id} (impossible_travel)")),
        "{denied}"
    );

    let stored = alerts(&castellan);
    let alert = stored
        .iter()
        .find(|alert| alert["id"] == alert_id)
        .expect("the alert is stored");
    assert_eq!(alert["kind"], "impossible_travel");
    assert_eq!(alert["status"], "open");
    assert!(!alert["evidence"].as_array().expect("evidence").is_empty());

    castellan.cli_ok(&["agent", "resume", "travel-bot"]);
    let mut resumed = String::new();
    let lifted = poll_until(DETECTION_LIMIT, || {
        resumed = get_from(LONDON, server.agent_addr, "/api/get", &token);
        raw_status(&resumed) == 200
    });
    assert!(lifted.is_some(), "still denied after resume: {resumed}");

    let events = castellan.cli_ok(&["audit", "events", "--json"]);
    assert!(events.contains("agent.suspend"), "{events}");
    assert!(events.contains("agent.resume"), "{events}");

    let everything = format!(
        "{}\n{}\n{}\n{events}",
        server.logs(),
        serde_json::to_string(&receiver.bodies()).unwrap(),
        serde_json::to_string(&stored).unwrap()
    );
    assert_no_secret(&everything, UPSTREAM_KEY, "logs, webhooks and alerts");
    assert_no_secret(&everything, &token, "logs, webhooks and alerts");
}

/// Runs `castellan serve` with `[detect] geoip_database` naming `database`
/// and checks that it stops before listening, naming the file, without a
/// panic.
fn assert_startup_fails(castellan: &Castellan, database: &std::path::Path) {
    castellan.write_config(&config(
        "http://127.0.0.1:9",
        &database.to_string_lossy(),
        "",
    ));
    let output = castellan.cli(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let name = database.file_name().expect("file name").to_string_lossy();
    assert!(!output.status.success(), "serve started with {name}");
    assert!(stderr.contains(name.as_ref()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_geo_database_stops_startup() {
    let castellan = Castellan::init();
    let missing = castellan.scratch_dir().join("absent.mmdb");
    assert_startup_fails(&castellan, &missing);
}

#[test]
fn corrupt_geo_database_stops_startup() {
    let castellan = Castellan::init();
    let corrupt = castellan.scratch_dir().join("corrupt.mmdb");
    std::fs::write(&corrupt, b"\x00\x01not a maxmind database\xab\xcd").expect("write");
    assert_startup_fails(&castellan, &corrupt);
}

#[test]
fn rotation_reminder_is_sent_once_per_stage() {
    let castellan = Castellan::init();
    let receiver = Receiver::start();
    // A one-day period puts a fresh secret inside the seven-day reminder
    // window at once.
    castellan.write_config(&format!(
        r#"
[gateway]
remind_before = "7d"
reminder_webhooks = ["ops"]

[webhooks.ops]
url = "{url}"
format = "slack"

[connections.api]
upstream = "http://127.0.0.1:9"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "api-key"
rotate_every = "1d"
"#,
        url = receiver.url()
    ));
    castellan.set_secret("api-key", UPSTREAM_KEY);

    let mut server = castellan.serve();
    let sent = poll_until(DETECTION_LIMIT, || !receiver.bodies().is_empty());
    assert!(sent.is_some(), "no reminder\n{}", server.logs());
    let text = receiver.bodies()[0]["text"]
        .as_str()
        .expect("a Slack body has text")
        .to_owned();
    assert!(text.contains("\"api-key\""), "{text}");
    assert!(text.contains("castellan secret rotate api-key"), "{text}");
    server.signal("TERM");
    assert!(server.wait_for_exit(Duration::from_secs(10)).is_some());

    // A restart finds the reminder recorded and stays quiet.
    let server = castellan.serve();
    thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.bodies().len(), 1, "{:?}", receiver.bodies());
    let events = castellan.cli_ok(&["audit", "events", "--json"]);
    assert!(events.contains("secret.reminder"), "{events}");
    assert_no_secret(
        &format!("{}\n{text}", server.logs()),
        UPSTREAM_KEY,
        "reminder",
    );
}

#[test]
fn canary_token_use_raises_critical_alert() {
    let castellan = Castellan::init();
    let receiver = Receiver::start();
    let geo = castellan.scratch_dir().join("cities.mmdb");
    write_geo_database(&geo, &[(&format!("{SYDNEY}/32"), -33.87, 151.21, "Sydney")]);
    let responses = format!(
        r#"
[webhooks.ops]
url = "{url}"

[[responses]]
min_severity = "critical"
webhooks = ["ops"]
"#,
        url = receiver.url()
    );
    castellan.write_config(&config(
        "http://127.0.0.1:9",
        &geo.to_string_lossy(),
        &responses,
    ));
    // The decoy's name is declared nowhere: a canary needs no agent.
    let issued = castellan.cli(&["agent", "token", "issue", "backup-admin", "--canary"]);
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let canary = String::from_utf8_lossy(&issued.stdout).trim().to_owned();
    let server = castellan.serve();

    let reply = get_from(SYDNEY, server.agent_addr, "/api/get", &canary);
    assert_eq!(raw_status(&reply), 401, "a canary grants nothing: {reply}");
    assert!(
        reply.contains("the agent token is invalid, expired or revoked"),
        "the caller cannot tell a canary from a bad token: {reply}"
    );

    let delivered = poll_until(DETECTION_LIMIT, || !receiver.bodies().is_empty());
    assert!(delivered.is_some(), "no webhook\n{}", server.logs());
    let body = &receiver.bodies()[0];
    assert_eq!(body["alert"]["kind"], "canary_token");
    assert_eq!(body["alert"]["severity"], "critical");
    assert_eq!(body["alert"]["agent"], "backup-admin");
    assert_eq!(body["alert"]["source"], SYDNEY);

    let stored = alerts(&castellan);
    assert!(
        stored.iter().any(|alert| alert["kind"] == "canary_token"),
        "{stored:?}"
    );
    // Other commands know a canary for what it is.
    let findings = castellan.cli(&["findings", "--json"]);
    let findings = String::from_utf8_lossy(&findings.stdout).into_owned();
    assert!(!findings.contains("backup-admin"), "{findings}");
    let tokens = castellan.cli_ok(&["agent", "token", "list", "--json"]);
    assert!(tokens.contains("\"canary\":true"), "{tokens}");
    let events = castellan.cli_ok(&["audit", "events", "--json"]);
    assert!(events.contains("token.issue_canary"), "{events}");

    let outputs = format!(
        "{}\n{body}\n{stored:?}\n{findings}\n{tokens}\n{events}",
        server.logs()
    );
    assert_no_secret(&outputs, &canary, "logs, webhook, alerts and commands");
}
