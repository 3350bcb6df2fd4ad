//! Test requests with a candidate credential, sent before a new upstream
//! key replaces the current one.
//!
//! A probe goes through the connection's own client, so it reaches only the
//! connection's upstream origin and obeys the same address checks as agent
//! traffic. The response body is read and dropped unseen, because an
//! upstream may echo the key.

use std::time::Duration;

use http::{header, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body_util::BodyExt;

use crate::body::RequestBody;
use crate::credential::Injector;
use crate::state::ConfigState;

/// Error sending a probe. Messages name the connection, never the key.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connection {0:?} is not in the configuration")]
    UnknownConnection(String),
    #[error("the new key cannot be injected for connection {connection:?}: {reason}")]
    Inject { connection: String, reason: String },
    #[error("probe path {path:?} for connection {connection:?} is not a valid request target; start it with `/`")]
    BadPath { connection: String, path: String },
    #[error("the probe to connection {connection:?} failed: {reason}")]
    Failed { connection: String, reason: String },
    #[error("the probe to connection {connection:?} timed out after {timeout:?}")]
    TimedOut {
        connection: String,
        timeout: Duration,
    },
}

/// Sends `method path` to `connection`'s upstream with `value` injected as
/// the credential, and returns the response status.
pub async fn probe(
    state: &ConfigState,
    connection: &str,
    value: &[u8],
    method: Method,
    path: &str,
    timeout: Duration,
) -> Result<StatusCode, ProbeError> {
    let unknown = || ProbeError::UnknownConnection(connection.to_owned());
    let settings = state
        .config
        .connections
        .get(connection)
        .ok_or_else(unknown)?;
    let client = state.client(connection).ok_or_else(unknown)?;
    let injector = Injector::new(&settings.auth, &settings.secret, value).map_err(|error| {
        ProbeError::Inject {
            connection: connection.to_owned(),
            reason: error.to_string(),
        }
    })?;
    let bad_path = || ProbeError::BadPath {
        connection: connection.to_owned(),
        path: path.to_owned(),
    };
    if !path.starts_with('/') {
        return Err(bad_path());
    }
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let mut query = query.to_owned();
    injector.append_query(&mut query);
    let upstream = &settings.upstream;
    let mut target = format!("{}{}{}", upstream.origin(), upstream.base_path, path_only);
    if !query.is_empty() {
        target.push('?');
        target.push_str(&query);
    }
    let uri: Uri = target.parse().map_err(|_| bad_path())?;

    let mut request = Request::new(RequestBody::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    if let Some((name, value)) = injector.header() {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static("castellan-probe"),
    );
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );

    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| ProbeError::Failed {
                connection: connection.to_owned(),
                reason: describe(&error),
            })?;
        let status = response.status();
        // Drain so the pooled connection can be reused; the body is unused.
        let _ = response.into_body().collect().await;
        Ok(status)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::TimedOut {
            connection: connection.to_owned(),
            timeout,
        })?
}

/// Describes a client error by its innermost cause, which names no URL
/// and no header.
fn describe(error: &crate::upstream::UpstreamError) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}
