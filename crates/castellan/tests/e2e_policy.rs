//! Authentication and authorization at the checkpoint: deny by default,
//! deny rules over allow rules, 404 only after a valid token, 401 for every
//! kind of bad token, network restrictions and ambiguous paths.

#![forbid(unsafe_code)]

mod support;

use std::time::Duration;

use support::castellan::{poll_until, Castellan};
use support::http::{get, get_as, raw_exchange, raw_status, send_as, Reply};
use support::peers::{spawn_httpbin, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-policy-Gq5Lw2Zm8Np4";

fn config(httpbin: &Peer) -> String {
    format!(
        r#"
[connections.httpbin]
upstream = "{url}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "httpbin-key"

[connections.httpbin-xkey]
upstream = "{url}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "httpbin-key"
agent_token_in = ["x-api-key"]

[roles.reader]
allow = [
  {{ connection = "httpbin", methods = ["GET"], paths = ["/headers", "/get"] }},
  {{ connection = "httpbin", methods = ["*"], paths = ["/anything/**"] }},
  {{ connection = "httpbin-xkey", methods = ["GET"], paths = ["/headers"] }},
]
deny = [{{ connection = "httpbin", methods = ["DELETE"], paths = ["/**"] }}]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]
networks = ["127.0.0.0/8"]

[agents.office-bot]
owner = "ops@example.com"
roles = ["reader"]
networks = ["10.0.0.0/8"]
"#,
        url = httpbin.base_url()
    )
}

fn setup() -> (Peer, Castellan) {
    let httpbin = spawn_httpbin();
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin));
    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    (httpbin, castellan)
}

/// Asserts a response the gateway wrote itself: `status`, a JSON body
/// `{"error", "reason", "request_id"}` of kind `error`, and an
/// `x-request-id` header equal to the body's `request_id`. Returns the reason.
fn assert_rejection(case: &str, reply: &Reply, status: u16, error: &str) -> String {
    assert_eq!(reply.status, status, "{case}: {}", reply.body);
    let body = reply.json();
    assert_eq!(body["error"], error, "{case}: {body}");
    let request_id = reply
        .header("x-request-id")
        .unwrap_or_else(|| panic!("{case}: no x-request-id header"));
    assert_eq!(body["request_id"], request_id, "{case}: {body}");
    let reason = body["reason"].as_str().unwrap_or_default().to_owned();
    assert!(!reason.is_empty(), "{case}: empty reason: {body}");
    reason
}

#[test]
fn unlisted_requests_denied_by_default() {
    let (_httpbin, castellan) = setup();
    let token = castellan.issue_token("reader-bot");
    let server = castellan.serve();
    let cases = [
        ("GET", "/httpbin/status/200", "GET /status/200"),
        ("POST", "/httpbin/get", "POST /get"),
        ("PUT", "/httpbin/headers", "PUT /headers"),
        ("GET", "/httpbin/headers/extra", "GET /headers/extra"),
        ("GET", "/httpbin/", "GET /"),
    ];

    for (method, path, target) in cases {
        let reply = send_as(method, &server.url(path), &token);
        let reason = assert_rejection(&format!("{method} {path}"), &reply, 403, "forbidden");
        assert!(
            reason.contains("no rule") && reason.contains(target),
            "{method} {path}: the reason must say that no rule allows {target}: {reason}"
        );
    }
    let allowed = get_as(&server.url("/httpbin/headers"), &token);
    assert_eq!(allowed.status, 200, "{}", allowed.body);
}

#[test]
fn deny_rule_wins_over_allow() {
    let (_httpbin, castellan) = setup();
    let token = castellan.issue_token("reader-bot");
    let server = castellan.serve();

    for method in ["GET", "POST", "PATCH"] {
        let reply = send_as(method, &server.url("/httpbin/anything/item"), &token);
        assert_eq!(
            reply.status, 200,
            "{method} is allowed by the wildcard: {}",
            reply.body
        );
        assert_eq!(reply.json()["method"], method, "{}", reply.body);
    }
    let reply = send_as("DELETE", &server.url("/httpbin/anything/item"), &token);
    let reason = assert_rejection("DELETE", &reply, 403, "forbidden");
    assert!(
        reason.contains("roles.reader.deny[0]"),
        "the reason must name the deny rule: {reason}"
    );
}

#[test]
fn unknown_connection_404_after_auth() {
    let (_httpbin, castellan) = setup();
    let token = castellan.issue_token("reader-bot");
    let server = castellan.serve();
    let url = server.url("/no-such-connection/get");

    let anonymous = get(&url, &[]);
    assert_rejection("no token", &anonymous, 401, "unauthorized");
    let garbage = get(&url, &[("authorization", "Bearer cst_garbage")]);
    assert_rejection("garbage token", &garbage, 401, "unauthorized");
    let known = get_as(&url, &token);
    let reason = assert_rejection("valid token", &known, 404, "not_found");
    assert!(
        reason.contains("no-such-connection"),
        "the reason must name the connection: {reason}"
    );
}

/// Returns `token` with its last character changed, which breaks the
/// checksum but keeps the shape.
fn corrupt(token: &str) -> String {
    let mut corrupted = token[..token.len() - 1].to_owned();
    corrupted.push(if token.ends_with('A') { 'B' } else { 'A' });
    corrupted
}

#[test]
fn bad_tokens_rejected_with_401() {
    let (httpbin, castellan) = setup();
    let valid = castellan.issue_token("reader-bot");
    let revoked = castellan.issue("reader-bot", None);
    castellan.cli_ok(&["agent", "token", "revoke", &revoked.id]);
    let expiring = castellan.issue("reader-bot", Some("1s")).token;
    // A well-formed token with a valid checksum that this gateway never issued.
    let foreign = Castellan::init();
    foreign.write_config(&config(&httpbin));
    let unknown = foreign.issue_token("reader-bot");
    let server = castellan.serve();
    let url = server.url("/httpbin/headers");
    let cases = [
        ("missing", None),
        (
            "not a castellan token",
            Some("sk-looks-like-an-upstream-key".to_owned()),
        ),
        ("corrupted checksum", Some(corrupt(&valid))),
        ("issued elsewhere", Some(unknown)),
        ("revoked", Some(revoked.token)),
    ];

    for (case, token) in &cases {
        let reply = match token {
            Some(token) => get_as(&url, token),
            None => get(&url, &[]),
        };
        let reason = assert_rejection(case, &reply, 401, "unauthorized");
        assert!(
            reply.header("www-authenticate").is_some(),
            "{case}: a 401 needs a WWW-Authenticate header"
        );
        if let Some(token) = token {
            assert!(
                !reason.contains(token.as_str()),
                "{case}: the reason echoes the token"
            );
        }
    }
    let expired = poll_until(Duration::from_secs(5), || {
        get_as(&url, &expiring).status == 401
    });
    assert!(
        expired.is_some(),
        "a token issued with --ttl 1s still works"
    );
    let still_valid = get_as(&url, &valid);
    assert_eq!(still_valid.status, 200, "{}", still_valid.body);
}

#[test]
fn network_restriction_denies_other_sources() {
    let (_httpbin, castellan) = setup();
    let token = castellan.issue_token("office-bot");
    let server = castellan.serve();

    let reply = get_as(&server.url("/httpbin/headers"), &token);

    let reason = assert_rejection("office-bot from 127.0.0.1", &reply, 403, "forbidden");
    assert!(
        reason.contains("127.0.0.1") && reason.contains("networks"),
        "the reason must name the source and the network restriction: {reason}"
    );
}

#[test]
fn ambiguous_paths_rejected_with_400() {
    let (_httpbin, castellan) = setup();
    let token = castellan.issue_token("reader-bot");
    let server = castellan.serve();
    let host = server.agent_addr;
    let paths = [
        "/httpbin/anything/a%2Fb",
        "/httpbin/anything/../headers",
        "/httpbin/anything/%2e%2e/headers",
        "/httpbin/anything/a;b=c",
        "/httpbin/anything/a%5Cb",
        "/httpbin/anything/a\\b",
    ];

    for path in paths {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let raw = raw_exchange(host, &request);
        assert_eq!(raw_status(&raw), 400, "{path}: {raw}");
        assert!(raw.contains("\"bad_request\""), "{path}: {raw}");
    }
    let request = format!(
        "POST /httpbin/anything/x HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         X-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let raw = raw_exchange(host, &request);
    assert_eq!(raw_status(&raw), 400, "method override: {raw}");
}

#[test]
fn each_token_location_authenticates() {
    let (_httpbin, castellan) = setup();
    let token = castellan.issue_token("reader-bot");
    let other = castellan.issue_token("reader-bot");
    let server = castellan.serve();
    let bearer = format!("Bearer {token}");
    let url = server.url("/httpbin/headers");

    for header in ["x-api-key", "api-key", "x-goog-api-key"] {
        let reply = get(&url, &[(header, &token)]);
        assert_eq!(reply.status, 200, "token in {header}: {}", reply.body);
    }
    let same_twice = get(&url, &[("authorization", &bearer), ("x-api-key", &token)]);
    assert_eq!(same_twice.status, 200, "{}", same_twice.body);
    let two_tokens = get(&url, &[("authorization", &bearer), ("x-api-key", &other)]);
    assert_rejection("two different tokens", &two_tokens, 401, "unauthorized");

    let xkey_url = server.url("/httpbin-xkey/headers");
    let in_x_api_key = get(&xkey_url, &[("x-api-key", &token)]);
    assert_eq!(in_x_api_key.status, 200, "{}", in_x_api_key.body);
    let in_authorization = get_as(&xkey_url, &token);
    let reason = assert_rejection(
        "authorization not enabled",
        &in_authorization,
        401,
        "unauthorized",
    );
    assert!(
        reason.contains("x-api-key"),
        "the reason must name where to send the token: {reason}"
    );
}
