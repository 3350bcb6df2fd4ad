//! The agent listener: accepts connections, speaks HTTP/1.1 and HTTP/2,
//! and drains in-flight requests on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;

use crate::head_guard::HeadGuard;
use crate::proxy::{Gateway, Peer};
use crate::tls::{client_identities, TlsTerminator};

/// Limit for reading a request head over HTTP/1.1. hyper starts this timer
/// whenever it waits for a head, so it is also the idle timeout of
/// keep-alive connections, and a slow client cannot hold one open for long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head accepted: HTTP/1.1 heads must fit in the read
/// buffer (larger ones get 431), HTTP/2 header lists likewise.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Most header fields in one HTTP/1.1 request.
pub(crate) const MAX_HEADERS: usize = 128;

/// Most concurrent HTTP/2 streams on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Limit for a client to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a shutdown waits for in-flight requests to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves agents on `listener` until `shutdown` completes, then waits for
/// in-flight requests (at most 30 seconds).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<Arc<TlsTerminator>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, address) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually a full file descriptor table; back off and go on.
                tracing::warn!(%error, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gateway = Arc::clone(&gateway);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(tls) = tls else {
                let peer = Arc::new(Peer {
                    address,
                    certificate: Vec::new(),
                });
                return serve_io(&builder, watcher, stream, gateway, peer).await;
            };
            let handshake =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::info!(client.ip = %address.ip(), %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(client.ip = %address.ip(), "TLS handshake timed out");
                    return;
                }
            };
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(client_identities)
                .unwrap_or_default();
            let peer = Arc::new(Peer {
                address,
                certificate,
            });
            serve_io(&builder, watcher, stream, gateway, peer).await;
        });
    }
    tracing::info!("agent listener stopped accepting; draining in-flight requests");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests still running after the drain timeout; closing them");
    }
}

/// Serves HTTP on one accepted connection, plain or TLS, with its HTTP/1.1
/// request framing checked before hyper reads it.
async fn serve_io<I>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: I,
    gateway: Arc<Gateway>,
    peer: Arc<Peer>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client_ip = peer.address.ip();
    let io = TokioIo::new(HeadGuard::new(io, client_ip, HEADER_READ_TIMEOUT));
    let service = service_fn(move |request| {
        let gateway = Arc::clone(&gateway);
        let peer = Arc::clone(&peer);
        async move { Ok::<_, std::convert::Infallible>(gateway.handle(request, peer).await) }
    });
    let connection = watcher.watch(builder.serve_connection(io, service).into_owned());
    if let Err(error) = connection.await {
        tracing::debug!(client.ip = %client_ip, error = %error, "agent connection ended with an error");
    }
}
