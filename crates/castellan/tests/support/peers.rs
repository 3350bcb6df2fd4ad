//! Starts the Python test peers in `tests/peers/` on loopback for the
//! end-to-end tests: the real httpbin app, an OpenAI-shaped upstream, and an
//! agent that uses the official `openai` SDK.
//!
//! The interpreter is env `CASTELLAN_TEST_PYTHON`, else `python3`. A peer that
//! cannot start fails the test with a message naming the packages to install.

// Each test binary compiles this module and uses only some of its items.
#![allow(dead_code)]

use std::env;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

/// Maximum wait for a peer's `LISTENING <port>` line. A peer prints it about a
/// second after start on a 2-core machine, so only a broken peer hits this.
const LISTENING_TIMEOUT: Duration = Duration::from_secs(30);

const INSTALL_HINT: &str = "install the peers' Python packages with \
    `pip install -r tests/peers/requirements.txt` from the repository root \
    (set CASTELLAN_TEST_PYTHON to choose the interpreter, default python3)";

/// Distinguishes the stderr files of peers started by one test process.
static PEER_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running peer on 127.0.0.1. Dropping it closes its stdin, kills it and
/// waits for it, so no peer outlives its test.
#[derive(Debug)]
pub struct Peer {
    pub port: u16,
    name: &'static str,
    child: Child,
    // The peer exits when this pipe closes, which also covers a test process
    // that dies without running Drop.
    stdin: Option<ChildStdin>,
    stderr_path: PathBuf,
}

impl Peer {
    /// Returns `http://127.0.0.1:<port>`, with no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Returns what the peer wrote to stderr so far (its request log and any
    /// Python traceback), for failure messages.
    pub fn stderr_output(&self) -> String {
        read_stderr_file(&self.stderr_path)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // Errors are ignored because the peer may have exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.stderr_path);
    }
}

/// Starts `tests/peers/httpbin_server.py`, the real httpbin app.
pub fn spawn_httpbin() -> Peer {
    spawn_peer("httpbin", "httpbin_server.py", &[])
}

/// Starts `tests/peers/openai_upstream.py`, which accepts only
/// `Authorization: Bearer <upstream_key>` and records every request at
/// `GET /_peer/requests`.
pub fn spawn_openai_upstream(upstream_key: &str) -> Peer {
    spawn_peer(
        "openai-upstream",
        "openai_upstream.py",
        &[("UPSTREAM_KEY", upstream_key)],
    )
}

/// Runs `tests/peers/openai_agent.py` to completion with the SDK pointed at
/// `base_url` and `token` as its API key; `extra_args` go to the script
/// (for example `["--expect-denied", "403"]`). The script's own request
/// timeout (30 s) bounds the run.
pub fn run_openai_agent(base_url: &str, token: &str, extra_args: &[&str]) -> Output {
    let script = peer_script("openai_agent.py");
    let python = python_interpreter();
    let output = Command::new(&python)
        .arg(&script)
        .args(extra_args)
        .env("CASTELLAN_BASE_URL", base_url)
        .env("CASTELLAN_AGENT_TOKEN", token)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "failed to run {python} {}: {error}; {INSTALL_HINT}",
                script.display()
            )
        });

    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("ModuleNotFoundError") {
        panic!("the openai agent could not import its packages; {INSTALL_HINT}\n{stderr}");
    }
    output
}

fn python_interpreter() -> String {
    env::var("CASTELLAN_TEST_PYTHON")
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

fn peer_script(file_name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/peers")
        .join(file_name)
}

fn unique_stderr_path(name: &str) -> PathBuf {
    let sequence = PEER_COUNTER.fetch_add(1, Ordering::Relaxed);
    let file_name = format!(
        "castellan-peer-{name}-{}-{sequence}.stderr",
        std::process::id()
    );
    env::temp_dir().join(file_name)
}

fn read_stderr_file(path: &PathBuf) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|error| format!("(stderr file {} unreadable: {error})", path.display()))
}

fn spawn_peer(name: &'static str, script_name: &str, envs: &[(&str, &str)]) -> Peer {
    let script = peer_script(script_name);
    let python = python_interpreter();
    let stderr_path = unique_stderr_path(name);
    let stderr_file = File::create(&stderr_path).unwrap_or_else(|error| {
        panic!(
            "failed to create {} for the {name} peer's stderr: {error}",
            stderr_path.display()
        )
    });

    let mut child = Command::new(&python)
        .arg(&script)
        .envs(envs.iter().copied())
        .env("PYTHONUNBUFFERED", "1")
        // Keeps __pycache__ directories out of the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // A file rather than a pipe, because no thread reads stderr while the
        // peer runs and a full pipe would block the peer mid-request.
        .stderr(Stdio::from(stderr_file))
        .spawn()
        .unwrap_or_else(|error| {
            let _ = fs::remove_file(&stderr_path);
            panic!(
                "failed to start the {name} peer ({python} {}): {error}; {INSTALL_HINT}",
                script.display()
            )
        });

    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let mut peer = Peer {
        port: 0,
        name,
        child,
        stdin,
        stderr_path,
    };
    match stdout.map(wait_for_listening_port) {
        Some(Ok(port)) => peer.port = port,
        Some(Err(reason)) => fail_to_start(peer, &reason),
        None => fail_to_start(peer, "its stdout was not captured"),
    }
    peer
}

/// Reads the first stdout line on a thread and returns its port. The thread
/// then keeps draining stdout so the peer never blocks on a full pipe.
fn wait_for_listening_port(stdout: ChildStdout) -> Result<u16, String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first_line = lines.next().and_then(Result::ok);
        let _ = sender.send(first_line);
        for _ in lines {}
    });

    match receiver.recv_timeout(LISTENING_TIMEOUT) {
        Ok(Some(line)) => parse_listening_line(&line),
        Ok(None) => Err("it closed stdout before printing `LISTENING <port>`".to_owned()),
        Err(RecvTimeoutError::Timeout) => Err(format!(
            "it printed no `LISTENING <port>` line within {} s",
            LISTENING_TIMEOUT.as_secs()
        )),
        Err(RecvTimeoutError::Disconnected) => Err("its stdout reader thread stopped".to_owned()),
    }
}

fn parse_listening_line(line: &str) -> Result<u16, String> {
    line.trim()
        .strip_prefix("LISTENING ")
        .and_then(|port| port.parse::<u16>().ok())
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("its first stdout line {line:?} is not `LISTENING <port>`"))
}

fn fail_to_start(mut peer: Peer, reason: &str) -> ! {
    drop(peer.stdin.take());
    let _ = peer.child.kill();
    let status = peer.child.wait().map_or_else(
        |error| format!("exit status unknown: {error}"),
        |status| status.to_string(),
    );
    let stderr = peer.stderr_output();
    panic!(
        "the {} peer did not start: {reason} ({status}); {INSTALL_HINT}\n\
         --- peer stderr ---\n{stderr}",
        peer.name
    );
}

/// Writes a MaxMind City database to `path` that places each network at a
/// city, with `tests/peers/geo_database.py`. Entries are
/// `(network, latitude, longitude, city)`.
pub fn write_geo_database(path: &std::path::Path, entries: &[(&str, f64, f64, &str)]) {
    let mut command = Command::new(python_interpreter());
    command.arg(peer_script("geo_database.py")).arg(path);
    for (network, latitude, longitude, city) in entries {
        command.arg(format!("{network}={latitude},{longitude},{city}"));
    }
    let output = command.output().unwrap_or_else(|error| {
        panic!("cannot run the geo database writer: {error}; {INSTALL_HINT}")
    });
    assert!(
        output.status.success(),
        "the geo database writer failed; {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
