//! HTTP clients for the end-to-end tests: `ureq` for ordinary requests and
//! timed streaming reads, and a raw `TcpStream` exchange for requests that a
//! client library would rewrite and for byte-exact response searches.

// Each test binary compiles this module and uses only some of its items.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Limit for one whole request. The slowest upstream call in the suite
/// (httpbin's `/drip` over 4 s) stays well below it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A complete response: status, every header line and the body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case, in the order received, with repeats kept.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// Returns the first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Parses the body as JSON, panicking with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| {
            panic!(
                "status {} body is not JSON ({error}): {}",
                self.status, self.body
            )
        })
    }

    /// Returns every header line and the body as one string, for searches.
    pub fn everything(&self) -> String {
        let mut text = String::new();
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\n"));
        }
        text.push_str(&self.body);
        text
    }
}

fn client() -> ureq::Agent {
    // Redirects stay visible to the tests: the gateway must not follow them
    // and the client must not hide them.
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(REQUEST_TIMEOUT)
        .build()
}

/// Sends `method url` with `headers` and an optional body. Any status,
/// including 4xx and 5xx, is returned as a [`Reply`].
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let mut request = client().request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{method} {url} failed without a response: {error}"),
    };
    into_reply(response)
}

/// Sends `GET url` with `headers`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send("GET", url, headers, None)
}

/// Sends `GET url` with `Authorization: Bearer TOKEN`.
pub fn get_as(url: &str, token: &str) -> Reply {
    let authorization = format!("Bearer {token}");
    get(url, &[("authorization", &authorization)])
}

/// Sends `method url` with `Authorization: Bearer TOKEN` and no body.
pub fn send_as(method: &str, url: &str, token: &str) -> Reply {
    let authorization = format!("Bearer {token}");
    send(method, url, &[("authorization", &authorization)], None)
}

fn into_reply(response: ureq::Response) -> Reply {
    let status = response.status();
    let mut headers = Vec::new();
    for name in response.headers_names() {
        for value in response.all(&name) {
            headers.push((name.to_ascii_lowercase(), value.to_owned()));
        }
    }
    let body = response
        .into_string()
        .unwrap_or_else(|error| panic!("failed to read a status {status} body: {error}"));
    Reply {
        status,
        headers,
        body,
    }
}

/// One piece of a streamed body and when it arrived, measured from the
/// moment the request was sent.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Duration,
    pub bytes: Vec<u8>,
}

/// A response whose body is read piece by piece.
pub struct Streaming {
    pub status: u16,
    started: Instant,
    reader: Box<dyn Read + Send>,
}

impl Streaming {
    /// Reads the next piece of the body, or `None` at its end.
    pub fn next_piece(&mut self) -> Option<Arrival> {
        let mut buffer = [0_u8; 4096];
        let read = self
            .reader
            .read(&mut buffer)
            .unwrap_or_else(|error| panic!("failed to read a streamed body: {error}"));
        (read > 0).then(|| Arrival {
            at: self.started.elapsed(),
            bytes: buffer[..read].to_vec(),
        })
    }

    /// Returns the time since the request was sent, on the same clock as
    /// [`Arrival::at`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Reads the rest of the body, piece by piece.
    pub fn rest(&mut self) -> Vec<Arrival> {
        std::iter::from_fn(|| self.next_piece()).collect()
    }
}

/// Sends a request and returns as soon as the response head arrives, so the
/// caller can time each piece of the body.
pub fn stream(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Streaming {
    let started = Instant::now();
    let mut request = client().request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("{method} {url} failed without a response: {error}"),
    };
    Streaming {
        status: response.status(),
        started,
        reader: response.into_reader(),
    }
}

/// Writes `request` (a complete HTTP/1.1 request, which should carry
/// `Connection: close`) to `addr` and returns every byte of the response.
pub fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .expect("set the read timeout");
    stream
        .write_all(request.as_bytes())
        .expect("write the raw request");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .expect("read the raw response until the gateway closes");
    String::from_utf8_lossy(&raw).into_owned()
}

/// Returns the status code of a raw HTTP/1.1 response.
pub fn raw_status(raw: &str) -> u16 {
    let status_line = raw.lines().next().unwrap_or_default();
    status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("invalid status line {status_line:?} in {raw:?}"))
}
