//! Request smuggling: requests whose framing a proxy and an upstream could
//! read differently, sent as raw bytes. Each is rejected with 400 and the
//! connection closed, and no request hidden inside one ever reaches the
//! upstream. The hidden request targets a path the policy denies, so it
//! would only reach the upstream by passing the checkpoint unseen.

#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::castellan::{Castellan, Server};

const UPSTREAM_KEY: &str = "sk-e2e-smuggling-Hb6Ty2Rf9Mz1";

/// Maximum wait for the gateway to respond and close; every case here is
/// decided within milliseconds, so only a gateway that keeps a suspect
/// connection open reaches it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as a strict HTTP/1.1 upstream parsed it.
#[derive(Debug, Clone)]
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    /// Whether the body arrived in full; an aborted request is never
    /// processed by an upstream.
    complete: bool,
}

/// A loopback upstream that parses each request strictly (head, then a
/// chunked or length-delimited body), records it and responds 200.
struct RecordingUpstream {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl RecordingUpstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the recording upstream");
        let address = listener.local_addr().expect("recording upstream address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = Arc::clone(&log);
                thread::spawn(move || serve_upstream(stream, &log));
            }
        });
        RecordingUpstream { address, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("upstream log lock").clone()
    }
}

fn serve_upstream(stream: TcpStream, log: &Mutex<Vec<Received>>) {
    let mut writer = stream.try_clone().expect("clone the upstream socket");
    let mut reader = BufReader::new(stream);
    while let Some((request_line, headers)) = read_head(&mut reader) {
        let mut request = Received {
            request_line,
            headers,
            complete: false,
        };
        request.complete = read_body(&mut reader, &request.headers).is_some();
        let complete = request.complete;
        log.lock().expect("upstream log lock").push(request);
        if !complete {
            return;
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

fn read_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches("\r\n").to_owned()),
    }
}

fn read_head(reader: &mut impl BufRead) -> Option<(String, Vec<(String, String)>)> {
    let request_line = read_line(reader)?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Some((request_line, headers));
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
}

/// Reads the body and returns its length, or `None` when it is cut short
/// or malformed.
fn read_body(reader: &mut impl BufRead, headers: &[(String, String)]) -> Option<usize> {
    let value = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    if value("transfer-encoding").is_some() {
        let mut total = 0;
        loop {
            let size = usize::from_str_radix(read_line(reader)?.split(';').next()?, 16).ok()?;
            if size == 0 {
                // Trailer section, ended by an empty line.
                while !read_line(reader)?.is_empty() {}
                return Some(total);
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            total += size;
        }
    }
    let length: usize = value("content-length").map_or(Some(0), |v| v.parse().ok())?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(length)
}

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[connections.api]
upstream = "http://{upstream}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "upstream-key"

[roles.writer]
allow = [{{ connection = "api", methods = ["GET", "POST"], paths = ["/allowed/**"] }}]

[agents.bot]
owner = "ops@example.com"
roles = ["writer"]
"#
    )
}

struct Setup {
    upstream: RecordingUpstream,
    server: Server,
    token: String,
    _castellan: Castellan,
}

fn setup() -> Setup {
    let upstream = RecordingUpstream::start();
    let castellan = Castellan::init();
    castellan.write_config(&config(upstream.address));
    castellan.set_secret("upstream-key", UPSTREAM_KEY);
    let token = castellan.issue_token("bot");
    let server = castellan.serve();
    Setup {
        upstream,
        server,
        token,
        _castellan: castellan,
    }
}

/// What the gateway sent back on one raw connection.
struct Exchange {
    response: String,
    /// Whether the gateway closed the connection within [`CLOSE_TIMEOUT`].
    closed: bool,
}

impl Exchange {
    fn statuses(&self) -> Vec<u16> {
        // Status lines can follow a body directly, so search everywhere.
        self.response
            .match_indices("HTTP/1.1 ")
            .filter_map(|(at, prefix)| self.response.get(at + prefix.len()..at + prefix.len() + 3))
            .filter_map(|code| code.parse().ok())
            .collect()
    }
}

fn exchange(address: SocketAddr, request: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(address).expect("connect to the gateway");
    // The gateway may close before reading everything; a failed write then
    // shows up as a closed connection below.
    let _ = stream.write_all(request);
    read_until_closed(stream)
}

/// Reads until the gateway closes `stream` or [`CLOSE_TIMEOUT`] passes.
fn read_until_closed(mut stream: TcpStream) -> Exchange {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set the read timeout");
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let mut raw = Vec::new();
    let mut buffer = [0; 4096];
    let closed = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) if Instant::now() < deadline => {}
            Err(_) => break false,
        }
    };
    Exchange {
        response: String::from_utf8_lossy(&raw).into_owned(),
        closed,
    }
}

/// Like [`exchange`], but writes `request` in pieces of `piece` bytes with
/// a pause after each, so the gateway reads them one at a time.
fn exchange_in_pieces(address: SocketAddr, request: &[u8], piece: usize) -> Exchange {
    let mut stream = TcpStream::connect(address).expect("connect to the gateway");
    stream.set_nodelay(true).expect("disable Nagle's algorithm");
    for part in request.chunks(piece) {
        if stream.write_all(part).is_err() {
            // The gateway closed the connection; read what it sent.
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    read_until_closed(stream)
}

/// A request for a path that the policy denies, appended after the body of
/// each case: it must never reach the upstream.
fn hidden_request(token: &str) -> String {
    format!("GET /api/admin/smuggled HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\n\r\n")
}

/// Framing cases: a name, then the head lines after the request line and
/// the body, both sent as given.
const REJECTED: [(&str, &str, &str); 27] = [
    (
        "te_chunked_then_identity",
        "transfer-encoding: chunked, identity\r\n",
        "0\r\n\r\n",
    ),
    (
        "te_identity_then_chunked",
        "transfer-encoding: identity, chunked\r\n",
        "0\r\n\r\n",
    ),
    (
        "te_gzip_then_chunked",
        "transfer-encoding: gzip, chunked\r\n",
        "0\r\n\r\n",
    ),
    (
        "te_chunked_twice",
        "transfer-encoding: chunked, chunked\r\n",
        "0\r\n\r\n",
    ),
    (
        "te_repeated_lines",
        "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
        "0\r\n\r\n",
    ),
    (
        "te_chunked_then_xchunked_line",
        "transfer-encoding: chunked\r\ntransfer-encoding: x\r\n",
        "0\r\n\r\n",
    ),
    (
        "te_xchunked",
        "transfer-encoding: xchunked\r\n",
        "0\r\n\r\n",
    ),
    (
        "te_quoted",
        "transfer-encoding: \"chunked\"\r\n",
        "0\r\n\r\n",
    ),
    (
        "te_space_before_colon",
        "transfer-encoding : chunked\r\n",
        "0\r\n\r\n",
    ),
    (
        "te_vertical_tab",
        "transfer-encoding: \x0bchunked\r\n",
        "0\r\n\r\n",
    ),
    (
        "te_folded",
        "transfer-encoding:\r\n chunked\r\n",
        "0\r\n\r\n",
    ),
    (
        "te_trailing_comma",
        "transfer-encoding: chunked,\r\n",
        "0\r\n\r\n",
    ),
    (
        "cl_differing_duplicates",
        "content-length: 4\r\ncontent-length: 5\r\n",
        "abcde",
    ),
    ("cl_list_differing", "content-length: 4, 5\r\n", "abcde"),
    ("cl_plus_sign", "content-length: +4\r\n", "abcd"),
    ("cl_minus_sign", "content-length: -4\r\n", "abcd"),
    ("cl_hex", "content-length: 0x4\r\n", "abcd"),
    ("cl_inner_space", "content-length: 4 4\r\n", "abcd"),
    (
        "cl_overflow",
        "content-length: 99999999999999999999999\r\n",
        "abcd",
    ),
    (
        "obs_fold_in_header",
        "x-note: first\r\n second\r\ncontent-length: 4\r\n",
        "abcd",
    ),
    (
        "nul_in_header_value",
        "x-note: a\0b\r\ncontent-length: 4\r\n",
        "abcd",
    ),
    (
        "cr_in_header_value",
        "x-note: a\rb\r\ncontent-length: 4\r\n",
        "abcd",
    ),
    (
        "chunk_size_overflow",
        "transfer-encoding: chunked\r\n",
        "fffffffffffffffffffff\r\nabcd\r\n0\r\n\r\n",
    ),
    (
        "chunk_size_negative",
        "transfer-encoding: chunked\r\n",
        "-4\r\nabcd\r\n0\r\n\r\n",
    ),
    (
        "chunk_size_not_hex",
        "transfer-encoding: chunked\r\n",
        "zz\r\nabcd\r\n0\r\n\r\n",
    ),
    (
        "chunk_missing_crlf",
        "transfer-encoding: chunked\r\n",
        "4\r\nabcdXX0\r\n\r\n",
    ),
    (
        "chunk_size_with_space",
        "transfer-encoding: chunked\r\n",
        "4 4\r\nabcd\r\n0\r\n\r\n",
    ),
];

/// Asserts that `request` got one 400 (or none), that the gateway closed
/// the connection, and that no complete request reached the upstream.
fn assert_rejected(setup: &Setup, name: &str, request: &[u8]) {
    let before = setup.upstream.received().len();
    let exchange = exchange(setup.server.agent_addr, request);
    let statuses = exchange.statuses();
    assert!(
        statuses.is_empty() || statuses == [400],
        "{name}: expected one 400 or none, got {statuses:?}\n{}",
        exchange.response
    );
    assert!(
        exchange.closed,
        "{name}: the gateway kept the connection open"
    );
    let after = setup.upstream.received();
    let forwarded: Vec<&Received> = after[before..].iter().filter(|r| r.complete).collect();
    assert!(
        forwarded.is_empty(),
        "{name}: the upstream received {forwarded:?}"
    );
}

#[test]
fn malformed_framing_rejected_and_closed() {
    let setup = setup();
    for (name, headers, body) in REJECTED {
        let request = format!(
            "POST /api/allowed/upload HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\n{headers}\r\n{body}{hidden}",
            token = setup.token,
            hidden = hidden_request(&setup.token),
        );
        assert_rejected(&setup, name, request.as_bytes());
    }
    assert_no_hidden_request(&setup);
}

#[test]
fn te_in_http10_rejected() {
    let setup = setup();
    let request = format!(
        "POST /api/allowed/upload HTTP/1.0\r\nhost: gateway\r\nauthorization: Bearer {token}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{hidden}",
        token = setup.token,
        hidden = hidden_request(&setup.token),
    );
    let exchange = exchange(setup.server.agent_addr, request.as_bytes());
    assert!(exchange.closed, "the gateway kept the connection open");
    assert!(
        exchange.response.is_empty() || exchange.response.starts_with("HTTP/1.1 400"),
        "{}",
        exchange.response
    );
    assert!(setup.upstream.received().is_empty());
}

/// Head fields that put both `Content-Length` and `Transfer-Encoding` in
/// one request, in any order, case or repetition. Each case is sent with a
/// hidden request placed where a reader that trusted `Content-Length` would
/// find it.
const LENGTH_WITH_CHUNKED: [(&str, &str); 7] = [
    (
        "cl_then_te",
        "content-length: 4\r\ntransfer-encoding: chunked\r\n",
    ),
    (
        "te_then_cl",
        "transfer-encoding: chunked\r\ncontent-length: 4\r\n",
    ),
    (
        "capitals",
        "Content-Length: 4\r\nTRANSFER-ENCODING: chunked\r\n",
    ),
    (
        "repeated",
        "transfer-encoding: chunked\r\ncontent-length: 4\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n",
    ),
    (
        "fields apart",
        "content-length: 4\r\nx-note: a\r\ntransfer-encoding: chunked\r\n",
    ),
    (
        "invalid_length_after_te",
        "transfer-encoding: chunked\r\ncontent-length: x\r\n",
    ),
    ("bare_line_feeds", "content-length: 4\ntransfer-encoding: chunked\n"),
];

/// Builds a request with `fields` whose chunked body ends before a hidden
/// request.
fn length_with_chunked(token: &str, fields: &str) -> String {
    format!(
        "POST /api/allowed/upload HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\n{fields}\r\n0\r\n\r\n{hidden}",
        hidden = hidden_request(token),
    )
}

/// Asserts that the exchange got exactly one 400, then the close, and that
/// the upstream received nothing since `before` requests.
fn assert_rejected_alone(setup: &Setup, name: &str, exchange: &Exchange, before: usize) {
    assert_eq!(
        exchange.statuses(),
        [400],
        "{name}: expected exactly one 400\n{}",
        exchange.response
    );
    assert!(
        exchange.response.contains("\r\nconnection: close\r\n"),
        "{name}: the response does not announce the close\n{}",
        exchange.response
    );
    assert!(
        exchange.closed,
        "{name}: the gateway kept the connection open"
    );
    let received = setup.upstream.received();
    assert_eq!(
        received.len(),
        before,
        "{name}: the upstream received {:?}",
        &received[before..]
    );
}

/// Both `Content-Length` and `Transfer-Encoding` get one 400 and the close
/// before any byte of the request reaches the checkpoint, so nothing is
/// forwarded and the hidden request never reaches the checkpoint.
#[test]
fn content_length_with_chunked_rejected() {
    let setup = setup();
    for (name, fields) in LENGTH_WITH_CHUNKED {
        let before = setup.upstream.received().len();
        let request = length_with_chunked(&setup.token, fields);
        let exchange = exchange(setup.server.agent_addr, request.as_bytes());
        assert_rejected_alone(&setup, name, &exchange, before);
    }
    assert!(
        setup
            .server
            .wait_for_stderr("rejected an HTTP/1.1 request head", Duration::from_secs(5)),
        "the rejection was not logged\n{}",
        setup.server.logs()
    );
    assert_no_hidden_request(&setup);
}

/// The same requests arriving a few bytes at a time, so the head is split
/// across many reads.
#[test]
fn content_length_with_chunked_rejected_in_pieces() {
    let setup = setup();
    for (name, fields) in LENGTH_WITH_CHUNKED {
        let before = setup.upstream.received().len();
        let request = length_with_chunked(&setup.token, fields);
        let exchange = exchange_in_pieces(setup.server.agent_addr, request.as_bytes(), 3);
        assert_rejected_alone(&setup, name, &exchange, before);
    }
    assert_no_hidden_request(&setup);
}

/// Requests pipelined before the rejected one are forwarded and get their
/// responses. The rejected one and the hidden request after it are not
/// forwarded.
#[test]
fn content_length_with_chunked_rejected_after_pipelined() {
    let setup = setup();
    let first = format!(
        "POST /api/allowed/first HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\ntransfer-encoding: chunked\r\n\r\n4;note=x\r\nabcd\r\n0\r\n\r\n",
        token = setup.token,
    );
    for (name, fields) in LENGTH_WITH_CHUNKED {
        let before = setup.upstream.received().len();
        let request = format!("{first}{}", length_with_chunked(&setup.token, fields));
        let exchange = exchange(setup.server.agent_addr, request.as_bytes());
        assert_eq!(
            exchange.statuses(),
            [200, 400],
            "{name}\n{}",
            exchange.response
        );
        assert!(
            exchange.closed,
            "{name}: the gateway kept the connection open"
        );
        let received = setup.upstream.received();
        let forwarded: Vec<&str> = received[before..]
            .iter()
            .map(|request| request.request_line.as_str())
            .collect();
        assert_eq!(forwarded, ["POST /allowed/first HTTP/1.1"], "{name}");
        assert!(received[before].complete, "{name}");
    }
    assert_no_hidden_request(&setup);
}

/// The control case: a well-formed chunked request followed by a pipelined
/// request. Both are checked; the denied one gets 403.
#[test]
fn pipelined_request_checked_by_policy() {
    let setup = setup();
    let request = format!(
        "POST /api/allowed/upload HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n{hidden}",
        token = setup.token,
        hidden = hidden_request(&setup.token).replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n"),
    );
    let exchange = exchange(setup.server.agent_addr, request.as_bytes());
    assert_eq!(exchange.statuses(), [200, 403], "{}", exchange.response);
    let received = setup.upstream.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].complete);
    assert_no_hidden_request(&setup);
}

/// An absolute-form target names another host; the gateway routes by the
/// path alone and the upstream sees its own host.
#[test]
fn absolute_form_target_keeps_upstream() {
    let setup = setup();
    let request = format!(
        "GET http://169.254.169.254/api/allowed/item HTTP/1.1\r\nhost: 169.254.169.254\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n",
        token = setup.token,
    );
    let exchange = exchange(setup.server.agent_addr, request.as_bytes());
    assert_eq!(exchange.statuses(), [200], "{}", exchange.response);
    let received = setup.upstream.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].request_line, "GET /allowed/item HTTP/1.1");
    let host: Vec<&str> = received[0]
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(host, [setup.upstream.address.to_string()]);
}

fn assert_no_hidden_request(setup: &Setup) {
    let received = setup.upstream.received();
    assert!(
        received
            .iter()
            .all(|r| !r.request_line.contains("smuggled")),
        "a hidden request reached the upstream: {received:?}"
    );
}
