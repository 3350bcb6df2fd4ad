//! Request framing checks that hyper's HTTP/1.1 parser leaves to the
//! application, run before the checkpoint reads anything else.
//!
//! hyper already rejects with 400: `Transfer-Encoding` whose last coding is
//! not `chunked`, `Transfer-Encoding` in HTTP/1.0, differing or non-numeric
//! `Content-Length` values, obsolete line folding and control bytes in
//! header values. It accepts, and this module rejects, any other coding
//! before `chunked` (`gzip, chunked`, `chunked, chunked`, repeated lines),
//! because the gateway removes `Transfer-Encoding` before forwarding and the
//! upstream would read a body that is still encoded.
//!
//! Errors in a chunked body (invalid sizes, a missing CRLF) surface only
//! while the body streams upstream. [`RequestBodyError`] marks them, so the
//! agent gets 400 and the upstream gets an aborted request that it never
//! processes.
//!
//! hyper also accepts a request with both `Content-Length` and
//! `Transfer-Encoding: chunked` and drops the length before the request
//! reaches the gateway. [`crate::head_guard`] rejects those on the byte
//! stream before hyper parses them, so over HTTP/1.1 such a request never
//! reaches this module.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::request::Parts;
use http::Version;

use crate::error::Rejection;

/// Rejects requests whose body framing the gateway and an upstream could
/// read differently. The rejection closes the connection.
pub fn check_framing(parts: &Parts) -> Result<(), Rejection> {
    let codings = transfer_codings(parts);
    if codings.is_empty() {
        return check_content_length(parts);
    }
    if parts.version != Version::HTTP_11 {
        return Err(bad_framing(format!(
            "Transfer-Encoding is not allowed in {:?} requests; send Content-Length",
            parts.version
        )));
    }
    if parts.headers.contains_key(CONTENT_LENGTH) {
        return Err(bad_framing(
            "the request has both Content-Length and Transfer-Encoding; send only one",
        ));
    }
    if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
        return Err(bad_framing(
            "Transfer-Encoding must be chunked alone; other transfer codings are not accepted",
        ));
    }
    Ok(())
}

/// Returns every coding of every `Transfer-Encoding` line, with empty list
/// elements kept so that `chunked,` counts as two codings.
fn transfer_codings(parts: &Parts) -> Vec<String> {
    parts
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            text.split(',')
                .map(|coding| coding.trim_matches([' ', '\t']).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Accepts a single `Content-Length` of plain digits, or repeats of the
/// same value, as RFC 9110, section 8.6 allows.
fn check_content_length(parts: &Parts) -> Result<(), Rejection> {
    let mut declared: Option<&[u8]> = None;
    for value in parts.headers.get_all(CONTENT_LENGTH) {
        let bytes = value.as_bytes();
        let digits = !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit);
        if !digits || declared.is_some_and(|first| first != bytes) {
            return Err(bad_framing(
                "Content-Length must be one decimal number; send a single valid value",
            ));
        }
        declared = Some(bytes);
    }
    Ok(())
}

/// A failure reading the agent's request body: invalid chunked framing,
/// or a body that ended before its declared length.
#[derive(Debug, thiserror::Error)]
#[error("the request body from the agent is malformed or incomplete")]
pub struct RequestBodyError(#[source] pub hyper::Error);

/// Tells whether an upstream request failed because the agent's request
/// body did.
pub fn is_request_body_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<RequestBodyError>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// Builds the rejection for a request body that failed while it streamed.
pub fn malformed_body() -> Rejection {
    bad_framing(
        "the request body is malformed or incomplete (invalid chunk size or framing, or fewer bytes than Content-Length); resend it well-formed",
    )
}

fn bad_framing(reason: impl Into<String>) -> Rejection {
    Rejection::bad_request(reason).closing_connection()
}

#[cfg(test)]
mod tests;
