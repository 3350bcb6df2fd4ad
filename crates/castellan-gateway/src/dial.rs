//! The upstream dialer: resolves the upstream host on every new connection
//! and dials only the addresses that passed the address check, so a DNS
//! answer that changes between check and use (rebinding) cannot reach an
//! internal address.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::address::{classify, AddressClass};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// An upstream address that the address check rejected.
#[derive(Debug, thiserror::Error)]
#[error("upstream address {address} of connection {connection:?} is {class}, which is rejected unless the connection sets allow_private = true")]
pub struct InternalAddress {
    pub connection: String,
    pub address: IpAddr,
    pub class: AddressClass,
}

/// Tells whether an upstream request failed because the address check
/// rejected every address of the upstream.
pub fn is_internal_address(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<InternalAddress>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// The address check settings of one connection.
#[derive(Debug, Clone)]
struct AddressPolicy {
    connection: Arc<str>,
    allow_private: bool,
}

impl AddressPolicy {
    fn check(&self, address: IpAddr) -> Result<(), InternalAddress> {
        let class = classify(address);
        if self.allow_private || !class.is_internal() {
            return Ok(());
        }
        Err(InternalAddress {
            connection: self.connection.to_string(),
            address,
            class,
        })
    }
}

/// Resolves host names with the system resolver and drops the addresses
/// that the connection may not reach.
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    policy: AddressPolicy,
}

impl Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            // Port 0 is a placeholder: the connector sets the upstream port.
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed = allowed_addresses(&policy, &resolved)?;
            Ok(allowed.into_iter())
        })
    }
}

/// Keeps the addresses that pass the check. When some are rejected, only
/// the rest are dialed; when all are, the first rejection is the error.
fn allowed_addresses(
    policy: &AddressPolicy,
    resolved: &[SocketAddr],
) -> Result<Vec<SocketAddr>, BoxError> {
    let mut allowed = Vec::with_capacity(resolved.len());
    let mut first_rejection = None;
    for address in resolved {
        match policy.check(address.ip()) {
            Ok(()) => allowed.push(*address),
            Err(rejection) => {
                tracing::warn!(
                    connection = %policy.connection,
                    address = %address.ip(),
                    class = %rejection.class,
                    "upstream address rejected"
                );
                first_rejection.get_or_insert(rejection);
            }
        }
    }
    match (allowed.is_empty(), first_rejection) {
        (true, Some(rejection)) => Err(rejection.into()),
        (true, None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the upstream host name resolved to no address",
        )
        .into()),
        (false, _) => Ok(allowed),
    }
}

/// The TCP connector for one connection. Host names go through
/// [`CheckedResolver`]; IP literals, which `HttpConnector` dials without
/// calling its resolver, are checked here first.
#[derive(Debug, Clone)]
pub struct CheckedConnector {
    policy: AddressPolicy,
    inner: HttpConnector<CheckedResolver>,
}

impl CheckedConnector {
    /// Builds the connector for `connection`, which may reach internal
    /// addresses only when `allow_private` is set.
    pub fn new(connection: &str, allow_private: bool) -> Self {
        let policy = AddressPolicy {
            connection: Arc::from(connection),
            allow_private,
        };
        let resolver = CheckedResolver {
            policy: policy.clone(),
        };
        CheckedConnector {
            policy,
            inner: HttpConnector::new_with_resolver(resolver),
        }
    }

    /// Gives access to the TCP settings (timeouts, nodelay).
    pub fn http_mut(&mut self) -> &mut HttpConnector<CheckedResolver> {
        &mut self.inner
    }
}

impl Service<Uri> for CheckedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        if let Some(literal) = literal_host(&destination) {
            if let Err(rejection) = self.policy.check(literal) {
                tracing::warn!(
                    connection = %self.policy.connection,
                    address = %literal,
                    class = %rejection.class,
                    "upstream address rejected"
                );
                return Box::pin(async move { Err(rejection.into()) });
            }
        }
        let connecting = self.inner.call(destination);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

/// Returns the host of `uri` when it is an IP literal, parsed the way
/// `HttpConnector` parses it before it decides to skip the resolver.
fn literal_host(uri: &Uri) -> Option<IpAddr> {
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

#[cfg(test)]
mod tests;
