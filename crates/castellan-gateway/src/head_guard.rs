//! A guard on each agent connection's byte stream that rejects HTTP/1.1
//! requests carrying both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper 1.13 accepts such a request: it drops `Content-Length`, reads the
//! body as chunked and closes the connection after the response, so the
//! gateway never learns that both fields were present. RFC 9112, section
//! 6.3 gives `Transfer-Encoding` precedence, and adds that such a message
//! ought to be handled as an error because it may be an attempt at request
//! smuggling.
//!
//! The guard sits between the socket (or the TLS stream) and hyper and
//! follows the request framing as the bytes pass. It reads each head up to
//! the line feed that ends it, then the body by its `Content-Length` or its
//! chunked coding, up to where the next pipelined head starts. It passes
//! each byte on in the read that brought it, so hyper's header read timeout
//! and its 431 for heads over the buffer limit work as before.
//!
//! In place of the line feed that would end a head with both fields, the
//! guard hands hyper a NUL byte and an empty line, then the end of the
//! stream. hyper responds with 400 and `Connection: close` and closes the
//! connection, and no byte of that request or of any request after it
//! reaches the service. A `Content-Length` that hyper would also reject ends
//! the stream the same way. In a chunked body the guard cannot follow, the
//! stream ends right after the first byte that hyper's decoder rejects.
//!
//! Connections that open with the HTTP/2 preface pass unchanged.
//!
//! NOTE: bytes after a `CONNECT` or `Upgrade` request are followed as
//! HTTP/1.1 too. That is safe because hyper stops reading a connection
//! after a 101 or a 2xx to `CONNECT`, and the gateway never takes over such
//! a connection. A listener that serves upgrades must stop the guard there.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The first bytes of every HTTP/2 connection (RFC 9113, section 3.4).
/// hyper-util's auto builder serves HTTP/2 when a connection starts with
/// them and HTTP/1.1 otherwise.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes handed to hyper in place of the line feed that would end a
/// rejected head. hyper has then read a line feed, or a line feed and a
/// carriage return, inside the header section. httparse 1.10 rejects a NUL
/// there, because it is neither a header name character nor the line feed
/// that must follow a carriage return, and hyper responds to that error
/// with 400. The empty line after the NUL is for hyper 1.13's quick scan
/// for the end of a head (`is_complete_fast`). Without it, hyper waits for
/// more bytes before it parses again, reads the end of the stream and
/// closes the connection without a response.
const REJECTED_HEAD_END: &[u8] = b"\0\r\n\r\n";

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";

/// An agent connection's IO with the request framing checked on the way to
/// hyper. Writes pass unchanged.
pub struct HeadGuard<I> {
    io: I,
    framing: Framing,
    /// The agent's address, for the log line of a rejection.
    client_ip: IpAddr,
    /// Deadline for the connection's first byte. hyper's head timeout starts
    /// only once its HTTP/1 parser runs, and the protocol detection before
    /// it waits without limit, so a client that connects and stays silent
    /// would hold the connection forever.
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> HeadGuard<I> {
    /// Wraps `io`; the connection fails with `TimedOut` unless its first
    /// byte arrives within `first_byte_timeout`.
    pub fn new(io: I, client_ip: IpAddr, first_byte_timeout: std::time::Duration) -> Self {
        HeadGuard {
            io,
            framing: Framing::new(),
            client_ip,
            first_byte: Some(Box::pin(tokio::time::sleep(first_byte_timeout))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for HeadGuard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.framing.has_ended() {
            // The rest of a replaced head end, then the end of the stream.
            buf.put_slice(this.framing.take_ending(buf.remaining()));
            return Poll::Ready(Ok(()));
        }
        let start = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(deadline) = this.first_byte.as_mut() {
            if read.is_ready() {
                this.first_byte = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing after connecting",
                )));
            }
        }
        ready!(read)?;
        if let Scan::End { len, violation } = this.framing.scan(&mut buf.filled_mut()[start..]) {
            buf.set_filled(start + len);
            buf.put_slice(this.framing.take_ending(buf.remaining()));
            log_violation(this.client_ip, violation);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for HeadGuard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Logs a rejection. A rejected head never reaches the checkpoint, so this
/// line is its only record. A malformed chunk reaches the checkpoint as a
/// failed request body, which it handles like any other.
fn log_violation(client_ip: IpAddr, violation: Violation) {
    match violation {
        Violation::ContentLengthWithTransferEncoding | Violation::InvalidContentLength => {
            tracing::info!(
                client.ip = %client_ip,
                reason = %violation,
                "rejected an HTTP/1.1 request head"
            );
        }
        Violation::InvalidChunk => {
            tracing::debug!(
                client.ip = %client_ip,
                reason = %violation,
                "ended an HTTP/1.1 request body"
            );
        }
    }
}

/// Reason the guard ended a connection's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    ContentLengthWithTransferEncoding,
    /// A `Content-Length` that is not one decimal number, or repeats that
    /// differ.
    InvalidContentLength,
    /// Chunked framing that hyper's decoder rejects.
    InvalidChunk,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Violation::ContentLengthWithTransferEncoding => {
                "the request has both Content-Length and Transfer-Encoding"
            }
            Violation::InvalidContentLength => {
                "the request has an invalid Content-Length or differing repeats"
            }
            Violation::InvalidChunk => "the chunked request body has invalid framing",
        })
    }
}

/// The part of one read that may go to hyper.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Every byte.
    Pass,
    /// The first `len` bytes, after which the stream ends.
    End { len: usize, violation: Violation },
}

/// HTTP/1.1 request framing, followed one read at a time.
#[derive(Debug)]
pub(crate) struct Framing {
    /// Bytes of the HTTP/2 preface matched so far, while the connection
    /// could still turn out to be HTTP/2.
    preface_matched: Option<usize>,
    state: State,
}

#[derive(Debug)]
enum State {
    Head(Head),
    /// A body delimited by `Content-Length`: the bytes still to come.
    Body(u64),
    Chunked(Chunked),
    /// An HTTP/2 connection, which the guard does not follow.
    Http2,
    /// A request was rejected. hyper gets the bytes of `ending` that it has
    /// not read yet, then the end of the stream.
    Ended {
        violation: Violation,
        ending: &'static [u8],
    },
}

impl Framing {
    pub(crate) fn new() -> Self {
        Framing {
            preface_matched: Some(0),
            state: State::Head(Head::new()),
        }
    }

    pub(crate) fn has_ended(&self) -> bool {
        matches!(self.state, State::Ended { .. })
    }

    /// Returns the next bytes, at most `room`, that hyper gets after a
    /// [`Scan::End`] and before the end of the stream.
    pub(crate) fn take_ending(&mut self, room: usize) -> &'static [u8] {
        let State::Ended { ending, .. } = &mut self.state else {
            return &[];
        };
        let (now, later) = ending.split_at(room.min(ending.len()));
        *ending = later;
        now
    }

    /// Follows the framing over `bytes`, the next bytes read from the agent.
    /// On a rejected head, the byte at `len - 1` of the returned
    /// [`Scan::End`] is overwritten with the first byte of
    /// [`REJECTED_HEAD_END`], and [`Framing::take_ending`] returns the rest.
    pub(crate) fn scan(&mut self, bytes: &mut [u8]) -> Scan {
        if self.match_preface(bytes) {
            return Scan::Pass;
        }
        let mut at = 0;
        while at < bytes.len() {
            match &mut self.state {
                State::Http2 => return Scan::Pass,
                State::Ended { violation, .. } => {
                    return Scan::End {
                        len: 0,
                        violation: *violation,
                    }
                }
                State::Body(remaining) => {
                    let consumed = consume_body(bytes.len() - at, remaining);
                    at += consumed;
                    if *remaining == 0 {
                        self.state = State::Head(Head::new());
                    }
                }
                State::Chunked(chunked) if chunked.step == ChunkStep::Data => {
                    let consumed = consume_body(bytes.len() - at, &mut chunked.size);
                    at += consumed;
                    if chunked.size == 0 {
                        chunked.step = ChunkStep::DataCr;
                    }
                }
                State::Chunked(chunked) => match chunked.step(bytes[at]) {
                    Ok(ended) => {
                        at += 1;
                        if ended {
                            self.state = State::Head(Head::new());
                        }
                    }
                    Err(violation) => {
                        // hyper's decoder rejects this byte itself.
                        self.state = State::Ended {
                            violation,
                            ending: &[],
                        };
                        return Scan::End {
                            len: at + 1,
                            violation,
                        };
                    }
                },
                State::Head(head) => match head.step(bytes[at]) {
                    None => at += 1,
                    Some(Ok(next)) => {
                        at += 1;
                        self.state = next;
                    }
                    Some(Err(violation)) => {
                        bytes[at] = REJECTED_HEAD_END[0];
                        self.state = State::Ended {
                            violation,
                            ending: &REJECTED_HEAD_END[1..],
                        };
                        return Scan::End {
                            len: at + 1,
                            violation,
                        };
                    }
                },
            }
        }
        Scan::Pass
    }

    /// Compares the start of the connection with the HTTP/2 preface, and
    /// returns whether `bytes` complete it. Until they differ, the same bytes
    /// are also followed as HTTP/1.1, where they never lead to a rejection
    /// because the preface has no header fields.
    fn match_preface(&mut self, bytes: &[u8]) -> bool {
        let Some(matched) = self.preface_matched else {
            return false;
        };
        let count = bytes.len().min(HTTP2_PREFACE.len() - matched);
        if bytes[..count] != HTTP2_PREFACE[matched..matched + count] {
            self.preface_matched = None;
            return false;
        }
        if matched + count < HTTP2_PREFACE.len() {
            self.preface_matched = Some(matched + count);
            return false;
        }
        self.preface_matched = None;
        self.state = State::Http2;
        true
    }
}

/// Consumes up to `remaining` of `available` body bytes, and returns how
/// many.
fn consume_body(available: usize, remaining: &mut u64) -> usize {
    let consumed = usize::try_from(*remaining).map_or(available, |left| left.min(available));
    *remaining -= consumed as u64;
    consumed
}

/// A request head read so far, as httparse reads it.
#[derive(Debug)]
struct Head {
    line: Line,
    content_length: Option<ContentLength>,
    transfer_encoding: bool,
}

/// Position of the next byte in a head. Lines end at a line feed, with or
/// without a carriage return before it, as in httparse. A carriage return
/// anywhere else makes hyper reject the head, so the guard does not track
/// it.
#[derive(Debug, Clone, Copy)]
enum Line {
    /// Empty lines before the request line, which httparse skips.
    Leading,
    /// The request line.
    Request,
    /// The start of a header line, or of the empty line that ends the head.
    Start,
    /// A carriage return at the start of a line.
    StartCr,
    Name(Name),
    ContentLengthValue(Digits),
    /// The rest of a line that does not matter for framing.
    Rest,
}

/// A header name read so far, compared with the two framing fields without
/// regard to case.
#[derive(Debug, Clone, Copy)]
struct Name {
    len: usize,
    content_length: bool,
    transfer_encoding: bool,
}

impl Name {
    const EMPTY: Name = Name {
        len: 0,
        content_length: true,
        transfer_encoding: true,
    };

    fn push(self, byte: u8) -> Name {
        let byte = byte.to_ascii_lowercase();
        Name {
            len: self.len + 1,
            content_length: self.content_length && CONTENT_LENGTH.get(self.len) == Some(&byte),
            transfer_encoding: self.transfer_encoding
                && TRANSFER_ENCODING.get(self.len) == Some(&byte),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentLength {
    Valid(u64),
    Invalid,
}

/// A `Content-Length` value read so far. hyper accepts decimal digits
/// only, between the optional whitespace that httparse trims.
#[derive(Debug, Clone, Copy)]
enum Digits {
    Before,
    In(u64),
    After(u64),
    Invalid,
}

impl Digits {
    fn push(self, byte: u8) -> Digits {
        match (self, byte) {
            (Digits::Before, b' ' | b'\t') => Digits::Before,
            (Digits::Before, b'0'..=b'9') => Digits::In(u64::from(byte - b'0')),
            (Digits::In(value), b'0'..=b'9') => value
                .checked_mul(10)
                .and_then(|value| value.checked_add(u64::from(byte - b'0')))
                .map_or(Digits::Invalid, Digits::In),
            (Digits::In(value) | Digits::After(value), b' ' | b'\t' | b'\r') => {
                Digits::After(value)
            }
            _ => Digits::Invalid,
        }
    }

    fn finish(self) -> ContentLength {
        match self {
            Digits::In(value) | Digits::After(value) => ContentLength::Valid(value),
            Digits::Before | Digits::Invalid => ContentLength::Invalid,
        }
    }
}

impl Head {
    fn new() -> Self {
        Head {
            line: Line::Leading,
            content_length: None,
            transfer_encoding: false,
        }
    }

    /// Follows one byte. At the line feed that ends the head, returns what
    /// comes next, or why the request is rejected.
    fn step(&mut self, byte: u8) -> Option<Result<State, Violation>> {
        self.line = match self.line {
            Line::Leading => match byte {
                b'\r' | b'\n' => Line::Leading,
                _ => Line::Request,
            },
            Line::Request | Line::Rest => match byte {
                b'\n' => Line::Start,
                _ => self.line,
            },
            Line::Start => match byte {
                b'\n' => return Some(self.finish()),
                b'\r' => Line::StartCr,
                _ => self.name_byte(Name::EMPTY, byte),
            },
            Line::StartCr => match byte {
                b'\n' => return Some(self.finish()),
                // httparse rejects a carriage return without a line feed.
                _ => Line::Rest,
            },
            Line::Name(name) => self.name_byte(name, byte),
            Line::ContentLengthValue(digits) => match byte {
                b'\n' => {
                    self.add_content_length(digits.finish());
                    Line::Start
                }
                _ => Line::ContentLengthValue(digits.push(byte)),
            },
        };
        None
    }

    fn name_byte(&mut self, name: Name, byte: u8) -> Line {
        match byte {
            b'\n' => Line::Start,
            b':' if name.content_length && name.len == CONTENT_LENGTH.len() => {
                Line::ContentLengthValue(Digits::Before)
            }
            b':' => {
                if name.transfer_encoding && name.len == TRANSFER_ENCODING.len() {
                    self.transfer_encoding = true;
                }
                Line::Rest
            }
            _ => {
                let name = name.push(byte);
                if name.content_length || name.transfer_encoding {
                    Line::Name(name)
                } else {
                    Line::Rest
                }
            }
        }
    }

    /// Records one `Content-Length` line. hyper accepts repeats of one
    /// value and rejects differing ones.
    fn add_content_length(&mut self, value: ContentLength) {
        self.content_length = Some(match (self.content_length, value) {
            (None, value) => value,
            (Some(ContentLength::Valid(first)), ContentLength::Valid(next)) if first == next => {
                ContentLength::Valid(first)
            }
            _ => ContentLength::Invalid,
        });
    }

    /// Decides on a complete head, with the body framing that hyper 1.13
    /// applies to the heads it accepts: `Transfer-Encoding` means chunked
    /// (hyper rejects it in HTTP/1.0 and when the last coding is not
    /// `chunked`), otherwise `Content-Length`, otherwise no body.
    fn finish(&self) -> Result<State, Violation> {
        match (self.transfer_encoding, self.content_length) {
            (true, Some(_)) => Err(Violation::ContentLengthWithTransferEncoding),
            (true, None) => Ok(State::Chunked(Chunked::new())),
            (false, Some(ContentLength::Invalid)) => Err(Violation::InvalidContentLength),
            (false, Some(ContentLength::Valid(length))) if length > 0 => Ok(State::Body(length)),
            (false, _) => Ok(State::Head(Head::new())),
        }
    }
}

/// A chunked body read so far, with the grammar of hyper 1.13's decoder.
/// Sizes are hexadecimal and fit in 64 bits, and spaces, tabs and
/// extensions may follow them. Every size line, chunk and trailer line ends
/// with CRLF, and a bare line feed is rejected anywhere.
#[derive(Debug)]
struct Chunked {
    step: ChunkStep,
    /// The size being read, then the data bytes still to come.
    size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkStep {
    SizeStart,
    Size,
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk's size line: a trailer field or the final CRLF.
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
}

impl Chunked {
    fn new() -> Self {
        Chunked {
            step: ChunkStep::SizeStart,
            size: 0,
        }
    }

    /// Follows one byte outside chunk data, and returns whether it ends
    /// the body.
    fn step(&mut self, byte: u8) -> Result<bool, Violation> {
        let invalid = Err(Violation::InvalidChunk);
        self.step = match (self.step, byte) {
            (ChunkStep::SizeStart, _) => {
                self.size = u64::from(hex_digit(byte).ok_or(Violation::InvalidChunk)?);
                ChunkStep::Size
            }
            (ChunkStep::Size | ChunkStep::SizeSpace, b' ' | b'\t') => ChunkStep::SizeSpace,
            (ChunkStep::Size | ChunkStep::SizeSpace, b';') => ChunkStep::Extension,
            (ChunkStep::Size | ChunkStep::SizeSpace | ChunkStep::Extension, b'\r') => {
                ChunkStep::SizeLf
            }
            (ChunkStep::Size, _) => {
                let digit = hex_digit(byte).ok_or(Violation::InvalidChunk)?;
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|size| size.checked_add(u64::from(digit)))
                    .ok_or(Violation::InvalidChunk)?;
                ChunkStep::Size
            }
            (ChunkStep::Extension, b'\n') => return invalid,
            (ChunkStep::Extension, _) => ChunkStep::Extension,
            (ChunkStep::SizeLf, b'\n') if self.size == 0 => ChunkStep::TrailerStart,
            (ChunkStep::SizeLf, b'\n') => ChunkStep::Data,
            (ChunkStep::DataCr, b'\r') => ChunkStep::DataLf,
            (ChunkStep::DataLf, b'\n') => ChunkStep::SizeStart,
            (ChunkStep::TrailerStart, b'\r') => ChunkStep::EndLf,
            (ChunkStep::TrailerStart | ChunkStep::Trailer, b'\n') => return invalid,
            (ChunkStep::Trailer, b'\r') => ChunkStep::TrailerLf,
            (ChunkStep::TrailerStart | ChunkStep::Trailer, _) => ChunkStep::Trailer,
            (ChunkStep::TrailerLf, b'\n') => ChunkStep::TrailerStart,
            (ChunkStep::EndLf, b'\n') => return Ok(true),
            _ => return invalid,
        };
        Ok(false)
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|digit| digit as u8)
}

#[cfg(test)]
mod tests;
