//! A connection whose upstream is a loopback or other internal address is
//! rejected with 502 unless it sets `allow_private = true`, whichever way the
//! address is spelled, and nothing reaches the listener behind it.

#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use support::castellan::{poll_until, Castellan};
use support::http::get_as;

const UPSTREAM_KEY: &str = "sk-e2e-ssrf-Wq3Lp7Vn1Xc5";

/// A loopback listener that counts the connections it accepts and responds
/// to each request with an empty 204.
struct CountingUpstream {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl CountingUpstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the counting upstream");
        let address = listener.local_addr().expect("counting upstream address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || answer_no_content(stream));
            }
        });
        CountingUpstream { address, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn answer_no_content(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the upstream socket"));
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        if line == "\r\n" {
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
        }
        line.clear();
    }
}

/// Connections to the same listener, each spelling its address differently.
/// Only `allowed` sets `allow_private = true`.
fn config(port: u16) -> String {
    let upstreams = [
        ("literal", format!("http://127.0.0.1:{port}")),
        ("decimal", format!("http://2130706433:{port}")),
        ("hex", format!("http://0x7f.1:{port}")),
        ("octal", format!("http://017700000001:{port}")),
        ("mapped", format!("http://[::ffff:127.0.0.1]:{port}")),
        ("hostname", format!("http://localhost:{port}")),
    ];
    let mut toml = String::new();
    for (name, upstream) in &upstreams {
        toml.push_str(&format!(
            "[connections.{name}]\nupstream = \"{upstream}\"\nauth = {{ kind = \"bearer\" }}\nsecret = \"upstream-key\"\n\n"
        ));
    }
    toml.push_str(&format!(
        "[connections.allowed]\nupstream = \"http://127.0.0.1:{port}\"\nallow_private = true\nauth = {{ kind = \"bearer\" }}\nsecret = \"upstream-key\"\n\n"
    ));
    toml.push_str("[roles.user]\nallow = [\n");
    for name in upstreams.iter().map(|(name, _)| *name).chain(["allowed"]) {
        toml.push_str(&format!(
            "  {{ connection = \"{name}\", methods = [\"GET\"], paths = [\"/**\"] }},\n"
        ));
    }
    toml.push_str("]\n\n[agents.bot]\nowner = \"ops@example.com\"\nroles = [\"user\"]\n");
    toml
}

#[test]
fn internal_upstream_rejected_without_allow_private() {
    let upstream = CountingUpstream::start();
    let castellan = Castellan::init();
    castellan.write_config(&config(upstream.address.port()));
    castellan.set_secret("upstream-key", UPSTREAM_KEY);
    let token = castellan.issue_token("bot");
    let server = castellan.serve();

    for name in ["literal", "decimal", "hex", "octal", "mapped", "hostname"] {
        let reply = get_as(&server.url(&format!("/{name}/v1/models")), &token);
        assert_eq!(reply.status, 502, "{name}: {}", reply.body);
        let reason = reply.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(reason.contains(&format!("\"{name}\"")), "{name}: {reason}");
        assert!(reason.contains("allow_private = true"), "{name}: {reason}");
        assert!(!reason.contains("127.0.0.1"), "{name}: {reason}");
    }
    assert_eq!(upstream.accepted(), 0, "a rejected upstream was dialed");

    let reply = get_as(&server.url("/allowed/v1/models"), &token);
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(upstream.accepted(), 1);

    let logs = server.logs();
    assert!(logs.contains("upstream address rejected"), "{logs}");
}

#[test]
fn reload_removing_allow_private_rejects_upstream() {
    let upstream = CountingUpstream::start();
    let castellan = Castellan::init();
    let allowed = config(upstream.address.port());
    castellan.write_config(&allowed);
    castellan.set_secret("upstream-key", UPSTREAM_KEY);
    let token = castellan.issue_token("bot");
    let server = castellan.serve();
    let reply = get_as(&server.url("/allowed/v1/models"), &token);
    assert_eq!(reply.status, 204, "{}", reply.body);

    // The same file without the one `allow_private = true`.
    castellan.write_config(&allowed.replace("allow_private = true\n", ""));
    server.signal("HUP");
    let reloaded = server.wait_for_stderr("configuration reloaded", Duration::from_secs(10));
    assert!(reloaded, "the reload was not logged\n{}", server.logs());

    let reply = get_as(&server.url("/allowed/v1/models"), &token);
    assert_eq!(reply.status, 502, "{}", reply.body);
    let reason = reply.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("allow_private = true"), "{reason}");
}

#[test]
fn rejected_upstream_audited_as_error() {
    let upstream = CountingUpstream::start();
    let castellan = Castellan::init();
    castellan.write_config(&config(upstream.address.port()));
    castellan.set_secret("upstream-key", UPSTREAM_KEY);
    let token = castellan.issue_token("bot");
    let server = castellan.serve();

    let reply = get_as(&server.url("/literal/v1/models"), &token);
    assert_eq!(reply.status, 502, "{}", reply.body);

    // The writer stores records in batches, so the record may lag the reply.
    let mut records = Vec::new();
    poll_until(Duration::from_secs(5), || {
        records = castellan.audit_records();
        !records.is_empty()
    });
    let record = records
        .iter()
        .find(|record| record["connection"] == "literal")
        .unwrap_or_else(|| panic!("no audit record for the rejected request: {records:?}"));
    assert_eq!(record["decision"], "error", "{record}");
    assert_eq!(record["status"], 502, "{record}");
    assert_eq!(upstream.accepted(), 0);
}
