//! The agent listener: accepts connections, speaks HTTP/1.1 and HTTP/2,
//! and drains in-flight requests on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::proxy::Gateway;

/// Limit for reading a request's headers; a slow client cannot hold a
/// connection open forever without sending a request.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a shutdown waits for in-flight requests to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves agents on `listener` until `shutdown` completes, then waits for
/// in-flight requests (at most 30 seconds).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
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
        let service = service_fn(move |request| {
            let gateway = Arc::clone(&gateway);
            async move { Ok::<_, std::convert::Infallible>(gateway.handle(request, peer).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(client.ip = %peer.ip(), error = %error, "agent connection ended with an error");
            }
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
