//! The inspect stage: reads the start of a request body before it is
//! forwarded, when something in the body can change what the request does.
//!
//! - Form bodies (`application/x-www-form-urlencoded`, `multipart/form-data`)
//!   are read whole and rejected when they carry a `_method` field, the
//!   method override that web frameworks read from forms: a role allowed to
//!   `POST` must not be able to `DELETE` that way.
//! - On connections with `dlp = "alert"` or `"block"`, the body is scanned
//!   with the provider rules of the secret scanner. A match is recorded in
//!   the audit record by rule id; in block mode the request gets 403 and is
//!   not forwarded.
//!
//! Other requests stream to the upstream without being held.

use std::sync::LazyLock;

use castellan_model::{Connection, DlpMode};
use castellan_scan::{RuleSet, Scanner};
use http::header::{HeaderMap, CONTENT_TYPE};

use crate::authenticate::decode_component;
use crate::body::{ReadAhead, RequestBody};
use crate::error::Rejection;

/// Rules used on request bodies: every built-in rule except the generic
/// ones for assignments to secret-looking names, which fire on ordinary
/// prose and code that agents send to model APIs.
static BODY_SCANNER: LazyLock<Result<Scanner, String>> = LazyLock::new(|| {
    let specs = castellan_scan::rules::builtin_specs()
        .into_iter()
        .filter(|spec| !spec.generic)
        .collect();
    RuleSet::from_specs(specs)
        .map(Scanner::new)
        .map_err(|error| error.to_string())
});

/// Compiles the body scanner now instead of on the first request that
/// needs it; returns a description of the failure, if any.
pub fn prepare() -> Result<(), String> {
    BODY_SCANNER.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// Form encodings that frameworks read `_method` from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    UrlEncoded,
    Multipart,
}

/// The inspect stage's reading plan for one request.
pub struct Plan {
    form: Option<Form>,
    dlp: DlpMode,
    /// Bytes to read before deciding: the whole of a form, or the body up
    /// to the data-loss limit.
    limit: u64,
    dlp_max_bytes: u64,
    /// A `Content-Encoding` other than identity, which hides the body from
    /// the scan.
    content_coding: Option<String>,
}

/// Outcome of an inspection that let the request through.
#[derive(Debug, Default)]
pub struct Inspected {
    /// Ids of the scanner rules that matched, each once, in rule order.
    pub findings: Vec<String>,
}

impl Plan {
    /// Returns what to read of a request to `connection`, or `None` when
    /// the body can stream unread.
    pub fn for_request(
        connection: &Connection,
        method: &http::Method,
        headers: &HeaderMap,
    ) -> Option<Plan> {
        let form = form_kind(method, headers);
        let dlp = connection.dlp.mode;
        if form.is_none() && dlp == DlpMode::Off {
            return None;
        }
        let mut limit = 0;
        if form.is_some() {
            limit = connection.max_request_bytes;
        }
        if dlp != DlpMode::Off {
            limit = limit.max(connection.dlp.max_bytes);
        }
        let content_coding = headers
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).trim().to_owned())
            .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
        Some(Plan {
            form,
            dlp,
            limit,
            dlp_max_bytes: connection.dlp.max_bytes,
            content_coding,
        })
    }

    /// Rejects a block-mode request whose declared length is already too
    /// large to scan, before any of its body is read.
    pub fn check_declared_length(
        &self,
        connection: &Connection,
        length: Option<u64>,
    ) -> Result<(), Rejection> {
        match length {
            Some(length) if self.dlp == DlpMode::Block && length > self.dlp_max_bytes => {
                Err(too_large_to_scan(connection, self.dlp_max_bytes))
            }
            _ => Ok(()),
        }
    }

    /// Reads the start of `body`, which keeps it for forwarding, and
    /// decides whether the request may go on.
    pub async fn inspect(
        &self,
        connection: &Connection,
        body: &mut RequestBody,
    ) -> Result<Inspected, InspectError> {
        let read = body
            .read_ahead(self.limit)
            .await
            .map_err(InspectError::Body)?;
        self.decide(connection, &read)
    }

    fn decide(&self, connection: &Connection, read: &ReadAhead) -> Result<Inspected, InspectError> {
        if let Some(form) = &self.form {
            // The limit for forms is the connection's body limit, which
            // the body enforces, so a form is always read whole.
            if has_method_field(form, &read.data) {
                return Err(InspectError::Rejected(Rejection::bad_request(
                    "the form body has a _method field, which overrides the HTTP method and is not accepted; send the real method",
                )));
            }
        }
        if self.dlp == DlpMode::Off {
            return Ok(Inspected::default());
        }

        if let Some(coding) = &self.content_coding {
            return Err(InspectError::Rejected(Rejection::unsupported_media_type(format!(
                "the request body has content-encoding {coding:?}; connection {:?} scans request bodies for secrets (dlp) and cannot read encoded ones; send it unencoded",
                connection.name
            ))));
        }
        let scanned_whole = read.complete && read.data.len() as u64 <= self.dlp_max_bytes;
        if self.dlp == DlpMode::Block && !scanned_whole {
            return Err(InspectError::Rejected(too_large_to_scan(
                connection,
                self.dlp_max_bytes,
            )));
        }

        let end = read.data.len().min(self.dlp_max_bytes as usize);
        let scanner = BODY_SCANNER.as_ref().map_err(|error| {
            InspectError::Rejected(Rejection::unavailable(format!(
                "the data-loss check of connection {:?} cannot run: its rules failed to compile ({error})",
                connection.name
            )))
        })?;
        let mut findings: Vec<String> = Vec::new();
        for finding in scanner.scan_bytes(&read.data[..end]) {
            if !findings.contains(&finding.rule_id) {
                findings.push(finding.rule_id);
            }
        }

        if self.dlp == DlpMode::Block && !findings.is_empty() {
            let rejection = Rejection::secret_in_body(format!(
                "the request body contains a secret matched by scanner rule {}; connection {:?} blocks secrets leaving in request bodies (dlp = \"block\"); remove it, or store it in the vault and let Castellan inject it",
                quoted_list(&findings),
                connection.name
            ));
            return Err(InspectError::Blocked {
                rejection,
                findings,
            });
        }
        if !scanned_whole {
            tracing::debug!(
                connection = %connection.name,
                scanned = end,
                "request body larger than dlp_max_bytes; only its start was scanned"
            );
        }
        Ok(Inspected { findings })
    }
}

/// The reason an inspected request was not forwarded.
pub enum InspectError {
    /// Reading the body failed; the caller maps this like a streaming error.
    Body(Box<dyn std::error::Error + Send + Sync>),
    Rejected(Rejection),
    /// The data-loss check found secrets in block mode.
    Blocked {
        rejection: Rejection,
        findings: Vec<String>,
    },
}

fn too_large_to_scan(connection: &Connection, max_bytes: u64) -> Rejection {
    Rejection::payload_too_large(format!(
        "the request body is larger than {max_bytes} bytes, the most that connection {:?} scans for secrets (dlp_max_bytes); with dlp = \"block\" an unscanned body is not forwarded; send a smaller body or raise dlp_max_bytes",
        connection.name
    ))
}

fn quoted_list(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("{id:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Returns the form encoding a framework could read from a request.
///
/// Read as leniently as the most lenient framework: the media type ends at
/// `;` or `,`, every `multipart/*` type counts, and a `POST` without a
/// `Content-Type` is parsed as a URL-encoded form (Rack does both).
fn form_kind(method: &http::Method, headers: &HeaderMap) -> Option<Form> {
    let mut values = headers.get_all(CONTENT_TYPE).iter().peekable();
    if values.peek().is_none() {
        return (method == http::Method::POST).then_some(Form::UrlEncoded);
    }
    let mut found = None;
    for value in values {
        let text = String::from_utf8_lossy(value.as_bytes());
        let media_type = text.split([';', ',']).next().unwrap_or("").trim();
        if media_type.is_empty()
            || media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded")
        {
            found = found.or(Some(Form::UrlEncoded));
        } else if media_type
            .get(..10)
            .is_some_and(|start| start.eq_ignore_ascii_case("multipart/"))
        {
            found = Some(Form::Multipart);
        }
    }
    found
}

/// Tells whether a form body has a field named `_method`.
fn has_method_field(form: &Form, body: &[u8]) -> bool {
    match form {
        Form::UrlEncoded => String::from_utf8_lossy(body).split('&').any(|pair| {
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            is_method_name(&decode_component(key))
        }),
        Form::Multipart => multipart_has_method_field(body),
    }
}

fn is_method_name(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("_method")
}

/// Looks for a `Content-Disposition` line whose `name` is `_method`
/// anywhere in a multipart body. Every line counts, not only those after a
/// boundary: a lenient server may still find a field whose boundary is
/// wrong or missing. The price is a rejected upload whose file content
/// quotes such a header.
fn multipart_has_method_field(body: &[u8]) -> bool {
    // Unfold continuation lines, so `;\r\n name="_method"` reads as one
    // header line.
    let text = String::from_utf8_lossy(body);
    let mut unfolded: Vec<String> = Vec::new();
    for line in text.lines() {
        match unfolded.last_mut() {
            Some(previous) if line.starts_with([' ', '\t']) => previous.push_str(line),
            _ => unfolded.push(line.to_owned()),
        }
    }
    unfolded
        .iter()
        .filter(|line| {
            line.trim_start()
                .get(..20)
                .is_some_and(|start| start.eq_ignore_ascii_case("content-disposition:"))
        })
        .any(|line| disposition_names_method(line))
}

/// Tells whether a `Content-Disposition` line has `name="_method"`.
fn disposition_names_method(line: &str) -> bool {
    line.split(';').skip(1).any(|parameter| {
        let Some((name, value)) = parameter.split_once('=') else {
            return false;
        };
        name.trim().eq_ignore_ascii_case("name") && is_method_name(value.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        headers
    }

    #[test]
    fn form_kinds() {
        let post = http::Method::POST;
        let cases = [
            (
                "application/x-www-form-urlencoded; charset=utf-8",
                Some(Form::UrlEncoded),
            ),
            (
                "application/x-www-form-urlencoded, charset=utf-8",
                Some(Form::UrlEncoded),
            ),
            (
                "Multipart/Form-Data; boundary=\"xyz\"",
                Some(Form::Multipart),
            ),
            ("multipart/mixed; boundary=xyz", Some(Form::Multipart)),
            ("multipart/related; boundary=xyz", Some(Form::Multipart)),
            ("", Some(Form::UrlEncoded)),
            ("application/json", None),
        ];
        for (content_type, expected) in cases {
            assert_eq!(
                form_kind(&post, &headers(content_type)),
                expected,
                "{content_type}"
            );
        }
        assert_eq!(form_kind(&post, &HeaderMap::new()), Some(Form::UrlEncoded));
        assert_eq!(form_kind(&http::Method::PUT, &HeaderMap::new()), None);
    }

    #[test]
    fn urlencoded_method_fields_found() {
        let found = [
            "_method=DELETE",
            "a=1&_method=DELETE",
            "a=1&%5Fmethod=PUT",
            "_%6Dethod=PUT",
            "_METHOD=PATCH",
            "+_method=DELETE",
            "_method",
        ];
        for body in found {
            assert!(
                has_method_field(&Form::UrlEncoded, body.as_bytes()),
                "{body}"
            );
        }
        let clean = ["a=_method", "method=DELETE", "x_method=1", ""];
        for body in clean {
            assert!(
                !has_method_field(&Form::UrlEncoded, body.as_bytes()),
                "{body}"
            );
        }
    }

    #[test]
    fn multipart_method_fields_found() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--b\r\ncontent-disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n";
        assert!(has_method_field(&Form::Multipart, body.as_bytes()));
        let unquoted = "--b\nContent-Disposition: form-data; name=_method\n\nPUT\n--b--\n";
        assert!(has_method_field(&Form::Multipart, unquoted.as_bytes()));
        let file_name = "--b\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"_method\"\r\n\r\nx\r\n--b--\r\n";
        assert!(!has_method_field(&Form::Multipart, file_name.as_bytes()));
        let folded =
            "--b\r\nContent-Disposition: form-data;\r\n name=\"_method\"\r\n\r\nPUT\r\n--b--\r\n";
        assert!(has_method_field(&Form::Multipart, folded.as_bytes()));
        let clean = "--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nname=\"_method\" in text\r\n--b--\r\n";
        assert!(!has_method_field(&Form::Multipart, clean.as_bytes()));
    }
}
