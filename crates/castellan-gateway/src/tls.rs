//! TLS termination on the agent listener, with optional client
//! certificates that identify agents instead of tokens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use castellan_model::ClientIdentity;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Files and policy of the listener's TLS.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to; without
    /// it no client certificate is requested.
    pub client_ca: Option<PathBuf>,
    /// Rejects handshakes without a client certificate.
    pub require_client_cert: bool,
}

/// Error loading the listener's TLS files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// The listener's TLS configuration, replaceable while serving.
pub struct TlsTerminator {
    settings: TlsSettings,
    config: ArcSwap<ServerConfig>,
}

impl TlsTerminator {
    pub fn load(settings: TlsSettings) -> Result<Self, TlsError> {
        let config = build_config(&settings)?;
        Ok(TlsTerminator {
            settings,
            config: ArcSwap::from_pointee(config),
        })
    }

    /// Reads the files again; on error the current configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build_config(&self.settings)?;
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// Returns an acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }
}

fn build_config(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&settings.cert, "certificate file")?;
    let key = read_key(&settings.key)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path, "client CA file")? {
                roots.add(cert).map_err(|error| {
                    TlsError::Config(format!("client CA {}: {error}", path.display()))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|error| TlsError::Config(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|error| TlsError::Config(format!("certificate and key do not match: {error}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        what,
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|error| file_error(error.to_string()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|error| file_error(format!("invalid PEM: {error}")))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificates found".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        what: "key file",
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|error| file_error(error.to_string()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|error| file_error(format!("invalid PEM: {error}")))?
        .ok_or_else(|| file_error("no PEM private key found".into()))
}

/// Returns the identities that a verified client certificate carries: its
/// SPIFFE IDs (URI subject alternative names) and subject common names.
pub fn client_identities(certificate: &CertificateDer<'_>) -> Vec<ClientIdentity> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return Vec::new();
    };
    let mut identities = Vec::new();
    if let Ok(Some(names)) = parsed.subject_alternative_name() {
        for name in &names.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                if uri.starts_with("spiffe://") {
                    identities.push(ClientIdentity::SpiffeId((*uri).to_string()));
                }
            }
        }
    }
    for common_name in parsed.subject().iter_common_name() {
        if let Ok(name) = common_name.as_str() {
            identities.push(ClientIdentity::CommonName(name.to_string()));
        }
    }
    identities
}
