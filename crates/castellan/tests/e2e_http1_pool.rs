//! Plain-HTTP upstream connections lent to one request at a time: an
//! upstream that misbehaves on one connection must not delay, confuse or
//! duplicate the requests of other agents.

#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::castellan::{poll_until, Castellan, Server};
use support::http::send;
use support::leak::assert_no_secret;

const UPSTREAM_KEY: &str = "sk-e2e-pool-Vb7Rq2Xw9Lp4";

/// Size of the `/early-large` response, a whole number of MiB: more than
/// the socket buffers between the upstream, the gateway and an agent that
/// does not read yet can take (loopback buffers grow to 32 MiB on Linux).
const LARGE_RESPONSE: usize = 160 * 1024 * 1024;

/// A request head that reached the upstream, with the number of body
/// bytes read after it.
#[derive(Debug, Clone)]
struct Arrival {
    connection: usize,
    method: String,
    target: String,
    body_bytes: usize,
}

/// Requests that reached a [`spawn_upstream`] server, in arrival order.
type Arrivals = Arc<Mutex<Vec<Arrival>>>;

/// Starts a keep-alive HTTP/1.1 upstream on loopback and returns its
/// address and its arrivals. Its behaviour depends on the request path:
/// - `/early` responds before it reads the request body, then reads the
///   whole body.
/// - `/early-large` sends a response of [`LARGE_RESPONSE`] bytes while it
///   reads the request body.
/// - `/extra` sends a second, unrequested response right after the first.
/// - `/drop` reads the request and closes without a response.
/// - `/close-soon` responds without `Connection: close`, then closes the
///   connection 100 ms later.
/// - Any other path gets `conn=N target=T`.
fn spawn_upstream() -> (SocketAddr, Arrivals) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let address = listener.local_addr().expect("upstream address");
    let arrivals = Arrivals::default();
    let recorded = Arc::clone(&arrivals);
    thread::spawn(move || {
        for (index, stream) in listener.incoming().flatten().enumerate() {
            let recorded = Arc::clone(&recorded);
            thread::spawn(move || serve_connection(stream, index + 1, &recorded));
        }
    });
    (address, arrivals)
}

fn serve_connection(stream: TcpStream, connection: usize, arrivals: &Mutex<Vec<Arrival>>) {
    let mut writer = stream.try_clone().expect("clone the upstream socket");
    let mut reader = BufReader::new(stream);
    while let Some((method, target, length)) = read_head(&mut reader) {
        let index = {
            let mut arrivals = arrivals.lock().expect("arrivals lock");
            arrivals.push(Arrival {
                connection,
                method,
                target: target.clone(),
                body_bytes: 0,
            });
            arrivals.len() - 1
        };
        let path = target.split('?').next().unwrap_or_default();
        if path == "/early" {
            let _ = writer.write_all(&response("early"));
        }
        // Writes a large response while it reads the request body.
        let large = (path == "/early-large").then(|| {
            let mut writer = writer.try_clone().expect("clone the upstream socket");
            thread::spawn(move || {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {LARGE_RESPONSE}\r\n\r\n");
                let _ = writer.write_all(head.as_bytes());
                let chunk = vec![b'x'; 1024 * 1024];
                for _ in 0..LARGE_RESPONSE / chunk.len() {
                    if writer.write_all(&chunk).is_err() {
                        return;
                    }
                }
            })
        });
        let Some(read) = read_body(&mut reader, length) else {
            return;
        };
        arrivals.lock().expect("arrivals lock")[index].body_bytes = read;
        if let Some(large) = large {
            let _ = large.join();
            continue;
        }
        let reply = match path {
            "/early" => continue,
            "/drop" => return,
            "/extra" => {
                let mut bytes = response("first");
                bytes.extend(response(&format!("unrequested {UPSTREAM_KEY}")));
                bytes
            }
            "/close-soon" => {
                let _ = writer.write_all(&response("closing"));
                thread::sleep(Duration::from_millis(100));
                return;
            }
            _ => response(&format!("conn={connection} target={target}")),
        };
        if writer.write_all(&reply).is_err() {
            return;
        }
    }
}

/// Reads a request head and returns its method, target and
/// `Content-Length`, or `None` once the connection has closed. Chunked
/// request bodies are not used by these tests.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<(String, String, usize)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some((method, target, length));
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
}

/// Reads `length` body bytes, or returns `None` if the connection closes
/// first.
fn read_body(reader: &mut BufReader<TcpStream>, length: usize) -> Option<usize> {
    let mut remaining = length;
    let mut buffer = [0_u8; 64 * 1024];
    while remaining > 0 {
        let chunk_length = remaining.min(buffer.len());
        match reader.read(&mut buffer[..chunk_length]) {
            Ok(0) | Err(_) => return None,
            Ok(read) => remaining -= read,
        }
    }
    Some(length)
}

fn response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[connections.raw]
upstream = "http://{upstream}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "upstream-key"
response_timeout = "15s"

[roles.user]
allow = [{{ connection = "raw", methods = ["*"], paths = ["/**"] }}]

[agents.first]
owner = "ops@example.com"
roles = ["user"]

[agents.second]
owner = "ops@example.com"
roles = ["user"]

[agents.limited]
owner = "ops@example.com"
roles = ["user"]
max_concurrent_requests = 1
"#
    )
}

struct Setup {
    _castellan: Castellan,
    server: Server,
    arrivals: Arrivals,
    first: String,
    second: String,
    /// Token of an agent allowed one request at a time.
    limited: String,
}

fn setup() -> Setup {
    let (upstream, arrivals) = spawn_upstream();
    let castellan = Castellan::init();
    castellan.write_config(&config(upstream));
    castellan.set_secret("upstream-key", UPSTREAM_KEY);
    let first = castellan.issue_token("first");
    let second = castellan.issue_token("second");
    let limited = castellan.issue_token("limited");
    let server = castellan.serve();
    Setup {
        _castellan: castellan,
        server,
        arrivals,
        first,
        second,
        limited,
    }
}

impl Setup {
    fn arrivals_at(&self, path: &str) -> Vec<Arrival> {
        self.arrivals
            .lock()
            .expect("arrivals lock")
            .iter()
            .filter(|arrival| arrival.target.split('?').next() == Some(path))
            .cloned()
            .collect()
    }

    /// Opens a raw agent connection and writes the head of a POST to
    /// `/raw/early` with a body of `length` bytes, so the caller decides
    /// when the body is sent.
    fn start_upload(&self, length: usize) -> TcpStream {
        self.start_upload_as(&self.first, length)
    }

    fn start_upload_as(&self, token: &str, length: usize) -> TcpStream {
        let address = self.server.url("").trim_start_matches("http://").to_owned();
        let mut stream = TcpStream::connect(&address).expect("connect to the gateway");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set the read timeout");
        let head = format!(
            "POST /raw/early HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).expect("write the head");
        stream
    }
}

/// Reads from `stream` until `needle` has arrived and returns all of it.
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !String::from_utf8_lossy(&received).contains(needle) {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) => panic!("no {needle:?} from the gateway: {error}"),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn early_response_does_not_block_other_agent() {
    let setup = setup();
    // The first agent sends part of its body and keeps the rest back after
    // the upstream has responded.
    let mut upload = setup.start_upload(1000);
    upload
        .write_all(&[b'a'; 10])
        .expect("write part of the body");
    let reply = read_until(&mut upload, "early");
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "first agent got {reply:?}"
    );

    let started = Instant::now();
    let authorization = bearer(&setup.second);
    let other = send(
        "GET",
        &setup.server.url("/raw/other"),
        &[("authorization", &authorization)],
        None,
    );
    let elapsed = started.elapsed();
    assert_eq!(other.status, 200, "second agent got {}", other.body);
    assert!(
        elapsed < Duration::from_secs(5),
        "the second agent waited {elapsed:?} for a connection still sending the first agent's body"
    );
    drop(upload);
}

#[test]
fn early_response_upload_reaches_upstream() {
    let setup = setup();
    let length = 1024 * 1024;
    let mut upload = setup.start_upload(length);
    // The rest of the body goes out only after the upstream has responded,
    // as from an agent whose upload is slower than the upstream.
    upload
        .write_all(&[b'a'; 10])
        .expect("write part of the body");
    let reply = read_until(&mut upload, "early");
    assert!(reply.starts_with("HTTP/1.1 200"), "agent got {reply:?}");
    let writer = {
        let mut stream = upload.try_clone().expect("clone the agent socket");
        thread::spawn(move || stream.write_all(&vec![b'a'; length - 10]).is_ok())
    };

    let drained = poll_until(Duration::from_secs(10), || {
        setup
            .arrivals_at("/early")
            .first()
            .is_some_and(|arrival| arrival.body_bytes == length)
    });
    let arrivals = setup.arrivals_at("/early");
    assert!(
        drained.is_some(),
        "the upstream responded early and never received the rest of the body: {arrivals:?}"
    );
    assert!(writer.join().expect("the writer thread"), "upload failed");
}

#[test]
fn early_response_frees_agent_slot() {
    let setup = setup();
    let mut upload = setup.start_upload_as(&setup.limited, 1000);
    upload
        .write_all(&[b'a'; 10])
        .expect("write part of the body");
    let reply = read_until(&mut upload, "early");
    assert!(reply.starts_with("HTTP/1.1 200"), "agent got {reply:?}");
    // The agent gives up on the rest of its upload, so it has no request
    // in flight any more.
    drop(upload);

    let authorization = bearer(&setup.limited);
    let mut last = None;
    let freed = poll_until(Duration::from_secs(5), || {
        let reply = send(
            "GET",
            &setup.server.url("/raw/after-upload"),
            &[("authorization", &authorization)],
            None,
        );
        let status = reply.status;
        last = Some(reply);
        status == 200
    });
    assert!(
        freed.is_some(),
        "the agent's only request slot stayed taken after it disconnected: {last:?}"
    );
}

#[test]
fn unrequested_response_never_reaches_other_agent() {
    let setup = setup();
    let first = bearer(&setup.first);
    let second = bearer(&setup.second);
    for round in 0..5 {
        let extra = send(
            "GET",
            &setup.server.url("/raw/extra"),
            &[("authorization", &first)],
            None,
        );
        assert_eq!(extra.status, 200, "round {round}: {}", extra.body);
        assert_eq!(extra.body, "first", "round {round}");

        let target = format!("/next?round={round}");
        let next = send(
            "GET",
            &setup.server.url(&format!("/raw{target}")),
            &[("authorization", &second)],
            None,
        );
        assert_eq!(next.status, 200, "round {round}: {}", next.body);
        assert!(
            next.body.ends_with(&format!("target={target}")),
            "round {round}: the second agent got {:?}",
            next.body
        );
        assert!(!next.body.contains("unrequested"), "round {round}");
        assert_no_secret(&next.everything(), UPSTREAM_KEY, "the second agent's reply");
    }
}

#[test]
fn post_dropped_by_upstream_is_not_resent() {
    let setup = setup();
    let authorization = bearer(&setup.first);
    let headers = [
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    // A warm connection makes the POST go out on a reused one.
    let warm = send("GET", &setup.server.url("/raw/warm"), &headers, None);
    assert_eq!(warm.status, 200, "{}", warm.body);

    let dropped = send(
        "POST",
        &setup.server.url("/raw/drop"),
        &headers,
        Some("{\"n\":1}"),
    );
    assert_eq!(dropped.status, 502, "{}", dropped.body);
    // A second copy would arrive right after the first, so wait for it.
    thread::sleep(Duration::from_millis(500));
    let arrivals = setup.arrivals_at("/drop");
    assert_eq!(arrivals.len(), 1, "the upstream received {arrivals:?}");
}

#[test]
fn connection_closed_while_idle_is_replaced() {
    let setup = setup();
    let authorization = bearer(&setup.first);
    let headers = [
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    for round in 0..3 {
        let closing = send("GET", &setup.server.url("/raw/close-soon"), &headers, None);
        assert_eq!(closing.status, 200, "round {round}: {}", closing.body);
        thread::sleep(Duration::from_millis(300));

        let target = format!("/after?round={round}");
        let after = send(
            "POST",
            &setup.server.url(&format!("/raw{target}")),
            &headers,
            Some("{\"n\":2}"),
        );
        assert_eq!(after.status, 200, "round {round}: {}", after.body);
        let copies = setup
            .arrivals
            .lock()
            .expect("arrivals lock")
            .iter()
            .filter(|arrival| arrival.target == target && arrival.method == "POST")
            .count();
        assert_eq!(copies, 1, "round {round}: POST arrived {copies} times");
        let closed_on = setup.arrivals_at("/close-soon")[round].connection;
        assert!(
            !after.body.starts_with(&format!("conn={closed_on} ")),
            "round {round}: sent on the closed connection: {}",
            after.body
        );
    }
}

#[test]
fn upload_finishes_during_large_response() {
    let setup = setup();
    let length = 16 * 1024 * 1024;
    let address = setup
        .server
        .url("")
        .trim_start_matches("http://")
        .to_owned();
    let mut agent = TcpStream::connect(&address).expect("connect to the gateway");
    let head = format!(
        "POST /raw/early-large HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\n\r\n",
        setup.first
    );
    agent.write_all(head.as_bytes()).expect("write the head");
    // The agent sends its whole body before it reads, as a blocking
    // client does, while the upstream responds at once.
    let writer = {
        let mut stream = agent.try_clone().expect("clone the agent socket");
        thread::spawn(move || stream.write_all(&vec![b'a'; length]).is_ok())
    };
    let uploaded = poll_until(Duration::from_secs(20), || writer.is_finished());
    let arrivals = setup.arrivals_at("/early-large");
    assert!(
        uploaded.is_some(),
        "the upload stalled behind the unread response: {arrivals:?}"
    );
    assert!(writer.join().expect("the writer thread"), "upload failed");

    agent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set the read timeout");
    let mut received = 0;
    let mut buffer = vec![0_u8; 1024 * 1024];
    while received < LARGE_RESPONSE {
        match agent.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received += read,
            Err(error) => panic!("the response stopped after {received} bytes: {error}"),
        }
    }
    // The head comes first, so the agent receives at least the body.
    assert!(received >= LARGE_RESPONSE, "received {received} bytes");
    let drained = poll_until(Duration::from_secs(10), || {
        setup
            .arrivals_at("/early-large")
            .first()
            .is_some_and(|arrival| arrival.body_bytes == length)
    });
    assert!(
        drained.is_some(),
        "the upstream did not receive the whole body: {:?}",
        setup.arrivals_at("/early-large")
    );
}
