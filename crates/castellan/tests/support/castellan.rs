//! Runs the real `castellan` binary for the end-to-end tests: a data
//! directory inside a temporary directory, CLI commands with their outputs
//! kept for leak checks, and `castellan serve` as a child process on
//! loopback ports that the OS picks.

// Each test binary compiles this module and uses only some of its items.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The binary under test, built by Cargo for this test target.
pub const BINARY: &str = env!("CARGO_BIN_EXE_castellan");

/// Maximum wait for the `listening agents=... admin=...` line. A debug build
/// binds in well under a second, so only a gateway that fails to start hits it.
const LISTENING_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum wait for a gateway to exit after SIGTERM before a test fails.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variables of the binary that would redirect a test to
/// another data directory, configuration or log setup.
const CASTELLAN_ENV: [&str; 4] = [
    "CASTELLAN_DATA_DIR",
    "CASTELLAN_CONFIG",
    "CASTELLAN_PASSPHRASE_FILE",
    "CASTELLAN_LOG",
];

/// Distinguishes the output files of gateways started by one fixture.
static SERVER_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// An agent token and its public id.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    /// The `tok_...` id that `agent token revoke` takes.
    pub id: String,
}

/// One CLI invocation and what it printed.
#[derive(Debug, Clone)]
pub struct CliRun {
    pub args: Vec<String>,
    pub output: Output,
}

impl CliRun {
    /// Returns stdout and stderr as one lossy UTF-8 string.
    pub fn text(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

/// An initialized data directory and the CLI runs made against it.
pub struct Castellan {
    root: TempDir,
    data_dir: PathBuf,
    config_path: PathBuf,
    runs: Mutex<Vec<CliRun>>,
}

impl Castellan {
    /// Creates a temporary directory and runs `castellan init` in it.
    pub fn init() -> Self {
        let root = tempfile::Builder::new()
            .prefix("castellan-e2e-")
            .tempdir()
            .expect("create a temporary directory for the data directory");
        let data_dir = root.path().join("data");
        let castellan = Castellan {
            config_path: data_dir.join("castellan.toml"),
            data_dir,
            root,
            runs: Mutex::new(Vec::new()),
        };
        let data_dir = castellan.data_dir.to_string_lossy().into_owned();
        let run = castellan.run(&["init", "--data-dir", &data_dir], None);
        assert_success(&run);
        castellan
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Returns the temporary directory that contains the data directory,
    /// for extra files such as alternative configurations.
    pub fn scratch_dir(&self) -> &Path {
        self.root.path()
    }

    /// Replaces the configuration with `toml` through a rename, so a running
    /// gateway never reads a half-written file.
    pub fn write_config(&self, toml: &str) {
        let staging = self.root.path().join("castellan.toml.new");
        fs::write(&staging, toml).expect("write the staged configuration");
        fs::rename(&staging, &self.config_path).expect("move the configuration into place");
    }

    /// Runs `castellan --data-dir DIR --config FILE ARGS...` with stdin
    /// closed and records the run.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_run(args, None).output
    }

    /// Runs `castellan ARGS...` without the fixture's `--data-dir` and
    /// `--config`, with stdin closed, and records the run.
    pub fn cli_bare(&self, args: &[&str]) -> Output {
        self.run(args, None).output
    }

    /// Starts a long-running CLI command (such as `audit tail -f`) whose
    /// stdout lines arrive on a channel.
    pub fn spawn_cli(&self, args: &[&str]) -> CliChild {
        let mut full = self.global_args();
        full.extend(args.iter().map(|arg| (*arg).to_owned()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let mut child = self
            .command(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {BINARY} {args:?}: {error}"));
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        CliChild { child, lines }
    }

    /// Runs a CLI command that must succeed and returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let run = self.cli_run(args, None);
        assert_success(&run);
        String::from_utf8_lossy(&run.output.stdout).into_owned()
    }

    /// Stores `value` as secret `name`, passing it on stdin.
    pub fn set_secret(&self, name: &str, value: &str) {
        let run = self.cli_run(&["secret", "set", name], Some(value.as_bytes()));
        assert_success(&run);
    }

    /// Issues a token for `agent` and returns it: the one stdout line.
    pub fn issue_token(&self, agent: &str) -> String {
        self.issue(agent, None).token
    }

    /// Issues a token for `agent`, with `--ttl TTL` when given, and finds
    /// its id as the one new id in `agent token list`.
    pub fn issue(&self, agent: &str, ttl: Option<&str>) -> IssuedToken {
        let before = self.token_ids(agent);
        let mut args = vec!["agent", "token", "issue", agent];
        if let Some(ttl) = ttl {
            args.extend(["--ttl", ttl]);
        }
        let stdout = self.cli_ok(&args);
        let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "`agent token issue` must print only the token on stdout, got {stdout:?}"
        );
        let token = lines[0].trim().to_owned();
        assert!(token.starts_with("cst_"), "not an agent token: {token:?}");
        let new_ids: Vec<String> = self
            .token_ids(agent)
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        assert_eq!(
            new_ids.len(),
            1,
            "expected one new token id, got {new_ids:?}"
        );
        IssuedToken {
            token,
            id: new_ids[0].clone(),
        }
    }

    /// Returns the ids (`tok_...`) of `agent`'s tokens from
    /// `agent token list --json`.
    pub fn token_ids(&self, agent: &str) -> Vec<String> {
        let stdout = self.cli_ok(&["agent", "token", "list", agent, "--json"]);
        json_lines_or_array(&stdout)
            .iter()
            .filter(|token| token["agent"] == agent)
            .filter_map(|token| token["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Returns the newest audit records (`audit tail --json -n 500`).
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let stdout = self.cli_ok(&["audit", "tail", "--json", "-n", "500"]);
        json_lines_or_array(&stdout)
    }

    /// Returns every CLI run made through this fixture so far.
    pub fn cli_runs(&self) -> Vec<CliRun> {
        self.runs.lock().expect("CLI run log lock").clone()
    }

    /// Starts `castellan serve` on ephemeral loopback ports.
    pub fn serve(&self) -> Server {
        self.serve_with(&[], &[])
    }

    /// Starts `castellan serve EXTRA_ARGS...` with extra environment
    /// variables. `--listen` and `--admin-listen` default to port 0.
    pub fn serve_with(&self, extra_args: &[&str], envs: &[(&str, &str)]) -> Server {
        let globals = self.global_args();
        let mut args: Vec<&str> = globals.iter().map(String::as_str).collect();
        args.push("serve");
        if !extra_args.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        if !extra_args.contains(&"--admin-listen") {
            args.extend(["--admin-listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra_args);
        let mut command = self.command(&args);
        command.envs(envs.iter().copied());
        let sequence = SERVER_COUNTER.fetch_add(1, Ordering::Relaxed);
        let logs = self.root.path().join(format!("serve-{sequence}"));
        Server::spawn(command, &logs)
    }

    /// Returns `--data-dir DIR --config FILE` for this fixture.
    fn global_args(&self) -> Vec<String> {
        vec![
            "--data-dir".to_owned(),
            self.data_dir.to_string_lossy().into_owned(),
            "--config".to_owned(),
            self.config_path.to_string_lossy().into_owned(),
        ]
    }

    fn cli_run(&self, args: &[&str], stdin: Option<&[u8]>) -> CliRun {
        let mut full = self.global_args();
        full.extend(args.iter().map(|arg| (*arg).to_owned()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        self.run(&full, stdin)
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> CliRun {
        let mut command = self.command(args);
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {BINARY} {args:?}: {error}"));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input).expect("write the CLI's stdin");
        }
        let output = child
            .wait_with_output()
            .unwrap_or_else(|error| panic!("failed to wait for {BINARY} {args:?}: {error}"));
        let run = CliRun {
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            output,
        };
        self.runs
            .lock()
            .expect("CLI run log lock")
            .push(run.clone());
        run
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .current_dir(self.root.path())
            // Plain text logs, so tests can search them for fixed messages.
            .env("NO_COLOR", "1");
        for name in CASTELLAN_ENV {
            command.env_remove(name);
        }
        command
    }
}

/// Panics with the command line and both outputs unless `run` exited 0.
pub fn assert_success(run: &CliRun) {
    assert!(
        run.output.status.success(),
        "castellan {:?} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        run.args,
        run.output.status,
        String::from_utf8_lossy(&run.output.stdout),
        String::from_utf8_lossy(&run.output.stderr)
    );
}

/// Parses output that is either JSON lines or one JSON array.
pub fn json_lines_or_array(text: &str) -> Vec<serde_json::Value> {
    let trimmed = text.trim();
    if trimmed.starts_with('[') {
        let value: serde_json::Value = serde_json::from_str(trimmed)
            .unwrap_or_else(|error| panic!("invalid JSON array ({error}): {trimmed}"));
        return value.as_array().cloned().unwrap_or_default();
    }
    trimmed
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("invalid JSON line ({error}): {line}"))
        })
        .collect()
}

/// A running CLI command. Dropping it kills the process and waits for it.
pub struct CliChild {
    child: Child,
    /// Stdout lines, in order, as the command prints them.
    pub lines: mpsc::Receiver<String>,
}

impl Drop for CliChild {
    fn drop(&mut self) {
        // Errors are ignored because the process may have exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `castellan serve`. Dropping it kills the process and waits
/// for it, so no gateway outlives its test.
pub struct Server {
    child: Child,
    pub agent_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Server {
    /// Starts `command` with stdout and stderr in files next to `logs`, and
    /// waits for its `listening` line.
    fn spawn(mut command: Command, logs: &Path) -> Server {
        let stdout_path = logs.with_extension("stdout");
        let stderr_path = logs.with_extension("stderr");
        let stdout = File::create(&stdout_path).expect("create the gateway's stdout file");
        let stderr = File::create(&stderr_path).expect("create the gateway's stderr file");
        // Files rather than pipes, so the gateway never blocks on a full pipe
        // and the tests can read its logs at any time.
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {BINARY} serve: {error}"));
        let mut server = Server {
            child,
            agent_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout_path,
            stderr_path,
        };
        let (agent_addr, admin_addr) = server.wait_for_listening();
        server.agent_addr = agent_addr;
        server.admin_addr = admin_addr;
        server
    }

    fn wait_for_listening(&mut self) -> (SocketAddr, SocketAddr) {
        let deadline = Instant::now() + LISTENING_TIMEOUT;
        loop {
            if let Some(addresses) = self.stdout().lines().find_map(parse_listening_line) {
                return addresses;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "castellan serve exited with {status} before listening\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "castellan serve printed no `listening agents=... admin=...` line within {} s\n{}",
                LISTENING_TIMEOUT.as_secs(),
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Returns `http://AGENT_ADDR` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.agent_addr)
    }

    /// Returns `http://ADMIN_ADDR` followed by `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Returns stdout and stderr with headings, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- gateway stdout ---\n{}\n--- gateway stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Sends signal `name` (such as `HUP` or `TERM`) to this gateway only.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .unwrap_or_else(|error| panic!("failed to run kill -s {name}: {error}"));
        assert!(status.success(), "kill -s {name} {} failed", self.pid());
    }

    /// Waits until stderr contains `needle` and returns whether it did
    /// within `limit`.
    pub fn wait_for_stderr(&self, needle: &str, limit: Duration) -> bool {
        poll_until(limit, || self.stderr().contains(needle)).is_some()
    }

    /// Waits up to `limit` for the process to exit on its own.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Errors are ignored because the process may have exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `listening agents=http://ADDR admin=http://ADDR`; the agent
/// listener may also be `https://`.
fn parse_listening_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("listening ")?;
    let mut agents = None;
    let mut admin = None;
    for field in rest.split_whitespace() {
        if let Some(url) = field.strip_prefix("agents=") {
            agents = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))?
                .trim_end_matches('/')
                .parse()
                .ok();
        } else if let Some(url) = field.strip_prefix("admin=") {
            admin = url
                .strip_prefix("http://")?
                .trim_end_matches('/')
                .parse()
                .ok();
        }
    }
    Some((agents?, admin?))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|error| format!("({} unreadable: {error})", path.display()))
}

/// Calls `check` every 25 ms until it returns true or `limit` passes, and
/// returns the time it took, or `None` on timeout.
pub fn poll_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if check() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= limit {
            return None;
        }
        thread::sleep(Duration::from_millis(25));
    }
}
