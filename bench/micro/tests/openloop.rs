//! Runs the open-loop generator against loopback servers that respond
//! slowly, never, wrongly or with errors. The first test shows that latency
//! counts from when a request was due rather than from when it was written.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the slow server takes for each response.
const SERVICE: Duration = Duration::from_millis(10);

/// Starts a loopback server that runs `handle` on each connection in a
/// thread of its own, and returns its address.
fn spawn_server(handle: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || handle(stream));
        }
    });
    address
}

/// Responds to each request head after [`SERVICE`].
fn respond_slowly(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).is_ok() {
        head.push(byte[0]);
        if head.ends_with(b"\r\n\r\n") {
            head.clear();
            std::thread::sleep(SERVICE);
            let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if stream.write_all(response).is_err() {
                return;
            }
        }
    }
}

/// Returns the `RESULT` line of openloop's standard output.
fn result_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|line| line.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in {stdout}"))
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// Runs openloop with `args` and returns its exit status and stderr, or
/// panics if it still runs after 30 s.
fn run_bounded(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_openloop"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("openloop {args:?} still runs after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn latency_includes_wait_behind_slow_responses() {
    let address = spawn_server(respond_slowly);

    // One connection requested 200 requests a second from a server that
    // responds to 100, so the queue grows for the whole second.
    let output = Command::new(env!("CARGO_BIN_EXE_openloop"))
        .args(["--url", &format!("http://{address}/x")])
        .args(["--rate", "200", "--connections", "1"])
        .args(["--duration", "1", "--warmup", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result = result_line(&stdout);

    let requests = field(result, "requests");
    // The number of requests due in one second is Poisson with mean 200.
    assert!((120..=280).contains(&requests), "{result}");
    assert_eq!(field(result, "errors"), 0, "{result}");
    // Timed from when they were written, responses would take 10 ms. Timed
    // from when they were due, the later ones waited for hundreds of
    // milliseconds behind the ones before.
    assert!(field(result, "p99_us") >= 300_000, "{result}");
    assert!(field(result, "p50_us") >= 50_000, "{result}");
    // Serving them all took the server about requests * 10 ms, and the
    // throughput counts that time rather than the 1 s that they were due in.
    assert!(field(result, "duration_us") >= requests * 8_000, "{result}");
}

#[test]
fn unreachable_server_fails_without_hanging() {
    // A port that was just free on loopback: connecting to it is refused.
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{address}/");
    let (status, stderr) = run_bounded(&[
        "--url",
        &url,
        "--rate",
        "100",
        "--connections",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0",
    ]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to {address}")),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_are_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_openloop"))
        .args(["--url", "http://127.0.0.1:9/", "--rate", "fast"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--rate \"fast\" is not a positive number"),
        "{stderr}"
    );
}

#[test]
fn silent_server_times_out_as_errors() {
    // Reads requests but never responds.
    let address = spawn_server(|mut stream| {
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink), Ok(count) if count > 0) {}
    });
    let url = format!("http://{address}/");
    let (status, stderr) = run_bounded(&[
        "--url",
        &url,
        "--rate",
        "20",
        "--connections",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--timeout",
        "0.2",
    ]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("did not respond within the timeout"),
        "{stderr}"
    );
}

#[test]
fn failed_exchanges_fail_the_run() {
    // Responds to the first request with a head that is not HTTP.
    let address = spawn_server(|mut stream| {
        let mut request = [0u8; 1024];
        if matches!(stream.read(&mut request), Ok(count) if count > 0) {
            let _ = stream.write_all(b"not http\r\n\r\n");
        }
    });
    let url = format!("http://{address}/");
    let (status, stderr) = run_bounded(&[
        "--url",
        &url,
        "--rate",
        "50",
        "--connections",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0",
    ]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("requests in the measured window failed"),
        "{stderr}"
    );
    assert!(stderr.contains("malformed response head"), "{stderr}");
}

#[test]
fn too_long_durations_are_rejected() {
    for args in [
        ["--duration", "1e300", "--rate", "10"],
        ["--warmup", "1e19", "--rate", "10"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_openloop"))
            .args(["--url", "http://127.0.0.1:9/"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("too long"), "{args:?}: {stderr}");
    }
}

#[test]
fn non_2xx_status_is_named() {
    // Responds to every request with 503.
    let address = spawn_server(|mut stream| {
        let mut request = [0u8; 1024];
        while matches!(stream.read(&mut request), Ok(count) if count > 0) {
            let response = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
            if stream.write_all(response).is_err() {
                return;
            }
        }
    });
    let output = Command::new(env!("CARGO_BIN_EXE_openloop"))
        .args(["--url", &format!("http://{address}/")])
        .args(["--rate", "50", "--connections", "2"])
        .args(["--duration", "1", "--warmup", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("first failed exchange: status 503"),
        "{stdout}"
    );
    let result = result_line(&stdout);
    assert_eq!(
        field(result, "errors"),
        field(result, "requests"),
        "{result}"
    );
}
