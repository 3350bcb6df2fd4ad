//! After a run that exercises every outcome, no upstream secret and no agent
//! token appears in the gateway's logs, CLI outputs, the audit log, the
//! metrics or the files of the data directory.

#![forbid(unsafe_code)]

mod support;

use std::fs;
use std::net::TcpListener;

use support::castellan::{Castellan, Server, SHUTDOWN_TIMEOUT};
use support::http::{get, get_as, send};
use support::leak::{assert_no_secret, bytes_contain, secret_forms};
use support::peers::{spawn_httpbin, Peer};

const BEARER_KEY: &str = "sk-e2e-leakcheck-bearer-Xy7Qm2Vd9Lp4";
const QUERY_KEY: &str = "qk-e2e-leakcheck-query-Fb3Wn8Rt5Hs1";
const BASIC_PAIR: &str = "svc-leak:pw-e2e-leakcheck-Jc6Zk1Mv4Gy8";

fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn config(httpbin: &Peer) -> String {
    format!(
        r#"
[connections.bearer]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "bearer-key"
agent_token_in = ["authorization", {{ query = "agent_key" }}]

[connections.query]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "query", name = "key" }}
secret = "query-key"

[connections.basic]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "basic" }}
secret = "basic-pair"

[connections.offline]
upstream = "http://127.0.0.1:{closed}"
allow_private = true
auth = {{ kind = "query", name = "key" }}
secret = "query-key"

[connections.vaultless]
upstream = "{httpbin}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "never-set"

[roles.reader]
allow = [
  {{ connection = "bearer", methods = ["GET", "POST"], paths = ["/**"] }},
  {{ connection = "query", methods = ["GET"], paths = ["/**"] }},
  {{ connection = "basic", methods = ["GET"], paths = ["/**"] }},
  {{ connection = "offline", methods = ["GET"], paths = ["/**"] }},
  {{ connection = "vaultless", methods = ["GET"], paths = ["/**"] }},
]
deny = [{{ connection = "bearer", methods = ["DELETE"], paths = ["/**"] }}]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]
networks = ["127.0.0.0/8"]
"#,
        httpbin = httpbin.base_url(),
        closed = closed_port(),
    )
}

/// Sends one request for each outcome, with the token in the places an
/// agent may put it.
fn exercise(server: &Server, token: &str) {
    let targets = [
        "/bearer/headers",
        "/bearer/anything/x?y=1",
        "/query/anything?y=1",
        "/query/response-headers?y=1",
        "/basic/headers",
        "/offline/get",
        "/vaultless/get",
        "/bearer/status/418",
        "/nowhere/get",
        "/bearer/anything/%2e%2e/x",
    ];
    for target in targets {
        get_as(&server.url(target), token);
    }
    get(
        &server.url(&format!("/bearer/anything/q?agent_key={token}")),
        &[],
    );
    send(
        "DELETE",
        &server.url("/bearer/anything/x"),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    );
    get(
        &server.url("/bearer/headers"),
        &[("authorization", &format!("Bearer {token}x"))],
    );
}

/// Returns the text of every file in the data directory, lossily decoded,
/// with the raw bytes for binary searches.
fn data_dir_files(castellan: &Castellan) -> Vec<(String, Vec<u8>)> {
    let entries = fs::read_dir(castellan.data_dir()).expect("list the data directory");
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_file())
        .map(|entry| {
            let bytes = fs::read(entry.path()).expect("read a data directory file");
            (entry.path().display().to_string(), bytes)
        })
        .collect()
}

#[test]
fn no_secret_in_logs_audit_or_files() {
    let httpbin = spawn_httpbin();
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin));
    castellan.set_secret("bearer-key", BEARER_KEY);
    castellan.set_secret("query-key", QUERY_KEY);
    castellan.set_secret("basic-pair", BASIC_PAIR);
    let issued = castellan.issue("reader-bot", None);
    let token = issued.token.as_str();
    let mut server = castellan.serve_with(&[], &[("CASTELLAN_LOG", "trace")]);

    exercise(&server, token);
    castellan.cli_ok(&["agent", "suspend", "reader-bot", "--reason", "leak check"]);
    castellan.cli_ok(&["agent", "resume", "reader-bot"]);
    castellan.cli_ok(&["secret", "list", "--json"]);
    castellan.cli_ok(&["agent", "token", "list", "--json"]);
    castellan.cli_ok(&["policy", "explain", "reader-bot", "GET", "/query/anything"]);
    castellan.cli_ok(&["config", "check"]);
    let metrics = get(&server.admin_url("/metrics"), &[]).body;
    let audit = castellan.cli_ok(&["audit", "tail", "--json", "-n", "500"]);
    castellan.cli_ok(&["agent", "token", "revoke", &issued.id]);
    server.signal("TERM");
    assert!(
        server.wait_for_exit(SHUTDOWN_TIMEOUT).is_some(),
        "{}",
        server.logs()
    );

    assert!(
        audit.lines().count() >= 12,
        "too few audit records: {audit}"
    );
    let mut places = vec![
        ("the gateway's stdout and stderr".to_owned(), server.logs()),
        ("audit tail --json".to_owned(), audit),
        ("/metrics".to_owned(), metrics),
    ];
    for run in castellan.cli_runs() {
        let issue = run.args.windows(2).any(|pair| pair == ["token", "issue"]);
        // `agent token issue` prints the token on stdout by design, once.
        let text = if issue {
            String::from_utf8_lossy(&run.output.stderr).into_owned()
        } else {
            run.text()
        };
        places.push((format!("castellan {:?}", run.args), text));
    }
    assert!(
        places[0].1.contains("request rejected"),
        "the gateway's logs were not captured: {}",
        places[0].1
    );
    for (place, text) in &places {
        for secret in [BEARER_KEY, QUERY_KEY, BASIC_PAIR] {
            assert_no_secret(text, secret, place);
        }
        assert!(!text.contains(token), "{place} contains the agent token");
    }
    for (file, bytes) in data_dir_files(&castellan) {
        for secret in [BEARER_KEY, QUERY_KEY, BASIC_PAIR] {
            for form in secret_forms(secret) {
                assert!(
                    !bytes_contain(&bytes, form.as_bytes()),
                    "{file} contains a secret in plain text"
                );
            }
        }
        assert!(
            !bytes_contain(&bytes, token.as_bytes()),
            "{file} contains the agent token"
        );
    }
}
