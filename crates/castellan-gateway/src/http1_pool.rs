//! Plain-HTTP upstream connections that the request using them drives.
//!
//! hyper-util's pooled client runs each upstream connection as a task of
//! its own. A request hands its head to that task through a channel, the
//! response comes back through another, and every body frame crosses
//! between the two tasks as well. For an `http` upstream, [`Http1Pool`]
//! lends the connection itself to the request instead: the request's task
//! writes the request, reads the response and its body, and returns the
//! connection to the pool when the body ends. HTTPS upstreams keep the
//! pooled client, which negotiates HTTP/2 through ALPN.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::client::conn::TrySendError as HyperTrySendError;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_service::Service;

use crate::body::RequestBody;
use crate::dial::CheckedConnector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TrySendError = HyperTrySendError<Request<RequestBody>>;

/// How long an unused connection stays open, the same as for the pooled
/// client of HTTPS upstreams.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Maximum number of unused connections kept for one upstream. A
/// connection returned beyond it is closed.
const MAX_IDLE: usize = 512;

/// How often a background task checks the unused connections of a pool.
/// It closes those that stayed unused for [`IDLE_TIMEOUT`] and those that
/// the upstream has closed, which nothing else notices while they wait.
const PRUNE_INTERVAL: Duration = Duration::from_secs(5);

/// Error of a request through an [`Http1Pool`].
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    /// No connection to the upstream could be opened.
    #[error("cannot connect to the upstream")]
    Connect(#[source] BoxError),
    /// A new connection closed before it could take the request.
    #[error("the upstream closed a new connection before the request was sent")]
    Closed,
    /// The exchange on an open connection failed.
    #[error("the upstream exchange failed")]
    Exchange(#[source] hyper::Error),
}

/// Unused HTTP/1.1 connections to one plain-HTTP upstream, lent to one
/// request at a time.
pub struct Http1Pool {
    connector: CheckedConnector,
    /// Address that new connections dial: `http://host:port`.
    origin: Uri,
    /// `Host` header of every request, as hyper-util's client wrote it:
    /// the host, with the port unless it is 80.
    host: HeaderValue,
    idle: Mutex<IdleSet>,
}

#[derive(Default)]
struct IdleSet {
    /// Unused connections, the oldest at the front. A request takes the
    /// newest, from the back.
    connections: VecDeque<Idle>,
    /// Set while a task prunes this pool. It runs only while there are
    /// unused connections, so the pools of a thousand quiet upstreams
    /// keep no task and no timer.
    pruning: bool,
}

struct Idle {
    connection: Box<Lent>,
    since: Instant,
}

/// One upstream connection: the handle that queues requests and the
/// dispatcher future that performs its I/O. The request or response body
/// that owns the connection polls the dispatcher.
struct Lent {
    sender: SendRequest<RequestBody>,
    driver: Option<Connection<TokioIo<TcpStream>, RequestBody>>,
}

impl Lent {
    /// Polls the connection's I/O. Returns true once the connection has
    /// ended, and then does not poll it again.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = &mut self.driver else {
            return true;
        };
        match Pin::new(driver).poll(cx) {
            Poll::Pending => false,
            Poll::Ready(result) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "upstream connection ended with an error");
                }
                self.driver = None;
                true
            }
        }
    }

    /// Waits until the connection can take a request. Fails when it has
    /// closed, as an unused one does when the upstream closes it first.
    async fn ready(&mut self) -> Result<(), ()> {
        poll_fn(|cx| {
            if self.drive(cx) {
                return Poll::Ready(Err(()));
            }
            self.sender.poll_ready(cx).map_err(|_| ())
        })
        .await
    }
}

impl Http1Pool {
    /// Builds the pool for an upstream at `host:port`, dialing through
    /// `connector`.
    pub fn new(
        connector: CheckedConnector,
        host: &str,
        port: u16,
    ) -> Result<Arc<Self>, http::Error> {
        let bracketed = match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => host.to_owned(),
        };
        let authority: Authority = format!("{bracketed}:{port}").parse()?;
        let origin = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query("/")
            .build()?;
        let host = if port == 80 {
            HeaderValue::from_str(&bracketed)?
        } else {
            HeaderValue::from_str(&format!("{bracketed}:{port}"))?
        };
        let pool = Arc::new(Http1Pool {
            connector,
            origin,
            host,
            idle: Mutex::new(IdleSet::default()),
        });
        Ok(pool)
    }

    /// Sends `request` on an unused connection, or on a new one, and
    /// returns the response with the connection inside its body.
    ///
    /// The request's URI may be absolute; only its path and query are
    /// sent. A request that an unused connection closed before taking it
    /// is sent once more on a new connection, as hyper-util's client does.
    pub async fn request(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
    ) -> Result<Response<Http1Body>, Http1Error> {
        self.prepare(&mut request);
        // See `exchange_with_body` for why a request body changes how the
        // connection is driven.
        let streams_body = !request.body().is_end_stream();
        loop {
            let (mut lent, reused) = match self.checkout() {
                Some(lent) => (lent, true),
                None => (self.dial().await?, false),
            };
            if lent.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(Http1Error::Closed);
            }
            let sending = lent.sender.try_send_request(request);
            let outcome = if streams_body {
                self.exchange_with_body(lent, sending).await
            } else {
                self.exchange_in_place(lent, sending).await
            };
            match outcome {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Http1Error::Exchange(error.into_error())),
                },
            }
        }
    }

    /// Drives `lent` from this task until the response to `sending`
    /// arrives, then lends it to the response body.
    async fn exchange_in_place(
        self: &Arc<Self>,
        mut lent: Box<Lent>,
        sending: impl Future<Output = Result<Response<Incoming>, TrySendError>>,
    ) -> Result<Response<Http1Body>, TrySendError> {
        let mut sending = std::pin::pin!(sending);
        let response = poll_fn(|cx| {
            lent.drive(cx);
            sending.as_mut().poll(cx)
        })
        .await?;
        let pool = Arc::clone(self);
        Ok(response.map(|inner| Http1Body {
            inner,
            lease: Some(Lease { lent, pool }),
        }))
    }

    /// Hands `lent` to a task of its own, which drives it until it can take
    /// the next request, and waits for the response to `sending`.
    ///
    /// An upstream may respond while the request body is still going out.
    /// Driven only by the response body, the connection would then stop
    /// sending the request body whenever the agent stops reading, and an
    /// agent that sends its whole body before it reads would wait forever.
    /// A request with a body therefore crosses between two tasks, as every
    /// request did with hyper-util's client, and the response body only
    /// reads what that task receives.
    async fn exchange_with_body(
        self: &Arc<Self>,
        mut lent: Box<Lent>,
        sending: impl Future<Output = Result<Response<Incoming>, TrySendError>>,
    ) -> Result<Response<Http1Body>, TrySendError> {
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            // Ready again once the request is sent and the response read.
            if lent.ready().await.is_ok() {
                pool.release(lent);
            }
        });
        let response = sending.await?;
        Ok(response.map(|inner| Http1Body { inner, lease: None }))
    }

    /// Turns an absolute URI into the origin form that HTTP/1.1 sends
    /// and sets `Host`, as hyper-util's client does.
    fn prepare(&self, request: &mut Request<RequestBody>) {
        if request.uri().authority().is_some() {
            let path = request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *request.uri_mut() = Uri::from(path);
        }
        request
            .headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| self.host.clone());
    }

    /// Takes the most recently used connection that is still open.
    fn checkout(&self) -> Option<Box<Lent>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = Instant::now();
        while let Some(entry) = idle.connections.pop_back() {
            if now.duration_since(entry.since) < IDLE_TIMEOUT
                && !entry.connection.sender.is_closed()
            {
                return Some(entry.connection);
            }
        }
        None
    }

    async fn dial(&self) -> Result<Box<Lent>, Http1Error> {
        let mut connector = self.connector.clone();
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(Http1Error::Connect)?;
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|error| Http1Error::Connect(Box::new(error)))?;
        // Boxed: the dispatcher is several hundred bytes, and the
        // connection moves between the pool and each response body.
        Ok(Box::new(Lent {
            sender,
            driver: Some(driver),
        }))
    }

    /// Returns `connection` to the pool unless it has closed or the pool
    /// is full.
    fn release(self: &Arc<Self>, connection: Box<Lent>) {
        if connection.driver.is_none() || connection.sender.is_closed() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if idle.connections.len() >= MAX_IDLE {
            return;
        }
        idle.connections.push_back(Idle {
            connection,
            since: Instant::now(),
        });
        if !idle.pruning {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                idle.pruning = true;
                runtime.spawn(prune_while_idle(Arc::downgrade(self)));
            }
        }
    }

    /// Closes connections that stayed unused for [`IDLE_TIMEOUT`] and
    /// those that the upstream has closed. Returns false, and clears
    /// `pruning`, once no unused connection is left.
    fn prune(&self) -> bool {
        // Polled without a waker: a closed connection reads its end at
        // once, and an open one has nothing to do.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut ended = Vec::new();
        let left = {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let now = Instant::now();
            let mut open = VecDeque::with_capacity(idle.connections.len());
            for mut entry in std::mem::take(&mut idle.connections) {
                let expired = now.duration_since(entry.since) >= IDLE_TIMEOUT;
                if expired || entry.connection.drive(&mut cx) {
                    ended.push(entry);
                } else {
                    open.push_back(entry);
                }
            }
            idle.connections = open;
            idle.pruning = !idle.connections.is_empty();
            idle.pruning
        };
        // Closed outside the lock.
        drop(ended);
        left
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|idle| idle.connections.len())
            .unwrap_or(0)
    }

    #[cfg(test)]
    fn is_pruning(&self) -> bool {
        self.idle.lock().map(|idle| idle.pruning).unwrap_or(false)
    }
}

async fn prune_while_idle(pool: Weak<Http1Pool>) {
    let mut ticks = tokio::time::interval(PRUNE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if !pool.prune() {
            return;
        }
    }
}

/// An upstream connection lent to one response.
struct Lease {
    lent: Box<Lent>,
    pool: Arc<Http1Pool>,
}

/// The body of a response from an [`Http1Pool`]. Reading it drives the
/// connection; once it has ended, the connection goes back to the pool.
/// Dropped earlier, it closes the connection.
pub struct Http1Body {
    inner: Incoming,
    lease: Option<Lease>,
}

impl std::fmt::Debug for Http1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Body")
            .field("leased", &self.lease.is_some())
            .finish_non_exhaustive()
    }
}

impl Http1Body {
    /// Returns the connection to the pool once the response has ended.
    ///
    /// Only requests without a body lend their connection to the response
    /// (see `Http1Pool::exchange_with_body`), so the request has been sent
    /// by now. Should hyper still not take another request, a task drives
    /// the connection until it does, because a pooled connection is polled
    /// only every few seconds and the next request would wait on it.
    fn give_back(&mut self, cx: &mut Context<'_>) {
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        if lease.lent.drive(cx) {
            return;
        }
        match lease.lent.sender.poll_ready(cx) {
            Poll::Ready(Ok(())) => lease.pool.release(lease.lent),
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if lease.lent.ready().await.is_ok() {
                            lease.pool.release(lease.lent);
                        }
                    });
                }
            }
        }
    }
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(lease) = &mut this.lease {
            lease.lent.drive(cx);
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.give_back(cx);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Http1Body {
    fn drop(&mut self) {
        // A body that was never read to its end leaves the connection
        // in the middle of a response, so only an ended one is returned.
        if self.inner.is_end_stream() {
            self.give_back(&mut Context::from_waker(std::task::Waker::noop()));
        }
    }
}

#[cfg(test)]
mod tests;
