//! Flood limits: failed authentications per source address, requests per
//! agent and minute, requests in flight, body and header sizes.

#![forbid(unsafe_code)]

mod support;

use std::thread;
use std::time::Duration;

use support::castellan::{poll_until, Castellan};
use support::http::{get, get_as, raw_exchange, raw_status, send};
use support::peers::{spawn_httpbin, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-limits-Wc6Hy1Nr9Pb3";

fn config(httpbin: &Peer) -> String {
    format!(
        r#"
[gateway]
auth_failures_per_minute = 3

[connections.httpbin]
upstream = "{httpbin}"
auth = {{ kind = "bearer" }}
secret = "httpbin-key"
allow_private = true
max_request_bytes = 100

[roles.user]
allow = [{{ connection = "httpbin", methods = ["GET", "POST"], paths = ["/**"] }}]

[agents.limited]
owner = "ops@example.com"
roles = ["user"]
requests_per_minute = 3

[agents.single]
owner = "ops@example.com"
roles = ["user"]
max_concurrent_requests = 1
"#,
        httpbin = httpbin.base_url(),
    )
}

struct Setup {
    _httpbin: Peer,
    castellan: Castellan,
}

fn setup() -> Setup {
    let httpbin = spawn_httpbin();
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin));
    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    Setup {
        _httpbin: httpbin,
        castellan,
    }
}

fn retry_after(reply: &support::http::Reply) -> u64 {
    reply
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no valid Retry-After: {:?}", reply.headers))
}

#[test]
fn failed_authentications_rate_limited() {
    let setup = setup();
    let good = setup.castellan.issue_token("single");
    let server = setup.castellan.serve();
    let url = server.url("/httpbin/get");

    for attempt in 0..3 {
        let reply = get(&url, &[("authorization", "Bearer cst_not_a_real_token")]);
        assert_eq!(reply.status, 401, "attempt {attempt}: {}", reply.body);
    }
    let blocked = get(&url, &[("authorization", "Bearer cst_not_a_real_token")]);
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    assert!(
        blocked.body.contains("too many failed authentications"),
        "{}",
        blocked.body
    );
    let wait = retry_after(&blocked);
    assert!((1..=20).contains(&wait), "Retry-After {wait}");

    // The block holds for valid tokens too: guessing cannot continue by
    // mixing in a known token.
    let with_good_token = get_as(&url, &good);
    assert_eq!(with_good_token.status, 429, "{}", with_good_token.body);
    let audited = poll_until(Duration::from_secs(3), || {
        setup
            .castellan
            .audit_records()
            .iter()
            .any(|r| r["status"] == 429 && r["decision"] == "deny")
    });
    assert!(audited.is_some(), "the 429 is not audited");
}

#[test]
fn agent_request_rate_limited() {
    let setup = setup();
    let token = setup.castellan.issue_token("limited");
    let server = setup.castellan.serve();
    let url = server.url("/httpbin/get");

    for attempt in 0..3 {
        let reply = get_as(&url, &token);
        assert_eq!(reply.status, 200, "attempt {attempt}: {}", reply.body);
    }
    let limited = get_as(&url, &token);

    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(
        limited.body.contains("3 requests per minute"),
        "{}",
        limited.body
    );
    let wait = retry_after(&limited);
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
}

#[test]
fn concurrent_requests_limited_per_agent() {
    let setup = setup();
    let token = setup.castellan.issue_token("single");
    let server = setup.castellan.serve();
    let slow_url = server.url("/httpbin/delay/2");
    let fast_url = server.url("/httpbin/get");

    let slow = {
        let token = token.clone();
        thread::spawn(move || get_as(&slow_url, &token))
    };
    // Give the slow request time to take the slot first; httpbin holds it
    // for two seconds, far longer than this.
    thread::sleep(Duration::from_millis(300));
    let limited = get_as(&fast_url, &token);
    assert_eq!(
        limited.status, 429,
        "a second request was not limited: {}",
        limited.body
    );
    assert!(
        limited.body.contains("requests in flight"),
        "{}",
        limited.body
    );

    let slow_reply = slow.join().expect("slow request thread");
    assert_eq!(slow_reply.status, 200, "{}", slow_reply.body);
    let after = get_as(&fast_url, &token);
    assert_eq!(
        after.status, 200,
        "the slot was not released: {}",
        after.body
    );
}

#[test]
fn oversized_bodies_rejected_with_413() {
    let setup = setup();
    let token = setup.castellan.issue_token("single");
    let server = setup.castellan.serve();
    let bearer = format!("Bearer {token}");
    let big = "x".repeat(200);

    let declared = send(
        "POST",
        &server.url("/httpbin/post"),
        &[("authorization", &bearer)],
        Some(&big),
    );
    assert_eq!(declared.status, 413, "{}", declared.body);

    let chunked = raw_exchange(
        server.agent_addr,
        &format!(
            "POST /httpbin/post HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nC8\r\n{big}\r\n0\r\n\r\n"
        ),
    );
    assert_eq!(raw_status(&chunked), 413, "{chunked}");

    let small = send(
        "POST",
        &server.url("/httpbin/post"),
        &[("authorization", &bearer)],
        Some("small body"),
    );
    assert_eq!(small.status, 200, "{}", small.body);
}

#[test]
fn oversized_headers_rejected_with_431() {
    let setup = setup();
    let token = setup.castellan.issue_token("single");
    let server = setup.castellan.serve();
    let padding = "a".repeat(70 * 1024);

    let raw = raw_exchange(
        server.agent_addr,
        &format!(
            "GET /httpbin/get HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             X-Padding: {padding}\r\nConnection: close\r\n\r\n"
        ),
    );

    assert_eq!(raw_status(&raw), 431, "{}", &raw[..raw.len().min(200)]);
}
