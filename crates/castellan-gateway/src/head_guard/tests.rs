use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{Framing, HeadGuard, Scan, Violation, HTTP2_PREFACE, REJECTED_HEAD_END};

/// The bytes a guard handed to hyper, and why it ended the stream.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    delivered: Vec<u8>,
    violation: Option<Violation>,
}

/// Feeds `reads` to a fresh guard, one `scan` each.
fn feed<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut framing = Framing::new();
    let mut delivered = Vec::new();
    for read in reads {
        let mut bytes = read.to_vec();
        match framing.scan(&mut bytes) {
            Scan::Pass => delivered.extend_from_slice(&bytes),
            Scan::End { len, violation } => {
                delivered.extend_from_slice(&bytes[..len]);
                assert!(framing.has_ended(), "the guard goes on after {violation:?}");
                // hyper may read the rest of the ending a few bytes at a time.
                loop {
                    let ending = framing.take_ending(2);
                    if ending.is_empty() {
                        break;
                    }
                    delivered.extend_from_slice(ending);
                }
                return Outcome {
                    delivered,
                    violation: Some(violation),
                };
            }
        }
    }
    Outcome {
        delivered,
        violation: None,
    }
}

/// Asserts that `input` gives `expected` read whole, one byte per read and
/// split in two at every byte boundary.
fn assert_every_split(name: &str, input: &[u8], expected: &Outcome) {
    assert_eq!(&feed([input]), expected, "{name}: one read");
    assert_eq!(
        &feed(input.chunks(1)),
        expected,
        "{name}: one byte per read"
    );
    for at in 0..=input.len() {
        let (first, second) = input.split_at(at);
        assert_eq!(
            &feed([first, second]),
            expected,
            "{name}: reads split at byte {at}"
        );
    }
}

fn passed(input: &[u8]) -> Outcome {
    Outcome {
        delivered: input.to_vec(),
        violation: None,
    }
}

/// Builds the outcome of a head rejected at the line feed that ends at
/// byte `head_end` of `input`.
fn rejected_at(input: &[u8], head_end: usize, violation: Violation) -> Outcome {
    assert_eq!(input[head_end - 1], b'\n', "byte {head_end} ends no line");
    let mut delivered = input[..head_end - 1].to_vec();
    delivered.extend_from_slice(REJECTED_HEAD_END);
    Outcome {
        delivered,
        violation: Some(violation),
    }
}

/// Builds the outcome of a chunked body whose first rejected byte is the
/// last of `valid_prefix`.
fn chunk_rejected(input: &[u8], valid_prefix: &[u8]) -> Outcome {
    assert!(input.starts_with(valid_prefix));
    Outcome {
        delivered: valid_prefix.to_vec(),
        violation: Some(Violation::InvalidChunk),
    }
}

/// Returns the length of `input` up to and including the end of the first
/// head that contains `marker`.
fn head_end_after(input: &[u8], marker: &str) -> usize {
    let start = find(input, marker.as_bytes()).expect("marker in the input");
    [&b"\r\n\r\n"[..], b"\n\n", b"\n\r\n"]
        .iter()
        .filter_map(|end| find(&input[start..], end).map(|at| start + at + end.len()))
        .min()
        .expect("an end of head after the marker")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

const LAST_GET: &str = "GET /last HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n";

/// A head with both framing fields, sent as body data.
const SMUGGLED_HEAD: &str =
    "\r\n\r\nGET /x HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n";

/// Well-formed pipelines that every split must pass unchanged.
#[test]
fn valid_pipelines_pass_unchanged() {
    let cases: [(&str, String); 14] = [
        ("get", format!("GET / HTTP/1.1\r\nhost: a\r\n\r\n{LAST_GET}")),
        (
            "bare line feeds",
            format!("POST /a HTTP/1.1\nhost: a\ncontent-length: 3\n\nabc{LAST_GET}"),
        ),
        (
            "mixed line endings",
            format!("POST /a HTTP/1.1\r\nhost: a\ncontent-length: 2\r\n\nab{LAST_GET}"),
        ),
        (
            "content-length body that looks like smuggled heads",
            format!(
                "POST /a HTTP/1.1\r\ncontent-length: {}\r\n\r\n{SMUGGLED_HEAD}{LAST_GET}",
                SMUGGLED_HEAD.len()
            ),
        ),
        (
            "chunked with extensions, capital hex and trailers",
            format!(
                "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;name=value;q=\"a;b\"\r\nwiki\r\nA \t;x\r\n0123456789\r\n0;last\r\nx-trailer: 1\r\nx-other: two\r\n\r\n{LAST_GET}"
            ),
        ),
        (
            "chunk data that looks like smuggled heads",
            format!(
                "POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED_HEAD}\r\n0\r\n\r\n{LAST_GET}",
                SMUGGLED_HEAD.len()
            ),
        ),
        (
            "empty lines between requests",
            format!("\r\n\nGET / HTTP/1.1\r\n\r\n\r\n\r\n{LAST_GET}"),
        ),
        (
            "repeated equal content-length",
            format!("PUT /a HTTP/1.1\r\ncontent-length: 3\r\nContent-Length: 3\r\n\r\nxyz{LAST_GET}"),
        ),
        (
            "content-length with whitespace",
            format!("PUT /a HTTP/1.1\r\ncontent-length: \t 5 \t\r\n\r\n12345{LAST_GET}"),
        ),
        (
            "content-length zero",
            format!("POST /a HTTP/1.1\r\ncontent-length: 0\r\n\r\n{LAST_GET}"),
        ),
        (
            "expect 100-continue",
            format!("POST /a HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\nbody{LAST_GET}"),
        ),
        (
            "connect and upgrade",
            format!(
                "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com\r\n\r\nGET /ws HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n{LAST_GET}"
            ),
        ),
        (
            "http/1.0",
            format!("POST /a HTTP/1.0\r\ncontent-length: 2\r\n\r\nhi{LAST_GET}"),
        ),
        (
            "the preface after the first request",
            format!(
                "GET / HTTP/1.1\r\n\r\n{}{LAST_GET}",
                String::from_utf8_lossy(HTTP2_PREFACE)
            ),
        ),
    ];
    for (name, input) in cases {
        assert_every_split(name, input.as_bytes(), &passed(input.as_bytes()));
    }
}

/// Header names that only resemble the framing fields set no framing: the
/// bytes after each head are followed as the next head, so a head the guard
/// misread as framed would swallow the rejected head or fail as a chunk.
#[test]
fn similar_field_names_ignored() {
    let names = [
        "x-content-length: 99",
        "content-lengths: 99",
        "content-lengt: 99",
        "content-length-x: 99",
        "x-transfer-encoding: chunked",
        "transfer-encodings: chunked",
        "transfer-encodin: chunked",
        "content length: 99",
    ];
    for field in names {
        let input = format!(
            "GET / HTTP/1.1\r\n{field}\r\n\r\nPOST /smuggle HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
        );
        let input = input.as_bytes();
        let end = head_end_after(input, "/smuggle");
        assert_every_split(
            field,
            input,
            &rejected_at(input, end, Violation::ContentLengthWithTransferEncoding),
        );
    }
}

/// Heads with both `Content-Length` and `Transfer-Encoding`, in any order,
/// case, repetition or line ending, and whatever their values.
#[test]
fn content_length_with_transfer_encoding_rejected() {
    let cases = [
        ("cl then te", "content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n"),
        ("te then cl", "transfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n"),
        ("capitals", "Content-Length: 4\r\nTRANSFER-ENCODING: Chunked\r\n\r\n"),
        ("mixed case", "cOnTeNt-LeNgTh: 4\r\ntRaNsFeR-eNcOdInG: chunked\r\n\r\n"),
        (
            "repeated",
            "transfer-encoding: chunked\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n",
        ),
        ("other coding", "transfer-encoding: gzip\r\ncontent-length: 4\r\n\r\n"),
        ("empty values", "transfer-encoding:\r\ncontent-length:\r\n\r\n"),
        ("invalid length after te", "transfer-encoding: chunked\r\ncontent-length: 4x\r\n\r\n"),
        ("zero length", "content-length: 0\r\ntransfer-encoding: chunked\r\n\r\n"),
        ("bare line feeds", "content-length: 4\ntransfer-encoding: chunked\n\n"),
        ("lf then crlf end", "content-length: 4\r\ntransfer-encoding: chunked\n\r\n"),
        ("crlf then lf end", "content-length: 4\r\ntransfer-encoding: chunked\r\n\n"),
        (
            "fields apart",
            "content-length: 4\r\nhost: gateway\r\nx-note: a:b\r\ntransfer-encoding: chunked\r\naccept: */*\r\n\r\n",
        ),
        ("no space after colon", "content-length:4\r\ntransfer-encoding:chunked\r\n\r\n"),
    ];
    for (name, fields) in cases {
        let input = format!(
            "POST /smuggle HTTP/1.1\r\n{fields}4\r\nabcd\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\n\r\n"
        );
        let input = input.as_bytes();
        let end = head_end_after(input, "/smuggle");
        assert_every_split(
            name,
            input,
            &rejected_at(input, end, Violation::ContentLengthWithTransferEncoding),
        );
    }
}

/// The rejected head comes after a request of each kind of framing, so the
/// guard found where each body ended.
#[test]
fn pipelined_head_rejected_after_each_framing() {
    let first_requests = [
        "GET /first HTTP/1.1\r\nhost: a\r\n\r\n",
        "POST /first HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello",
        "POST /first HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\n",
    ];
    for first in first_requests {
        let input = format!(
            "{first}POST /smuggle HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n"
        );
        let input = input.as_bytes();
        let end = head_end_after(input, "/smuggle");
        assert_every_split(
            first,
            input,
            &rejected_at(input, end, Violation::ContentLengthWithTransferEncoding),
        );
    }
}

/// `Content-Length` values that hyper rejects end the stream at the head
/// too, because the guard could not find the end of the body.
#[test]
fn invalid_content_length_rejected() {
    let cases = [
        ("plus sign", "content-length: +4\r\n"),
        ("minus sign", "content-length: -4\r\n"),
        ("hex", "content-length: 0x4\r\n"),
        ("list", "content-length: 4, 4\r\n"),
        ("inner space", "content-length: 4 4\r\n"),
        ("empty", "content-length:\r\n"),
        ("blank", "content-length:  \r\n"),
        ("overflow", "content-length: 18446744073709551616\r\n"),
        (
            "differing repeats",
            "content-length: 4\r\ncontent-length: 5\r\n",
        ),
        (
            "invalid repeat",
            "content-length: 4\r\ncontent-length: 4a\r\n",
        ),
    ];
    for (name, fields) in cases {
        let input = format!("POST /bad HTTP/1.1\r\n{fields}\r\nabcd");
        let input = input.as_bytes();
        let end = head_end_after(input, "/bad");
        assert_every_split(
            name,
            input,
            &rejected_at(input, end, Violation::InvalidContentLength),
        );
    }
}

/// Chunked framing that hyper's decoder rejects ends the stream right
/// after the rejected byte, which hyper then rejects itself.
#[test]
fn invalid_chunks_end_after_rejected_byte() {
    let head = "POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n";
    let cases = [
        ("not hex", "zz\r\nabcd\r\n0\r\n\r\n", "z"),
        ("negative", "-4\r\nabcd\r\n0\r\n\r\n", "-"),
        ("empty size", "\r\nabcd\r\n0\r\n\r\n", "\r"),
        ("inner space", "4 4\r\nabcd\r\n0\r\n\r\n", "4 4"),
        ("bare lf after size", "4\nabcd\r\n0\r\n\r\n", "4\n"),
        ("cr without lf", "4\rabcd\r\n0\r\n\r\n", "4\ra"),
        ("lf in extension", "4;a\nabcd\r\n0\r\n\r\n", "4;a\n"),
        (
            "missing crlf after data",
            "4\r\nabcdXX0\r\n\r\n",
            "4\r\nabcdX",
        ),
        ("bare lf after data", "4\r\nabcd\n0\r\n\r\n", "4\r\nabcd\n"),
        (
            "bare lf ends trailers",
            "0\r\nx-t: 1\n\r\n",
            "0\r\nx-t: 1\n",
        ),
        ("bare lf ends body", "0\r\n\n", "0\r\n\n"),
        ("cr without lf at end", "0\r\n\rX", "0\r\n\rX"),
        (
            "size over 64 bits",
            "10000000000000000\r\nabcd\r\n0\r\n\r\n",
            "10000000000000000",
        ),
    ];
    for (name, body, valid_through) in cases {
        let input = format!("{head}{body}");
        let prefix = format!("{head}{valid_through}");
        assert_every_split(
            name,
            input.as_bytes(),
            &chunk_rejected(input.as_bytes(), prefix.as_bytes()),
        );
    }
}

/// The largest chunk size that fits in 64 bits is accepted, like hyper
/// accepts it.
#[test]
fn largest_chunk_size_accepted() {
    let input = b"POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nabcd";
    assert_every_split("16 hex digits", input, &passed(input));
}

#[test]
fn http2_preface_passes_everything() {
    let mut input = HTTP2_PREFACE.to_vec();
    // Bytes that would be a rejected head on an HTTP/1.1 connection.
    input.extend_from_slice(
        b"POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    );
    assert_every_split("preface", &input, &passed(&input));
}

/// A connection that starts like the preface but differs is HTTP/1.1 from
/// its first byte on.
#[test]
fn partial_preface_followed_as_http1() {
    let cases = [
        "POST /smuggle HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
        "PRI /smuggle HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nGET /smuggle HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
    ];
    for input in cases {
        let input = input.as_bytes();
        let end = head_end_after(input, "/smuggle");
        assert_every_split(
            "partial preface",
            input,
            &rejected_at(input, end, Violation::ContentLengthWithTransferEncoding),
        );
    }
}

/// Bodies far larger than one read pass in bulk, and the head after them
/// is still found.
#[test]
fn large_bodies_followed_to_next_head() {
    const SIZE: usize = 8 * 1024 * 1024;
    let data = vec![b'x'; SIZE];
    let smuggled =
        b"POST /smuggle HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";

    let mut by_length = format!("PUT /big HTTP/1.1\r\ncontent-length: {SIZE}\r\n\r\n").into_bytes();
    by_length.extend_from_slice(&data);
    by_length.extend_from_slice(smuggled);

    let mut chunked = b"PUT /big HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for part in data.chunks(3 * 1024 * 1024) {
        chunked.extend_from_slice(format!("{:X}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    chunked.extend_from_slice(smuggled);

    for (name, input) in [("content-length", by_length), ("chunked", chunked)] {
        let expected = rejected_at(
            &input,
            input.len(),
            Violation::ContentLengthWithTransferEncoding,
        );
        assert_eq!(feed([&input[..]]), expected, "{name}: one read");
        assert_eq!(
            feed(input.chunks(16 * 1024)),
            expected,
            "{name}: 16 KiB reads"
        );
        assert_eq!(
            feed(input.chunks(4093)),
            expected,
            "{name}: odd-sized reads"
        );
    }
}

#[test]
fn largest_content_length_accepted() {
    let mut input = b"PUT /big HTTP/1.1\r\ncontent-length: 18446744073709551615\r\n\r\n".to_vec();
    input.extend_from_slice(&[b'x'; 64 * 1024]);
    assert_eq!(feed(input.chunks(1000)), passed(&input));
}

#[test]
fn ended_guard_delivers_nothing_more() {
    let mut framing = Framing::new();
    let mut head =
        b"POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\nGET".to_vec();
    let head_len = head.len() - 3;
    assert_eq!(
        framing.scan(&mut head),
        Scan::End {
            len: head_len,
            violation: Violation::ContentLengthWithTransferEncoding
        }
    );
    assert!(framing.has_ended());
    assert_eq!(
        framing.scan(&mut b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        Scan::End {
            len: 0,
            violation: Violation::ContentLengthWithTransferEncoding
        }
    );
}

/// Random well-formed pipelines read in random pieces pass unchanged, and
/// a rejected head after them is found where it ends.
#[test]
fn random_pipelines_followed() {
    let mut rng = StdRng::seed_from_u64(0x6361_7374);
    for round in 0..300 {
        let mut input = Vec::new();
        for _ in 0..rng.gen_range(1..6) {
            random_request(&mut rng, &mut input);
        }
        let valid_len = input.len();
        assert_eq!(
            feed(random_pieces(&mut rng, &input)),
            passed(&input),
            "round {round}: {}",
            String::from_utf8_lossy(&input)
        );

        input.extend_from_slice(
            b"POST /smuggle HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n",
        );
        let end = input.len();
        input.extend_from_slice(b"0\r\n\r\nGET /hidden HTTP/1.1\r\n\r\n");
        assert!(end > valid_len);
        assert_eq!(
            feed(random_pieces(&mut rng, &input)),
            rejected_at(&input, end, Violation::ContentLengthWithTransferEncoding),
            "round {round}: {}",
            String::from_utf8_lossy(&input)
        );
    }
}

fn random_pieces<'a>(rng: &mut StdRng, input: &'a [u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let len = rng.gen_range(1..=rest.len().min(40));
        let (piece, tail) = rest.split_at(len);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// Appends one well-formed request with a random framing, line ending,
/// field order and body to `out`, and returns its body length.
fn random_request(rng: &mut StdRng, out: &mut Vec<u8>) -> usize {
    let eol = if rng.gen_bool(0.3) { "\n" } else { "\r\n" };
    let alphabet = b"\r\n:;0aZ \t";
    let body: Vec<u8> = (0..rng.gen_range(0..200))
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
        .collect();

    let mut fields = vec![
        "host: gateway".to_owned(),
        "x-note: content-length: 5".to_owned(),
        "accept: */*".to_owned(),
    ];
    let framing = rng.gen_range(0..3);
    match framing {
        0 => {}
        1 => fields.push(format!("Content-Length: {}", body.len())),
        _ => fields.push("Transfer-Encoding: chunked".to_owned()),
    }
    let rotate = rng.gen_range(0..fields.len());
    fields.rotate_left(rotate);

    // httparse skips empty lines before a request line.
    if rng.gen_bool(0.2) {
        out.extend_from_slice(eol.as_bytes());
    }
    out.extend_from_slice(format!("POST /r HTTP/1.1{eol}").as_bytes());
    for field in &fields {
        out.extend_from_slice(format!("{field}{eol}").as_bytes());
    }
    out.extend_from_slice(eol.as_bytes());

    match framing {
        0 => 0,
        1 => {
            out.extend_from_slice(&body);
            body.len()
        }
        _ => {
            let mut rest = &body[..];
            while !rest.is_empty() {
                let len = rng.gen_range(1..=rest.len());
                let extension = if rng.gen_bool(0.3) { ";a=b" } else { "" };
                out.extend_from_slice(format!("{len:x}{extension}\r\n").as_bytes());
                out.extend_from_slice(&rest[..len]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[len..];
            }
            out.extend_from_slice(b"0\r\n");
            if rng.gen_bool(0.3) {
                out.extend_from_slice(b"x-checksum: 1\r\n");
            }
            out.extend_from_slice(b"\r\n");
            body.len()
        }
    }
}

/// The response and requests of one raw connection to a hyper server
/// behind a guard.
struct Served {
    response: String,
    /// Each request the service received: method, path and body length.
    requests: Vec<String>,
}

impl Served {
    fn statuses(&self) -> Vec<u16> {
        self.response
            .match_indices("HTTP/1.1 ")
            .filter_map(|(at, prefix)| self.response.get(at + prefix.len()..at + prefix.len() + 3))
            .filter_map(|code| code.parse().ok())
            .collect()
    }
}

/// Serves one connection with hyper-util's auto builder behind a guard,
/// configured as the agent listener is.
fn serve_guarded(io: DuplexStream, requests: Arc<Mutex<Vec<String>>>) {
    let service = service_fn(move |request: Request<Incoming>| {
        let requests = Arc::clone(&requests);
        async move {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let body = match request.into_body().collect().await {
                Ok(body) => body.to_bytes().len().to_string(),
                Err(_) => "failed".to_owned(),
            };
            requests
                .lock()
                .expect("request log lock")
                .push(format!("{method} {path} {body}"));
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    let guard = HeadGuard::new(io, IpAddr::V4(Ipv4Addr::LOCALHOST), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .max_buf_size(crate::server::MAX_HEADER_BYTES)
            .max_headers(crate::server::MAX_HEADERS);
        let _ = builder.serve_connection(TokioIo::new(guard), service).await;
    });
}

/// Sends `input` over a pipe that carries `pipe_bytes` bytes at a time,
/// and reads the response until the server closes the connection.
async fn exchange(input: &[u8], pipe_bytes: usize) -> Served {
    let (client, server) = tokio::io::duplex(pipe_bytes);
    let requests = Arc::new(Mutex::new(Vec::new()));
    serve_guarded(server, Arc::clone(&requests));
    let (mut reader, mut writer) = tokio::io::split(client);
    let input = input.to_vec();
    let writing = tokio::spawn(async move {
        // The server may close before reading everything.
        let _ = writer.write_all(&input).await;
        writer
    });
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut response))
        .await
        .expect("the server closed the connection")
        .expect("read the response");
    drop(writing.await);
    let requests = requests.lock().expect("request log lock").clone();
    Served {
        response: String::from_utf8_lossy(&response).into_owned(),
        requests,
    }
}

/// hyper reads random well-formed pipelines behind the guard with the
/// bodies the guard followed.
#[tokio::test]
async fn hyper_serves_random_pipelines() {
    let mut rng = StdRng::seed_from_u64(0x6775_6172);
    for round in 0..40 {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..rng.gen_range(1..6) {
            let body = random_request(&mut rng, &mut input);
            expected.push(format!("POST /r {body}"));
        }
        input.extend_from_slice(LAST_GET.as_bytes());
        expected.push("GET /last 0".to_owned());
        let pipe_bytes = if rng.gen_bool(0.5) {
            rng.gen_range(1..16)
        } else {
            64 * 1024
        };
        let served = exchange(&input, pipe_bytes).await;
        assert_eq!(
            served.requests,
            expected,
            "round {round}: {}",
            String::from_utf8_lossy(&input)
        );
        assert_eq!(
            served.statuses(),
            vec![200; expected.len()],
            "round {round}"
        );
    }
}

/// hyper responds to a guarded head with both fields with one 400 and closes,
/// with pipes from one byte wide to wide enough for the whole request.
#[tokio::test]
async fn hyper_rejects_guarded_head() {
    let cases = [
        "POST /smuggle HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\n\r\n",
        "POST /smuggle HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\n\r\n",
        "POST /smuggle HTTP/1.1\nhost: a\ncontent-length: 4\ntransfer-encoding: chunked\n\n0\r\n\r\nGET /hidden HTTP/1.1\r\n\r\n",
        "POST /smuggle HTTP/1.1\r\nhost: a\r\ncontent-length: +4\r\n\r\nabcdGET /hidden HTTP/1.1\r\n\r\n",
    ];
    for input in cases {
        for pipe_bytes in [1, 7, 64 * 1024] {
            let served = exchange(input.as_bytes(), pipe_bytes).await;
            assert_eq!(served.statuses(), [400], "{input:?}: {}", served.response);
            assert!(
                served.response.contains("\r\nconnection: close\r\n"),
                "{input:?}: {}",
                served.response
            );
            assert!(
                served.requests.is_empty(),
                "{input:?}: {:?}",
                served.requests
            );
        }
    }
}

/// Pipelined requests before the rejected one are served; it and the ones
/// after it are not.
#[tokio::test]
async fn hyper_serves_requests_before_rejected_head() {
    let input = concat!(
        "GET /one HTTP/1.1\r\nhost: a\r\n\r\n",
        "POST /two HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\nx-t: 1\r\n\r\n",
        "POST /three HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\nhi",
        "POST /smuggle HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "GET /hidden HTTP/1.1\r\nhost: a\r\n\r\n",
    );
    for pipe_bytes in [1, 64 * 1024] {
        let served = exchange(input.as_bytes(), pipe_bytes).await;
        assert_eq!(
            served.statuses(),
            [200, 200, 200, 400],
            "{}",
            served.response
        );
        assert_eq!(
            served.requests,
            ["GET /one 0", "POST /two 3", "POST /three 2"]
        );
    }
}

/// Valid requests reach the service with their bodies intact.
#[tokio::test]
async fn hyper_serves_valid_pipeline() {
    let input = concat!(
        "POST /chunked HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n",
        "4;name=\"v\"\r\nwiki\r\n5\r\npedia\r\n0\r\nx-checksum: 9\r\n\r\n",
        "\r\nPUT /length HTTP/1.1\nhost: a\ncontent-length: 6\n\n123456",
        "GET /last HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    );
    for pipe_bytes in [1, 5, 64 * 1024] {
        let served = exchange(input.as_bytes(), pipe_bytes).await;
        assert_eq!(served.statuses(), [200, 200, 200], "{}", served.response);
        assert_eq!(
            served.requests,
            ["POST /chunked 9", "PUT /length 6", "GET /last 0"]
        );
    }
}

/// A chunk size that hyper rejects ends the body, so the service gets a
/// failed body and nothing after it is served.
#[tokio::test]
async fn hyper_fails_body_after_invalid_chunk() {
    let input = "POST /c HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\n\r\n";
    let served = exchange(input.as_bytes(), 64 * 1024).await;
    assert_eq!(served.requests, ["POST /c failed"]);
}

#[tokio::test]
async fn expect_continue_passes() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let requests = Arc::new(Mutex::new(Vec::new()));
    serve_guarded(server, Arc::clone(&requests));
    let (mut reader, mut writer) = tokio::io::split(client);
    writer
        .write_all(b"PUT /e HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 5\r\nconnection: close\r\n\r\n")
        .await
        .expect("write the head");
    let mut interim = vec![0; 25];
    tokio::time::timeout(Duration::from_secs(10), reader.read_exact(&mut interim))
        .await
        .expect("hyper sends 100 Continue")
        .expect("read 100 Continue");
    assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    writer.write_all(b"hello").await.expect("write the body");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut response))
        .await
        .expect("the server closed the connection")
        .expect("read the response");
    assert!(response.starts_with(b"HTTP/1.1 200 "));
    assert_eq!(*requests.lock().expect("request log lock"), ["PUT /e 5"]);
}

#[tokio::test]
async fn http2_connection_passes() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let requests = Arc::new(Mutex::new(Vec::new()));
    serve_guarded(server, Arc::clone(&requests));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request = Request::post("http://gateway/h2")
        .body(Full::new(Bytes::from_static(b"hello h2")))
        .expect("a valid request");
    let response = sender.send_request(request).await.expect("HTTP/2 response");
    assert_eq!(response.status(), 200);
    assert_eq!(*requests.lock().expect("request log lock"), ["POST /h2 8"]);
}

/// A client that connects and sends nothing is cut off once the first-byte
/// deadline passes; one that sends in time is read normally.
#[tokio::test]
async fn silent_connection_times_out() {
    let (mut client, server) = tokio::io::duplex(64);
    let mut guard = HeadGuard::new(
        server,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        Duration::from_millis(50),
    );
    let mut buffer = [0u8; 16];
    let error = guard
        .read(&mut buffer)
        .await
        .expect_err("a silent client must time out");
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);

    let (mut client_in_time, server) = tokio::io::duplex(64);
    let mut guard = HeadGuard::new(
        server,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        Duration::from_millis(50),
    );
    client_in_time
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    let read = guard
        .read(&mut buffer)
        .await
        .expect("the first byte arrived in time");
    assert!(read > 0);
    // After the first byte, the deadline no longer applies: hyper's own
    // head and idle timeouts take over.
    tokio::time::sleep(Duration::from_millis(80)).await;
    client_in_time
        .write_all(b"host: x\r\n")
        .await
        .expect("write");
    assert!(guard.read(&mut buffer).await.expect("later reads wait") > 0);
    client.shutdown().await.expect("shutdown");
}
