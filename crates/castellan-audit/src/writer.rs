//! The writer task: drains the audit queue in batches and commits each batch
//! in one store transaction, retrying failures.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use castellan_store::{AuditRecord, StoreError};
use tokio::sync::mpsc::{self, Receiver};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::handle::{AuditHandle, Command, CommitError, CommitSender, Counters};
use crate::metrics::{
    describe, BATCH_DURATION_SECONDS, FEED_BATCHES_SKIPPED_TOTAL, FEED_WAITS_TOTAL,
    FEED_WAIT_SECONDS, QUEUE_DEPTH, RECORDS_DROPPED_TOTAL, RECORDS_WRITTEN_TOTAL,
};
use crate::sink::AuditSink;

/// First wait before retrying a failed batch; it doubles up to `max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(10);

/// Sizing and retry settings of the audit writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    /// Records the queue holds before [`AuditHandle::try_reserve`] fails
    /// (at least 1).
    pub capacity: usize,
    /// Most records committed in one transaction (at least 1).
    pub max_batch: usize,
    /// Queue depth above which [`AuditHandle::pace`] makes requests wait
    /// for the writer. The writer uses at most half the capacity. Records queued
    /// and not yet committed are what a crash loses under batched
    /// durability.
    pub pace_above: usize,
    /// Longest time the writer waits for a batch to fill after its first
    /// record arrives.
    pub flush_interval: Duration,
    /// Longest wait between two attempts at a failed batch.
    pub max_backoff: Duration,
    /// How long a failing batch is retried before its records are dropped
    /// (logged and counted). While the writer retries, the queue fills and
    /// the gateway fails closed.
    pub give_up_after: Duration,
    /// Maximum time the writer waits for room in a full feed before it
    /// leaves a committed batch out; see [`AuditWriter::spawn_with_feed`].
    pub feed_patience: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            capacity: 65_536,
            max_batch: 512,
            pace_above: 512,
            flush_interval: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            give_up_after: Duration::from_secs(60),
            feed_patience: Duration::from_millis(250),
        }
    }
}

/// The task that commits queued audit records to an [`AuditSink`].
pub struct AuditWriter<S> {
    sink: S,
    receiver: Receiver<Command>,
    config: WriterConfig,
    counters: Arc<Counters>,
    /// Receiver of committed batches, if one listens; see
    /// [`AuditWriter::spawn_with_feed`].
    feed: Option<mpsc::Sender<Vec<AuditRecord>>>,
    /// Set when a wait for room in the feed timed out, and cleared once the
    /// feed is empty. While set, the writer does not wait for the feed.
    feed_stalled: bool,
    pending: Vec<AuditRecord>,
    /// Acknowledgements owed for records in `pending`, sent once their
    /// batch is committed or dropped.
    pending_acks: Vec<CommitSender>,
    shutdown_replies: Vec<oneshot::Sender<u64>>,
    shutting_down: bool,
    /// Set once a batch was dropped after shutdown was requested: later
    /// batches then get one attempt each, so a store that stays down cannot
    /// hold up shutdown for `give_up_after` per batch.
    gave_up_during_shutdown: bool,
}

impl<S: AuditSink> AuditWriter<S> {
    /// Starts the writer task on the current tokio runtime.
    ///
    /// The task ends after [`AuditHandle::shutdown`], or once every handle is
    /// dropped; either way it commits everything queued before it ends.
    pub fn spawn(sink: S, config: WriterConfig) -> (AuditHandle, JoinHandle<()>) {
        Self::start(sink, config, None)
    }

    /// Like [`AuditWriter::spawn`], and also sends each committed batch, with
    /// the seqs the sink gave its records, to `feed`.
    ///
    /// The detection monitor reads its own gateway's records from here
    /// instead of reading them back from the store. When the feed is full,
    /// the writer waits up to [`WriterConfig::feed_patience`] for room
    /// before it commits more. Meanwhile the queue fills and
    /// [`AuditHandle::pace`] makes requests wait, so on a saturated machine
    /// the receiver gets CPU time to catch up instead of falling further
    /// behind. A batch still without room is left out, and the receiver
    /// must notice the gap in seqs and read those records from the store.
    /// The writer does not wait once shutdown is requested, so the records
    /// queued ahead of the request are committed at the store's pace. After
    /// a wait runs out, it does not wait again until the feed is empty.
    pub fn spawn_with_feed(
        sink: S,
        config: WriterConfig,
        feed: mpsc::Sender<Vec<AuditRecord>>,
    ) -> (AuditHandle, JoinHandle<()>) {
        Self::start(sink, config, Some(feed))
    }

    fn start(
        sink: S,
        config: WriterConfig,
        feed: Option<mpsc::Sender<Vec<AuditRecord>>>,
    ) -> (AuditHandle, JoinHandle<()>) {
        describe();
        let config = WriterConfig {
            capacity: config.capacity.max(1),
            max_batch: config.max_batch.max(1),
            ..config
        };
        let (sender, receiver) = mpsc::channel(config.capacity);
        let counters = Arc::new(Counters {
            // Below the capacity, or the queue could never pass the mark.
            pace_above: config.pace_above.min(config.capacity / 2),
            ..Counters::default()
        });
        let writer = AuditWriter {
            sink,
            receiver,
            pending: Vec::with_capacity(config.max_batch),
            pending_acks: Vec::new(),
            config,
            counters: Arc::clone(&counters),
            feed,
            feed_stalled: false,
            shutdown_replies: Vec::new(),
            shutting_down: false,
            gave_up_during_shutdown: false,
        };
        let task = tokio::spawn(writer.run());
        (AuditHandle::new(sender, counters), task)
    }

    async fn run(mut self) {
        tracing::debug!(
            capacity = self.config.capacity,
            max_batch = self.config.max_batch,
            "audit writer started"
        );
        let mut commands = Vec::with_capacity(self.config.max_batch);
        while self.receive(&mut commands).await {
            self.counters
                .queued
                .fetch_sub(commands.len(), Ordering::Relaxed);
            metrics::gauge!(QUEUE_DEPTH).set(self.receiver.len() as f64);
            self.counters.progress.notify_waiters();
            for command in commands.drain(..) {
                self.handle(command).await;
            }
            self.write_pending().await;
        }
        self.write_pending().await;
        metrics::gauge!(QUEUE_DEPTH).set(0.0);
        let dropped = self.counters.dropped.load(Ordering::Acquire);
        for reply in self.shutdown_replies.drain(..) {
            // The caller may have stopped waiting; nothing is lost then.
            let _ = reply.send(dropped);
        }
        tracing::info!(
            written = self.counters.written.load(Ordering::Relaxed),
            dropped,
            "audit writer stopped"
        );
    }

    /// Receives the next commands; returns false once the queue is closed and
    /// empty.
    async fn receive(&mut self, commands: &mut Vec<Command>) -> bool {
        let limit = self.config.max_batch;
        if self.receiver.recv_many(commands, limit).await == 0 {
            return false;
        }
        if !self.shutting_down {
            self.linger(commands).await;
        }
        true
    }

    /// Waits up to `flush_interval` for a partial batch to fill, unless a
    /// flush or shutdown request or a record with an acknowledgement is
    /// waiting. Callers that wait for acknowledgements thus get group
    /// commit: records that arrive while a transaction runs form the next
    /// batch, without a fixed delay.
    ///
    /// Plain records do not wake the writer while it waits: it takes them
    /// at the deadline. Only the senders of the commands above signal
    /// [`Counters::urgent`]. A wakeup for each record would cost a thread
    /// switch per request when the writer runs on a thread of its own.
    async fn linger(&mut self, commands: &mut Vec<Command>) {
        let deadline = tokio::time::Instant::now() + self.config.flush_interval;
        let counters = Arc::clone(&self.counters);
        let mut checked = 0;
        loop {
            if commands[checked..].iter().any(ends_linger) {
                return;
            }
            checked = commands.len();
            // Enabled before taking what is queued, so that an urgent
            // command sent after the last `try_recv` still ends the wait.
            let urgent = counters.urgent.notified();
            tokio::pin!(urgent);
            urgent.as_mut().enable();
            if !self.take_queued(commands) {
                return;
            }
            if commands.len() > checked {
                continue;
            }
            // Either way the wait is over: an urgent signal comes from a
            // caller that waits on the writer, whatever it queued.
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = &mut urgent => {}
            }
            self.take_queued(commands);
            return;
        }
    }

    /// Moves queued commands into `commands` without waiting, up to
    /// `max_batch` in all. Returns false when the batch is full or the
    /// queue is closed and empty, so lingering is over.
    fn take_queued(&mut self, commands: &mut Vec<Command>) -> bool {
        while commands.len() < self.config.max_batch {
            match self.receiver.try_recv() {
                Ok(command) => commands.push(command),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        false
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Record(record, ack) => {
                self.pending.push(record);
                self.pending_acks.extend(ack);
                if self.pending.len() >= self.config.max_batch {
                    self.write_pending().await;
                }
            }
            Command::Flush(reply) => {
                self.write_pending().await;
                let _ = reply.send(self.counters.dropped.load(Ordering::Acquire));
            }
            Command::Shutdown(reply) => {
                self.write_pending().await;
                tracing::info!("audit writer shutting down; draining the queue");
                self.receiver.close();
                self.shutting_down = true;
                self.shutdown_replies.push(reply);
            }
        }
    }

    /// Commits the pending records, retrying with capped exponential backoff
    /// until `give_up_after`, then drops them with an error log.
    async fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut backoff = INITIAL_BACKOFF.min(self.config.max_backoff);
        let mut attempt: u32 = 1;
        loop {
            let attempt_started = Instant::now();
            let error = match self.sink.write_batch(&mut self.pending).await {
                Ok(()) => {
                    self.count_written(attempt, attempt_started.elapsed());
                    self.acknowledge(Ok(()));
                    self.send_to_feed().await;
                    break;
                }
                Err(error) => error,
            };
            if started.elapsed() + backoff > self.retry_window() {
                self.count_dropped(attempt, &error);
                self.acknowledge(Err(CommitError::GaveUp));
                break;
            }
            tracing::warn!(
                count = self.pending.len(),
                attempt,
                retry_in_ms = backoff.as_millis() as u64,
                error = %ErrorChain(&error),
                "audit batch write failed; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
            attempt += 1;
        }
        self.pending.clear();
        self.counters.progress.notify_waiters();
    }

    /// Hands the committed pending records to the feed, waiting for room
    /// as [`AuditWriter::spawn_with_feed`] describes.
    async fn send_to_feed(&mut self) {
        // Cloned so that the permit does not borrow `self`.
        let Some(feed) = self.feed.clone() else {
            return;
        };
        if feed.capacity() == feed.max_capacity() {
            self.feed_stalled = false;
        }
        let shutdown_requested = self.counters.shutdown_requested.load(Ordering::Acquire);
        let reserved = match feed.try_reserve() {
            Ok(permit) => Ok(permit),
            Err(mpsc::error::TrySendError::Full(()))
                if !self.feed_stalled && !shutdown_requested =>
            {
                metrics::counter!(FEED_WAITS_TOTAL).increment(1);
                let started = Instant::now();
                let waited = tokio::time::timeout(self.config.feed_patience, feed.reserve()).await;
                metrics::histogram!(FEED_WAIT_SECONDS).record(started.elapsed().as_secs_f64());
                match waited {
                    Ok(Ok(permit)) => Ok(permit),
                    Ok(Err(mpsc::error::SendError(()))) => {
                        Err(mpsc::error::TrySendError::Closed(()))
                    }
                    Err(_) => {
                        self.feed_stalled = true;
                        tracing::warn!(
                            count = self.pending.len(),
                            waited_ms = self.config.feed_patience.as_millis() as u64,
                            "waiting for the detection monitor to take committed audit records \
                             timed out, so it reads them from the store"
                        );
                        Err(mpsc::error::TrySendError::Full(()))
                    }
                }
            }
            Err(error) => Err(error),
        };
        let closed = match reserved {
            Ok(permit) => {
                // Moved into a vector of their own size, so a queued batch
                // does not hold `max_batch` records of capacity.
                permit.send(self.pending.drain(..).collect());
                false
            }
            Err(mpsc::error::TrySendError::Full(())) => {
                metrics::counter!(FEED_BATCHES_SKIPPED_TOTAL).increment(1);
                tracing::debug!(
                    count = self.pending.len(),
                    "audit feed is full; its receiver reads these records from the store"
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(())) => true,
        };
        if closed {
            self.feed = None;
        }
    }

    /// Sends `outcome` to every caller waiting on a record of the batch.
    fn acknowledge(&mut self, outcome: Result<(), CommitError>) {
        for ack in self.pending_acks.drain(..) {
            // A caller that stopped waiting (its agent went away) needs no
            // reply; its record is committed all the same.
            let _ = ack.send(outcome);
        }
    }

    fn retry_window(&self) -> Duration {
        if self.gave_up_during_shutdown {
            Duration::ZERO
        } else {
            self.config.give_up_after
        }
    }

    fn count_written(&self, attempt: u32, elapsed: Duration) {
        let count = self.pending.len() as u64;
        self.counters.written.fetch_add(count, Ordering::Release);
        metrics::counter!(RECORDS_WRITTEN_TOTAL).increment(count);
        metrics::histogram!(BATCH_DURATION_SECONDS).record(elapsed.as_secs_f64());
        if attempt > 1 {
            tracing::info!(
                count,
                attempts = attempt,
                "audit batch written after retries"
            );
        }
    }

    fn count_dropped(&mut self, attempt: u32, error: &StoreError) {
        let count = self.pending.len() as u64;
        self.counters.dropped.fetch_add(count, Ordering::Release);
        metrics::counter!(RECORDS_DROPPED_TOTAL).increment(count);
        tracing::error!(
            count,
            attempts = attempt,
            error = %ErrorChain(error),
            "audit writer gave up on a batch; its records are lost"
        );
        if self.counters.shutdown_requested.load(Ordering::Acquire) {
            self.gave_up_during_shutdown = true;
        }
    }
}

impl<S> Drop for AuditWriter<S> {
    /// Wakes requests waiting in [`AuditHandle::pace`]: with the writer
    /// gone, they stop waiting for it.
    fn drop(&mut self) {
        self.counters.progress.notify_waiters();
    }
}

/// Tells whether `command` makes the writer commit now instead of waiting
/// for a fuller batch.
fn ends_linger(command: &Command) -> bool {
    !matches!(command, Command::Record(_, None))
}

/// Displays an error followed by its sources, separated by ": ".
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
