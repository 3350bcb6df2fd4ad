//! The official openai Python SDK as an agent: it needs nothing but the
//! gateway URL as its base URL and the agent token as its API key.

#![forbid(unsafe_code)]

mod support;

use serde_json::Value;

use support::castellan::Castellan;
use support::http::get;
use support::peers::{run_openai_agent, spawn_openai_upstream, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-openai-Lv2Qd7Xk4Hn9";

fn config(openai: &Peer) -> String {
    format!(
        r#"
[connections.openai]
upstream = "{openai}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "openai-key"

[roles.chat]
allow = [{{ connection = "openai", methods = ["POST"], paths = ["/v1/chat/completions"] }}]

[roles.embeddings-only]
allow = [{{ connection = "openai", methods = ["POST"], paths = ["/v1/embeddings"] }}]

[agents.chat-bot]
owner = "ops@example.com"
roles = ["chat"]
networks = ["127.0.0.0/8"]

[agents.embed-bot]
owner = "ops@example.com"
roles = ["embeddings-only"]
networks = ["127.0.0.0/8"]
"#,
        openai = openai.base_url(),
    )
}

fn setup(openai: &Peer) -> Castellan {
    let castellan = Castellan::init();
    castellan.write_config(&config(openai));
    castellan.set_secret("openai-key", UPSTREAM_KEY);
    castellan
}

fn peer_requests(peer: &Peer) -> Vec<Value> {
    let reply = get(&format!("{}/_peer/requests", peer.base_url()), &[]);
    assert_eq!(reply.status, 200, "peer log: {}", reply.body);
    reply.json().as_array().cloned().unwrap_or_default()
}

/// Parses the one JSON object the agent prints, failing with its stderr.
fn agent_report(output: &std::process::Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the openai agent failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "the agent printed no JSON ({error}): {}\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn openai_sdk_chats_through_castellan() {
    let openai = spawn_openai_upstream(UPSTREAM_KEY);
    let castellan = setup(&openai);
    let token = castellan.issue_token("chat-bot");
    let server = castellan.serve();

    let output = run_openai_agent(&server.url("/openai/v1"), &token, &[]);

    let report = agent_report(&output);
    assert_eq!(
        report["normal"]["content"], "echo: hello from the agent",
        "{report}"
    );
    assert_eq!(
        report["stream"]["content"], "echo: hello from the agent",
        "{report}"
    );
    let arrivals: Vec<f64> = report["stream"]["arrival_ms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    assert!(arrivals.len() >= 5, "arrival_ms: {arrivals:?}");
    // The upstream pauses 200 ms before each of its 6 content chunks.
    let spread = arrivals[arrivals.len() - 1] - arrivals[0];
    assert!(spread >= 600.0, "the chunks arrived together: {arrivals:?}");

    let requests = peer_requests(&openai);
    assert_eq!(
        requests.len(),
        2,
        "one plain and one streamed call: {requests:?}"
    );
    for request in &requests {
        let recorded = request.to_string();
        assert!(
            !recorded.contains(&token),
            "the upstream saw the agent token: {recorded}"
        );
        let authorization: Vec<&str> = request["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|pair| {
                pair[0]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("authorization"))
            })
            .filter_map(|pair| pair[1].as_str())
            .collect();
        assert_eq!(authorization, vec![format!("Bearer {UPSTREAM_KEY}")]);
    }
}

#[test]
fn openai_sdk_denied_agent_gets_403() {
    let openai = spawn_openai_upstream(UPSTREAM_KEY);
    let castellan = setup(&openai);
    let token = castellan.issue_token("embed-bot");
    let server = castellan.serve();

    let output = run_openai_agent(
        &server.url("/openai/v1"),
        &token,
        &["--expect-denied", "403"],
    );

    let report = agent_report(&output);
    assert_eq!(report["denied"]["status"], 403, "{report}");
    assert_eq!(
        report["denied"]["error_class"], "PermissionDeniedError",
        "{report}"
    );
    let text = report["denied"]["response_text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("/v1/chat/completions"),
        "the reason must name the path: {text}"
    );
    assert!(
        peer_requests(&openai).is_empty(),
        "a denied request must not reach the upstream"
    );
}
