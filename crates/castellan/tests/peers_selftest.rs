//! Checks the test peers on their own, without the gateway: each starts on
//! loopback, serves plain HTTP/1.1, and stops when its `Peer` is dropped.

#![forbid(unsafe_code)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::peers::{run_openai_agent, spawn_httpbin, spawn_openai_upstream};

const UPSTREAM_KEY: &str = "sk-selftest-upstream-key";

/// A response read from a raw socket: the status code and the whole body.
struct RawResponse {
    status: u16,
    body: String,
}

/// Sends one HTTP/1.1 request over a plain `TcpStream` and reads the response
/// until the peer closes the connection.
fn send_request(port: u16, method: &str, path: &str, extra_headers: &[&str]) -> RawResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the peer");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set the read timeout");

    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for header in extra_headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("write the request");

    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .expect("read the response until the peer closes");
    parse_response(&raw)
}

fn parse_response(raw: &str) -> RawResponse {
    let status_line = raw.lines().next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("invalid status line {status_line:?}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    RawResponse { status, body }
}

#[test]
fn httpbin_get_returns_200() {
    let httpbin = spawn_httpbin();

    let response = send_request(httpbin.port, "GET", "/get?probe=1", &[]);

    assert_eq!(response.status, 200, "body: {}", response.body);
    assert!(
        response.body.contains("\"probe\": \"1\""),
        "httpbin did not echo the query: {}",
        response.body
    );
}

#[test]
fn openai_upstream_checks_bearer_key() {
    let upstream = spawn_openai_upstream(UPSTREAM_KEY);
    let right_key = format!("Authorization: Bearer {UPSTREAM_KEY}");
    let cases: [(&str, &str, Vec<&str>, u16); 4] = [
        ("GET", "/_peer/requests", vec![], 200),
        ("POST", "/v1/chat/completions", vec![], 401),
        (
            "POST",
            "/v1/chat/completions",
            vec!["Authorization: Bearer wrong"],
            401,
        ),
        ("GET", "/v1/unknown", vec![right_key.as_str()], 404),
    ];

    for (method, path, headers, expected_status) in cases {
        let response = send_request(upstream.port, method, path, &headers);
        assert_eq!(
            response.status, expected_status,
            "{method} {path} with {headers:?}: {}",
            response.body
        );
    }
}

#[test]
fn openai_upstream_records_request_headers() {
    let upstream = spawn_openai_upstream(UPSTREAM_KEY);

    send_request(
        upstream.port,
        "POST",
        "/v1/chat/completions",
        &["x-api-key: agent-token-should-show"],
    );
    let response = send_request(upstream.port, "GET", "/_peer/requests", &[]);

    assert_eq!(response.status, 200, "body: {}", response.body);
    let recorded: serde_json::Value =
        serde_json::from_str(&response.body).expect("/_peer/requests returns JSON");
    let requests = recorded.as_array().expect("a JSON array of requests");
    assert_eq!(requests.len(), 1, "only the chat request is recorded");
    assert_eq!(requests[0]["path"], "/v1/chat/completions");
    let headers = requests[0]["headers"].to_string();
    assert!(
        headers.contains("agent-token-should-show"),
        "headers: {headers}"
    );
}

#[test]
fn openai_agent_streams_chunks_incrementally() {
    let upstream = spawn_openai_upstream(UPSTREAM_KEY);
    let base_url = format!("{}/v1", upstream.base_url());

    let output = run_openai_agent(&base_url, UPSTREAM_KEY, &[]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agent failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the agent prints one JSON object");
    assert_eq!(report["normal"]["content"], "echo: hello from the agent");
    assert_eq!(report["stream"]["content"], "echo: hello from the agent");

    let arrivals: Vec<f64> = report["stream"]["arrival_ms"]
        .as_array()
        .expect("arrival_ms is an array")
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    assert!(arrivals.len() >= 5, "arrival_ms: {arrivals:?}");
    let spread = arrivals[arrivals.len() - 1] - arrivals[0];
    // The upstream pauses 200 ms before each of its 6 content chunks.
    assert!(spread >= 600.0, "chunks arrived together: {arrivals:?}");
}

#[test]
fn openai_agent_reports_expected_denial() {
    let upstream = spawn_openai_upstream(UPSTREAM_KEY);
    let base_url = format!("{}/v1", upstream.base_url());

    let output = run_openai_agent(&base_url, "wrong-key", &["--expect-denied", "401"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agent failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the agent prints one JSON object");
    assert_eq!(report["denied"]["status"], 401);
    assert_eq!(report["denied"]["error_class"], "AuthenticationError");
    assert_eq!(report["denied"]["body"]["code"], "invalid_api_key");
}

#[test]
fn openai_agent_fails_on_unexpected_success() {
    let upstream = spawn_openai_upstream(UPSTREAM_KEY);
    let base_url = format!("{}/v1", upstream.base_url());

    let output = run_openai_agent(&base_url, UPSTREAM_KEY, &["--expect-denied"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "agent accepted a success");
    assert!(stderr.contains("PermissionDeniedError"), "stderr: {stderr}");
}

#[test]
fn dropped_peer_stops_listening() {
    let httpbin = spawn_httpbin();
    let port = httpbin.port;

    drop(httpbin);

    let connection = TcpStream::connect(("127.0.0.1", port));
    assert!(
        connection.is_err(),
        "port {port} still accepts connections after drop"
    );
}
