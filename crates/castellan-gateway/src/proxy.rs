//! The checkpoint pipeline. Each request passes these stages in order:
//!
//! 1. route: the first path segment names the connection;
//! 2. authenticate: the agent token resolves to an agent (`authenticate.rs`);
//! 3. normalize: the rest of the path becomes one canonical form;
//! 4. authorize: the policy decides, producing an [`Authorized`] request;
//! 5. inject and forward: the credential replaces the agent's (`forward.rs`);
//! 6. stream back with redaction, then audit (`body.rs`, `audit.rs`).
//!
//! Only [`authorize`] can construct [`Authorized`], so no path forwards a
//! request that the policy has not allowed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use castellan_audit::{AuditHandle, AuditSlot};
use castellan_model::{
    canonical_ip, ClientIdentity, Connection, NormalizedPath, DEFAULT_TOKEN_LOCATIONS,
};
use castellan_policy::AccessRequest;
use castellan_store::AuditDecision;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::audit::{submit, RequestFacts};
use crate::authenticate::{
    authenticate, authenticate_certificate, canary, find_token_if_any, missing_token, query_values,
};
use crate::body::ResponseBody;
use crate::credential::Injector;
use crate::error::{Fault, Rejection};
use crate::forward::forward;
use crate::limits::{InFlight, Limits};
use crate::state::{CredentialState, Snapshot};

/// Response header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Maximum time a request waits for a lagging audit writer before it is
/// checked; see [`AuditHandle::pace`].
const AUDIT_PACE_PATIENCE: Duration = Duration::from_secs(1);

/// Headers that ask a server to treat a request as another method. They are
/// rejected: a read-only role must not be able to send a `DELETE` as a `POST`.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The shared state of a running gateway.
pub struct Gateway {
    pub snapshot: ArcSwap<Snapshot>,
    pub audit: AuditHandle,
    pub limits: Limits,
}

/// The client at the other end of an agent connection.
#[derive(Debug)]
pub struct Peer {
    pub address: SocketAddr,
    /// Identities of a verified client certificate, empty without one.
    pub certificate: Vec<ClientIdentity>,
}

/// A request the policy allowed, with everything needed to forward it.
pub struct Authorized<'a> {
    pub connection: &'a Connection,
    pub path: NormalizedPath,
    pub rule: Option<String>,
    pub injector: Arc<Injector>,
    /// The castellan token the agent presented, so that every copy of it
    /// can be removed before forwarding; `None` for a client certificate.
    pub agent_token: Option<String>,
    /// Counts the request against the agent's concurrency limit until the
    /// response ends.
    pub in_flight: Option<InFlight>,
    _sealed: (),
}

impl Gateway {
    pub fn new(snapshot: Snapshot, audit: AuditHandle) -> Self {
        let scans_bodies = snapshot
            .config
            .config
            .connections
            .values()
            .any(|connection| connection.dlp.mode != castellan_model::DlpMode::Off);
        if scans_bodies {
            // Compile the scanner rules now rather than on the first request.
            if let Err(error) = crate::inspect::prepare() {
                tracing::error!(%error, "the data-loss check rules failed to compile; requests to connections with dlp enabled will get 503");
            }
        }
        Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            audit,
            limits: Limits::default(),
        }
    }

    /// Handles one agent request from `peer`; never fails, since every
    /// problem becomes a JSON rejection.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: Arc<Peer>,
    ) -> Response<ResponseBody> {
        let request_id = new_request_id();
        let (parts, body) = request.into_parts();
        let mut facts = RequestFacts::new(
            request_id.clone(),
            peer.address,
            parts.method.as_str(),
            parts.uri.path(),
        );
        facts.user_agent = crate::audit::audit_user_agent(&parts.headers);
        // Every request, rejected ones too, adds a record. Pacing all of
        // them keeps a flood of cheap rejections from starving the writer.
        self.audit.pace(AUDIT_PACE_PATIENCE).await;
        // Loaded after the wait, so a token revoked meanwhile is refused.
        let snapshot = self.snapshot.load_full();

        let mut response = match checkpoint(
            &self.limits,
            &peer.certificate,
            &snapshot,
            &parts,
            &mut facts,
        ) {
            Ok(authorized) => forward(&self, &snapshot, authorized, parts, body, facts).await,
            Err(rejection) => self.reject(&facts, &rejection),
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }

    /// Audits and logs a rejection, and builds its response.
    pub fn reject(&self, facts: &RequestFacts, rejection: &Rejection) -> Response<ResponseBody> {
        self.reject_with_slot(facts, rejection, None)
    }

    /// Like [`Gateway::reject`], writing the record through a slot reserved
    /// earlier.
    pub fn reject_with_slot(
        &self,
        facts: &RequestFacts,
        rejection: &Rejection,
        slot: Option<AuditSlot>,
    ) -> Response<ResponseBody> {
        let decision = match rejection.fault {
            Fault::Agent => AuditDecision::Deny,
            Fault::Gateway => AuditDecision::Error,
        };
        let connection = facts.connection.as_deref().unwrap_or("");
        metrics::counter!(
            "castellan_requests_total",
            "connection" => connection.to_string(),
            "decision" => decision.as_str()
        )
        .increment(1);
        tracing::info!(
            request_id = %facts.request_id,
            agent = facts.agent.as_deref().unwrap_or("-"),
            connection,
            method = %facts.method,
            path = %facts.path,
            decision = decision.as_str(),
            status = rejection.status.as_u16(),
            rule = rejection.rule.as_deref().unwrap_or("-"),
            client.ip = %facts.source.ip(),
            reason = %rejection.reason,
            "request rejected"
        );
        let record = facts.record(
            decision,
            rejection.status.as_u16(),
            rejection.rule.clone(),
            Some(rejection.reason.clone()),
            0,
            0,
        );
        let durability = self.snapshot.load().config.config.gateway.audit_durability;
        let commit = submit(&self.audit, slot, record, durability);
        let response = rejection.to_response(&facts.request_id);
        match commit {
            Some(commit) => response.map(|body| body.hold_until(commit)),
            None => response,
        }
    }
}

/// Returns a random request id: 32 lowercase hex digits.
fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let value: u128 = rand::random();
    (0..32)
        .rev()
        .map(|nibble| char::from(HEX[((value >> (nibble * 4)) & 0xf) as usize]))
        .collect()
}

/// Runs the stages up to the policy decision.
fn checkpoint<'a>(
    limits: &Limits,
    certificate: &[ClientIdentity],
    snapshot: &'a Snapshot,
    parts: &http::request::Parts,
    facts: &mut RequestFacts,
) -> Result<Authorized<'a>, Rejection> {
    let config = &snapshot.config.config;
    let (connection_name, rest) = split_route(parts.uri.path());
    let connection = config.connections.get(connection_name);
    if connection.is_some() {
        facts.connection = Some(connection_name.to_string());
    }
    crate::framing::check_framing(parts)?;

    // Authenticate before saying whether a connection exists, so callers
    // without a token cannot enumerate connections.
    let locations = connection.map_or(&DEFAULT_TOKEN_LOCATIONS[..], |c| &c.agent_token_in[..]);
    let source = canonical_ip(facts.source.ip());
    let failures_allowed = config.gateway.auth_failures_per_minute;
    // A verified certificate bound to an agent cannot be guessed, so agents
    // that use one are not locked out by others failing on the same address.
    let bound_certificate = !certificate.is_empty()
        && matches!(authenticate_certificate(snapshot, certificate), Some(Ok(_)));
    let blocked = limits
        .auth_blocked(source, failures_allowed)
        .filter(|_| !bound_certificate);
    if let Some(wait) = blocked {
        return Err(Rejection::too_many_requests(
            format!("too many failed authentications from {source}; retry later"),
            wait,
        ));
    }
    let authenticated = match find_token_if_any(parts, locations) {
        Ok(Some(token)) => match authenticate(snapshot, &token) {
            Ok(found) => check_certificate_agrees(snapshot, certificate, found.agent)
                .map(|()| (Some(token), found)),
            Err(rejection) => {
                // The agent gets the invalid-token rejection, and the audit
                // record names the canary so its use raises an alert.
                if let Some(canary) = canary(snapshot, &token) {
                    facts.agent = Some(canary.agent.to_string());
                    facts.token_id = Some(canary.id.to_string());
                }
                Err(rejection)
            }
        },
        // Without a token, a verified client certificate may name the agent.
        Ok(None) => match authenticate_certificate(snapshot, certificate) {
            Some(found) => found.map(|found| (None, found)),
            None => Err(missing_token(locations)),
        },
        Err(rejection) => Err(rejection),
    };
    let (token, authenticated) = match authenticated {
        Ok(found) => found,
        Err(rejection) => {
            if rejection.status == http::StatusCode::UNAUTHORIZED {
                limits.auth_failed(source, failures_allowed);
            }
            return Err(rejection);
        }
    };
    let agent = authenticated.agent;
    facts.agent = Some(agent.name.clone());
    facts.token_id = Some(authenticated.token_id);
    if let Err(wait) = limits.agent_request(&agent.name, agent.limits.requests_per_minute) {
        return Err(Rejection::too_many_requests(
            format!(
                "agent {:?} exceeded its limit of {} requests per minute",
                agent.name,
                agent.limits.requests_per_minute.unwrap_or_default()
            ),
            wait,
        ));
    }

    let Some(connection) = connection else {
        return Err(Rejection::not_found(format!(
            "no connection named {:?}; request /<connection>/<path> with a connection from the configuration",
            truncate_name(connection_name)
        )));
    };
    let path = connection
        .normalize_path(rest)
        .map_err(|error| Rejection::bad_request(format!("invalid request path: {error}")))?;
    facts.path = path.as_str().to_string();

    check_method(parts)?;
    if let Some(header) = METHOD_OVERRIDE_HEADERS
        .iter()
        .find(|h| parts.headers.contains_key(**h))
    {
        return Err(Rejection::bad_request(format!(
            "method override header {header} is not accepted; send the real HTTP method"
        )));
    }

    if let Some(length) = declared_length(parts) {
        if length > connection.max_request_bytes {
            return Err(Rejection::payload_too_large(format!(
                "the request body has {length} bytes; connection {:?} accepts at most {}",
                connection.name, connection.max_request_bytes
            )));
        }
    }
    let max_in_flight = agent.limits.max_concurrent_requests;
    let Some(in_flight) = limits.enter(&agent.name, max_in_flight) else {
        return Err(Rejection::too_many_requests(
            format!(
                "agent {:?} already has {max_in_flight} requests in flight, its limit",
                agent.name
            ),
            std::time::Duration::from_secs(1),
        ));
    };
    authorize(snapshot, connection, path, parts, facts, token, in_flight)
}

/// Rejects a token of one agent on a connection whose client certificate
/// is bound to another: the two credentials must not disagree.
fn check_certificate_agrees(
    snapshot: &Snapshot,
    certificate: &[ClientIdentity],
    agent: &castellan_model::Agent,
) -> Result<(), Rejection> {
    match authenticate_certificate(snapshot, certificate) {
        Some(Ok(bound)) if bound.agent.name != agent.name => Err(Rejection::unauthorized(
            "the client certificate and the agent token belong to different agents",
        )),
        _ => Ok(()),
    }
}

/// Returns the declared `Content-Length`, if there is a valid one.
pub(crate) fn declared_length(parts: &http::request::Parts) -> Option<u64> {
    parts
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Rejects methods that the policy and the upstream could read differently.
///
/// HTTP methods are case-sensitive and rules name them in upper case, but
/// many servers upper-case what they receive, so `delete` would pass a rule
/// denying `DELETE` and still delete. The `_method` query parameter is the
/// override that web frameworks read from the URL.
fn check_method(parts: &http::request::Parts) -> Result<(), Rejection> {
    let method = parts.method.as_str();
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Rejection::bad_request(format!(
            "HTTP methods are case-sensitive and {method:?} is not a standard one; send {:?}",
            method.to_ascii_uppercase()
        )));
    }
    let query = parts.uri.query().unwrap_or("");
    if !query_values(query, "_method").is_empty() {
        return Err(Rejection::bad_request(
            "the _method query parameter overrides the HTTP method and is not accepted; send the real method",
        ));
    }
    Ok(())
}

/// The authorize stage: the only constructor of [`Authorized`].
fn authorize<'a>(
    snapshot: &'a Snapshot,
    connection: &'a Connection,
    path: NormalizedPath,
    parts: &http::request::Parts,
    facts: &RequestFacts,
    agent_token: Option<String>,
    in_flight: InFlight,
) -> Result<Authorized<'a>, Rejection> {
    let agent = facts.agent.as_deref().unwrap_or_default();
    let decision = snapshot.config.policy.authorize(&AccessRequest {
        agent,
        connection: &connection.name,
        method: parts.method.as_str(),
        path: &path,
        source: canonical_ip(facts.source.ip()),
    });
    if !decision.allowed {
        return Err(Rejection::forbidden(decision.reason, decision.rule));
    }
    let injector = match snapshot.credentials.get(&connection.name) {
        Some(CredentialState::Ready(injector)) => Arc::clone(injector),
        Some(CredentialState::Missing { secret }) => {
            return Err(Rejection::unavailable(format!(
                "connection {:?} has no credential: secret {secret:?} is not in the vault; an operator can add it with `castellan secret set {secret}`",
                connection.name
            )))
        }
        Some(CredentialState::Unusable { reason, .. }) => {
            return Err(Rejection::unavailable(format!(
                "connection {:?} has an unusable credential: {reason}",
                connection.name
            )))
        }
        None => {
            return Err(Rejection::unavailable(format!(
                "connection {:?} is still loading; retry",
                connection.name
            )))
        }
    };
    Ok(Authorized {
        connection,
        path,
        rule: decision.rule,
        injector,
        agent_token,
        in_flight: Some(in_flight),
        _sealed: (),
    })
}

/// Splits `/<connection>/<rest>` into the connection name and `/<rest>`.
fn split_route(path: &str) -> (&str, &str) {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    match trimmed.find('/') {
        Some(slash) => (&trimmed[..slash], &trimmed[slash..]),
        None => (trimmed, ""),
    }
}

fn truncate_name(name: &str) -> &str {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_on_first_segment() {
        assert_eq!(split_route("/blog/posts/1"), ("blog", "/posts/1"));
        assert_eq!(split_route("/blog/"), ("blog", "/"));
        assert_eq!(split_route("/blog"), ("blog", ""));
        assert_eq!(split_route("/"), ("", ""));
    }

    #[test]
    fn request_ids_are_random_hex() {
        let first = new_request_id();
        let second = new_request_id();
        assert_eq!(first.len(), 32);
        assert!(first
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()));
        assert_ne!(first, second);
        // Every digit position takes more than one value over many ids.
        let ids: Vec<String> = (0..64).map(|_| new_request_id()).collect();
        for position in 0..32 {
            let first_digit = ids[0].as_bytes()[position];
            assert!(ids.iter().any(|id| id.as_bytes()[position] != first_digit));
        }
    }
}
