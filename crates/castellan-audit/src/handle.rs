//! The sending side of the audit queue, cloned into every request task.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use castellan_store::AuditRecord;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{OwnedPermit, Sender};
use tokio::sync::oneshot;

use crate::metrics::BACKPRESSURE_TOTAL;

/// Message from handles to the writer task, processed in queue order.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is a record, so boxing it would only add an allocation"
)]
pub(crate) enum Command {
    Record(AuditRecord),
    /// Reply once everything queued before is handled, with the total number
    /// of records dropped so far.
    Flush(oneshot::Sender<u64>),
    /// Like `Flush`, then close the queue and stop once it is drained.
    Shutdown(oneshot::Sender<u64>),
}

/// Counters shared by the writer and its handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) written: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// Set by [`AuditHandle::shutdown`] before its request joins the queue,
    /// so the writer stops long retries while it drains the records ahead.
    pub(crate) shutdown_requested: AtomicBool,
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
    /// Records waiting in the queue, including reserved slots.
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
}

impl AuditSlot {
    /// Queues `record` in the reserved place.
    ///
    /// NOTE: if the writer task has died (it only stops after a shutdown or
    /// when every handle is dropped), the record is lost with the queue.
    pub fn send(self, record: AuditRecord) {
        drop(self.permit.send(Command::Record(record)));
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
            Ok(permit) => Ok(AuditSlot { permit }),
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

    /// Returns the writer's counters and the current queue depth.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            written: self.counters.written.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            queued: self.sender.max_capacity() - self.sender.capacity(),
        }
    }

    async fn round_trip(
        &self,
        command: fn(oneshot::Sender<u64>) -> Command,
    ) -> Result<(), AuditError> {
        let dropped_before = self.counters.dropped.load(Ordering::Acquire);
        let (reply, done) = oneshot::channel();
        self.sender
            .send(command(reply))
            .await
            .map_err(|_| AuditError::Stopped)?;
        let dropped_after = done.await.map_err(|_| AuditError::Stopped)?;
        match dropped_after.saturating_sub(dropped_before) {
            0 => Ok(()),
            count => Err(AuditError::RecordsDropped { count }),
        }
    }
}
