//! When the audit store cannot keep up, the gateway fails closed: it stops
//! forwarding instead of answering requests that would have no record.

#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use support::castellan::{poll_until, Castellan};
use support::http::{get, get_as};
use support::peers::spawn_httpbin;

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

#[test]
fn full_audit_queue_fails_closed() {
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
    let metrics = get(&server.admin_url("/metrics"), &[]).body;
    assert!(
        metrics.contains("castellan_audit_records_unqueued_total"),
        "the lost rejection record is not counted:\n{metrics}"
    );
}
