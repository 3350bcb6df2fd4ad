//! Upstreams that misbehave, on purpose or not, still never hand the
//! credential to the agent, and agents that misbehave still leave a record.

#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use support::castellan::{poll_until, Castellan};
use support::http::{raw_exchange, raw_status, send_as};
use support::leak::assert_no_secret;
use support::peers::{spawn_httpbin, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-hostile-Tz5Gm2Kd8Qw4";

/// A loopback upstream that answers every request with the same raw bytes.
fn spawn_raw_upstream(response: Vec<u8>) -> SocketAddr {
    spawn_raw_upstream_holding(response, Duration::ZERO)
}

/// Like [`spawn_raw_upstream`], keeping each connection open for `hold`
/// after the response bytes before it closes.
fn spawn_raw_upstream_holding(response: Vec<u8>, hold: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the raw upstream");
    let address = listener.local_addr().expect("raw upstream address");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let response = response.clone();
            thread::spawn(move || answer(stream, &response, hold));
        }
    });
    address
}

fn answer(mut stream: TcpStream, response: &[u8], hold: Duration) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the upstream socket"));
    let mut line = String::new();
    // Read the request head; the tests send no bodies.
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        if line == "\r\n" {
            break;
        }
        line.clear();
    }
    let _ = stream.write_all(response);
    thread::sleep(hold);
    let _ = stream.shutdown(Shutdown::Write);
}

fn gzip_response() -> Vec<u8> {
    // A gzip member whose single stored block is the credential: anything
    // that passed it on would hand the key to the agent.
    let payload = format!("{{\"echo\": \"{UPSTREAM_KEY}\"}}");
    let mut body = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1];
    let length = payload.len() as u16;
    body.extend_from_slice(&length.to_le_bytes());
    body.extend_from_slice(&(!length).to_le_bytes());
    body.extend_from_slice(payload.as_bytes());
    let mut head = format!(
        "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(&body);
    head
}

fn config(httpbin: &Peer, reason: SocketAddr, gzip: SocketAddr) -> String {
    format!(
        r#"
[connections.httpbin]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "upstream-key"

[connections.reason]
upstream = "http://{reason}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "upstream-key"

[connections.gzip]
upstream = "http://{gzip}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "upstream-key"

[roles.user]
allow = [
  {{ connection = "httpbin", methods = ["*"], paths = ["/**"] }},
  {{ connection = "reason", methods = ["GET"], paths = ["/**"] }},
  {{ connection = "gzip", methods = ["GET"], paths = ["/**"] }},
]
deny = [{{ connection = "httpbin", methods = ["DELETE"] }}]

[agents.bot]
owner = "ops@example.com"
roles = ["user"]
"#,
        httpbin = httpbin.base_url(),
    )
}

struct Setup {
    _httpbin: Peer,
    castellan: Castellan,
    token: String,
}

fn setup() -> Setup {
    let httpbin = spawn_httpbin();
    let reason = spawn_raw_upstream(
        format!("HTTP/1.1 401 bad key {UPSTREAM_KEY}\r\ncontent-length: 0\r\n\r\n").into_bytes(),
    );
    let gzip = spawn_raw_upstream(gzip_response());
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin, reason, gzip));
    castellan.set_secret("upstream-key", UPSTREAM_KEY);
    let token = castellan.issue_token("bot");
    Setup {
        _httpbin: httpbin,
        castellan,
        token,
    }
}

fn raw_get(server: SocketAddr, path: &str, token: &str) -> String {
    raw_exchange(
        server,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {server}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    )
}

fn record_for(castellan: &Castellan, marker: &str) -> Option<Value> {
    castellan
        .audit_records()
        .into_iter()
        .find(|record| record["request_id"] == marker)
}

#[test]
fn reason_phrase_never_forwarded() {
    let setup = setup();
    let server = setup.castellan.serve();

    let raw = raw_get(server.agent_addr, "/reason/x", &setup.token);

    assert_eq!(raw_status(&raw), 401, "{raw}");
    assert!(
        !raw.contains(UPSTREAM_KEY),
        "the reason phrase leaked: {raw}"
    );
}

#[test]
fn compressed_response_rejected() {
    let setup = setup();
    let server = setup.castellan.serve();

    let raw = raw_get(server.agent_addr, "/gzip/x", &setup.token);

    assert_eq!(raw_status(&raw), 502, "{raw}");
    assert!(raw.contains("content-encoding"), "{raw}");
    assert!(!raw.contains(UPSTREAM_KEY), "{raw}");
    let body_start = raw.find("\r\n\r\n").unwrap_or(0);
    assert!(
        !raw[body_start..].contains('\u{1f}'),
        "gzip bytes reached the agent: {raw}"
    );
}

#[test]
fn lowercase_method_rejected() {
    let setup = setup();
    let server = setup.castellan.serve();

    for method in ["delete", "Delete", "get"] {
        let reply = send_as(method, &server.url("/httpbin/anything/x"), &setup.token);
        assert_eq!(reply.status, 400, "{method}: {}", reply.body);
        assert!(
            reply.body.contains("case-sensitive"),
            "{method}: {}",
            reply.body
        );
    }
    let reply = send_as("DELETE", &server.url("/httpbin/anything/x"), &setup.token);
    assert_eq!(reply.status, 403, "{}", reply.body);
}

#[test]
fn method_override_parameter_rejected() {
    let setup = setup();
    let server = setup.castellan.serve();

    let url = server.url("/httpbin/anything/x?_method=DELETE");
    let reply = send_as("POST", &url, &setup.token);

    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("_method"), "{}", reply.body);
}

#[test]
fn empty_responses_audited_as_allowed() {
    let setup = setup();
    let server = setup.castellan.serve();
    let mut ids = Vec::new();

    for (method, path, status) in [
        ("GET", "/httpbin/status/204", 204),
        ("HEAD", "/httpbin/get", 200),
        ("GET", "/httpbin/status/200", 200),
    ] {
        let reply = send_as(method, &server.url(path), &setup.token);
        assert_eq!(reply.status, status, "{method} {path}");
        ids.push(reply.header("x-request-id").unwrap_or_default().to_owned());
    }

    for id in ids {
        let found = poll_until(Duration::from_secs(3), || {
            record_for(&setup.castellan, &id).is_some()
        });
        assert!(found.is_some(), "no record for {id}");
        let record = record_for(&setup.castellan, &id).expect("record exists");
        assert_eq!(record["decision"], "allow", "{record}");
        assert!(record["reason"].is_null(), "{record}");
    }
}

#[test]
fn agent_leaving_early_still_audited() {
    let setup = setup();
    let server = setup.castellan.serve();
    let mut stream = TcpStream::connect(server.agent_addr).expect("connect to the gateway");
    let request = format!(
        "GET /httpbin/delay/2?marker=left-early HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        setup.token
    );
    stream
        .write_all(request.as_bytes())
        .expect("send the request");

    // Leave before the upstream answers.
    thread::sleep(Duration::from_millis(300));
    drop(stream);

    let found = poll_until(Duration::from_secs(5), || {
        setup
            .castellan
            .audit_records()
            .iter()
            .any(|record| record["path"] == "/delay/2" && record["decision"] == "error")
    });
    assert!(
        found.is_some(),
        "no record of the abandoned request: {:?}",
        setup.castellan.audit_records()
    );
    let records = setup.castellan.audit_records();
    let record = records
        .iter()
        .find(|record| record["path"] == "/delay/2")
        .expect("record exists");
    assert_eq!(record["status"], 499, "{record}");
    assert_eq!(record["rule"], "roles.user.allow[0]", "{record}");
}

/// Bytes of a response body of `length` letters with `key` written at its
/// start raw and percent-encoded near its end, framed with Content-Length.
fn echoing_response(key: &str, length: usize) -> Vec<u8> {
    let encoded: String = key.bytes().map(|byte| format!("%{byte:02X}")).collect();
    let head = format!("{{\"echo\":\"{key}\",\"pad\":\"");
    let tail = format!("\",\"url\":\"/x?k={encoded}\"}}");
    let padding = "a".repeat(length - head.len() - tail.len());
    let body = format!("{head}{padding}{tail}");
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body.as_bytes());
    response
}

/// Sets up a gateway under `audit_durability = "strict"` in front of raw
/// upstreams, one connection per `(name, address)`, each with a 1 s response
/// timeout, and returns it with an agent token.
fn strict_setup(upstreams: &[(&str, SocketAddr)]) -> (Castellan, String) {
    raw_setup("strict", upstreams)
}

/// Like [`strict_setup`], with `durability` as the audit durability. The
/// agent may have one request in flight, so a slot that a response keeps
/// after it ends shows as 429 on the next request.
fn raw_setup(durability: &str, upstreams: &[(&str, SocketAddr)]) -> (Castellan, String) {
    let mut config = format!("[gateway]\naudit_durability = \"{durability}\"\n");
    let mut grants = Vec::new();
    for (name, address) in upstreams {
        config.push_str(&format!(
            r#"
[connections.{name}]
upstream = "http://{address}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "upstream-key"
response_timeout = "1s"
"#
        ));
        grants.push(format!(
            r#"{{ connection = "{name}", methods = ["GET"], paths = ["/**"] }}"#
        ));
    }
    config.push_str(&format!(
        "\n[roles.user]\nallow = [{}]\n\n[agents.bot]\nowner = \"ops@example.com\"\nroles = [\"user\"]\nmax_concurrent_requests = 1\n",
        grants.join(", ")
    ));
    let castellan = Castellan::init();
    castellan.write_config(&config);
    castellan.set_secret("upstream-key", UPSTREAM_KEY);
    let token = castellan.issue_token("bot");
    (castellan, token)
}

fn committed_record(castellan: &Castellan, raw: &str) -> Value {
    let request_id = raw
        .lines()
        .find_map(|line| line.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no request id in {raw}"))
        .to_owned();
    // Strict durability sends the response only after the commit.
    record_for(castellan, &request_id).unwrap_or_else(|| panic!("no record for {request_id}"))
}

/// Strict durability reads bodies up to 64 KiB whole before it responds and
/// streams longer ones; both ways mask the credential and keep the length.
#[test]
fn strict_masks_whole_and_streamed_bodies() {
    let small = spawn_raw_upstream(echoing_response(UPSTREAM_KEY, 1024));
    let large = spawn_raw_upstream(echoing_response(UPSTREAM_KEY, 70_000));
    let (castellan, token) = strict_setup(&[("small", small), ("large", large)]);
    let server = castellan.serve();

    for (path, length) in [("/small/x", 1024), ("/large/x", 70_000)] {
        let raw = raw_get(server.agent_addr, path, &token);
        assert_eq!(
            raw_status(&raw),
            200,
            "{path}: {}",
            &raw[..raw.len().min(300)]
        );
        assert_no_secret(&raw, UPSTREAM_KEY, path);
        let body = &raw[raw.find("\r\n\r\n").expect("head ends") + 4..];
        assert_eq!(body.len(), length, "{path}: masking changed the length");
        assert!(
            body.contains(&"*".repeat(UPSTREAM_KEY.len())),
            "{path}: not masked"
        );
        let record = committed_record(&castellan, &raw);
        assert_eq!(record["decision"], "allow", "{record}");
        assert_eq!(record["bytes_out"], length, "{record}");
    }
}

/// An upstream that closes before its declared length gets the agent a 502
/// under strict durability, never a cut body, and the record gives the reason.
#[test]
fn strict_broken_body_gets_502() {
    let mut response = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".to_vec();
    response.extend_from_slice(&[b'a'; 40]);
    let broken = spawn_raw_upstream(response);
    let (castellan, token) = strict_setup(&[("broken", broken)]);
    let server = castellan.serve();

    let raw = raw_get(server.agent_addr, "/broken/x", &token);

    assert_eq!(raw_status(&raw), 502, "{raw}");
    assert!(raw.contains("after 40 of 100 bytes"), "{raw}");
    assert!(
        !raw.contains(&"a".repeat(40)),
        "part of the body reached the agent: {raw}"
    );
    let record = committed_record(&castellan, &raw);
    assert_eq!(record["decision"], "error", "{record}");
    assert_eq!(record["status"], 502, "{record}");
    assert_eq!(record["bytes_out"], 0, "{record}");
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("after 40 of 100 bytes"), "{record}");
}

/// An upstream that stops sending mid-body gets the agent a 504 once the
/// connection's response timeout has passed.
#[test]
fn strict_stalled_body_gets_504() {
    let mut response = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".to_vec();
    response.extend_from_slice(&[b'a'; 10]);
    let stalled = spawn_raw_upstream_holding(response, Duration::from_secs(5));
    let (castellan, token) = strict_setup(&[("stalled", stalled)]);
    let server = castellan.serve();

    let raw = raw_get(server.agent_addr, "/stalled/x", &token);

    assert_eq!(raw_status(&raw), 504, "{raw}");
    assert!(
        raw.contains("sent 10 of 100 response bytes within 1s"),
        "{raw}"
    );
    let record = committed_record(&castellan, &raw);
    assert_eq!(record["decision"], "error", "{record}");
    assert_eq!(record["status"], 504, "{record}");
}

/// An agent that leaves while a strict-durability gateway still reads a
/// small body got nothing, and its record shows it: status 499, no bytes.
#[test]
fn strict_records_agent_leaving_early() {
    let mut response = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".to_vec();
    response.extend_from_slice(&[b'a'; 10]);
    let stalled = spawn_raw_upstream_holding(response, Duration::from_secs(5));
    let (castellan, token) = strict_setup(&[("stalled", stalled)]);
    let server = castellan.serve();
    let mut stream = TcpStream::connect(server.agent_addr).expect("connect to the gateway");
    let request = format!(
        "GET /stalled/left-early HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .expect("send the request");

    thread::sleep(Duration::from_millis(300));
    drop(stream);

    let record = || {
        castellan
            .audit_records()
            .into_iter()
            .find(|record| record["path"] == "/left-early")
    };
    let found = poll_until(Duration::from_secs(5), || record().is_some());
    assert!(found.is_some(), "no record of the abandoned request");
    let record = record().expect("record exists");
    assert_eq!(record["decision"], "error", "{record}");
    assert_eq!(record["status"], 499, "{record}");
    assert_eq!(record["bytes_out"], 0, "{record}");
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("before the response was sent"), "{record}");
}

/// A streamed body whose upstream stops sending ends in an error once the
/// connection's response timeout passes without data, instead of holding
/// the agent's connection for as long as the upstream likes.
#[test]
fn stalled_stream_ends_after_timeout() {
    let response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec();
    let stalled = spawn_raw_upstream_holding(response, Duration::from_secs(10));
    for durability in ["batched", "strict"] {
        let (castellan, token) = raw_setup(durability, &[("stalled", stalled)]);
        let server = castellan.serve();

        let started = std::time::Instant::now();
        let raw = raw_get(server.agent_addr, "/stalled/stream", &token);

        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(8),
            "{durability}: waited {waited:?}"
        );
        assert_eq!(raw_status(&raw), 200, "{durability}: {raw}");
        assert!(raw.contains("hello"), "{durability}: {raw}");
        assert!(
            !raw.ends_with("0\r\n\r\n"),
            "{durability}: ended cleanly: {raw}"
        );
        let record = || {
            castellan
                .audit_records()
                .into_iter()
                .find(|record| record["path"] == "/stream")
        };
        let found = poll_until(Duration::from_secs(5), || record().is_some());
        assert!(found.is_some(), "{durability}: no record");
        let record = record().expect("record exists");
        assert_eq!(record["decision"], "error", "{durability}: {record}");
        let reason = record["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("sent no response data for 1s"),
            "{durability}: {record}"
        );

        // The cut response gave back the agent's one concurrency slot.
        let again = raw_get(server.agent_addr, "/stalled/again", &token);
        assert_eq!(raw_status(&again), 200, "{durability}: {again}");
    }
}

/// An HTTP/1.0 upstream does not turn the agent's HTTP/1.1 connection into
/// an HTTP/1.0 one: the status line stays HTTP/1.1 under either durability.
#[test]
fn http10_upstream_answered_as_http11() {
    let response = b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec();
    let old = spawn_raw_upstream(response);
    for durability in ["batched", "strict"] {
        let (castellan, token) = raw_setup(durability, &[("old", old)]);
        let server = castellan.serve();

        let raw = raw_get(server.agent_addr, "/old/x", &token);

        assert!(raw.starts_with("HTTP/1.1 200"), "{durability}: {raw}");
        assert!(raw.ends_with("hello"), "{durability}: {raw}");
    }
}

/// A 204 must not carry `Content-Length`, and a 304's describes a body
/// that is never sent. Either, passed on, made hyper's debug build panic
/// and the agent get no response at all.
#[test]
fn bodiless_statuses_lose_their_length() {
    let not_modified =
        spawn_raw_upstream(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 20\r\n\r\n".to_vec());
    let no_content =
        spawn_raw_upstream(b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n".to_vec());
    for durability in ["batched", "strict"] {
        let upstreams = [("cached", not_modified), ("empty", no_content)];
        let (castellan, token) = raw_setup(durability, &upstreams);
        let server = castellan.serve();

        let raw = raw_get(server.agent_addr, "/cached/x", &token);
        assert_eq!(raw_status(&raw), 304, "{durability}: {raw}");
        assert!(!raw.contains("content-length"), "{durability}: {raw}");

        let raw = raw_get(server.agent_addr, "/empty/x", &token);
        assert_eq!(raw_status(&raw), 204, "{durability}: {raw}");
        assert!(!raw.contains("content-length"), "{durability}: {raw}");
    }
}

/// An HTTP/1.0 agent cannot tell a body of unknown length that was cut
/// short from a complete one, so it gets such bodies read whole and sent
/// with their length, and a 504 when the upstream stalls midway.
#[test]
fn http10_agent_gets_whole_bodies() {
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec();
    let mut complete = chunked.clone();
    complete.extend_from_slice(b"0\r\n\r\n");
    let complete = spawn_raw_upstream(complete);
    let stalled = spawn_raw_upstream_holding(chunked, Duration::from_secs(10));
    for durability in ["batched", "strict"] {
        let upstreams = [("complete", complete), ("stalled", stalled)];
        let (castellan, token) = raw_setup(durability, &upstreams);
        let server = castellan.serve();
        let get = |path: &str| {
            raw_exchange(
                server.agent_addr,
                &format!("GET {path} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"),
            )
        };

        let raw = get("/complete/x");
        assert_eq!(raw_status(&raw), 200, "{durability}: {raw}");
        assert!(raw.contains("content-length: 5\r\n"), "{durability}: {raw}");
        assert!(raw.ends_with("\r\n\r\nhello"), "{durability}: {raw}");

        let raw = get("/stalled/x");
        assert_eq!(raw_status(&raw), 504, "{durability}: {raw}");
        assert!(
            !raw.contains("hello"),
            "{durability}: part of the body: {raw}"
        );
    }
}
