//! The two secrets stay on their side of the gateway: the agent token never
//! reaches an upstream, and the upstream credential never reaches an agent.

#![forbid(unsafe_code)]

mod support;

use serde_json::Value;

use support::castellan::Castellan;
use support::http::{get, raw_exchange, raw_status, send};
use support::leak::assert_no_secret;
use support::peers::{spawn_httpbin, spawn_openai_upstream, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-isolation-Rk3Vm8Wq2Lz5";
const QUERY_KEY: &str = "qk-e2e-isolation-Hb7Tn4Xc9Fs1";

/// Every place an agent SDK may put its token, all enabled.
const ALL_TOKEN_LOCATIONS: &str =
    r#"["authorization", "x-api-key", "api-key", "x-goog-api-key", { query = "agent_key" }]"#;

fn config(httpbin: &Peer, peer: &Peer) -> String {
    format!(
        r#"
[connections.httpbin]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "upstream-key"
agent_token_in = {ALL_TOKEN_LOCATIONS}

[connections.httpbin-query]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "query", name = "key" }}
secret = "query-key"

[connections.peer]
upstream = "{peer}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "upstream-key"
agent_token_in = {ALL_TOKEN_LOCATIONS}

[roles.reader]
allow = [
  {{ connection = "httpbin", methods = ["GET", "POST"], paths = ["/**"] }},
  {{ connection = "httpbin-query", methods = ["GET"], paths = ["/**"] }},
  {{ connection = "peer", methods = ["GET", "POST"], paths = ["/**"] }},
]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]
networks = ["127.0.0.0/8"]
"#,
        httpbin = httpbin.base_url(),
        peer = peer.base_url(),
    )
}

/// Headers that carry the same agent token in every supported header.
fn token_everywhere(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {token}")),
        ("x-api-key", token.to_owned()),
        ("api-key", token.to_owned()),
        ("x-goog-api-key", token.to_owned()),
        ("proxy-authorization", format!("Bearer {token}")),
    ]
}

fn as_refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

struct Setup {
    httpbin: Peer,
    peer: Peer,
    castellan: Castellan,
    token: String,
}

fn setup() -> Setup {
    let httpbin = spawn_httpbin();
    let peer = spawn_openai_upstream(UPSTREAM_KEY);
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin, &peer));
    castellan.set_secret("upstream-key", UPSTREAM_KEY);
    castellan.set_secret("query-key", QUERY_KEY);
    let token = castellan.issue_token("reader-bot");
    Setup {
        httpbin,
        peer,
        castellan,
        token,
    }
}

fn peer_requests(peer: &Peer) -> Vec<Value> {
    let reply = get(&format!("{}/_peer/requests", peer.base_url()), &[]);
    assert_eq!(reply.status, 200, "peer log: {}", reply.body);
    reply.json().as_array().cloned().unwrap_or_default()
}

#[test]
fn agent_token_never_reaches_upstream() {
    let setup = setup();
    let server = setup.castellan.serve();
    let mut headers = token_everywhere(&setup.token);
    headers.push(("content-type", "application/json".to_owned()));
    let headers = as_refs(&headers);
    let body = r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}"#;

    let query = format!("agent_key={}&x=1", setup.token);
    let peer_url = server.url(&format!("/peer/v1/chat/completions?{query}"));
    let peer_reply = send("POST", &peer_url, &headers, Some(body));
    let echo_url = server.url(&format!("/httpbin/anything?{query}"));
    let echo_reply = send("GET", &echo_url, &headers, None);

    assert_eq!(
        peer_reply.status,
        200,
        "{}\n{}",
        peer_reply.body,
        server.logs()
    );
    assert_eq!(echo_reply.status, 200, "{}", echo_reply.body);
    let requests = peer_requests(&setup.peer);
    assert_eq!(requests.len(), 1, "peer log: {requests:?}");
    let recorded = requests[0].to_string();
    assert!(
        !recorded.contains(&setup.token),
        "the upstream received the agent token: {recorded}"
    );
    assert_eq!(requests[0]["query_string"], "x=1", "{recorded}");
    let echo = echo_reply.json();
    assert!(
        !echo_reply.body.contains(&setup.token),
        "httpbin received the agent token: {echo}"
    );
    assert_eq!(echo["args"]["x"], "1", "{echo}");
    assert!(echo["args"].get("agent_key").is_none(), "{echo}");
    drop(setup.httpbin);
}

#[test]
fn upstream_key_never_reaches_agent() {
    let setup = setup();
    let server = setup.castellan.serve();
    let host = server.agent_addr;
    // Each target makes httpbin or the peer echo the credential somewhere:
    // request headers, the URL, response headers (httpbin's
    // /response-headers turns every query parameter into a response
    // header, the injected key included) or an error body.
    let targets = [
        "GET /httpbin/headers",
        "GET /httpbin/anything/echo?x=1",
        "POST /httpbin/post",
        "GET /httpbin-query/anything?x=1",
        "GET /httpbin-query/response-headers?x=1",
        "GET /httpbin-query/get",
        "GET /peer/v1/unknown",
    ];

    for target in targets {
        let (method, path) = target.split_once(' ').unwrap_or(("GET", target));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            token = setup.token
        );
        let raw = raw_exchange(host, &request);

        let status = raw_status(&raw);
        assert!(
            status == 200 || (path.starts_with("/peer/") && status == 404),
            "{target}: unexpected status {status}: {raw}"
        );
        assert_no_secret(&raw, UPSTREAM_KEY, &format!("the response to {target}"));
        assert_no_secret(&raw, QUERY_KEY, &format!("the response to {target}"));
    }
    drop(setup.httpbin);
}

#[test]
fn redirect_not_followed_with_credential() {
    let setup = setup();
    let server = setup.castellan.serve();
    let elsewhere = format!("{}/v1/collect", setup.peer.base_url());
    let target = format!("/httpbin/redirect-to?url={elsewhere}&status_code=302");

    let reply = get(
        &server.url(&target),
        &[("authorization", &format!("Bearer {}", setup.token))],
    );

    assert_eq!(
        reply.status, 302,
        "the redirect must reach the agent: {}",
        reply.body
    );
    assert_eq!(reply.header("location"), Some(elsewhere.as_str()));
    assert!(
        peer_requests(&setup.peer).is_empty(),
        "the gateway followed the redirect to another origin"
    );
    drop(setup.httpbin);
}

#[test]
fn token_in_unexpected_places_stripped() {
    let setup = setup();
    let server = setup.castellan.serve();
    let token = &setup.token;
    let cookie = format!("session=abc; castellan={token}");
    let headers = [
        ("authorization", format!("Bearer {token}")),
        ("cookie", cookie),
        ("x-custom-token", token.clone()),
    ];
    let headers = as_refs(&headers);
    // Parameter names the connection does not read, one of them encoded.
    let url = server.url(&format!(
        "/httpbin/anything?x=1&apikey={token}&%74oken={token}"
    ));

    let reply = send("GET", &url, &headers, None);

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        !reply.body.contains(token.as_str()),
        "httpbin received the agent token: {}",
        reply.body
    );
    let echo = reply.json();
    assert_eq!(echo["args"]["x"], "1", "{echo}");
    assert!(echo["headers"].get("Cookie").is_none(), "{echo}");
    assert!(echo["headers"].get("X-Custom-Token").is_none(), "{echo}");
    drop(setup.httpbin);
}

#[test]
fn same_origin_redirect_stays_behind_gateway() {
    let setup = setup();
    let server = setup.castellan.serve();
    let bearer = format!("Bearer {}", setup.token);
    let cases = [
        (
            format!("{}/get?a=1", setup.httpbin.base_url()),
            "/httpbin/get?a=1".to_string(),
        ),
        ("/status/200".to_string(), "/httpbin/status/200".to_string()),
    ];

    for (target, expected) in cases {
        let encoded: String = target
            .bytes()
            .map(|b| match b {
                b'/' | b':' | b'?' | b'=' | b'&' => format!("%{b:02X}"),
                _ => (b as char).to_string(),
            })
            .collect();
        let path = format!("/httpbin/redirect-to?url={encoded}&status_code=302");
        let reply = get(&server.url(&path), &[("authorization", &bearer)]);

        assert_eq!(reply.status, 302, "{target}: {}", reply.body);
        assert_eq!(
            reply.header("location"),
            Some(expected.as_str()),
            "{target}"
        );
    }
    drop(setup.httpbin);
}

#[test]
fn forwarding_headers_not_trusted() {
    let setup = setup();
    let server = setup.castellan.serve();
    let bearer = format!("Bearer {}", setup.token);
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-forwarded-for", "10.9.8.7"),
        ("x-forwarded-host", "internal.example"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=10.9.8.7;host=internal.example"),
        ("x-real-ip", "10.9.8.7"),
        ("host", "internal.example"),
    ];

    let reply = get(&server.url("/httpbin/headers"), &headers);

    assert_eq!(reply.status, 200, "{}", reply.body);
    let echoed = reply.json()["headers"].clone();
    for name in [
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "Forwarded",
        "X-Real-Ip",
    ] {
        assert!(
            echoed.get(name).is_none(),
            "{name} reached the upstream: {echoed}"
        );
    }
    assert_ne!(echoed["Host"], "internal.example", "{echoed}");
    drop(setup.httpbin);
}
