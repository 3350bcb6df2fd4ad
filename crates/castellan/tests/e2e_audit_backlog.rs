//! When the audit store cannot keep up, the gateway fails closed: it stops
//! forwarding instead of answering requests that would have no record.

#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use support::castellan::{poll_until, Castellan};
use support::http::{get, get_as};
use support::peers::{spawn_httpbin, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-backlog-Jq4Wd8Lp2Xs6";

/// Holds SQLite's write lock on a database until dropped, as a stalled
/// disk or a long transaction of another process would.
struct WriteLock {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl WriteLock {
    fn hold(database: &std::path::Path) -> Self {
        let python = std::env::var("CASTELLAN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = "import sqlite3, sys\n\
            db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\n\
            db.execute('BEGIN IMMEDIATE')\n\
            print('LOCKED', flush=True)\n\
            sys.stdin.read()\n\
            db.execute('ROLLBACK')\n";
        let mut child = Command::new(python)
            .args(["-c", script])
            .arg(database)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 to hold the SQLite write lock");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the lock holder's output");
        assert_eq!(
            line.trim(),
            "LOCKED",
            "the lock holder did not take the lock"
        );
        let stdin = child.stdin.take();
        WriteLock { child, stdin }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        // Closing stdin lets the script roll back and exit.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Creates a data directory whose agent `reader-bot` may GET `/get` from
/// httpbin, and returns httpbin, the directory and the agent's token.
fn reader_gateway() -> (Peer, Castellan, String) {
    let httpbin = spawn_httpbin();
    let castellan = Castellan::init();
    castellan.write_config(&format!(
        r#"
[connections.httpbin]
upstream = "{}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "httpbin-key"

[roles.reader]
allow = [{{ connection = "httpbin", methods = ["GET"], paths = ["/get"] }}]

[agents.reader-bot]
owner = "ops@example.com"
roles = ["reader"]
"#,
        httpbin.base_url()
    ));
    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    let token = castellan.issue_token("reader-bot");
    (httpbin, castellan, token)
}

#[test]
fn full_audit_queue_fails_closed() {
    let (_httpbin, castellan, token) = reader_gateway();
    let server = castellan.serve_with(&["--audit-queue-capacity", "1"], &[]);
    let url = server.url("/httpbin/get");

    let lock = WriteLock::hold(&castellan.data_dir().join("castellan.db"));
    let mut answered = Vec::new();
    let mut rejected = None;
    // The writer takes a first batch before it blocks on the lock, so a few
    // requests pass before the queue of one fills.
    for _ in 0..50 {
        let reply = get_as(&url, &token);
        match reply.status {
            200 => answered.push(reply.header("x-request-id").unwrap_or_default().to_owned()),
            503 => {
                rejected = Some(reply);
                break;
            }
            other => panic!("unexpected status {other}: {}", reply.body),
        }
    }
    let rejected = rejected.expect("no request was rejected while the audit store was locked");
    assert!(
        rejected.body.contains("audit log is not keeping up"),
        "{}",
        rejected.body
    );
    drop(lock);

    // Once the store accepts writes again, every answered request has its
    // record and requests flow again.
    let recorded = poll_until(Duration::from_secs(20), || {
        let ids: Vec<String> = castellan
            .audit_records()
            .iter()
            .filter_map(|record| record["request_id"].as_str().map(str::to_owned))
            .collect();
        answered.iter().all(|id| ids.contains(id))
    });
    assert!(recorded.is_some(), "answered requests lack audit records");
    let recovered = poll_until(Duration::from_secs(10), || {
        get_as(&url, &token).status == 200
    });
    assert!(
        recovered.is_some(),
        "requests still fail after the store recovered"
    );
    // The rejection's own record found a free slot only if the writer took
    // a record off the queue between the failed reservation and the
    // rejection. Either it is in the log or its loss is counted.
    let rejected_id = rejected
        .header("x-request-id")
        .expect("the rejection has a request id")
        .to_owned();
    let metrics = get(&server.admin_url("/metrics"), &[]).body;
    if !metrics.contains("castellan_audit_records_unqueued_total") {
        let recorded = poll_until(Duration::from_secs(10), || {
            castellan
                .audit_records()
                .iter()
                .any(|record| record["request_id"].as_str() == Some(rejected_id.as_str()))
        });
        assert!(
            recorded.is_some(),
            "the rejection has no record and its loss is not counted:\n{metrics}"
        );
    }
}

/// Lists the name and nice value of each thread of process `pid`.
#[cfg(target_os = "linux")]
fn threads(pid: u32) -> Vec<(String, i32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the gateway's threads");
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // "tid (comm) state ...": the name may hold spaces, so split at
            // the last parenthesis; nice is the 19th field.
            let (head, fields) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_string();
            let nice = fields.split_whitespace().nth(16)?.parse().ok()?;
            Some((name, nice))
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn background_work_runs_below_request_priority() {
    let (_httpbin, castellan, token) = reader_gateway();
    let server = castellan.serve();
    for _ in 0..5 {
        assert_eq!(get_as(&server.url("/httpbin/get"), &token).status, 200);
    }
    let recorded = poll_until(Duration::from_secs(10), || {
        castellan.audit_records().len() >= 5
    });
    assert!(recorded.is_some(), "the requests have no audit records");

    let threads = threads(server.pid());
    let nice_of = |prefix: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, nice)| *nice)
            .collect()
    };
    let main = threads
        .iter()
        .find(|(name, _)| name == "castellan")
        .map(|(_, nice)| *nice)
        .expect("the main thread is named castellan");
    let expected = (main + 10).min(19);
    assert_eq!(nice_of("castellan-bg"), [expected], "{threads:?}");
    // SQLite's threads commit the records and serve the monitor's reads.
    // Below request priority, they let a saturated core starve detection.
    let store_threads = nice_of("sqlx-sqlite");
    assert_eq!(store_threads.len(), 4, "{threads:?}");
    assert!(
        store_threads.iter().all(|nice| *nice == main),
        "a store thread runs below request priority: {threads:?}"
    );
    assert!(
        nice_of("tokio-rt-worker").contains(&main),
        "no request worker at the process's priority: {threads:?}"
    );
}

#[test]
fn rejected_requests_wait_for_a_lagging_writer() {
    let (_httpbin, castellan, _token) = reader_gateway();
    // The pacing mark is 512 queued records.
    let server = castellan.serve_with(&["--audit-queue-capacity", "1200"], &[]);
    let url = server.url("/httpbin/get");
    let lock = WriteLock::hold(&castellan.data_dir().join("castellan.db"));

    // Requests without a token are rejected at once (401, then 429 once
    // the source's failures are limited), but each adds a record that the
    // stuck writer cannot take. Its first batch takes those sent while it
    // waited for more, so within 700 some request finds more than 512
    // queued and waits up to 1 s.
    let rejected = |status: u16| matches!(status, 401 | 429);
    let mut first_wait = None;
    for sent in 1..=700 {
        let started = std::time::Instant::now();
        assert!(rejected(get(&url, &[]).status));
        if started.elapsed() >= Duration::from_millis(900) {
            first_wait = Some(sent);
            break;
        }
    }
    let metrics = get(&server.admin_url("/metrics"), &[]).body;
    drop(lock);

    let sent = first_wait.expect("no rejection waited for the stuck writer");
    assert!(sent > 512, "request {sent} waited below the mark");
    assert!(
        metrics.contains("castellan_audit_paced_total"),
        "the wait is not counted:\n{metrics}"
    );
    // The audit tail shows at most 500 records, so count the commits.
    let written = || {
        let metrics = get(&server.admin_url("/metrics"), &[]).body;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("castellan_audit_records_written_total "))
            .and_then(|count| count.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let recorded = poll_until(Duration::from_secs(20), || written() >= sent);
    assert!(
        recorded.is_some(),
        "{} of {sent} rejections have audit records",
        written()
    );
}
