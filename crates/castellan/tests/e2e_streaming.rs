//! Streamed responses pass the gateway piece by piece as the upstream sends
//! them, not buffered until the end.

#![forbid(unsafe_code)]

mod support;

use std::time::Duration;

use support::castellan::Castellan;
use support::http::{stream, Arrival};
use support::peers::{spawn_httpbin, spawn_openai_upstream, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-streaming-Tc6Jy1Mb8Fw3";

fn config(httpbin: &Peer, openai: &Peer) -> String {
    format!(
        r#"
[connections.httpbin]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "upstream-key"

[connections.openai]
upstream = "{openai}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "upstream-key"

[roles.streamer]
allow = [
  {{ connection = "httpbin", methods = ["GET"], paths = ["/drip"] }},
  {{ connection = "openai", methods = ["POST"], paths = ["/v1/chat/completions"] }},
]

[agents.stream-bot]
owner = "ops@example.com"
roles = ["streamer"]
networks = ["127.0.0.0/8"]
"#,
        httpbin = httpbin.base_url(),
        openai = openai.base_url(),
    )
}

fn setup(httpbin: &Peer, openai: &Peer) -> (Castellan, String) {
    let castellan = Castellan::init();
    castellan.write_config(&config(httpbin, openai));
    castellan.set_secret("upstream-key", UPSTREAM_KEY);
    let token = castellan.issue_token("stream-bot");
    (castellan, token)
}

/// Returns the time between the first and the last piece.
fn spread(pieces: &[Arrival]) -> Duration {
    match (pieces.first(), pieces.last()) {
        (Some(first), Some(last)) => last.at - first.at,
        _ => Duration::ZERO,
    }
}

fn timeline(pieces: &[Arrival]) -> Vec<(u128, String)> {
    pieces
        .iter()
        .map(|piece| {
            (
                piece.at.as_millis(),
                String::from_utf8_lossy(&piece.bytes).into_owned(),
            )
        })
        .collect()
}

#[test]
fn drip_body_arrives_in_pieces() {
    let httpbin = spawn_httpbin();
    let openai = spawn_openai_upstream(UPSTREAM_KEY);
    let (castellan, token) = setup(&httpbin, &openai);
    let server = castellan.serve();
    let authorization = format!("Bearer {token}");

    // httpbin sends one byte every 400 ms: at 0, 0.4, 0.8, 1.2 and 1.6 s.
    let url = server.url("/httpbin/drip?duration=2&numbytes=5&delay=0");
    let mut response = stream("GET", &url, &[("authorization", &authorization)], None);
    assert_eq!(response.status, 200);
    let pieces = response.rest();

    let body: Vec<u8> = pieces
        .iter()
        .flat_map(|piece| piece.bytes.clone())
        .collect();
    assert_eq!(body, b"*****");
    assert!(
        pieces.len() >= 3,
        "the body came in too few pieces: {:?}",
        timeline(&pieces)
    );
    assert!(
        spread(&pieces) >= Duration::from_millis(1000),
        "the pieces arrived together: {:?}",
        timeline(&pieces)
    );
}

#[test]
fn sse_events_arrive_spread_out() {
    let httpbin = spawn_httpbin();
    let openai = spawn_openai_upstream(UPSTREAM_KEY);
    let (castellan, token) = setup(&httpbin, &openai);
    let server = castellan.serve();
    let authorization = format!("Bearer {token}");
    let request = r#"{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "stream please"}]}"#;

    let url = server.url("/openai/v1/chat/completions");
    let headers = [
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    let mut response = stream("POST", &url, &headers, Some(request));
    assert_eq!(response.status, 200, "{}", server.logs());
    let pieces = response.rest();

    let text: String = timeline(&pieces)
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert!(
        text.contains("data: [DONE]"),
        "the stream did not end: {text}"
    );
    let with_events: Vec<Arrival> = pieces
        .into_iter()
        .filter(|piece| piece.bytes.windows(5).any(|w| w == b"data:"))
        .collect();
    assert!(
        with_events.len() >= 5,
        "the events came in too few pieces: {:?}",
        timeline(&with_events)
    );
    // The upstream pauses 200 ms before each of its 6 content events.
    assert!(
        spread(&with_events) >= Duration::from_millis(600),
        "the events arrived together: {:?}",
        timeline(&with_events)
    );
}
