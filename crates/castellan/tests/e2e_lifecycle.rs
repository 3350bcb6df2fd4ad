//! Changes that reach a running gateway: token revocation, suspension,
//! secrets stored while serving, configuration reloads (file change and
//! SIGHUP) that keep in-flight requests, and a graceful SIGTERM.

#![forbid(unsafe_code)]

mod support;

use std::time::Duration;

use support::castellan::{poll_until, Castellan, Server, SHUTDOWN_TIMEOUT};
use support::http::{get, get_as, stream, Arrival};
use support::peers::{spawn_httpbin, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-lifecycle-Wd4Hs9Kx2Pq7";

/// Limit for a CLI change (revocation, suspension, secret) to reach a
/// running gateway. The gateway polls the store every 250 ms and promises
/// one second, and the rest is scheduling slack on a busy 2-core machine.
const STORE_CHANGE_LIMIT: Duration = Duration::from_millis(1500);

/// Limit for a changed configuration file to take effect. The gateway
/// checks the file every second and loads it once it has not changed for
/// 200 ms, and the rest is scheduling slack.
const CONFIG_CHANGE_LIMIT: Duration = Duration::from_secs(3);

/// The allow rules of role `reader`, one TOML array item per line.
const READ_ALL: &str =
    r#"{ connection = "httpbin", methods = ["GET"], paths = ["/headers", "/drip"] }"#;
const READ_HEADERS: &str = r#"{ connection = "httpbin", methods = ["GET"], paths = ["/headers"] }"#;

/// A drip that responds at once, to probe the decision for `/drip`.
const QUICK_DRIP: &str = "/httpbin/drip?numbytes=1&duration=0&delay=0";

fn config(httpbin: &Peer, rule: &str) -> String {
    format!(
        r#"
[connections.httpbin]
upstream = "{url}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "httpbin-key"

[roles.reader]
allow = [
  {rule},
]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]
networks = ["127.0.0.0/8"]
"#,
        url = httpbin.base_url()
    )
}

/// Starts a gateway for reader-bot with the httpbin secret stored, and
/// returns its fixture, the agent token and the server.
fn serving(httpbin: &Peer) -> (Castellan, String, Server) {
    let castellan = Castellan::init();
    castellan.write_config(&config(httpbin, READ_ALL));
    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    let token = castellan.issue_token("reader-bot");
    let server = castellan.serve();
    (castellan, token, server)
}

/// Polls `path` with `token` until it returns `status`, and panics with
/// the gateway logs after `limit`.
fn await_status(
    server: &Server,
    path: &str,
    token: &str,
    status: u16,
    limit: Duration,
) -> Duration {
    let url = server.url(path);
    let mut last = None;
    let waited = poll_until(limit, || {
        let reply = get_as(&url, token);
        let reached = reply.status == status;
        last = Some(reply);
        reached
    });
    waited.unwrap_or_else(|| {
        let last = last
            .map(|r| format!("{} {}", r.status, r.body))
            .unwrap_or_default();
        panic!(
            "GET {path} did not return {status} within {limit:?}; last reply: {last}\n{}",
            server.logs()
        )
    })
}

#[test]
fn revoked_token_rejected_on_next_request() {
    let httpbin = spawn_httpbin();
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin, READ_ALL));
    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    let issued = castellan.issue("reader-bot", None);
    let other = castellan.issue_token("reader-bot");
    let server = castellan.serve();
    assert_eq!(
        get_as(&server.url("/httpbin/headers"), &issued.token).status,
        200
    );

    castellan.cli_ok(&["agent", "token", "revoke", &issued.id]);

    await_status(
        &server,
        "/httpbin/headers",
        &issued.token,
        401,
        STORE_CHANGE_LIMIT,
    );
    let reply = get_as(&server.url("/httpbin/headers"), &other);
    assert_eq!(
        reply.status, 200,
        "another token of the agent keeps working: {}",
        reply.body
    );
}

#[test]
fn suspension_denies_until_resumed() {
    let httpbin = spawn_httpbin();
    let (castellan, token, server) = serving(&httpbin);
    assert_eq!(get_as(&server.url("/httpbin/headers"), &token).status, 200);

    castellan.cli_ok(&[
        "agent",
        "suspend",
        "reader-bot",
        "--reason",
        "leaked-in-a-log",
    ]);
    await_status(&server, "/httpbin/headers", &token, 403, STORE_CHANGE_LIMIT);
    let denied = get_as(&server.url("/httpbin/headers"), &token);
    let reason = denied.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("suspended") && reason.contains("leaked-in-a-log"),
        "the reason must say the agent is suspended and why: {reason}"
    );

    castellan.cli_ok(&["agent", "resume", "reader-bot"]);
    await_status(&server, "/httpbin/headers", &token, 200, STORE_CHANGE_LIMIT);
}

#[test]
fn missing_secret_503_until_set() {
    let httpbin = spawn_httpbin();
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin, READ_ALL));
    let token = castellan.issue_token("reader-bot");
    let server = castellan.serve();

    let missing = get_as(&server.url("/httpbin/headers"), &token);
    assert_eq!(missing.status, 503, "{}", missing.body);
    let body = missing.json();
    assert_eq!(body["error"], "service_unavailable", "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("httpbin-key"),
        "the reason must name the secret: {reason}"
    );

    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    await_status(&server, "/httpbin/headers", &token, 200, STORE_CHANGE_LIMIT);
}

/// Concatenates the bytes of `pieces`.
fn joined(pieces: &[Arrival]) -> Vec<u8> {
    pieces
        .iter()
        .flat_map(|piece| piece.bytes.clone())
        .collect()
}

#[test]
fn reload_keeps_in_flight_requests() {
    let httpbin = spawn_httpbin();
    let (castellan, token, server) = serving(&httpbin);
    let authorization = format!("Bearer {token}");
    // httpbin sends one byte per second, so the body ends after about 4 s.
    let drip = "/httpbin/drip?duration=4&numbytes=4&delay=0";
    let mut in_flight = stream(
        "GET",
        &server.url(drip),
        &[("authorization", &authorization)],
        None,
    );
    assert_eq!(in_flight.status, 200);
    let first = in_flight.next_piece().expect("the first byte of the drip");

    castellan.write_config(&config(&httpbin, READ_HEADERS));
    await_status(&server, QUICK_DRIP, &token, 403, CONFIG_CHANGE_LIMIT);
    let reloaded_at = in_flight.elapsed();
    let rest = in_flight.rest();

    let mut body = first.bytes.clone();
    body.extend(joined(&rest));
    assert_eq!(body, b"****", "the in-flight body must arrive whole");
    let last = rest.last().map_or(first.at, |piece| piece.at);
    assert!(
        last > reloaded_at,
        "the drip ended at {last:?}, before the reload at {reloaded_at:?}, so nothing was tested"
    );
    assert_eq!(get_as(&server.url("/httpbin/headers"), &token).status, 200);
}

#[test]
fn sighup_invalid_config_keeps_running_one() {
    let httpbin = spawn_httpbin();
    let (castellan, token, server) = serving(&httpbin);
    let typo = r#"{ connection = "htpbin", methods = ["GET"], paths = ["/headers"] }"#;
    let invalid = config(&httpbin, typo);
    let line = invalid
        .lines()
        .position(|line| line.contains("htpbin"))
        .map(|index| index + 1)
        .expect("the typo is in the configuration");

    castellan.write_config(&invalid);
    server.signal("HUP");

    let rejected = server.wait_for_stderr("htpbin", CONFIG_CHANGE_LIMIT);
    assert!(
        rejected,
        "the rejected reload was not logged\n{}",
        server.logs()
    );
    let stderr = server.stderr();
    assert!(
        stderr.contains(&format!("castellan.toml:{line}:")),
        "the log must give the file and line of the error\n{stderr}"
    );
    for path in ["/httpbin/headers", QUICK_DRIP] {
        let reply = get_as(&server.url(path), &token);
        assert_eq!(
            reply.status, 200,
            "{path} after the rejected reload: {}",
            reply.body
        );
    }

    castellan.write_config(&config(&httpbin, READ_HEADERS));
    server.signal("HUP");
    await_status(&server, QUICK_DRIP, &token, 403, CONFIG_CHANGE_LIMIT);
}

#[test]
fn sigterm_drains_in_flight_request() {
    let httpbin = spawn_httpbin();
    let (_castellan, token, mut server) = serving(&httpbin);
    let authorization = format!("Bearer {token}");
    let drip = "/httpbin/drip?duration=2&numbytes=2&delay=0";
    let mut in_flight = stream(
        "GET",
        &server.url(drip),
        &[("authorization", &authorization)],
        None,
    );
    let first = in_flight.next_piece().expect("the first byte of the drip");

    server.signal("TERM");
    let rest = in_flight.rest();

    let mut body = first.bytes.clone();
    body.extend(joined(&rest));
    assert_eq!(body, b"**", "the in-flight body must arrive whole");
    let status = server.wait_for_exit(SHUTDOWN_TIMEOUT);
    let status = status.unwrap_or_else(|| {
        panic!(
            "castellan serve still runs {SHUTDOWN_TIMEOUT:?} after SIGTERM\n{}",
            server.logs()
        )
    });
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        server.logs()
    );
}

#[test]
fn admin_reports_health_and_metrics() {
    let httpbin = spawn_httpbin();
    let (_castellan, token, server) = serving(&httpbin);
    assert_eq!(get_as(&server.url("/httpbin/headers"), &token).status, 200);

    let health = get(&server.admin_url("/healthz"), &[]);
    assert_eq!(health.status, 200, "{}", health.body);
    let ready = get(&server.admin_url("/readyz"), &[]);
    assert_eq!(ready.status, 200, "{}", ready.body);
    let ready = ready.json();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["connections"], 1, "{ready}");
    assert_eq!(ready["active_tokens"], 1, "{ready}");
    let metrics = get(&server.admin_url("/metrics"), &[]);
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert!(
        metrics.body.contains("castellan_requests_total"),
        "{}",
        metrics.body
    );
    let on_agent_listener = get(&server.url("/metrics"), &[]);
    assert_eq!(
        on_agent_listener.status, 401,
        "the agent listener must not serve admin endpoints: {}",
        on_agent_listener.body
    );
}
