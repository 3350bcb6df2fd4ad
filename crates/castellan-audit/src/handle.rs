//! The sending side of the audit queue, cloned into every request task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use castellan_store::AuditRecord;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{OwnedPermit, Sender};
use tokio::sync::{oneshot, Notify};

use crate::metrics::{BACKPRESSURE_TOTAL, PACED_TOTAL, PACE_TIMEOUTS_TOTAL, QUEUE_DEPTH};

/// Message from handles to the writer task, processed in queue order.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is a record, so boxing it would only add an allocation"
)]
pub(crate) enum Command {
    /// A record, with the sender of its commit acknowledgement when the
    /// caller waits for one.
    Record(AuditRecord, Option<CommitSender>),
    /// Reply once everything queued before is handled, with the total number
    /// of records dropped so far.
    Flush(oneshot::Sender<u64>),
    /// Like `Flush`, then close the queue and stop once it is drained.
    Shutdown(oneshot::Sender<u64>),
}

/// The writer's side of a [`CommitAck`].
pub(crate) type CommitSender = oneshot::Sender<Result<(), CommitError>>;

/// Reason a record sent with [`AuditSlot::send_acknowledged`] was not
/// committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The store kept failing until the writer's retry window ran out, so
    /// the writer dropped the record's batch.
    #[error("the audit writer gave up retrying the record's batch; see the error log for the store failure")]
    GaveUp,
    /// The writer task ended before committing the record.
    #[error("the audit writer stopped before committing the record")]
    Stopped,
}

/// Future of the commit of one record: resolves once the transaction that
/// contains the record has committed, or with the reason it never will.
///
/// Dropping it does not withdraw the record, which is still committed.
#[derive(Debug)]
#[must_use = "the acknowledgement is the only sign that the record was committed"]
pub struct CommitAck {
    receiver: oneshot::Receiver<Result<(), CommitError>>,
}

impl CommitAck {
    fn channel() -> (CommitSender, CommitAck) {
        let (sender, receiver) = oneshot::channel();
        (sender, CommitAck { receiver })
    }
}

impl Future for CommitAck {
    type Output = Result<(), CommitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The writer drops the sender without a reply only when it ends
        // with the record unhandled (its task panicked or was aborted).
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|reply| reply.unwrap_or(Err(CommitError::Stopped)))
    }
}

/// Counters shared by the writer and its handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) written: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// Set by [`AuditHandle::shutdown`] before its request joins the queue,
    /// so the writer stops long retries while it drains the records ahead.
    pub(crate) shutdown_requested: AtomicBool,
    /// Commands sent and not yet taken by the writer. The channel's own
    /// count also includes reserved slots, one per request in flight.
    pub(crate) queued: AtomicUsize,
    /// Queue depth above which [`AuditHandle::pace`] waits.
    pub(crate) pace_above: usize,
    /// Woken each time the writer takes records off the queue or finishes
    /// a batch.
    pub(crate) progress: Notify,
    /// Ends the writer's wait for a fuller batch: signalled after queuing a
    /// record that a caller waits on, or a flush or shutdown request.
    pub(crate) urgent: Notify,
}

/// Failure to reserve an audit slot. The gateway then rejects the request
/// (fails closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditBackpressure {
    #[error("audit queue is full ({capacity} records); the audit store is not keeping up")]
    Full { capacity: usize },
    #[error("audit writer has stopped; no more records can be recorded")]
    Closed,
}

/// Failure of [`AuditHandle::flush`] or [`AuditHandle::shutdown`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("audit writer has stopped before handling the request")]
    Stopped,
    #[error(
        "{count} audit records were dropped after the writer gave up retrying; \
         see the error log for the store failure"
    )]
    RecordsDropped { count: u64 },
}

/// Snapshot of the writer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Records committed since the writer started.
    pub written: u64,
    /// Records lost since the writer started.
    pub dropped: u64,
    /// Records and flush requests the writer has not taken into a batch
    /// yet. Slots reserved by requests in flight do not count.
    pub queued: usize,
}

/// Cloneable sender of audit records.
#[derive(Debug, Clone)]
pub struct AuditHandle {
    sender: Sender<Command>,
    counters: Arc<Counters>,
}

/// A reserved place in the audit queue: sending into it cannot fail or block.
#[derive(Debug)]
pub struct AuditSlot {
    permit: OwnedPermit<Command>,
    counters: Arc<Counters>,
}

impl AuditSlot {
    /// Queues `record` in the reserved place.
    ///
    /// NOTE: if the writer task has died (it only stops after a shutdown or
    /// when every handle is dropped), the record is lost with the queue.
    pub fn send(self, record: AuditRecord) {
        // Counted before it is sent, so the writer never takes it first.
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        drop(self.permit.send(Command::Record(record, None)));
    }

    /// Queues `record` in the reserved place and returns the future of its
    /// commit.
    ///
    /// The record is batched with others as usual and acknowledged right
    /// after its transaction commits. A writer that waits for a batch to
    /// fill stops waiting as soon as it has received a record with an
    /// acknowledgement, so waiting callers add no linger delay.
    pub fn send_acknowledged(self, record: AuditRecord) -> CommitAck {
        let (sender, ack) = CommitAck::channel();
        // If the writer task has died, the command is dropped with the
        // sender inside, and the acknowledgement resolves to `Stopped`.
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        drop(self.permit.send(Command::Record(record, Some(sender))));
        self.counters.urgent.notify_one();
        ack
    }
}

impl AuditHandle {
    pub(crate) fn new(sender: Sender<Command>, counters: Arc<Counters>) -> AuditHandle {
        AuditHandle { sender, counters }
    }

    /// Reserves a place for one record without waiting.
    ///
    /// The gateway calls this before forwarding a request, so a full queue
    /// rejects the request instead of leaving it unaudited.
    pub fn try_reserve(&self) -> Result<AuditSlot, AuditBackpressure> {
        match self.sender.clone().try_reserve_owned() {
            Ok(permit) => Ok(AuditSlot {
                permit,
                counters: Arc::clone(&self.counters),
            }),
            Err(TrySendError::Full(_)) => {
                metrics::counter!(BACKPRESSURE_TOTAL).increment(1);
                Err(AuditBackpressure::Full {
                    capacity: self.sender.max_capacity(),
                })
            }
            Err(TrySendError::Closed(_)) => Err(AuditBackpressure::Closed),
        }
    }

    /// Reserves a place and queues `record` in it.
    pub fn record_now(&self, record: AuditRecord) -> Result<(), AuditBackpressure> {
        self.try_reserve()?.send(record);
        Ok(())
    }

    /// Reserves a place, queues `record` in it and returns the future of its
    /// commit; see [`AuditSlot::send_acknowledged`].
    pub fn record_acknowledged(&self, record: AuditRecord) -> Result<CommitAck, AuditBackpressure> {
        Ok(self.try_reserve()?.send_acknowledged(record))
    }

    /// Waits until every record queued before this call is committed.
    ///
    /// Fails with [`AuditError::RecordsDropped`] if the writer gave up on
    /// records while this call waited.
    pub async fn flush(&self) -> Result<(), AuditError> {
        self.round_trip(Command::Flush).await
    }

    /// Commits everything queued, closes the queue for every handle and stops
    /// the writer.
    ///
    /// Slots reserved before the call can still send, and the call waits for
    /// them, so stop the request tasks that hold slots first.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        self.counters
            .shutdown_requested
            .store(true, Ordering::Release);
        self.round_trip(Command::Shutdown).await
    }

    /// Waits until at most [`WriterConfig::pace_above`] records are queued,
    /// or for `patience` at most.
    ///
    /// Call it before handling each request, rejected ones included,
    /// because each adds a record.
    ///
    /// The writer may run at a lower CPU priority than the request
    /// handlers, so on a saturated machine it gets CPU time mainly while
    /// they wait. Waiting here keeps the records that a crash could lose
    /// near `pace_above` instead of the queue's whole capacity. Returns
    /// without waiting while the queue is below the mark, and after
    /// `patience` even if it is not: the slot reservation that follows
    /// then decides whether the request goes on.
    ///
    /// [`WriterConfig::pace_above`]: crate::WriterConfig::pace_above
    pub async fn pace(&self, patience: Duration) {
        if self.queued() <= self.counters.pace_above {
            return;
        }
        metrics::counter!(PACED_TOTAL).increment(1);
        // The writer sets the gauge only when it takes a batch, so a stuck
        // writer would leave it showing an empty queue.
        metrics::gauge!(QUEUE_DEPTH).set(self.queued() as f64);
        // A writer that waits for a fuller batch would keep this request
        // waiting with it.
        self.counters.urgent.notify_one();
        let caught_up = async {
            loop {
                let progress = self.counters.progress.notified();
                tokio::pin!(progress);
                // Registered before the check, so progress made between the
                // check and the wait still wakes this task.
                progress.as_mut().enable();
                if self.queued() <= self.counters.pace_above || self.sender.is_closed() {
                    return;
                }
                progress.await;
            }
        };
        if tokio::time::timeout(patience, caught_up).await.is_err() {
            metrics::counter!(PACE_TIMEOUTS_TOTAL).increment(1);
        }
    }

    /// Records in the queue, not yet taken by the writer. Slots reserved
    /// by requests still in flight do not count.
    fn queued(&self) -> usize {
        self.counters.queued.load(Ordering::Relaxed)
    }

    /// Returns the writer's counters and the current queue depth.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            written: self.counters.written.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            queued: self.queued(),
        }
    }

    async fn round_trip(
        &self,
        command: fn(oneshot::Sender<u64>) -> Command,
    ) -> Result<(), AuditError> {
        let dropped_before = self.counters.dropped.load(Ordering::Acquire);
        let (reply, done) = oneshot::channel();
        // Counted only once it can no longer be cancelled.
        let permit = self
            .sender
            .reserve()
            .await
            .map_err(|_| AuditError::Stopped)?;
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        permit.send(command(reply));
        self.counters.urgent.notify_one();
        let dropped_after = done.await.map_err(|_| AuditError::Stopped)?;
        match dropped_after.saturating_sub(dropped_before) {
            0 => Ok(()),
            count => Err(AuditError::RecordsDropped { count }),
        }
    }
}
