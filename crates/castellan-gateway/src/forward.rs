//! The inject and forward stages: rebuild the request for the connection's
//! fixed upstream with the agent's credentials removed and the vault's
//! credential attached, then stream the response back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use castellan_model::{AuditDurability, AuditFailure, TokenLocation};
use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::audit::{Completion, RequestFacts};
use crate::authenticate::decode_component;
use crate::body::{RequestBody, ResponseBody};
use crate::error::Rejection;
use crate::inspect::{InspectError, Plan};
use crate::proxy::{Authorized, Gateway, REQUEST_ID_HEADER};
use crate::redact::Redactor;
use crate::state::Snapshot;
use crate::upstream::{UpstreamBody, UpstreamError};

/// Headers that carry credentials. All of them are removed from forwarded
/// requests, whichever the connection uses: the injected credential is the
/// only one an upstream ever receives.
const CREDENTIAL_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-goog-api-key"),
];

/// Hop-by-hop headers (RFC 9110, section 7.6.1) and `host`, which the
/// client sets from the upstream URL.
///
/// Names, not strings, so that removing them skips parsing each one again
/// for every request and response.
const HOP_BY_HOP_HEADERS: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    HeaderName::from_static("http2-settings"),
];

/// Forwarding headers from the agent are not trusted and not passed on.
const FORWARDING_HEADERS: [HeaderName; 6] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-real-ip"),
];

pub async fn forward(
    gateway: &Gateway,
    snapshot: &Snapshot,
    mut authorized: Authorized<'_>,
    parts: Parts,
    body: Incoming,
    facts: RequestFacts,
) -> Response<ResponseBody> {
    let connection = authorized.connection;
    let slot = match gateway.audit.try_reserve() {
        Ok(slot) => Some(slot),
        Err(_) if connection.on_audit_backlog == AuditFailure::Open => {
            metrics::counter!("castellan_audit_fail_open_total").increment(1);
            None
        }
        Err(_) => {
            let rejection = Rejection::unavailable(
                "the audit log is not keeping up, so the request was not forwarded; retry shortly",
            );
            return gateway.reject(&facts, &rejection);
        }
    };
    let sent = Arc::new(AtomicU64::new(0));
    let in_flight = authorized.in_flight.take().map(Arc::new);
    let completion = Completion::new(
        facts,
        slot,
        gateway.audit.clone(),
        authorized.rule.clone(),
        Arc::clone(&sent),
        in_flight.clone(),
        snapshot.config.config.gateway.audit_durability,
    );
    let reject = |completion: Completion, rejection: Rejection| {
        let (facts, slot) = completion.take_slot();
        gateway.reject_with_slot(&facts, &rejection, slot)
    };

    let Some(client) = snapshot.config.client(&connection.name) else {
        return reject(
            completion,
            Rejection::unavailable("the connection is still loading; retry"),
        );
    };
    let exceeded = Arc::new(AtomicBool::new(false));
    let mut body = RequestBody::new(
        body,
        sent,
        connection.max_request_bytes,
        Arc::clone(&exceeded),
        in_flight,
    );
    let mut completion = completion;
    if let Some(plan) = Plan::for_request(connection, &parts.method, &parts.headers) {
        if let Err(rejection) =
            plan.check_declared_length(connection, crate::proxy::declared_length(&parts))
        {
            return reject(completion, rejection);
        }
        let timeout = connection.timeouts.response;
        let inspected = tokio::time::timeout(timeout, plan.inspect(connection, &mut body)).await;
        match inspected {
            Ok(Ok(inspected)) => {
                if !inspected.findings.is_empty() {
                    tracing::warn!(
                        request_id = %completion.facts().request_id,
                        agent = completion.facts().agent.as_deref().unwrap_or("-"),
                        connection = %connection.name,
                        rules = %inspected.findings.join(","),
                        "request body carries a secret; forwarded because the connection has dlp = \"alert\""
                    );
                }
                completion.facts_mut().findings = inspected.findings;
            }
            Ok(Err(InspectError::Body(_))) if exceeded.load(Ordering::Relaxed) => {
                let reason = format!(
                    "the request body exceeded {} bytes, the limit of connection {:?}",
                    connection.max_request_bytes, connection.name
                );
                return reject(completion, Rejection::payload_too_large(reason));
            }
            Ok(Err(InspectError::Body(error))) => {
                tracing::debug!(
                    request_id = %completion.facts().request_id,
                    error = %error_chain(error.as_ref()),
                    "request body failed while it was read for inspection"
                );
                return reject(completion, crate::framing::malformed_body());
            }
            Ok(Err(InspectError::Rejected(rejection))) => return reject(completion, rejection),
            Ok(Err(InspectError::Blocked {
                rejection,
                findings,
            })) => {
                completion.facts_mut().findings = findings;
                return reject(completion, rejection);
            }
            Err(_) => {
                let reason = format!(
                    "the request body did not arrive within {}; connection {:?} reads it before forwarding",
                    humantime_secs(timeout),
                    connection.name
                );
                return reject(completion, Rejection::request_timeout(reason));
            }
        }
    }
    let origin_form = client.sends_origin_form();
    let upstream_request =
        match build_request(&authorized, &parts, completion.facts(), body, origin_form) {
            Ok(request) => request,
            Err(rejection) => return reject(completion, rejection),
        };

    // If the agent goes away during this wait, the future is dropped and
    // the completion's drop writes the record.
    let timeout = connection.timeouts.response;
    let result = tokio::time::timeout(timeout, client.request(upstream_request)).await;
    let response = match result {
        Ok(Ok(response)) => response,
        Ok(Err(_)) if exceeded.load(Ordering::Relaxed) => {
            let reason = format!(
                "the request body exceeded {} bytes, the limit of connection {:?}",
                connection.max_request_bytes, connection.name
            );
            return reject(completion, Rejection::payload_too_large(reason));
        }
        Ok(Err(error)) if crate::framing::is_request_body_error(&error) => {
            return reject(completion, crate::framing::malformed_body());
        }
        Ok(Err(error)) => {
            tracing::warn!(
                request_id = %completion.facts().request_id,
                connection = %connection.name,
                error = %error_chain(&error),
                "upstream request failed"
            );
            let reason = format!(
                "the upstream of connection {:?} failed: {}",
                connection.name,
                upstream_failure(&error)
            );
            return reject(completion, Rejection::bad_gateway(reason));
        }
        Err(_) => {
            let reason = format!(
                "the upstream of connection {:?} sent no response within {}",
                connection.name,
                humantime_secs(timeout)
            );
            return reject(completion, Rejection::gateway_timeout(reason));
        }
    };

    let (mut response_parts, upstream_body) = response.into_parts();
    if let Some(encoding) = unreadable_encoding(&response_parts.headers) {
        // A compressed body would hide an echoed credential from redaction.
        let reason = format!(
            "the upstream of connection {:?} sent a response with content-encoding {encoding:?} although identity was requested; Castellan cannot check it for the credential, so it was not passed on",
            connection.name
        );
        return reject(completion, Rejection::bad_gateway(reason));
    }
    metrics::counter!(
        "castellan_requests_total",
        "connection" => connection.name.clone(),
        "decision" => "allow"
    )
    .increment(1);
    // Extensions carry the upstream's reason phrase, which could quote the
    // credential and is never redacted: drop them all.
    response_parts.extensions.clear();
    sanitize_response_headers(&mut response_parts.headers, &authorized);
    drop_bodiless_length(&mut response_parts, &parts.method);
    // The agent's connection has its own version: an HTTP/1.0 upstream
    // must not make hyper send HTTP/1.0 to an HTTP/1.1 agent and close.
    let upstream_version = std::mem::replace(&mut response_parts.version, Version::HTTP_11);
    let strict = snapshot.config.config.gateway.audit_durability == AuditDurability::Strict;
    let bodiless = http_body::Body::is_end_stream(&upstream_body);
    let read_whole = if bodiless {
        None
    } else {
        whole_read(strict, upstream_version, parts.version, &upstream_body)
    };
    if let Some((length, limit)) = read_whole {
        let whole = Whole {
            length,
            limit,
            timeout,
            connection: &connection.name,
            injector: &authorized.injector,
        };
        // The status is recorded only once the response is ready to
        // send, so the record of an agent that leaves first has 499.
        return answer_whole(whole, completion, response_parts, upstream_body).await;
    }
    completion.set_status(response_parts.status.as_u16());
    if strict && bodiless {
        // hyper never polls the body of a HEAD, 204, 304 or Content-Length:
        // 0 response, so the head itself waits for the commit.
        let request_id = completion.facts().request_id.clone();
        if let Some(commit) = completion.finish(0, None) {
            if commit.await.is_err() {
                return withheld(&request_id);
            }
        }
        return Response::from_parts(response_parts, ResponseBody::empty());
    }
    let body = ResponseBody::upstream(
        upstream_body,
        Some(authorized.injector),
        completion,
        connection.timeouts.response,
    );
    Response::from_parts(response_parts, body)
}

/// Largest upstream body that strict durability reads whole before it
/// sends the response.
///
/// A streamed body under strict durability keeps back its last frame until the
/// commit, so hyper writes the head alone and the body after the commit:
/// two writes to the agent, and two wakeups of its client, per response.
/// Reading a small body first, then committing, sends head and body in one
/// write. The agent cannot use a response before its last byte anyway.
const WHOLE_BODY_LIMIT: u64 = 64 * 1024;

/// Decides whether a response body, not yet ended, is read whole before
/// the response is sent, and returns its declared length, if any, with the
/// maximum number of bytes to read.
fn whole_read(
    strict: bool,
    upstream_version: Version,
    agent_version: Version,
    body: &UpstreamBody,
) -> Option<(Option<u64>, u64)> {
    match http_body::Body::size_hint(body).exact() {
        // HTTP/2 is left to stream: a body of declared length may still
        // end with trailers there, and only the streaming path passes them.
        Some(length)
            if strict && upstream_version < Version::HTTP_2 && length <= WHOLE_BODY_LIMIT =>
        {
            Some((Some(length), length))
        }
        Some(_) => None,
        // An HTTP/1.0 agent reads a body of unknown length until the
        // connection closes, so a body cut short would look complete.
        None if agent_version <= Version::HTTP_10 => Some((None, HTTP10_BODY_LIMIT)),
        None => None,
    }
}

/// Largest body of unknown length that an HTTP/1.0 agent gets.
///
/// HTTP/1.0 ends such a body by closing the connection, which the agent
/// cannot tell from a failure. So the body is read whole and sent with its
/// length, and a larger one gets 502.
const HTTP10_BODY_LIMIT: u64 = 16 * 1024 * 1024;

/// Settings of [`answer_whole`] for one response.
struct Whole<'a> {
    /// The declared length, if the upstream declared one.
    length: Option<u64>,
    /// Maximum number of bytes read. A larger body is rejected with 502.
    limit: u64,
    timeout: std::time::Duration,
    connection: &'a str,
    injector: &'a crate::credential::Injector,
}

/// Reads a small upstream body whole, masks the credential in it, commits
/// the audit record and only then returns the response, so that head and
/// body leave in one write.
///
/// If the body breaks off or does not arrive in time, the agent gets 502
/// or 504 instead of a truncated response, and the record gives the
/// reason.
async fn answer_whole(
    whole: Whole<'_>,
    mut completion: Completion,
    parts: http::response::Parts,
    mut upstream_body: UpstreamBody,
) -> Response<ResponseBody> {
    let request_id = completion.facts().request_id.clone();
    // A declared length is at most WHOLE_BODY_LIMIT, so it fits in usize.
    let capacity = whole.length.and_then(|length| usize::try_from(length).ok());
    let mut data = BytesMut::with_capacity(capacity.unwrap_or(0));
    let read = tokio::time::timeout(
        whole.timeout,
        read_body(&mut upstream_body, &whole, &mut data),
    )
    .await;

    let of_length = whole
        .length
        .map_or_else(String::new, |length| format!(" of {length}"));
    let failure = match read {
        Ok(Ok(())) => None,
        Ok(Err(BodyFailure::TooLarge)) => Some(Rejection::bad_gateway(format!(
            "the upstream of connection {:?} sent more than {} bytes without declaring a length, which an HTTP/1.0 client cannot tell from a cut response; send the request over HTTP/1.1",
            whole.connection, whole.limit
        ))),
        Ok(Err(BodyFailure::BrokenOff)) => Some(Rejection::bad_gateway(format!(
            "the upstream of connection {:?} broke off its response after {}{of_length} bytes",
            whole.connection,
            data.len(),
        ))),
        Err(_) => Some(Rejection::gateway_timeout(format!(
            "the upstream of connection {:?} sent {}{of_length} response bytes within {}; raise response_timeout of the connection if the upstream is this slow",
            whole.connection,
            data.len(),
            humantime_secs(whole.timeout)
        ))),
    };
    // A failed body reaches the agent as the rejection's own JSON, so no
    // upstream byte counts as sent.
    let bytes_out = match &failure {
        Some(rejection) => {
            tracing::warn!(
                request_id = %request_id,
                connection = %whole.connection,
                status = rejection.status.as_u16(),
                reason = %rejection.reason,
                "upstream response body failed before it was complete"
            );
            completion.set_status(rejection.status.as_u16());
            0
        }
        None => {
            completion.set_status(parts.status.as_u16());
            data.len() as u64
        }
    };

    let failed = failure.as_ref().map(|rejection| rejection.reason.as_str());
    if let Some(commit) = completion.finish(bytes_out, failed) {
        if commit.await.is_err() {
            return withheld(&request_id);
        }
    }
    if let Some(rejection) = failure {
        return rejection.to_response(&request_id);
    }

    let redactor = whole.injector.redactor();
    if redactor.is_match(&data) {
        redactor.mask_in_place(&mut data);
    }
    Response::from_parts(parts, ResponseBody::full(data.freeze()))
}

/// Failure of [`read_body`].
enum BodyFailure {
    /// The body failed or ended at another length than it declared.
    BrokenOff,
    /// The body passed the limit.
    TooLarge,
}

/// Reads the upstream body into `data`, up to `whole.limit` bytes, and
/// checks its declared length. Trailers are dropped: only a body of
/// unknown length for an HTTP/1.0 client, which cannot receive them, can
/// carry any here.
async fn read_body(
    body: &mut UpstreamBody,
    whole: &Whole<'_>,
    data: &mut BytesMut,
) -> Result<(), BodyFailure> {
    use http_body_util::BodyExt;

    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyFailure::BrokenOff)?;
        if let Ok(chunk) = frame.into_data() {
            if (data.len() + chunk.len()) as u64 > whole.limit {
                return Err(BodyFailure::TooLarge);
            }
            data.extend_from_slice(&chunk);
        }
    }
    match whole.length {
        Some(length) if data.len() as u64 != length => Err(BodyFailure::BrokenOff),
        _ => Ok(()),
    }
}

/// Builds the response that replaces a bodiless upstream response whose
/// audit record failed to commit under strict durability.
///
/// NOTE: a response without a body cannot be aborted halfway, so the agent
/// gets this 503 instead of a reset connection. No second record is
/// written: the first one, with the upstream's status, already failed.
fn withheld(request_id: &str) -> Response<ResponseBody> {
    Rejection::unavailable(
        "the upstream answered, but the audit record of this request could not be committed, so the answer was withheld; the upstream may have acted on the request",
    )
    .to_response(request_id)
}

/// Returns the response's content coding unless it is absent or identity.
fn unreadable_encoding(headers: &HeaderMap) -> Option<String> {
    let codings: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("invalid").split(','))
        .map(|coding| coding.trim().to_ascii_lowercase())
        .filter(|coding| !coding.is_empty() && coding != "identity")
        .collect();
    (!codings.is_empty()).then(|| codings.join(", "))
}

/// Builds the request to the upstream. Its target is absolute, or only the
/// path and query when `origin_form` is set, for a client that knows its
/// upstream already.
fn build_request(
    authorized: &Authorized<'_>,
    parts: &Parts,
    facts: &RequestFacts,
    body: RequestBody,
    origin_form: bool,
) -> Result<Request<RequestBody>, Rejection> {
    let connection = authorized.connection;
    let upstream = &connection.upstream;
    let mut query = filtered_query(parts.uri.query(), authorized);
    authorized.injector.append_query(&mut query);
    let mut target = if origin_form {
        String::with_capacity(upstream.base_path.len() + authorized.path.as_str().len() + 1)
    } else {
        upstream.origin()
    };
    target.push_str(&upstream.base_path);
    target.push_str(authorized.path.as_str());
    if target.is_empty() {
        target.push('/');
    }
    if !query.is_empty() {
        target.push('?');
        target.push_str(&query);
    }
    let uri: Uri = target.parse().map_err(|_| {
        Rejection::bad_request(
            "the request target cannot be forwarded; check the path and query encoding",
        )
    })?;

    let mut headers = parts.headers.clone();
    remove_connection_listed(&mut headers);
    for name in HOP_BY_HOP_HEADERS
        .iter()
        .chain(&CREDENTIAL_HEADERS)
        .chain(&FORWARDING_HEADERS)
    {
        headers.remove(name);
    }
    if let Some(token) = &authorized.agent_token {
        remove_token_copies(&mut headers, token);
    }
    if let Some((name, value)) = authorized.injector.header() {
        headers.insert(name.clone(), value.clone());
    }
    if let Ok(request_id) = HeaderValue::from_str(&facts.request_id) {
        headers.insert(REQUEST_ID_HEADER, request_id);
    }
    // Compressed responses could hide an echoed credential from redaction.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );

    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Removes `Content-Length` from a 204, which must not carry it, and from a
/// 304 to any request but a HEAD. A 304's length describes a body that is
/// never sent, and hyper's debug builds panic when the length of the body
/// they write and the header differ.
fn drop_bodiless_length(parts: &mut http::response::Parts, method: &http::Method) {
    let status = parts.status;
    let bodiless = status == http::StatusCode::NO_CONTENT
        || (status == http::StatusCode::NOT_MODIFIED && method != http::Method::HEAD);
    if bodiless {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
}

/// Removes headers that the `Connection` header names, as a proxy must.
/// Castellan inserts its own headers afterwards, so a client cannot use this
/// to strip them.
fn remove_connection_listed(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

/// Returns the query without the agent token and without any parameter
/// named like the injected credential. Other parameters pass byte for byte.
fn filtered_query(query: Option<&str>, authorized: &Authorized<'_>) -> String {
    let query = match &authorized.agent_token {
        Some(token) => query.map(|query| query_without_value(query, token)),
        None => query.map(str::to_string),
    };
    let removed: Vec<&str> = authorized
        .connection
        .agent_token_in
        .iter()
        .filter_map(|location| match location {
            TokenLocation::Query(name) => Some(name.as_str()),
            _ => None,
        })
        .chain(authorized.injector.query_name())
        .collect();
    query_without(query.as_deref(), &removed)
}

/// Removes every header that carries the agent token, wherever the agent
/// put it (a cookie, a custom header) and however it is escaped.
fn remove_token_copies(headers: &mut HeaderMap, token: &str) {
    let Some(matcher) = Redactor::new([token.as_bytes().to_vec()]) else {
        return;
    };
    let carriers: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, value)| matcher.is_match(value.as_bytes()))
        .map(|(name, _)| name.clone())
        .collect();
    for name in carriers {
        headers.remove(name);
    }
}

/// Returns `query` without parameters whose decoded value contains `token`.
fn query_without_value(query: &str, token: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let value = pair.split_once('=').map_or("", |(_, value)| value);
            !decode_component(value).contains(token) && !decode_component(pair).contains(token)
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn query_without(query: Option<&str>, removed: &[&str]) -> String {
    let Some(query) = query else {
        return String::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
            !removed.contains(&decode_component(key).as_str())
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn sanitize_response_headers(headers: &mut HeaderMap, authorized: &Authorized<'_>) {
    remove_connection_listed(headers);
    for name in HOP_BY_HOP_HEADERS
        .iter()
        .filter(|name| **name != header::HOST)
    {
        headers.remove(name);
    }
    rewrite_location(headers, authorized);
    // A header name cannot be masked and stay a valid name: drop the header.
    let leaking: Vec<HeaderName> = headers
        .keys()
        .filter(|name| authorized.injector.names_credential(name))
        .cloned()
        .collect();
    for name in leaking {
        headers.remove(&name);
    }
    let redactor = authorized.injector.redactor();
    for value in headers.values_mut() {
        if let Some(masked) = redactor.redact_header(value) {
            *value = masked;
        }
    }
}

/// Points a redirect to the upstream's own origin back through the gateway.
///
/// An agent that followed such a redirect directly would send its castellan
/// token to the upstream and would bypass the checkpoint. Redirects to other
/// origins pass unchanged: they are never followed with the credential.
fn rewrite_location(headers: &mut HeaderMap, authorized: &Authorized<'_>) {
    let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let upstream = &authorized.connection.upstream;
    let origin = upstream.origin();
    let default_origin = format!("{}://{}", upstream.scheme, upstream.host);
    let rest = if location.starts_with('/') && !location.starts_with("//") {
        // An absolute path is relative to the upstream's origin.
        Some(location)
    } else {
        [origin.as_str(), default_origin.as_str()]
            .iter()
            .find_map(|prefix| location.strip_prefix(prefix))
            .filter(|rest| rest.is_empty() || rest.starts_with(['/', '?', '#']))
    };
    let Some(rest) = rest else {
        return;
    };
    let Some(under_base) = rest
        .strip_prefix(upstream.base_path.as_str())
        .filter(|under| under.is_empty() || under.starts_with(['/', '?', '#']))
    else {
        return;
    };
    let name = &authorized.connection.name;
    let rewritten = if under_base.starts_with('/') {
        format!("/{name}{under_base}")
    } else {
        format!("/{name}/{under_base}")
    };
    if let Ok(value) = HeaderValue::from_str(&rewritten) {
        headers.insert(header::LOCATION, value);
    }
}

/// Describes an upstream failure without echoing URLs, which could carry
/// a credential injected as a query parameter.
fn upstream_failure(error: &UpstreamError) -> &'static str {
    let chain = error_chain(error).to_ascii_lowercase();
    if crate::dial::is_internal_address(error) {
        "its address is loopback, private, link-local or cloud metadata, which is rejected unless the connection sets allow_private = true in the configuration"
    } else if chain.contains("certificate") || chain.contains("handshake") {
        "the TLS handshake failed (is the upstream's certificate valid, or does the connection need ca_file?)"
    } else if error.is_connect() {
        "cannot connect (is the upstream running and reachable?)"
    } else {
        "the connection broke before a complete response arrived"
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn humantime_secs(duration: std::time::Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_removed_by_decoded_name() {
        let cases = [
            (None, ""),
            (Some(""), ""),
            (Some("a=1&key=cst_x&b=2"), "a=1&b=2"),
            (Some("k%65y=cst_x&a=%20"), "a=%20"),
            (Some("key&key=1&keys=2"), "keys=2"),
            (Some("a=1&&token=t&"), "a=1"),
        ];
        for (query, expected) in cases {
            assert_eq!(
                query_without(query, &["key", "token"]),
                expected,
                "{query:?}"
            );
        }
    }

    #[test]
    fn token_copies_removed_everywhere() {
        let token = "cst_TOKEN";
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_static("session=1; t=cst_TOKEN"));
        headers.insert("x-custom", HeaderValue::from_static("cst_TOKEN"));
        headers.insert("x-kept", HeaderValue::from_static("cst_OTHER"));
        headers.insert("x-escaped", HeaderValue::from_static("cst%5FTOKEN"));
        remove_token_copies(&mut headers, token);
        assert!(!headers.contains_key("cookie"));
        assert!(!headers.contains_key("x-custom"));
        assert!(!headers.contains_key("x-escaped"));
        assert!(headers.contains_key("x-kept"));
        assert_eq!(
            query_without_value("a=1&anything=cst_TOKEN&b=%63st_TOKEN&c=2", token),
            "a=1&c=2"
        );
    }

    #[test]
    fn connection_listed_headers_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("x-secret-hop, keep-alive"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("2"));
        remove_connection_listed(&mut headers);
        assert!(!headers.contains_key("x-secret-hop"));
        assert!(headers.contains_key("x-kept"));
    }
}
