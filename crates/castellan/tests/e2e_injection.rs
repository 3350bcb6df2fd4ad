//! Credential injection for each auth kind: the upstream receives exactly
//! the configured credential, and an upstream that echoes it (httpbin)
//! sends it back masked with `*` of the same length.

#![forbid(unsafe_code)]

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use support::castellan::Castellan;
use support::http::{get_as, Reply};
use support::leak::{assert_no_secret, percent_decode};
use support::peers::{spawn_httpbin, spawn_openai_upstream, Peer};

/// Key the OpenAI-shaped peer accepts. No connection here uses it, because
/// the tests only read the peer's request log.
const PEER_KEY: &str = "sk-e2e-peer-only-key-9Tg4";

/// Where a connection's credential must arrive at the upstream.
enum Placement {
    Header { name: &'static str, value: String },
    Query { name: &'static str },
}

/// One auth kind as the configuration declares it.
struct AuthCase {
    /// Prefix of the two connection names (`-httpbin` and `-peer`).
    name: &'static str,
    /// The `auth` inline table.
    auth: &'static str,
    secret_name: &'static str,
    secret: &'static str,
    placement: Placement,
    /// Length of the part of the header value derived from the secret,
    /// which must come back as `*`.
    secret_part_len: usize,
}

fn auth_cases() -> Vec<AuthCase> {
    let bearer = "sk-e2e-bearer-7Qx2LmN4pR8vT1";
    let template = "hk-e2e-template-Zr5Wq9Ty3Ub6";
    let bare = "hk-e2e-bare-Jd8Kc2Vn6Bm1";
    let password = "bp-e2e-password-Hs4Gf7Ld2Ka9";
    let pair = "svc-pair:bp-e2e-pairpass-Wm3Xn8Qz5Rt2";
    let query = "qk-e2e-query-Pv6Yb1Nc4Ds7";
    let basic_user = STANDARD.encode(format!("svc:{password}"));
    let basic_pair = STANDARD.encode(pair);
    vec![
        AuthCase {
            name: "bearer",
            auth: r#"{ kind = "bearer" }"#,
            secret_name: "bearer-key",
            secret: bearer,
            placement: Placement::Header {
                name: "authorization",
                value: format!("Bearer {bearer}"),
            },
            secret_part_len: bearer.len(),
        },
        AuthCase {
            name: "template",
            auth: r#"{ kind = "header", name = "x-api-key", value = "token {secret}" }"#,
            secret_name: "template-key",
            secret: template,
            placement: Placement::Header {
                name: "x-api-key",
                value: format!("token {template}"),
            },
            secret_part_len: template.len(),
        },
        AuthCase {
            name: "bare",
            auth: r#"{ kind = "header", name = "x-upstream-key" }"#,
            secret_name: "bare-key",
            secret: bare,
            placement: Placement::Header {
                name: "x-upstream-key",
                value: bare.to_owned(),
            },
            secret_part_len: bare.len(),
        },
        AuthCase {
            name: "basic-user",
            auth: r#"{ kind = "basic", username = "svc" }"#,
            secret_name: "basic-password",
            secret: password,
            secret_part_len: basic_user.len(),
            placement: Placement::Header {
                name: "authorization",
                value: format!("Basic {basic_user}"),
            },
        },
        AuthCase {
            name: "basic-pair",
            auth: r#"{ kind = "basic" }"#,
            secret_name: "basic-pair",
            secret: pair,
            secret_part_len: basic_pair.len(),
            placement: Placement::Header {
                name: "authorization",
                value: format!("Basic {basic_pair}"),
            },
        },
        AuthCase {
            name: "query",
            auth: r#"{ kind = "query", name = "key" }"#,
            secret_name: "query-key",
            secret: query,
            placement: Placement::Query { name: "key" },
            secret_part_len: query.len(),
        },
    ]
}

/// Declares `<kind>-httpbin` and `<kind>-peer` for every case, and one
/// agent allowed to GET anything on all of them.
fn config(cases: &[AuthCase], httpbin: &Peer, peer: &Peer) -> String {
    let mut toml = String::new();
    let mut rules = String::new();
    for case in cases {
        for (suffix, upstream) in [("httpbin", httpbin), ("peer", peer)] {
            toml.push_str(&format!(
                "[connections.{name}-{suffix}]\nupstream = \"{url}\"\nallow_private = true\nauth = {auth}\nsecret = \"{secret}\"\n\n",
                name = case.name,
                url = upstream.base_url(),
                auth = case.auth,
                secret = case.secret_name,
            ));
            rules.push_str(&format!(
                "  {{ connection = \"{}-{suffix}\", methods = [\"GET\"], paths = [\"/**\"] }},\n",
                case.name
            ));
        }
    }
    toml.push_str(&format!("[roles.reader]\nallow = [\n{rules}]\n\n"));
    toml.push_str(
        "[agents.reader-bot]\nowner = \"ops@example.com\"\nroles = [\"reader\"]\nnetworks = [\"127.0.0.0/8\"]\n",
    );
    toml
}

/// A gateway with every auth case configured, and its agent token.
struct Setup {
    httpbin: Peer,
    peer: Peer,
    castellan: Castellan,
    token: String,
}

fn setup(cases: &[AuthCase]) -> Setup {
    let httpbin = spawn_httpbin();
    let peer = spawn_openai_upstream(PEER_KEY);
    let castellan = Castellan::init();
    castellan.write_config(&config(cases, &httpbin, &peer));
    for case in cases {
        castellan.set_secret(case.secret_name, case.secret);
    }
    let token = castellan.issue_token("reader-bot");
    Setup {
        httpbin,
        peer,
        castellan,
        token,
    }
}

/// Returns the requests the peer recorded, read directly from the peer.
fn peer_requests(peer: &Peer) -> Vec<Value> {
    let reply = support::http::get(&format!("{}/_peer/requests", peer.base_url()), &[]);
    assert_eq!(reply.status, 200, "peer log: {}", reply.body);
    reply.json().as_array().cloned().unwrap_or_default()
}

fn clear_peer_requests(peer: &Peer) {
    let url = format!("{}/_peer/requests", peer.base_url());
    let reply = support::http::send("DELETE", &url, &[], None);
    assert_eq!(reply.status, 204, "clearing the peer log: {}", reply.body);
}

/// Returns the values of header `name` (any case) in a peer log entry.
fn recorded_header(entry: &Value, name: &str) -> Vec<String> {
    entry["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .filter_map(|pair| pair[1].as_str().map(str::to_owned))
        .collect()
}

/// Returns the decoded values of query parameter `name` in `query`.
fn query_values(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| percent_decode(key) == name)
        .map(|(_, value)| percent_decode(&value.replace('+', " ")))
        .collect()
}

/// Returns the value of header `name` (any case) in httpbin's echo.
fn echoed_header(echo: &Value, name: &str) -> Option<String> {
    echo["headers"]
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .and_then(|(_, value)| value.as_str().map(str::to_owned))
}

/// Asserts that `masked` is `expected` with bytes replaced by `*` only, and
/// that its last `secret_part_len` bytes are all `*`.
fn assert_masked(kind: &str, masked: &str, expected: &str, secret_part_len: usize) {
    assert_eq!(
        masked.len(),
        expected.len(),
        "{kind}: masking must keep the length, got {masked:?}"
    );
    let only_masked = masked
        .bytes()
        .zip(expected.bytes())
        .all(|(got, want)| got == want || got == b'*');
    assert!(
        only_masked,
        "{kind}: {masked:?} is not a masked form of the header"
    );
    let tail = &masked[masked.len() - secret_part_len..];
    assert!(
        tail.bytes().all(|b| b == b'*'),
        "{kind}: the secret part is not masked: {masked:?}"
    );
}

#[test]
fn auth_kinds_deliver_exact_credential() {
    let cases = auth_cases();
    let setup = setup(&cases);
    let server = setup.castellan.serve();

    for case in &cases {
        clear_peer_requests(&setup.peer);
        let url = server.url(&format!("/{}-peer/v1/models?x=1", case.name));
        let reply = get_as(&url, &setup.token);
        let requests = peer_requests(&setup.peer);
        assert_eq!(
            requests.len(),
            1,
            "{}: the upstream did not receive exactly one request (gateway replied {} {})\n{}",
            case.name,
            reply.status,
            reply.body,
            server.logs()
        );
        let entry = &requests[0];
        let query = entry["query_string"].as_str().unwrap_or_default();
        match &case.placement {
            Placement::Header { name, value } => {
                assert_eq!(
                    recorded_header(entry, name),
                    vec![value.clone()],
                    "{}: header {name} at the upstream",
                    case.name
                );
                assert_eq!(query, "x=1", "{}: query at the upstream", case.name);
            }
            Placement::Query { name } => {
                let values = query_values(query, name);
                assert_eq!(
                    values,
                    vec![case.secret.to_owned()],
                    "{}: {query}",
                    case.name
                );
                assert_eq!(query_values(query, "x"), vec!["1".to_owned()]);
                assert!(
                    recorded_header(entry, "authorization").is_empty(),
                    "{}: the agent's authorization header was forwarded",
                    case.name
                );
            }
        }
        let recorded = entry.to_string();
        assert!(
            !recorded.contains(&setup.token),
            "{}: the upstream received the agent token: {recorded}",
            case.name
        );
    }
}

#[test]
fn echoed_credential_is_masked() {
    let cases = auth_cases();
    let setup = setup(&cases);
    let server = setup.castellan.serve();

    for case in &cases {
        let reply: Reply = match &case.placement {
            Placement::Header { .. } => get_as(
                &server.url(&format!("/{}-httpbin/headers", case.name)),
                &setup.token,
            ),
            Placement::Query { .. } => get_as(
                &server.url(&format!("/{}-httpbin/anything?x=1", case.name)),
                &setup.token,
            ),
        };
        assert_eq!(reply.status, 200, "{}: {}", case.name, reply.body);
        let echo = reply.json();
        match &case.placement {
            Placement::Header { name, value } => {
                let masked = echoed_header(&echo, name).unwrap_or_else(|| {
                    panic!("{}: httpbin saw no {name} header: {echo}", case.name)
                });
                assert_masked(case.name, &masked, value, case.secret_part_len);
            }
            Placement::Query { name } => {
                let masked = echo["args"][name].as_str().unwrap_or_default();
                assert_eq!(
                    masked,
                    "*".repeat(case.secret.len()),
                    "{}: {echo}",
                    case.name
                );
                assert_eq!(echo["args"]["x"], "1", "{}: {echo}", case.name);
            }
        }
        assert_no_secret(
            &reply.everything(),
            case.secret,
            &format!("{} echo", case.name),
        );
        assert!(
            !reply.body.contains(&setup.token),
            "{}: httpbin saw the agent token: {}",
            case.name,
            reply.body
        );
    }
    drop(setup.httpbin);
}

#[test]
fn reserved_character_query_secret_masked() {
    // API keys in base64 contain '/' and '+'. httpbin echoes the query in
    // two encodings: decoded in `args` and re-encoded in `url`
    // ("a/b%2Bc"), which is neither the raw nor the fully escaped form.
    let secret = "qk-e2e/Query+Secret=Pv6Yb1";
    let cases = vec![AuthCase {
        name: "query",
        auth: r#"{ kind = "query", name = "key" }"#,
        secret_name: "query-key",
        secret,
        placement: Placement::Query { name: "key" },
        secret_part_len: secret.len(),
    }];
    let setup = setup(&cases);
    let server = setup.castellan.serve();

    let reply = get_as(&server.url("/query-httpbin/anything?x=1"), &setup.token);

    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.json();
    assert_eq!(echo["args"]["key"], "*".repeat(secret.len()), "{echo}");
    assert_no_secret(&reply.everything(), secret, "httpbin's echo of the query");
}
