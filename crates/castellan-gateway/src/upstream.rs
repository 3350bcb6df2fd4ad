//! HTTP clients for upstreams: pooled, TLS through rustls, one per
//! connection so each keeps its own timeouts and address check. Connections
//! with the same trust roots share one TLS configuration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use castellan_model::Connection;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::RequestBody;
use crate::dial::CheckedConnector;

pub type HttpClient = Client<HttpsConnector<CheckedConnector>, RequestBody>;

/// Error building an upstream client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read CA file {path} for connection {connection:?}: {reason}; check the path in ca_file")]
    CaFile {
        connection: String,
        path: String,
        reason: String,
    },
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

/// Builds the pooled client for `connection`, taking its TLS configuration
/// from `tls`.
pub fn build_client(
    connection: &Connection,
    tls: &mut TlsConfigs,
) -> Result<HttpClient, ClientError> {
    let tls = tls.for_connection(connection)?;
    let mut tcp = CheckedConnector::new(&connection.name, connection.allow_private);
    let http = tcp.http_mut();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connection.timeouts.connect));
    http.set_nodelay(true);
    // Plain http upstreams are allowed (force_https stays off), and ALPN
    // offers HTTP/2 and HTTP/1.1 as set in `tls_config`.
    let connector = HttpsConnector::from((tcp, tls));
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .build(connector))
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
