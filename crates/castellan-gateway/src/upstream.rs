//! HTTP clients for upstreams: pooled, TLS through rustls, one per
//! connection so each keeps its own trust roots, timeouts and address check.

use std::path::Path;
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

/// Builds the pooled client for `connection`.
pub fn build_client(connection: &Connection) -> Result<HttpClient, ClientError> {
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
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::CaFile {
            connection: connection.name.clone(),
            path: String::new(),
            reason: error.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut tcp = CheckedConnector::new(&connection.name, connection.allow_private);
    let http = tcp.http_mut();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connection.timeouts.connect));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
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
