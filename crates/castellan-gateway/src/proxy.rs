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

use arc_swap::ArcSwap;
use castellan_audit::{AuditHandle, AuditSlot};
use castellan_model::{canonical_ip, Connection, NormalizedPath, DEFAULT_TOKEN_LOCATIONS};
use castellan_policy::AccessRequest;
use castellan_store::AuditDecision;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::audit::{submit, RequestFacts};
use crate::authenticate::{authenticate, find_token, query_values};
use crate::body::ResponseBody;
use crate::credential::Injector;
use crate::error::{Fault, Rejection};
use crate::forward::forward;
use crate::state::{CredentialState, Snapshot};

/// Response header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

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
}

/// A request the policy allowed, with everything needed to forward it.
pub struct Authorized<'a> {
    pub connection: &'a Connection,
    pub path: NormalizedPath,
    pub rule: Option<String>,
    pub injector: Arc<Injector>,
    /// The castellan token the agent presented, so that every copy of it
    /// can be removed before forwarding.
    pub agent_token: String,
    _sealed: (),
}

impl Gateway {
    pub fn new(snapshot: Snapshot, audit: AuditHandle) -> Self {
        Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            audit,
        }
    }

    /// Handles one agent request from `peer`; never fails, since every
    /// problem becomes a JSON rejection.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ResponseBody> {
        let snapshot = self.snapshot.load_full();
        let request_id = format!("{:032x}", rand::random::<u128>());
        let (parts, body) = request.into_parts();
        let mut facts = RequestFacts::new(
            request_id.clone(),
            peer,
            parts.method.as_str(),
            parts.uri.path(),
        );

        let mut response = match checkpoint(&snapshot, &parts, &mut facts) {
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
        submit(&self.audit, slot, record);
        rejection.to_response(&facts.request_id)
    }
}

/// Runs the stages up to the policy decision.
fn checkpoint<'a>(
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

    // Authenticate before saying whether a connection exists, so callers
    // without a token cannot enumerate connections.
    let locations = connection.map_or(&DEFAULT_TOKEN_LOCATIONS[..], |c| &c.agent_token_in[..]);
    let token = find_token(parts, locations)?;
    let authenticated = authenticate(snapshot, &token)?;
    facts.agent = Some(authenticated.agent.name.clone());
    facts.token_id = Some(authenticated.token_id);

    let Some(connection) = connection else {
        return Err(Rejection::not_found(format!(
            "no connection named {:?}; request /<connection>/<path> with a connection from the configuration",
            truncate_name(connection_name)
        )));
    };
    let path = NormalizedPath::parse(rest)
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

    authorize(snapshot, connection, path, parts, facts, token)
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
    agent_token: String,
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
}
