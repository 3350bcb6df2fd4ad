//! HTTP clients for upstreams, one per connection so each keeps its own
//! timeouts and address check. Plain-HTTP upstreams get an [`Http1Pool`],
//! whose connections the requests drive themselves. HTTPS upstreams get
//! hyper-util's pooled client, with TLS through rustls and HTTP/2 where the
//! upstream offers it. Connections with the same trust roots share one TLS
//! configuration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use castellan_model::Connection;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::RequestBody;
use crate::dial::CheckedConnector;
use crate::http1_pool::{Http1Body, Http1Error, Http1Pool};

type PooledClient = Client<HttpsConnector<CheckedConnector>, RequestBody>;

/// The client of one connection.
#[derive(Clone)]
pub enum HttpClient {
    /// hyper-util's pooled client, for HTTPS upstreams.
    Pooled(Box<PooledClient>),
    /// Connections driven by the requests, for plain-HTTP upstreams.
    Direct(Arc<Http1Pool>),
}

impl HttpClient {
    /// Tells whether requests for this client may carry only a path and
    /// query. The pool of a plain-HTTP upstream has the address already,
    /// and hyper-util's client needs an absolute URI.
    pub fn sends_origin_form(&self) -> bool {
        matches!(self, HttpClient::Direct(_))
    }

    /// Sends `request` and returns the response. Its URI is absolute
    /// unless [`HttpClient::sends_origin_form`] allows only a path and
    /// query.
    pub async fn request(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        match self {
            HttpClient::Pooled(client) => client
                .request(request)
                .await
                .map(|response| response.map(UpstreamBody::Pooled))
                .map_err(UpstreamError::Pooled),
            HttpClient::Direct(pool) => pool
                .request(request)
                .await
                .map(|response| response.map(UpstreamBody::Direct))
                .map_err(UpstreamError::Direct),
        }
    }
}

/// Error of an upstream request.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream request failed")]
    Pooled(#[source] hyper_util::client::legacy::Error),
    #[error("upstream request failed")]
    Direct(#[source] Http1Error),
}

impl UpstreamError {
    /// Tells whether no connection to the upstream could be opened.
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Pooled(error) => error.is_connect(),
            UpstreamError::Direct(error) => matches!(error, Http1Error::Connect(_)),
        }
    }
}

/// The body of an upstream response.
pub enum UpstreamBody {
    Pooled(Incoming),
    Direct(Http1Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Pooled(body) => std::pin::Pin::new(body).poll_frame(cx),
            UpstreamBody::Direct(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(body) => body.is_end_stream(),
            UpstreamBody::Direct(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pooled(body) => body.size_hint(),
            UpstreamBody::Direct(body) => body.size_hint(),
        }
    }
}

/// Error building an upstream client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read CA file {path} for connection {connection:?}: {reason}; check the path in ca_file")]
    CaFile {
        connection: String,
        path: String,
        reason: String,
    },
    #[error(
        "cannot build a client for connection {connection:?}: {reason}; check its upstream URL"
    )]
    Upstream { connection: String, reason: String },
}

/// TLS client configurations shared by the connections that trust the same
/// roots.
///
/// Each configuration keeps its own copy of the web PKI root store and its
/// own session cache, so one per connection repeats both a thousand times
/// in `bench/scale.sh`. All connections without `ca_file` share one
/// configuration, and connections naming the same `ca_file` share another.
/// Only connections with the same trust share one, because a resumed TLS
/// session skips certificate verification.
#[derive(Default)]
pub struct TlsConfigs {
    by_ca_file: HashMap<Option<PathBuf>, Arc<rustls::ClientConfig>>,
}

impl TlsConfigs {
    /// Returns the configuration for `connection`, building it on first use.
    fn for_connection(
        &mut self,
        connection: &Connection,
    ) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        if let Some(config) = self.by_ca_file.get(&connection.ca_file) {
            return Ok(Arc::clone(config));
        }
        let config = Arc::new(tls_config(connection)?);
        self.by_ca_file
            .insert(connection.ca_file.clone(), Arc::clone(&config));
        Ok(config)
    }
}

fn tls_config(connection: &Connection) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &connection.ca_file {
        add_ca_file(&mut roots, path).map_err(|reason| ClientError::CaFile {
            connection: connection.name.clone(),
            path: path.display().to_string(),
            reason,
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::CaFile {
            connection: connection.name.clone(),
            path: String::new(),
            reason: error.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// Builds the client for `connection`, taking the TLS configuration of an
/// HTTPS upstream from `tls`.
pub fn build_client(
    connection: &Connection,
    tls: &mut TlsConfigs,
) -> Result<HttpClient, ClientError> {
    let mut tcp = CheckedConnector::new(&connection.name, connection.allow_private);
    let http = tcp.http_mut();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connection.timeouts.connect));
    http.set_nodelay(true);
    let upstream = &connection.upstream;
    if upstream.scheme == "http" {
        let pool = Http1Pool::new(tcp, &upstream.host, upstream.port).map_err(|error| {
            ClientError::Upstream {
                connection: connection.name.clone(),
                reason: error.to_string(),
            }
        })?;
        return Ok(HttpClient::Direct(pool));
    }
    let tls = tls.for_connection(connection)?;
    // ALPN offers HTTP/2 and HTTP/1.1 as set in `tls_config`.
    let connector = HttpsConnector::from((tcp, tls));
    Ok(HttpClient::Pooled(Box::new(
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .build(connector),
    )))
}

fn add_ca_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), String> {
    let pem = std::fs::read(path).map_err(|error| error.to_string())?;
    let mut found = 0;
    for certificate in rustls_pemfile::certs(&mut pem.as_slice()) {
        let certificate = certificate.map_err(|error| format!("invalid PEM: {error}"))?;
        roots
            .add(certificate)
            .map_err(|error| format!("invalid certificate: {error}"))?;
        found += 1;
    }
    if found == 0 {
        return Err("no PEM certificates found".into());
    }
    Ok(())
}
