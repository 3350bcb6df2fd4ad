//! TLS on the agent listener: token agents over HTTPS, agents identified by
//! client certificates, and certificate reload on SIGHUP.

#![forbid(unsafe_code)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_rustls::TlsConnector;

use support::castellan::{poll_until, Castellan};
use support::http::raw_exchange;
use support::peers::{spawn_httpbin, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-tls-listener-Vf3Jq8Rm1Ks5";
const CERT_AGENT_ID: &str = "spiffe://castellan.test/agent/cert-bot";
const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// A test CA that signs server and client certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Signs a certificate; returns its PEM, its DER and the key's PEM.
    fn sign(&self, common_name: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().expect("generate a leaf key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("sign a leaf");
        Leaf {
            cert_pem: cert.pem(),
            der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    fn server(&self) -> Leaf {
        let sans = vec![
            SanType::DnsName("localhost".try_into().expect("DNS name")),
            SanType::IpAddress("127.0.0.1".parse().expect("address")),
        ];
        self.sign("localhost", sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self, spiffe_id: &str, common_name: &str) -> Leaf {
        let sans = vec![SanType::URI(spiffe_id.try_into().expect("URI"))];
        self.sign(common_name, sans, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

struct Leaf {
    cert_pem: String,
    der: CertificateDer<'static>,
    key_pem: String,
    key_der: Vec<u8>,
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write a PEM file");
    path
}

/// The status and the server certificate of one HTTPS GET.
struct Exchange {
    status: u16,
    server_cert: CertificateDer<'static>,
}

fn https_get(
    address: SocketAddr,
    ca_pem: &str,
    client: Option<&Leaf>,
    path: &str,
    token: Option<&str>,
) -> Result<Exchange, String> {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|value| vec![("authorization", value)])
        .unwrap_or_default();
    https_get_with_headers(address, ca_pem, client, path, &headers)
}

fn https_get_with_headers(
    address: SocketAddr,
    ca_pem: &str,
    client: Option<&Leaf>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Exchange, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(ca_pem) {
        roots.add(cert).expect("add the test CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone())),
            )
            .expect("client certificate"),
    };
    let runtime = Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let exchange = async {
            let stream = TcpStream::connect(address)
                .await
                .map_err(|e| e.to_string())?;
            let connector = TlsConnector::from(Arc::new(config));
            let name = ServerName::try_from("localhost").expect("server name");
            let tls = connector
                .connect(name, stream)
                .await
                .map_err(|e| e.to_string())?;
            let server_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .cloned()
                .ok_or("no server certificate")?;
            let (mut sender, connection) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let mut request = Request::get(path).header("host", "localhost");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request.body(Empty::<Bytes>::new()).expect("request");
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            Ok::<_, String>(Exchange {
                status,
                server_cert,
            })
        };
        tokio::time::timeout(EXCHANGE_LIMIT, exchange)
            .await
            .map_err(|_| "timed out".to_string())?
    })
}

fn rustls_pemfile_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    let mut certs = Vec::new();
    for block in pem.split("-----END CERTIFICATE-----") {
        let Some(start) = block.find("-----BEGIN CERTIFICATE-----") else {
            continue;
        };
        let body: String = block[start + 27..]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("valid base64 in a PEM block");
        certs.push(CertificateDer::from(der));
    }
    certs
}

struct Setup {
    _httpbin: Peer,
    castellan: Castellan,
    ca: TestCa,
    cert_path: PathBuf,
    key_path: PathBuf,
    client_ca_path: PathBuf,
}

fn setup() -> Setup {
    let httpbin = spawn_httpbin();
    let castellan = Castellan::init();
    castellan.write_config(&format!(
        r#"
[connections.httpbin]
upstream = "{}"
auth = {{ kind = "bearer" }}
secret = "httpbin-key"
allow_private = true

[roles.reader]
allow = [{{ connection = "httpbin", methods = ["GET"], paths = ["/get"] }}]

[agents.token-bot]
owner = "ops@example.com"
roles = ["reader"]

[agents.cert-bot]
owner = "ops@example.com"
roles = ["reader"]
client_certificate = "{CERT_AGENT_ID}"

[agents.cn-bot]
owner = "ops@example.com"
roles = ["reader"]
client_certificate = "CN=cn-bot"
"#,
        httpbin.base_url()
    ));
    castellan.set_secret("httpbin-key", UPSTREAM_KEY);
    let ca = TestCa::new("castellan e2e listener CA");
    let server = ca.server();
    let dir = castellan.scratch_dir().to_path_buf();
    Setup {
        cert_path: write(&dir, "server.pem", &server.cert_pem),
        key_path: write(&dir, "server-key.pem", &server.key_pem),
        client_ca_path: write(&dir, "client-ca.pem", &ca.pem),
        _httpbin: httpbin,
        castellan,
        ca,
    }
}

fn tls_args(setup: &Setup) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        setup.cert_path.display().to_string(),
        "--tls-key".into(),
        setup.key_path.display().to_string(),
        "--client-ca".into(),
        setup.client_ca_path.display().to_string(),
    ]
}

fn serve_tls(setup: &Setup) -> support::castellan::Server {
    let args = tls_args(setup);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    setup.castellan.serve_with(&args, &[])
}

#[test]
fn https_serves_token_agents() {
    let setup = setup();
    let token = setup.castellan.issue_token("token-bot");
    let server = serve_tls(&setup);

    let exchange = https_get(
        server.agent_addr,
        &setup.ca.pem,
        None,
        "/httpbin/get",
        Some(&token),
    )
    .expect("HTTPS exchange");
    assert_eq!(exchange.status, 200);
    let without_token = https_get(server.agent_addr, &setup.ca.pem, None, "/httpbin/get", None)
        .expect("HTTPS exchange");
    assert_eq!(without_token.status, 401);

    let plain = raw_exchange(
        server.agent_addr,
        &format!("GET /httpbin/get HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    );
    assert!(
        !plain.starts_with("HTTP/1.1 200"),
        "plain HTTP was served: {plain}"
    );
}

#[test]
fn client_certificate_authenticates_agent() {
    let setup = setup();
    let server = serve_tls(&setup);
    let client = setup.ca.client(CERT_AGENT_ID, "cert-bot");

    let exchange = https_get(
        server.agent_addr,
        &setup.ca.pem,
        Some(&client),
        "/httpbin/get",
        None,
    )
    .expect("mutual TLS exchange");

    assert_eq!(exchange.status, 200);
    let audited = poll_until(Duration::from_secs(3), || {
        setup.castellan.audit_records().iter().any(|record| {
            record["agent"] == "cert-bot"
                && record["token_id"] == format!("certificate:{CERT_AGENT_ID}")
                && record["status"] == 200
        })
    });
    assert!(audited.is_some(), "{:?}", setup.castellan.audit_records());
}

#[test]
fn unbound_certificate_needs_token() {
    let setup = setup();
    let server = serve_tls(&setup);
    let stranger = setup
        .ca
        .client("spiffe://castellan.test/agent/stranger", "stranger");

    let exchange = https_get(
        server.agent_addr,
        &setup.ca.pem,
        Some(&stranger),
        "/httpbin/get",
        None,
    )
    .expect("mutual TLS exchange");

    assert_eq!(exchange.status, 401);
}

#[test]
fn certificate_and_token_must_agree() {
    let setup = setup();
    let token = setup.castellan.issue_token("token-bot");
    let server = serve_tls(&setup);
    let client = setup.ca.client(CERT_AGENT_ID, "cert-bot");

    let exchange = https_get(
        server.agent_addr,
        &setup.ca.pem,
        Some(&client),
        "/httpbin/get",
        Some(&token),
    )
    .expect("mutual TLS exchange");

    assert_eq!(exchange.status, 401);
}

#[test]
fn certificate_from_other_ca_rejected() {
    let setup = setup();
    let server = serve_tls(&setup);
    let other_ca = TestCa::new("another CA");
    let forged = other_ca.client(CERT_AGENT_ID, "cert-bot");

    let result = https_get(
        server.agent_addr,
        &setup.ca.pem,
        Some(&forged),
        "/httpbin/get",
        None,
    );

    assert!(
        result
            .as_ref()
            .map_or(true, |exchange| exchange.status != 200),
        "a certificate from another CA was accepted"
    );
}

#[test]
fn sighup_reloads_server_certificate() {
    let setup = setup();
    let token = setup.castellan.issue_token("token-bot");
    let server = serve_tls(&setup);
    let before = https_get(
        server.agent_addr,
        &setup.ca.pem,
        None,
        "/httpbin/get",
        Some(&token),
    )
    .expect("HTTPS exchange");

    let renewed = setup.ca.server();
    std::fs::write(&setup.cert_path, &renewed.cert_pem).expect("replace the certificate");
    std::fs::write(&setup.key_path, &renewed.key_pem).expect("replace the key");
    server.signal("HUP");

    let reloaded = poll_until(Duration::from_secs(5), || {
        https_get(
            server.agent_addr,
            &setup.ca.pem,
            None,
            "/httpbin/get",
            Some(&token),
        )
        .is_ok_and(|exchange| exchange.server_cert == renewed.der)
    });
    assert!(reloaded.is_some(), "the renewed certificate was not served");
    assert_ne!(before.server_cert, renewed.der);
}

#[test]
fn second_token_no_certificate_fallback() {
    let setup = setup();
    let first = setup.castellan.issue_token("token-bot");
    let second = setup.castellan.issue_token("cn-bot");
    let server = serve_tls(&setup);
    let client = setup.ca.client(CERT_AGENT_ID, "cert-bot");

    // Two different tokens are rejected, never replaced by the certificate.
    let exchange = https_get_with_headers(
        server.agent_addr,
        &setup.ca.pem,
        Some(&client),
        "/httpbin/get",
        &[
            ("authorization", &format!("Bearer {first}")),
            ("x-api-key", &second),
        ],
    )
    .expect("mutual TLS exchange");

    assert_eq!(exchange.status, 401);
}

#[test]
fn certificate_matching_two_agents_rejected() {
    let setup = setup();
    let server = serve_tls(&setup);
    let ambiguous = setup.ca.client(CERT_AGENT_ID, "cn-bot");

    let exchange = https_get(
        server.agent_addr,
        &setup.ca.pem,
        Some(&ambiguous),
        "/httpbin/get",
        None,
    )
    .expect("mutual TLS exchange");

    assert_eq!(exchange.status, 401);
}
