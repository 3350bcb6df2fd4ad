//! Changes that reach a running gateway: token revocation, suspension,
//! secrets stored while serving, configuration reloads (file change and
//! SIGHUP) that keep in-flight requests, and a graceful SIGTERM.

#![forbid(unsafe_code)]

mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use support::castellan::{poll_until, Castellan, IssuedToken, Server, SHUTDOWN_TIMEOUT};
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

/// A gateway with strict audit durability whose configuration reload waits
/// on a CA file that is a pipe, as it could on a slow disk, until
/// [`BlockedReload::release`] lets it read the certificate.
struct BlockedReload {
    castellan: Castellan,
    server: Server,
    /// A token of reader-bot.
    token: String,
    /// A second token of reader-bot, for a test to revoke.
    spare: IssuedToken,
    /// Tells the thread holding the pipe open to write the certificate.
    release: mpsc::Sender<()>,
}

impl BlockedReload {
    fn start(httpbin: &Peer) -> Self {
        let castellan = Castellan::init();
        let strict = format!(
            "[gateway]\naudit_durability = \"strict\"\n{}",
            config(httpbin, READ_ALL)
        );
        castellan.write_config(&strict);
        castellan.set_secret("httpbin-key", UPSTREAM_KEY);
        let token = castellan.issue_token("reader-bot");
        let spare = castellan.issue("reader-bot", None);
        let server = castellan.serve();
        assert_eq!(get_as(&server.url("/httpbin/headers"), &token).status, 200);

        let pipe = castellan.scratch_dir().join("slow-ca.pem");
        let mkfifo = Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .expect("run mkfifo");
        assert!(mkfifo.success(), "mkfifo {} failed", pipe.display());
        castellan.write_config(&format!(
            r#"{strict}
[connections.internal]
upstream = "https://127.0.0.1:9/"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "internal-key"
ca_file = "{pipe}"
"#,
            pipe = pipe.display()
        ));
        let started = server.wait_for_stderr("configuration file changed", CONFIG_CHANGE_LIMIT);
        assert!(started, "the reload did not start\n{}", server.logs());

        let (opened_sender, opened) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        // Opening a pipe for writing waits until a reader opens it, so the
        // open returns once the reload reads the CA file, which then waits
        // for the certificate. If the reload never opens the pipe, the
        // thread stays blocked and ends with the test process.
        std::thread::spawn(move || {
            let mut writer = OpenOptions::new()
                .write(true)
                .open(&pipe)
                .expect("open the pipe for writing");
            let _ = opened_sender.send(());
            if released.recv().is_ok() {
                writer
                    .write_all(generate_ca_pem().as_bytes())
                    .expect("write the CA certificate");
            }
        });
        let waiting = opened.recv_timeout(CONFIG_CHANGE_LIMIT);
        assert!(
            waiting.is_ok(),
            "the reload did not open the CA file\n{}",
            server.logs()
        );
        BlockedReload {
            castellan,
            server,
            token,
            spare,
            release,
        }
    }

    /// Writes the CA certificate into the pipe and waits for the reload to
    /// end.
    fn finish(&self) {
        self.release();
        let reloaded = self
            .server
            .wait_for_stderr("configuration reloaded", CONFIG_CHANGE_LIMIT);
        assert!(
            reloaded,
            "the reload did not finish\n{}",
            self.server.logs()
        );
    }

    /// Lets the reload read the CA certificate.
    fn release(&self) {
        self.release
            .send(())
            .expect("the thread holding the pipe is waiting");
    }

    fn connections(&self) -> String {
        let ready = get(&self.server.admin_url("/readyz"), &[]);
        assert_eq!(ready.status, 200, "/readyz: {}", ready.body);
        ready.body
    }
}

/// A reload runs beside the work that responses wait for. With strict
/// durability each response waits for its audit record to commit, and the
/// audit writer shares a thread with reloads. Revocations still take
/// effect, and the admin listener still responds.
#[test]
fn requests_answered_while_a_reload_waits() {
    let httpbin = spawn_httpbin();
    let reload = BlockedReload::start(&httpbin);
    let (castellan, server) = (&reload.castellan, &reload.server);
    let headers = server.url("/httpbin/headers");

    let records_before = castellan.audit_records().len();
    let reply = get_as(&headers, &reload.token);
    assert_eq!(
        reply.status,
        200,
        "request during the reload: {}\n{}",
        reply.body,
        server.logs()
    );
    assert_eq!(
        castellan.audit_records().len(),
        records_before + 1,
        "the answered request has its record"
    );
    let spare = &reload.spare;
    assert_eq!(get_as(&headers, &spare.token).status, 200);
    castellan.cli_ok(&["agent", "token", "revoke", &spare.id]);
    await_status(
        server,
        "/httpbin/headers",
        &spare.token,
        401,
        STORE_CHANGE_LIMIT,
    );
    assert!(
        reload.connections().contains(r#""connections":1"#),
        "the reload ended before the CA file was written\n{}",
        server.logs()
    );

    reload.finish();
    let after = reload.connections();
    assert!(
        after.contains(r#""connections":2"#),
        "/readyz after the reload: {after}"
    );
    assert_eq!(get_as(&headers, &reload.token).status, 200);
}

/// Reload requests made while a reload waits merge into one, so a burst
/// of signals cannot pile up compiles and threads behind a slow file.
#[test]
fn reload_requests_merge_while_one_waits() {
    const SIGNALS: usize = 10;
    let httpbin = spawn_httpbin();
    let reload = BlockedReload::start(&httpbin);
    let (castellan, server) = (&reload.castellan, &reload.server);
    let threads_before = thread_count(server.pid());

    for sent in 1..=SIGNALS {
        server.signal("HUP");
        let received = poll_until(CONFIG_CHANGE_LIMIT, || {
            server.stderr().matches("SIGHUP received").count() >= sent
        });
        assert!(
            received.is_some(),
            "SIGHUP {sent} was not logged\n{}",
            server.logs()
        );
    }
    let threads_after = thread_count(server.pid());

    assert!(
        threads_after <= threads_before + 2,
        "{SIGNALS} reload requests behind a waiting reload took the threads from {threads_before} to {threads_after}"
    );
    castellan.write_config(&format!(
        "[gateway]\naudit_durability = \"strict\"\n{}",
        config(&httpbin, READ_HEADERS)
    ));
    let changes = || {
        server
            .stderr()
            .matches("configuration file changed")
            .count()
    };
    let noticed = poll_until(CONFIG_CHANGE_LIMIT, || changes() >= 2);
    assert!(
        noticed.is_some(),
        "the new file was not noticed\n{}",
        server.logs()
    );
    // The file poll runs every second. A change already requested must not
    // be requested, and logged, again at each poll.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(changes(), 2, "{}", server.logs());
    reload.release();
    await_status(server, QUICK_DRIP, &reload.token, 403, CONFIG_CHANGE_LIMIT);
    let ready = reload.connections();
    assert!(
        ready.contains(r#""connections":1"#),
        "/readyz after the merged reload: {ready}"
    );
}

/// Returns the number of threads of process `pid`.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("list the gateway's threads")
        .count()
}

/// SIGTERM stops the gateway even while a reload waits on a file.
#[test]
fn sigterm_stops_while_a_reload_waits() {
    let httpbin = spawn_httpbin();
    let mut reload = BlockedReload::start(&httpbin);

    reload.server.signal("TERM");
    let status = reload.server.wait_for_exit(SHUTDOWN_TIMEOUT);

    let status = status.unwrap_or_else(|| {
        panic!(
            "castellan serve still runs {SHUTDOWN_TIMEOUT:?} after SIGTERM\n{}",
            reload.server.logs()
        )
    });
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        reload.server.logs()
    );
}

/// Returns a self-signed CA certificate in PEM.
fn generate_ca_pem() -> String {
    let key = KeyPair::generate().expect("generate the CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "castellan e2e reload CA");
    params.self_signed(&key).expect("self-sign the CA").pem()
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
