//! End-to-end tests of connections whose upstream speaks HTTPS with a
//! certificate from a private CA: the gateway trusts that CA only through
//! the connection's `ca_file`, and sends the credential only after the
//! upstream's certificate verifies.

#![forbid(unsafe_code)]

mod support;

use std::convert::Infallible;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

use support::castellan::{poll_until, Castellan, BINARY};
use support::http::{get_as, Reply};
use support::leak::assert_no_secret;

const UPSTREAM_KEY: &str = "sk-tls-upstream-credential-5e91c04b";
const SECRET_NAME: &str = "tls-upstream-key";
const AGENT: &str = "tls-bot";

/// Maximum wait for the upstream to notice a handshake that the gateway
/// aborted. The abort arrives within milliseconds on loopback.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// Maximum wait for `castellan serve` to exit when its configuration cannot
/// be activated. It exits before binding, well under a second.
const SERVE_EXIT_WAIT: Duration = Duration::from_secs(30);

/// A private CA and a server certificate for `localhost` and 127.0.0.1
/// that it signed.
struct TestPki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

fn generate_pki() -> TestPki {
    let ca_key = KeyPair::generate().expect("generate the CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "castellan e2e test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("generate the server key");
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let mut server_params = CertificateParams::new(names).expect("server parameters");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("sign the server certificate");

    TestPki {
        ca_pem: ca_cert.pem(),
        server_chain: vec![server_cert.der().clone()],
        server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
    }
}

/// One request as the upstream decoded it, after a completed handshake.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    /// Header names in lower case, in the order received.
    headers: Vec<(String, String)>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What the upstream observed, shared between its tasks and the test.
#[derive(Default)]
struct UpstreamLog {
    received: Mutex<Vec<Received>>,
    failed_handshakes: AtomicUsize,
}

impl UpstreamLog {
    /// Records `request` and responds with its `Authorization` header in a
    /// JSON body, so the test can see what reaches the agent.
    fn echo(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let received = Received {
            path: request.uri().path().to_owned(),
            headers,
        };
        let body = serde_json::json!({ "authorization": received.header("authorization") });
        self.received
            .lock()
            .expect("upstream log lock")
            .push(received);
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("build the echo response")
    }
}

/// An HTTP/1.1 echo server over TLS on 127.0.0.1 with its own runtime.
/// Dropping it shuts the runtime down and closes the port.
struct TlsUpstream {
    port: u16,
    log: Arc<UpstreamLog>,
    _runtime: Runtime,
}

impl TlsUpstream {
    fn start(pki: &TestPki) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS protocol versions")
            .with_no_client_auth()
            .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key().into())
            .expect("server certificate and key");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("build the upstream runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the TLS upstream");
        let port = listener.local_addr().expect("upstream address").port();
        let log = Arc::new(UpstreamLog::default());
        runtime.spawn(accept_tls(listener, acceptor, Arc::clone(&log)));
        TlsUpstream {
            port,
            log,
            _runtime: runtime,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.log.received.lock().expect("upstream log lock").clone()
    }

    fn failed_handshakes(&self) -> usize {
        self.log.failed_handshakes.load(Ordering::SeqCst)
    }
}

async fn accept_tls(listener: TcpListener, acceptor: TlsAcceptor, log: Arc<UpstreamLog>) {
    // An accept error on loopback means the runtime is shutting down.
    while let Ok((stream, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                log.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                return;
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let response = log.echo(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            // A connection the gateway closes mid-request only ends this task.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// Writes a configuration with two connections to the same HTTPS upstream:
/// `trusted-tls` with `ca_file` and `untrusted-tls` without it.
fn write_tls_config(castellan: &Castellan, port: u16, ca_file: &Path) {
    let ca_file = ca_file.to_str().expect("a UTF-8 CA file path");
    assert!(
        !ca_file.contains('\''),
        "the TOML literal string cannot hold {ca_file:?}"
    );
    castellan.write_config(&format!(
        r#"
[connections.trusted-tls]
upstream = "https://localhost:{port}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "{SECRET_NAME}"
ca_file = '{ca_file}'

[connections.untrusted-tls]
upstream = "https://localhost:{port}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "{SECRET_NAME}"

[roles.echo]
allow = [
  {{ connection = "trusted-tls", methods = ["GET"], paths = ["/echo"] }},
  {{ connection = "untrusted-tls", methods = ["GET"], paths = ["/echo"] }},
]

[agents.{AGENT}]
owner = "e2e@example.com"
roles = ["echo"]
"#
    ));
}

/// A gateway in front of a fresh TLS upstream, with the CA in a PEM file.
struct TlsSetup {
    castellan: Castellan,
    upstream: TlsUpstream,
    token: String,
}

fn setup_tls() -> TlsSetup {
    let pki = generate_pki();
    let upstream = TlsUpstream::start(&pki);
    let castellan = Castellan::init();
    let ca_file = castellan.scratch_dir().join("ca.pem");
    fs::write(&ca_file, &pki.ca_pem).expect("write the CA PEM file");
    write_tls_config(&castellan, upstream.port, &ca_file);
    castellan.set_secret(SECRET_NAME, UPSTREAM_KEY);
    let token = castellan.issue_token(AGENT);
    TlsSetup {
        castellan,
        upstream,
        token,
    }
}

/// Panics unless the reply reaching the agent is free of both secrets.
fn assert_reply_leaks_nothing(reply: &Reply, token: &str) {
    let text = reply.everything();
    assert_no_secret(&text, UPSTREAM_KEY, "the reply to the agent");
    assert_no_secret(&text, token, "the reply to the agent");
}

#[test]
fn ca_file_trusts_private_upstream() {
    let setup = setup_tls();
    let server = setup.castellan.serve();

    let reply = get_as(&server.url("/trusted-tls/echo"), &setup.token);

    assert_eq!(reply.status, 200, "body: {}\n{}", reply.body, server.logs());
    assert!(reply.header("x-request-id").is_some(), "{reply:?}");
    assert_reply_leaks_nothing(&reply, &setup.token);
    let received = setup.upstream.received();
    assert_eq!(received.len(), 1, "upstream received {received:?}");
    assert_eq!(received[0].path, "/echo");
    let expected = format!("Bearer {UPSTREAM_KEY}");
    assert_eq!(received[0].header("authorization"), Some(expected.as_str()));
    for (name, value) in &received[0].headers {
        assert!(
            !value.contains(&setup.token),
            "the agent token reached the upstream in header {name}"
        );
    }
    assert_no_secret(&server.stderr(), UPSTREAM_KEY, "the gateway log");
}

#[test]
fn untrusted_certificate_gets_502_without_credential() {
    let setup = setup_tls();
    let server = setup.castellan.serve();

    let reply = get_as(&server.url("/untrusted-tls/echo"), &setup.token);

    assert_eq!(reply.status, 502, "body: {}\n{}", reply.body, server.logs());
    assert_eq!(reply.json()["error"], "bad_gateway", "body: {}", reply.body);
    assert_reply_leaks_nothing(&reply, &setup.token);
    let aborted = poll_until(HANDSHAKE_WAIT, || setup.upstream.failed_handshakes() > 0);
    assert!(aborted.is_some(), "the gateway never reached the upstream");
    let received = setup.upstream.received();
    assert!(received.is_empty(), "upstream received {received:?}");
    let stderr = server.stderr();
    assert!(
        stderr.contains("certificate"),
        "the gateway log does not name the certificate problem:\n{stderr}"
    );
    assert_no_secret(&stderr, UPSTREAM_KEY, "the gateway log");

    // The same upstream responds through the connection that trusts its CA,
    // so only the missing ca_file made the first call fail.
    let trusted = get_as(&server.url("/trusted-tls/echo"), &setup.token);
    assert_eq!(trusted.status, 200, "body: {}", trusted.body);
    assert_eq!(setup.upstream.received().len(), 1);
}

/// Output of a `castellan serve` that exited on its own.
struct ServeExit {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs `castellan serve` on ephemeral loopback ports and waits up to
/// `limit` for it to exit. A gateway still running then is killed and
/// reported with `status: None`.
fn serve_until_exit(castellan: &Castellan, limit: Duration) -> ServeExit {
    let output_file = |name: &str| -> (PathBuf, File) {
        let path = castellan.scratch_dir().join(name);
        let file = File::create(&path).expect("create a serve output file");
        (path, file)
    };
    let (stdout_path, stdout) = output_file("serve-exit.stdout");
    let (stderr_path, stderr) = output_file("serve-exit.stderr");
    let mut child = Command::new(BINARY)
        .arg("--data-dir")
        .arg(castellan.data_dir())
        .arg("--config")
        .arg(castellan.config_path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .env_remove("CASTELLAN_DATA_DIR")
        .env_remove("CASTELLAN_CONFIG")
        .env_remove("CASTELLAN_PASSPHRASE_FILE")
        .env_remove("CASTELLAN_LOG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start castellan serve");

    let deadline = Instant::now() + limit;
    let mut status = None;
    while status.is_none() && Instant::now() < deadline {
        status = child.try_wait().expect("poll castellan serve");
        thread::sleep(Duration::from_millis(20));
    }
    if status.is_none() {
        // The error is ignored because the process may exit in between.
        let _ = child.kill();
    }
    // Reaps the process. On a child that already exited, `wait` returns its
    // status again.
    let _ = child.wait();
    ServeExit {
        status,
        stdout: fs::read_to_string(stdout_path).unwrap_or_default(),
        stderr: fs::read_to_string(stderr_path).unwrap_or_default(),
    }
}

#[test]
fn missing_ca_file_stops_serve_only() {
    let castellan = Castellan::init();
    let missing = castellan.scratch_dir().join("no-such-dir").join("ca.pem");
    // The gateway never starts, so nothing connects to this port.
    write_tls_config(&castellan, 9, &missing);
    castellan.set_secret(SECRET_NAME, UPSTREAM_KEY);

    // `config check` validates syntax and references, not the file system.
    let check = castellan.cli(&["config", "check"]);
    assert!(
        check.status.success(),
        "config check failed: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let exit = serve_until_exit(&castellan, SERVE_EXIT_WAIT);

    let status = exit.status.expect("castellan serve kept running");
    assert!(!status.success(), "castellan serve exited with {status}");
    assert!(
        !exit.stdout.contains("listening"),
        "castellan serve listened anyway: {}",
        exit.stdout
    );
    let path = missing.to_string_lossy();
    assert!(
        exit.stderr.contains(path.as_ref()),
        "stderr does not name {path}:\n{}",
        exit.stderr
    );
    assert!(
        exit.stderr.contains("ca_file"),
        "stderr does not name the ca_file setting:\n{}",
        exit.stderr
    );
}
