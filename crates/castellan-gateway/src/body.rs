//! Body types of the data path: request bodies stream to the upstream while
//! they are counted, response bodies stream back through redaction and
//! finish the audit record when they end.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::audit::{Completion, PendingCommit};
use crate::credential::Injector;
use crate::framing::RequestBodyError;
use crate::limits::InFlight;
use crate::redact::StreamRedactor;
use crate::upstream::UpstreamBody;

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
    /// A body that Castellan wrote itself, sent once its audit record is
    /// committed (`audit_durability = "strict"`).
    Held(Box<HeldFinal>),
}

/// The final frame of a response, held until its audit record is
/// committed.
///
/// When the commit fails, the body ends with an error instead. hyper then
/// closes the connection (HTTP/1.1) or resets the stream (HTTP/2) before
/// the response is complete, so the agent gets an error, never a clean end.
pub struct HeldFinal {
    frame: Option<Frame<Bytes>>,
    commit: PendingCommit,
}

impl HeldFinal {
    fn new(frame: Option<Frame<Bytes>>, commit: PendingCommit) -> Self {
        HeldFinal { frame, commit }
    }

    fn size(&self) -> u64 {
        let data = self.frame.as_ref().and_then(Frame::data_ref);
        data.map_or(0, |data| data.len() as u64)
    }

    /// Returns the held frame (or the end of the body when there is no
    /// data) once the commit succeeds, or an error once it fails.
    fn poll_release(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.commit).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(self.frame.take().map(Ok)),
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(Box::new(error)))),
        }
    }
}

/// State of a streaming upstream response.
pub struct UpstreamStream {
    inner: UpstreamBody,
    /// Holds the credential of the snapshot that served the request, so a
    /// reload during a long stream cannot change what is redacted.
    injector: Option<Arc<Injector>>,
    stream: StreamRedactor,
    received: u64,
    completion: Option<Completion>,
    /// The last frame, once the upstream body has ended, while it waits for
    /// the audit commit.
    held: Option<HeldFinal>,
    /// Trailers that wait for the bytes redaction held back to go first.
    trailers: Option<Frame<Bytes>>,
    finished: bool,
    /// Maximum wait for the next frame of the upstream body.
    idle_limit: Duration,
    /// Ends that wait, started the first time the upstream has no frame
    /// ready, so a body that arrives at once never arms a timer.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }

    /// Streams `inner` through redaction; the body fails once the upstream
    /// sends no frame for `idle_limit`.
    pub fn upstream(
        inner: UpstreamBody,
        injector: Option<Arc<Injector>>,
        completion: Completion,
        idle_limit: Duration,
    ) -> Self {
        ResponseBody::Upstream(Box::new(UpstreamStream {
            inner,
            injector,
            stream: StreamRedactor::default(),
            received: 0,
            completion: Some(completion),
            held: None,
            trailers: None,
            finished: false,
            idle_limit,
            idle: None,
        }))
    }

    /// Returns this body with its data held until `commit` succeeds.
    ///
    /// Only a body that Castellan wrote itself is converted. An upstream
    /// body keeps its own last frame back, in [`UpstreamStream`].
    pub fn hold_until(self, commit: PendingCommit) -> Self {
        match self {
            ResponseBody::Full(data) => {
                let frame = data.map(Frame::data);
                ResponseBody::Held(Box::new(HeldFinal::new(frame, commit)))
            }
            other => other,
        }
    }
}

impl UpstreamStream {
    /// Writes the audit record of a body that failed. The agent gets the
    /// failure anyway, so nothing waits for the commit.
    fn finish_failed(&mut self, reason: &str) {
        if let Some(completion) = self.completion.take() {
            let _ = completion.finish(self.received, Some(reason));
        }
    }

    /// Describes and logs a body that ended because the upstream paused
    /// past the idle limit.
    fn idle_reason(&self) -> String {
        let facts = self.completion.as_ref().map(Completion::facts);
        let connection = facts.and_then(|facts| facts.connection.as_deref());
        let reason = format!(
            "the upstream of connection {:?} sent no response data for {}s; raise response_timeout of the connection if it pauses this long",
            connection.unwrap_or("-"),
            self.idle_limit.as_secs_f64()
        );
        tracing::warn!(
            request_id = facts.map_or("-", |facts| facts.request_id.as_str()),
            connection = connection.unwrap_or("-"),
            received = self.received,
            "upstream response body paused past response_timeout; the response was cut off"
        );
        reason
    }

    /// Tells whether the upstream has sent nothing for the idle limit,
    /// starting the wait on the first call after a frame.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.idle_limit;
        let idle = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        idle.as_mut().poll(cx).is_ready()
    }

    /// Writes the audit record of a body that ended normally and returns
    /// its last frame. Under `audit_durability = "strict"` the frame is
    /// released only once the record is committed.
    fn finish_with(
        &mut self,
        last: Option<Frame<Bytes>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let commit = self
            .completion
            .take()
            .and_then(|completion| completion.finish(self.received, None));
        match commit {
            None => {
                self.finished = true;
                Poll::Ready(last.map(Ok))
            }
            Some(commit) => {
                self.held = Some(HeldFinal::new(last, commit));
                self.poll_held(cx)
            }
        }
    }

    fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(held) = self.held.as_mut() else {
            return Poll::Ready(None);
        };
        let released = held.poll_release(cx);
        if released.is_ready() {
            self.held = None;
            self.finished = true;
        }
        released
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
        let this = self.get_mut();
        match this {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream(stream) => poll_upstream(stream, cx),
            ResponseBody::Held(held) => {
                let released = held.poll_release(cx);
                if released.is_ready() {
                    *this = ResponseBody::Full(None);
                }
                released
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Upstream(stream) => stream.finished,
            // Even an empty held body is not at its end: hyper must poll
            // it, so the response waits for the commit.
            ResponseBody::Held(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            // Masking keeps lengths, so the upstream's hint stays exact.
            ResponseBody::Upstream(stream) => stream.inner.size_hint(),
            ResponseBody::Held(held) => SizeHint::with_exact(held.size()),
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
    if stream.held.is_some() {
        return stream.poll_held(cx);
    }
    if let Some(trailers) = stream.trailers.take() {
        return stream.finish_with(Some(trailers), cx);
    }
    loop {
        match Pin::new(&mut stream.inner).poll_frame(cx) {
            Poll::Pending if stream.idle_expired(cx) => {
                stream.finished = true;
                let reason = stream.idle_reason();
                stream.finish_failed(&reason);
                return Poll::Ready(Some(Err(reason.into())));
            }
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                let rest = stream.flush_pending().map(Frame::data);
                return stream.finish_with(rest, cx);
            }
            Poll::Ready(Some(Err(error))) => {
                stream.finished = true;
                stream.finish_failed("upstream response body failed");
                return Poll::Ready(Some(Err(Box::new(error))));
            }
            Poll::Ready(Some(Ok(frame))) => {
                // The next wait starts when the upstream has no frame ready.
                stream.idle = None;
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
                            let data = match stream.flush_pending() {
                                Some(rest) => [data, rest].concat().into(),
                                None => data,
                            };
                            let last = (!data.is_empty()).then(|| Frame::data(data));
                            return stream.finish_with(last, cx);
                        }
                        // A chunk held back entirely waits for the next one.
                        if data.is_empty() {
                            continue;
                        }
                        Frame::data(data)
                    }
                    Err(frame) => {
                        // Trailers complete the response (the last chunk in
                        // HTTP/1.1, the end of the stream in HTTP/2), so
                        // they are the frame held for the audit commit.
                        let trailers = redact_trailers(frame, stream.injector.as_deref());
                        // Bytes that redaction still holds back go first.
                        if let Some(rest) = stream.flush_pending() {
                            stream.trailers = Some(trailers);
                            return Poll::Ready(Some(Ok(Frame::data(rest))));
                        }
                        return stream.finish_with(Some(trailers), cx);
                    }
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
        // The response is over, so nothing waits for the commit.
        let _ = completion.finish(self.received, failure);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use castellan_audit::{AuditHandle, AuditSink, AuditWriter, WriterConfig};
    use castellan_model::AuditDurability;
    use castellan_store::{AuditDecision, AuditRecord, StoreError};
    use http_body_util::BodyExt;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::audit::submit;

    /// Sink whose commits wait for a permit, or always fail.
    struct TestSink {
        gate: Arc<Semaphore>,
        fail: bool,
    }

    impl AuditSink for TestSink {
        async fn write_batch(&self, _: &mut [AuditRecord]) -> Result<(), StoreError> {
            self.gate.acquire().await.expect("gate open").forget();
            if self.fail {
                return Err(StoreError::Busy {
                    operation: "test write",
                    source: None,
                });
            }
            Ok(())
        }
    }

    fn writer(fail: bool) -> (AuditHandle, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        let sink = TestSink {
            gate: Arc::clone(&gate),
            fail,
        };
        let config = WriterConfig {
            max_backoff: Duration::from_millis(1),
            give_up_after: Duration::from_millis(20),
            ..WriterConfig::default()
        };
        let (handle, _task) = AuditWriter::spawn(sink, config);
        (handle, gate)
    }

    fn record() -> AuditRecord {
        AuditRecord {
            seq: None,
            time_ms: 0,
            request_id: "0123".to_string(),
            agent: None,
            token_id: None,
            source: "127.0.0.1:1".to_string(),
            connection: None,
            method: "GET".to_string(),
            path: "/".to_string(),
            decision: AuditDecision::Deny,
            rule: None,
            reason: None,
            status: 403,
            bytes_in: 0,
            bytes_out: 0,
            duration_us: 0,
            findings: Vec::new(),
            user_agent: None,
        }
    }

    fn held_body(audit: &AuditHandle) -> ResponseBody {
        let slot = audit.try_reserve().expect("queue has room");
        let commit = submit(audit, Some(slot), record(), AuditDurability::Strict)
            .expect("strict durability returns a commit to wait for");
        ResponseBody::full("denied").hold_until(commit)
    }

    #[tokio::test]
    async fn held_body_released_after_commit() {
        let (audit, gate) = writer(false);
        let mut body = held_body(&audit);
        assert_eq!(body.size_hint().exact(), Some(6), "length stays declared");
        assert!(!body.is_end_stream());

        let early = tokio::time::timeout(Duration::from_millis(100), body.frame()).await;
        assert!(early.is_err(), "the body ended before its record committed");

        gate.add_permits(1);
        let frame = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(frame.into_data().ok(), Some(Bytes::from("denied")));
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn empty_held_body_waits_too() {
        let (audit, gate) = writer(false);
        let slot = audit.try_reserve().unwrap();
        let commit = submit(&audit, Some(slot), record(), AuditDurability::Strict).unwrap();
        let mut body = ResponseBody::empty().hold_until(commit);
        assert!(!body.is_end_stream(), "hyper must poll an empty held body");

        gate.add_permits(1);
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn failed_commit_aborts_body() {
        let (audit, gate) = writer(true);
        gate.add_permits(1_000);
        let mut body = held_body(&audit);

        let frame = body.frame().await.expect("an error frame");
        let error = frame.expect_err("the body must fail, not end cleanly");
        assert!(
            error.to_string().contains("gave up"),
            "the error names the cause: {error}"
        );
        assert!(body.frame().await.is_none(), "nothing follows the error");
    }

    #[tokio::test]
    async fn unqueued_record_aborts_body() {
        let (audit, _gate) = writer(false);
        audit.shutdown().await.expect("empty queue shuts down");

        let commit = submit(&audit, None, record(), AuditDurability::Strict).unwrap();
        let mut body = ResponseBody::full("denied").hold_until(commit);

        let frame = body.frame().await.expect("an error frame");
        let error = frame.expect_err("the body must fail");
        assert!(error.to_string().contains("could not be queued"), "{error}");
    }

    #[tokio::test]
    async fn batched_durability_holds_nothing() {
        let (audit, _gate) = writer(false);
        let slot = audit.try_reserve().unwrap();
        let commit = submit(&audit, Some(slot), record(), AuditDurability::Batched);
        assert!(commit.is_none());
    }
}
