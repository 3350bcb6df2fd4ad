//! A blocking HTTP/1.1 keep-alive client for the open-loop load generator.
//!
//! It sends one `GET` at a time on one connection and reads the whole
//! response, framed by `Content-Length` or chunked encoding, so that the
//! generator times the complete response. It is written for the loopback
//! servers of the benches, not for arbitrary peers: it does no TLS and no
//! redirects.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest response head the client accepts.
const MAX_HEAD: usize = 64 * 1024;

/// Headers the client parses in one response.
const MAX_HEADERS: usize = 64;

/// The address of a server and the request sent to it, as bytes on the wire.
#[derive(Clone, Debug)]
pub struct Target {
    pub address: SocketAddr,
    /// The complete request, head and empty body, ready to write.
    pub request: Vec<u8>,
}

impl Target {
    /// Parses `http://HOST:PORT/PATH` and builds a `GET` with `headers`,
    /// each a `Name: value` line.
    pub fn new(url: &str, headers: &[String]) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("unsupported URL {url:?}: expected http://HOST:PORT/PATH"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, "/"),
        };
        let address: SocketAddr = authority.parse().map_err(|_| {
            format!("unsupported address {authority:?} in {url:?}: expected an IP address and a port, such as 127.0.0.1:8080")
        })?;
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n");
        for header in headers {
            let Some((name, value)) = header.split_once(':') else {
                return Err(format!(
                    "invalid header {header:?}: expected \"Name: value\""
                ));
            };
            if name.trim().is_empty() || header.contains(['\r', '\n']) {
                return Err(format!(
                    "invalid header {header:?}: expected \"Name: value\" on one line"
                ));
            }
            request.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
        }
        request.push_str("\r\n");
        Ok(Target {
            address,
            request: request.into_bytes(),
        })
    }
}

/// One keep-alive connection and the bytes read past the last response.
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Start of the unread bytes in `buffer`.
    read: usize,
}

/// The parts of one response that the generator checks.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body_len: usize,
    /// Whether the server closes the connection after this response.
    pub close: bool,
}

impl Connection {
    /// Connects to `address`. A read or write that waits longer than
    /// `timeout` fails, so a server that stops responding cannot stall the
    /// caller forever.
    pub fn open(address: SocketAddr, timeout: Duration) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Connection::from_stream(stream))
    }

    fn from_stream(stream: TcpStream) -> Connection {
        Connection {
            stream,
            buffer: Vec::with_capacity(8 * 1024),
            read: 0,
        }
    }

    /// Writes `request` and reads the response to its end.
    pub fn exchange(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request).map_err(timed_out)?;
        self.read_response()
    }

    fn read_response(&mut self) -> io::Result<Response> {
        let (status, framing, close, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buffer[self.read..]) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = response.code.unwrap_or(0);
                    // An interim response (100 Continue, 103 Early Hints) has
                    // no body and precedes the final one.
                    if (100..200).contains(&status) && status != 101 {
                        self.read += head_len;
                        continue;
                    }
                    let (mut framing, close) = framing(response.headers, response.version)?;
                    // RFC 9112, section 6.3: these responses end with their
                    // head, whatever their headers contain.
                    if status == 204 || status == 304 {
                        framing = Some(Framing::Length(0));
                    }
                    let framing = framing.ok_or_else(|| {
                        invalid("the response has neither Content-Length nor chunked encoding, but this client reads only framed responses")
                    })?;
                    break (status, framing, close, head_len);
                }
                Ok(httparse::Status::Partial) => {
                    if self.buffer.len() - self.read > MAX_HEAD {
                        return Err(invalid("the response head is larger than 64 KiB"));
                    }
                    self.fill()?;
                }
                Err(error) => return Err(invalid(&format!("malformed response head: {error}"))),
            }
        };
        self.read += head_len;
        let body_len = match framing {
            Framing::Length(length) => {
                self.skip(length)?;
                length
            }
            Framing::Chunked => self.skip_chunks()?,
        };
        Ok(Response {
            status,
            body_len,
            close,
        })
    }

    /// Consumes `length` body bytes.
    fn skip(&mut self, mut length: usize) -> io::Result<()> {
        loop {
            let available = (self.buffer.len() - self.read).min(length);
            self.read += available;
            length -= available;
            if length == 0 {
                return Ok(());
            }
            self.fill()?;
        }
    }

    /// Consumes a chunked body with its trailers and returns its length.
    fn skip_chunks(&mut self) -> io::Result<usize> {
        let mut total = 0usize;
        loop {
            let line = self.line()?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| invalid(&format!("invalid chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers end with an empty line.
                while !self.line()?.is_empty() {}
                return Ok(total);
            }
            self.skip(size)?;
            total += size;
            if !self.line()?.is_empty() {
                return Err(invalid("chunk data is not followed by CRLF"));
            }
        }
    }

    /// Consumes one CRLF-terminated line and returns it without the CRLF.
    fn line(&mut self) -> io::Result<String> {
        loop {
            let unread = &self.buffer[self.read..];
            if let Some(end) = unread.windows(2).position(|pair| pair == b"\r\n") {
                let line = String::from_utf8_lossy(&unread[..end]).into_owned();
                self.read += end + 2;
                return Ok(line);
            }
            if unread.len() > MAX_HEAD {
                return Err(invalid("a chunk line is longer than 64 KiB"));
            }
            self.fill()?;
        }
    }

    /// Reads more bytes, first moving the unread ones to the front.
    fn fill(&mut self) -> io::Result<()> {
        if self.read > 0 {
            self.buffer.drain(..self.read);
            self.read = 0;
        }
        let start = self.buffer.len();
        self.buffer.resize(start + 16 * 1024, 0);
        let count = self.stream.read(&mut self.buffer[start..]);
        let count = match count {
            Ok(count) => count,
            Err(error) => {
                self.buffer.truncate(start);
                return Err(timed_out(error));
            }
        };
        self.buffer.truncate(start + count);
        if count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection before the response ended",
            ));
        }
        Ok(())
    }
}

enum Framing {
    Length(usize),
    Chunked,
}

/// Returns the body's framing, if the headers set one, and whether the
/// server closes the connection after this response. An HTTP/1.0 response
/// closes it unless it sends `Connection: keep-alive`.
fn framing(
    headers: &[httparse::Header<'_>],
    version: Option<u8>,
) -> io::Result<(Option<Framing>, bool)> {
    let mut framing = None;
    let mut length = None;
    let mut close = false;
    let mut keep_alive = false;
    for header in headers {
        let value = String::from_utf8_lossy(header.value);
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = value.trim();
            let parsed: usize = match text.parse() {
                Ok(parsed) if text.bytes().all(|byte| byte.is_ascii_digit()) => parsed,
                _ => return Err(invalid(&format!("invalid Content-Length {value:?}"))),
            };
            // Differing lengths leave the end of the body ambiguous.
            if length.is_some_and(|previous| previous != parsed) {
                return Err(invalid(
                    "the response has conflicting Content-Length headers",
                ));
            }
            length = Some(parsed);
            framing.get_or_insert(Framing::Length(parsed));
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.trim().eq_ignore_ascii_case("chunked") {
                return Err(invalid(&format!("unsupported Transfer-Encoding {value:?}")));
            }
            framing = Some(Framing::Chunked);
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    if version == Some(0) && !keep_alive {
        close = true;
    }
    Ok((framing, close))
}

/// Converts a socket timeout, which Linux reports as `EAGAIN` (`WouldBlock`),
/// to a `TimedOut` error with a message that names the timeout.
fn timed_out(error: io::Error) -> io::Error {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            "the server did not respond within the timeout",
        ),
        _ => error,
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// Serves `responses` in order on one accepted connection, each after
    /// reading one request head, and returns the request heads it read.
    fn serve(responses: Vec<Vec<u8>>) -> (SocketAddr, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut heads = Vec::new();
            for response in responses {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    stream.read_exact(&mut byte).unwrap();
                    head.push(byte[0]);
                }
                heads.push(String::from_utf8(head).unwrap());
                // Split the response to exercise partial reads.
                let (first, second) = response.split_at(response.len() / 2);
                stream.write_all(first).unwrap();
                stream.flush().unwrap();
                thread::sleep(std::time::Duration::from_millis(5));
                stream.write_all(second).unwrap();
            }
            heads
        });
        (address, server)
    }

    #[test]
    fn exchange_reads_length_and_chunked_bodies() {
        let responses = vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: 1\r\n\r\n".to_vec(),
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        ];
        let (address, server) = serve(responses);
        let url = format!("http://{address}/v1/items?id=4");
        let target = Target::new(&url, &["Authorization: Bearer t".to_owned()]).unwrap();
        let mut connection = Connection::open(target.address, Duration::from_secs(5)).unwrap();
        let responses: Vec<Response> = (0..3)
            .map(|_| connection.exchange(&target.request).unwrap())
            .collect();
        assert_eq!(
            responses,
            vec![
                Response {
                    status: 200,
                    body_len: 5,
                    close: false
                },
                Response {
                    status: 403,
                    body_len: 19,
                    close: false
                },
                Response {
                    status: 204,
                    body_len: 0,
                    close: true
                },
            ]
        );
        let heads = server.join().unwrap();
        assert_eq!(
            heads[0],
            format!(
                "GET /v1/items?id=4 HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer t\r\n\r\n"
            )
        );
    }

    #[test]
    fn exchange_handles_interim_bodiless_http10() {
        let responses = vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n".to_vec(),
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ];
        let (address, server) = serve(responses);
        let target = Target::new(&format!("http://{address}/"), &[]).unwrap();
        let mut connection = Connection::open(target.address, Duration::from_secs(5)).unwrap();
        let no_content = connection.exchange(&target.request).unwrap();
        assert_eq!(no_content.status, 204);
        assert_eq!(no_content.body_len, 0);
        assert!(!no_content.close);
        let not_modified = connection.exchange(&target.request).unwrap();
        assert_eq!(not_modified.status, 304);
        assert_eq!(not_modified.body_len, 0);
        // HTTP/1.0 closes the connection unless the server sends keep-alive.
        let http10 = connection.exchange(&target.request).unwrap();
        assert_eq!(http10.body_len, 2);
        assert!(http10.close);
        server.join().unwrap();
    }

    #[test]
    fn exchange_rejects_conflicting_lengths() {
        let (address, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
        ]);
        let target = Target::new(&format!("http://{address}/"), &[]).unwrap();
        let mut connection = Connection::open(target.address, Duration::from_secs(5)).unwrap();
        let error = connection.exchange(&target.request).unwrap_err();
        server.join().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        assert!(error.to_string().contains("conflicting"), "{error}");
    }

    #[test]
    fn exchange_times_out_on_silent_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        // Accepts and reads the request but never responds.
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            thread::sleep(Duration::from_secs(2));
        });
        let target = Target::new(&format!("http://{address}/"), &[]).unwrap();
        let mut connection = Connection::open(address, Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        let error = connection.exchange(&target.request).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "{error}");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(error.to_string().contains("timeout"), "{error}");
        server.join().unwrap();
    }

    #[test]
    fn exchange_rejects_truncated_body() {
        let (address, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec()
        ]);
        let target = Target::new(&format!("http://{address}/"), &[]).unwrap();
        let mut connection = Connection::open(target.address, Duration::from_secs(5)).unwrap();
        let error = connection.exchange(&target.request).unwrap_err();
        server.join().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    }

    #[test]
    fn target_rejects_bad_urls_and_headers() {
        let error = Target::new("https://127.0.0.1:1/", &[]).unwrap_err();
        assert!(
            error.contains("\"https://127.0.0.1:1/\"") && error.contains("http://HOST:PORT/PATH"),
            "{error}"
        );
        let error = Target::new("http://localhost:80/", &[]).unwrap_err();
        assert!(
            error.contains("\"localhost:80\"") && error.contains("IP address"),
            "{error}"
        );
        let error = Target::new("http://127.0.0.1:1/", &["NoColon".to_owned()]).unwrap_err();
        assert!(error.contains("\"NoColon\""), "{error}");
        let error = Target::new("http://127.0.0.1:1/", &["A: b\r\nC: d".to_owned()]).unwrap_err();
        assert!(error.contains("one line"), "{error}");
    }
}
