//! Body types of the data path: request bodies stream to the upstream while
//! they are counted, response bodies stream back through redaction and
//! finish the audit record when they end.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::audit::Completion;
use crate::credential::Injector;
use crate::framing::RequestBodyError;
use crate::limits::InFlight;
use crate::redact::StreamRedactor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way upstream, with a byte counter for the audit
/// record and a size limit for bodies that declared no length.
pub struct RequestBody {
    inner: Option<Incoming>,
    /// Frames already read by [`RequestBody::read_ahead`], sent before the
    /// rest of `inner`.
    buffered: VecDeque<Frame<Bytes>>,
    sent: Arc<AtomicU64>,
    limit: u64,
    exceeded: Arc<AtomicBool>,
    /// Keeps the request counted against its agent's concurrency limit
    /// while the body still streams, even after the response has ended.
    _in_flight: Option<Arc<InFlight>>,
}

/// Error that ends a request body larger than its connection allows.
#[derive(Debug, thiserror::Error)]
#[error("the request body exceeded {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

impl RequestBody {
    /// Wraps `inner`; once more than `limit` bytes arrive, the body fails
    /// and `exceeded` becomes true.
    pub fn new(
        inner: Incoming,
        sent: Arc<AtomicU64>,
        limit: u64,
        exceeded: Arc<AtomicBool>,
        in_flight: Option<Arc<InFlight>>,
    ) -> Self {
        RequestBody {
            inner: Some(inner),
            buffered: VecDeque::new(),
            sent,
            limit,
            exceeded,
            _in_flight: in_flight,
        }
    }
}

impl RequestBody {
    /// Returns a body with no bytes, for requests castellan makes itself.
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            buffered: VecDeque::new(),
            sent: Arc::new(AtomicU64::new(0)),
            limit: 0,
            exceeded: Arc::new(AtomicBool::new(false)),
            _in_flight: None,
        }
    }
}

/// The start of a request body, read before the request is forwarded.
pub struct ReadAhead {
    /// The data read, at most the limit plus one frame.
    pub data: Bytes,
    /// Whether `data` is the whole body.
    pub complete: bool,
}

impl RequestBody {
    /// Reads frames until more than `limit` data bytes have arrived or the
    /// body ends, and keeps them to be forwarded first. The size limit and
    /// byte count apply as when the body streams.
    pub async fn read_ahead(&mut self, limit: u64) -> Result<ReadAhead, BoxError> {
        let mut data = BytesMut::new();
        loop {
            if data.len() as u64 > limit {
                return Ok(ReadAhead {
                    data: data.freeze(),
                    complete: false,
                });
            }
            match poll_fn(|cx| self.poll_inner(cx)).await {
                None => {
                    self.inner = None;
                    return Ok(ReadAhead {
                        data: data.freeze(),
                        complete: true,
                    });
                }
                Some(Err(error)) => return Err(error),
                Some(Ok(frame)) => {
                    if let Some(chunk) = frame.data_ref() {
                        data.extend_from_slice(chunk);
                    }
                    self.buffered.push_back(frame);
                }
            }
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(polled) => polled,
        };
        let frame = match polled {
            None => return Poll::Ready(None),
            Some(Err(error)) => return Poll::Ready(Some(Err(Box::new(RequestBodyError(error))))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let total =
                self.sent.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
            if total > self.limit {
                self.exceeded.store(true, Ordering::Relaxed);
                self.inner = None;
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: self.limit }))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.buffered.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        self.poll_inner(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_empty() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .buffered
            .iter()
            .filter_map(Frame::data_ref)
            .map(|data| data.len() as u64)
            .sum();
        let rest = self
            .inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(buffered));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint
    }
}

/// A response body sent to an agent.
pub enum ResponseBody {
    /// A body that Castellan wrote itself, such as a JSON error.
    Full(Option<Bytes>),
    /// An upstream response streaming through redaction.
    Upstream(Box<UpstreamStream>),
}

/// State of a streaming upstream response.
pub struct UpstreamStream {
    inner: Incoming,
    /// Holds the credential of the snapshot that served the request, so a
    /// reload during a long stream cannot change what is redacted.
    injector: Option<Arc<Injector>>,
    stream: StreamRedactor,
    received: u64,
    completion: Option<Completion>,
    finished: bool,
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }

    pub fn upstream(
        inner: Incoming,
        injector: Option<Arc<Injector>>,
        completion: Completion,
    ) -> Self {
        ResponseBody::Upstream(Box::new(UpstreamStream {
            inner,
            injector,
            stream: StreamRedactor::default(),
            received: 0,
            completion: Some(completion),
            finished: false,
        }))
    }
}

impl UpstreamStream {
    fn finish(&mut self, error: Option<&hyper::Error>) {
        if let Some(completion) = self.completion.take() {
            completion.finish(
                self.received,
                error.map(|_| "upstream response body failed"),
            );
        }
    }

    fn flush_pending(&mut self) -> Option<Bytes> {
        let injector = self.injector.as_ref()?;
        let rest = self.stream.finish(injector.redactor());
        (!rest.is_empty()).then_some(rest)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream(stream) => poll_upstream(stream, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Upstream(stream) => stream.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            // Masking keeps lengths, so the upstream's hint stays exact.
            ResponseBody::Upstream(stream) => stream.inner.size_hint(),
        }
    }
}

fn poll_upstream(
    stream: &mut UpstreamStream,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    if stream.finished {
        return Poll::Ready(None);
    }
    loop {
        match Pin::new(&mut stream.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                stream.finished = true;
                let rest = stream.flush_pending();
                stream.finish(None);
                return Poll::Ready(rest.map(|bytes| Ok(Frame::data(bytes))));
            }
            Poll::Ready(Some(Err(error))) => {
                stream.finished = true;
                stream.finish(Some(&error));
                return Poll::Ready(Some(Err(Box::new(error))));
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        stream.received += data.len() as u64;
                        let data = match &stream.injector {
                            Some(injector) => stream.stream.feed(injector.redactor(), data),
                            None => data,
                        };
                        // Clients may close the connection as soon as the
                        // last byte arrives, so the body ends here when the
                        // upstream reports that no more data follows.
                        if stream.inner.is_end_stream() {
                            stream.finished = true;
                            let data = match stream.flush_pending() {
                                Some(rest) => [data, rest].concat().into(),
                                None => data,
                            };
                            stream.finish(None);
                            if data.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        // A chunk held back entirely waits for the next one.
                        if data.is_empty() {
                            continue;
                        }
                        Frame::data(data)
                    }
                    Err(frame) => redact_trailers(frame, stream.injector.as_deref()),
                };
                return Poll::Ready(Some(Ok(frame)));
            }
        }
    }
}

fn redact_trailers(frame: Frame<Bytes>, injector: Option<&Injector>) -> Frame<Bytes> {
    let mut trailers = match frame.into_trailers() {
        Ok(trailers) => trailers,
        Err(frame) => return frame,
    };
    if let Some(injector) = injector {
        for value in trailers.values_mut() {
            if let Some(masked) = injector.redactor().redact_header(value) {
                *value = masked;
            }
        }
    }
    Frame::trailers(trailers)
}

impl Drop for UpstreamStream {
    fn drop(&mut self) {
        let Some(completion) = self.completion.take() else {
            return;
        };
        // hyper never polls a body that it has determined is empty (HEAD, 204, 304,
        // Content-Length: 0), so an ended upstream body here is a success.
        let failure = (!self.inner.is_end_stream())
            .then_some("agent closed the connection before the response ended");
        completion.finish(self.received, failure);
    }
}
