//! End-to-end tests of the agent listener's protocols: agents speaking
//! HTTP/2 with prior knowledge (h2c) and HTTP/1.1 share one port, and the
//! gateway forwards both to an HTTP/1.1 upstream.

#![forbid(unsafe_code)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::{http1 as client_http1, http2 as client_http2};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use support::castellan::Castellan;
use support::leak::assert_no_secret;

const UPSTREAM_KEY: &str = "sk-h2-upstream-credential-81b3f6a2";
const SECRET_NAME: &str = "plain-upstream-key";
const AGENT: &str = "h2-bot";
const UPSTREAM_BODY: &str = "hello from the upstream";

/// Limit for one whole exchange with the gateway, handshake included. A
/// loopback round trip through the gateway takes milliseconds.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// One request as the upstream decoded it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    version: Version,
    headers: HeaderMap,
}

/// A plain HTTP/1.1 server on 127.0.0.1 that records each request and
/// responds 200 with [`UPSTREAM_BODY`]. It has its own runtime, so dropping
/// it closes the port.
struct PlainUpstream {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    _runtime: Runtime,
}

impl PlainUpstream {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("build the upstream runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the upstream");
        let port = listener.local_addr().expect("upstream address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        runtime.spawn(accept_plain(listener, Arc::clone(&received)));
        PlainUpstream {
            port,
            received,
            _runtime: runtime,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("upstream log lock").clone()
    }
}

async fn accept_plain(listener: TcpListener, received: Arc<Mutex<Vec<Received>>>) {
    // An accept error on loopback means the runtime is shutting down.
    while let Ok((stream, _)) = listener.accept().await {
        let received = Arc::clone(&received);
        let service = service_fn(move |request: Request<Incoming>| {
            received.lock().expect("upstream log lock").push(Received {
                path: request.uri().path().to_owned(),
                version: request.version(),
                headers: request.headers().clone(),
            });
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(UPSTREAM_BODY)))) }
        });
        tokio::spawn(async move {
            // A connection the gateway closes mid-request only ends this task.
            let _ = server_http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A gateway in front of a fresh upstream. The agent may `GET /hello` only.
struct Setup {
    castellan: Castellan,
    upstream: PlainUpstream,
    token: String,
}

fn setup() -> Setup {
    let upstream = PlainUpstream::start();
    let castellan = Castellan::init();
    castellan.write_config(&format!(
        r#"
[connections.plain]
upstream = "http://127.0.0.1:{port}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "{SECRET_NAME}"

[roles.reader]
allow = [{{ connection = "plain", methods = ["GET"], paths = ["/hello"] }}]

[agents.{AGENT}]
owner = "e2e@example.com"
roles = ["reader"]
"#,
        port = upstream.port
    ));
    castellan.set_secret(SECRET_NAME, UPSTREAM_KEY);
    let token = castellan.issue_token(AGENT);
    Setup {
        castellan,
        upstream,
        token,
    }
}

/// A response read whole by the agent.
#[derive(Debug)]
struct AgentReply {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: String,
}

impl AgentReply {
    fn request_id(&self) -> Option<&str> {
        self.headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {}", self.body))
    }

    /// Returns every header and the body as one string, for leak searches.
    fn everything(&self) -> String {
        let mut text = format!("{:?}\n", self.headers);
        text.push_str(&self.body);
        text
    }
}

async fn read_reply(response: Response<Incoming>) -> AgentReply {
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .expect("read the response body")
        .to_bytes();
    AgentReply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Opens an HTTP/2 connection with prior knowledge: no upgrade, the client
/// preface goes first.
async fn connect_h2(addr: SocketAddr) -> client_http2::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the gateway");
    let (sender, connection) = client_http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake with the gateway");
    tokio::spawn(connection);
    sender
}

/// Sends `GET path` over `sender`. HTTP/2 takes the authority from the
/// request URI, so the URI is absolute.
async fn get_h2(
    sender: &client_http2::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    token: &str,
) -> AgentReply {
    let request = Request::get(format!("http://{addr}{path}"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .expect("build the HTTP/2 request");
    let response = sender
        .clone()
        .send_request(request)
        .await
        .expect("send the HTTP/2 request");
    read_reply(response).await
}

/// Sends `GET path` over a new HTTP/1.1 connection.
async fn get_http1(addr: SocketAddr, path: &str, token: &str) -> AgentReply {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the gateway");
    let (mut sender, connection) = client_http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake with the gateway");
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .expect("build the HTTP/1.1 request");
    let response = sender
        .send_request(request)
        .await
        .expect("send the HTTP/1.1 request");
    read_reply(response).await
}

/// Runs `exchange` on a fresh runtime, failing the test if it takes longer
/// than [`EXCHANGE_TIMEOUT`].
fn run_exchange<T>(exchange: impl std::future::Future<Output = T>) -> T {
    let runtime = Runtime::new().expect("build the agent runtime");
    // The timer must be created inside the runtime, so inside `block_on`.
    runtime
        .block_on(async { tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await })
        .expect("the exchange with the gateway timed out")
}

/// Panics unless the upstream received exactly one request, for `/hello`
/// over HTTP/1.1 with the injected credential and without the agent token.
fn assert_one_forwarded(upstream: &PlainUpstream, token: &str) {
    let received = upstream.received();
    assert_eq!(received.len(), 1, "upstream received {received:?}");
    assert_eq!(received[0].path, "/hello");
    assert_eq!(received[0].version, Version::HTTP_11);
    let expected = format!("Bearer {UPSTREAM_KEY}");
    assert_eq!(
        received[0].headers.get(AUTHORIZATION).map(|v| v.as_bytes()),
        Some(expected.as_bytes())
    );
    assert_no_secret(
        &format!("{:?}", received[0].headers),
        token,
        "the upstream's request headers",
    );
}

#[test]
fn h2_prior_knowledge_get_forwarded() {
    let setup = setup();
    let server = setup.castellan.serve();
    let addr = server.agent_addr;

    let reply = run_exchange(async {
        let sender = connect_h2(addr).await;
        get_h2(&sender, addr, "/plain/hello", &setup.token).await
    });

    assert_eq!(reply.status, StatusCode::OK, "{reply:?}\n{}", server.logs());
    assert_eq!(reply.version, Version::HTTP_2);
    assert!(reply.request_id().is_some(), "{reply:?}");
    assert_eq!(reply.body, UPSTREAM_BODY);
    assert_no_secret(&reply.everything(), UPSTREAM_KEY, "the HTTP/2 reply");
    assert_one_forwarded(&setup.upstream, &setup.token);
}

#[test]
fn h2_denied_request_gets_403_json() {
    let setup = setup();
    let server = setup.castellan.serve();
    let addr = server.agent_addr;

    // Both requests share one connection as concurrent streams, so the
    // denial must not disturb the allowed stream next to it.
    let (denied, allowed) = run_exchange(async {
        let sender = connect_h2(addr).await;
        tokio::join!(
            get_h2(&sender, addr, "/plain/admin", &setup.token),
            get_h2(&sender, addr, "/plain/hello", &setup.token),
        )
    });

    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{denied:?}");
    assert_eq!(denied.version, Version::HTTP_2);
    assert_eq!(denied.json()["error"], "forbidden", "{denied:?}");
    assert!(denied.request_id().is_some(), "{denied:?}");
    assert_no_secret(&denied.everything(), &setup.token, "the 403 reply");
    assert_no_secret(&denied.everything(), UPSTREAM_KEY, "the 403 reply");
    assert_eq!(allowed.status, StatusCode::OK, "{allowed:?}");
    assert_one_forwarded(&setup.upstream, &setup.token);
}

#[test]
fn http1_and_h2_share_listener() {
    let setup = setup();
    let server = setup.castellan.serve();
    let addr = server.agent_addr;

    let (http1_reply, h2_reply) = run_exchange(async {
        let http1_reply = get_http1(addr, "/plain/hello", &setup.token).await;
        let sender = connect_h2(addr).await;
        let h2_reply = get_h2(&sender, addr, "/plain/hello", &setup.token).await;
        (http1_reply, h2_reply)
    });

    for (reply, version) in [
        (&http1_reply, Version::HTTP_11),
        (&h2_reply, Version::HTTP_2),
    ] {
        assert_eq!(reply.status, StatusCode::OK, "{version:?}: {reply:?}");
        assert_eq!(reply.version, version);
        assert!(reply.request_id().is_some(), "{version:?}: {reply:?}");
        assert_eq!(reply.body, UPSTREAM_BODY, "{version:?}");
    }
    assert_ne!(http1_reply.request_id(), h2_reply.request_id());
    assert_eq!(setup.upstream.received().len(), 2);
}
