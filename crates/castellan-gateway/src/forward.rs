//! The inject and forward stages: rebuild the request for the connection's
//! fixed upstream with the agent's credentials removed and the vault's
//! credential attached, then stream the response back.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use castellan_model::{AuditFailure, TokenLocation};
use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::audit::{Completion, RequestFacts};
use crate::authenticate::decode_component;
use crate::body::{RequestBody, ResponseBody};
use crate::error::Rejection;
use crate::proxy::{Authorized, Gateway, REQUEST_ID_HEADER};
use crate::state::Snapshot;

/// Headers that carry credentials. All of them are removed from forwarded
/// requests, whichever the connection uses: the injected credential is the
/// only one an upstream ever receives.
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
];

/// Hop-by-hop headers (RFC 9110, section 7.6.1) and `host`, which the
/// client sets from the upstream URL.
const HOP_BY_HOP_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
];

/// Forwarding headers from the agent are not trusted and not passed on.
const FORWARDING_HEADERS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
];

pub async fn forward(
    gateway: &Gateway,
    snapshot: &Snapshot,
    authorized: Authorized<'_>,
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
    let Some(client) = snapshot.config.client(&connection.name) else {
        return gateway.reject(
            &facts,
            &Rejection::unavailable("the connection is still loading; retry"),
        );
    };

    let sent = Arc::new(AtomicU64::new(0));
    let upstream_request = match build_request(
        &authorized,
        &parts,
        &facts,
        RequestBody::new(body, Arc::clone(&sent)),
    ) {
        Ok(request) => request,
        Err(rejection) => return gateway.reject(&facts, &rejection),
    };

    let timeout = connection.timeouts.response;
    let result = tokio::time::timeout(timeout, client.request(upstream_request)).await;
    let response = match result {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            tracing::warn!(
                request_id = %facts.request_id,
                connection = %connection.name,
                error = %error_chain(&error),
                "upstream request failed"
            );
            let reason = format!(
                "the upstream of connection {:?} failed: {}",
                connection.name,
                upstream_failure(&error)
            );
            return gateway.reject(&facts, &Rejection::bad_gateway(reason));
        }
        Err(_) => {
            let reason = format!(
                "the upstream of connection {:?} sent no response within {}",
                connection.name,
                humantime_secs(timeout)
            );
            return gateway.reject(&facts, &Rejection::gateway_timeout(reason));
        }
    };

    metrics::counter!(
        "castellan_requests_total",
        "connection" => connection.name.clone(),
        "decision" => "allow"
    )
    .increment(1);
    let (mut response_parts, upstream_body) = response.into_parts();
    sanitize_response_headers(&mut response_parts.headers, &authorized);
    let completion = Completion::new(
        facts,
        slot,
        gateway.audit.clone(),
        response_parts.status.as_u16(),
        authorized.rule,
        sent,
    );
    let body = ResponseBody::upstream(upstream_body, Some(authorized.injector), completion);
    Response::from_parts(response_parts, body)
}

fn build_request(
    authorized: &Authorized<'_>,
    parts: &Parts,
    facts: &RequestFacts,
    body: RequestBody,
) -> Result<Request<RequestBody>, Rejection> {
    let connection = authorized.connection;
    let upstream = &connection.upstream;
    let mut query = filtered_query(parts.uri.query(), authorized);
    authorized.injector.append_query(&mut query);
    let mut target = format!(
        "{}{}{}",
        upstream.origin(),
        upstream.base_path,
        authorized.path.as_str()
    );
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
        headers.remove(*name);
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
    query_without(query, &removed)
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
    for name in HOP_BY_HOP_HEADERS.iter().filter(|name| **name != "host") {
        headers.remove(*name);
    }
    let redactor = authorized.injector.redactor();
    for value in headers.values_mut() {
        if let Some(masked) = redactor.redact_header(value) {
            *value = masked;
        }
    }
}

/// Describes an upstream failure without echoing URLs, which could carry
/// a credential injected as a query parameter.
fn upstream_failure(error: &hyper_util::client::legacy::Error) -> &'static str {
    let chain = error_chain(error).to_ascii_lowercase();
    if chain.contains("certificate") || chain.contains("handshake") {
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
