//! The batched audit writer against a real SQLite store and test sinks.

mod common;

use std::time::Duration;

use castellan_audit::{
    AuditBackpressure, AuditError, AuditHandle, AuditWriter, WriterConfig,
    FEED_BATCHES_SKIPPED_TOTAL, FEED_WAITS_TOTAL, RECORDS_DROPPED_TOTAL, RECORDS_WRITTEN_TOTAL,
};
use castellan_store::Store;
use common::{lingering_writer, record, CountingRecorder, FlakySink};
use sqlx::Connection;

async fn create_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("castellan.db"))
        .await
        .unwrap();
    (dir, store)
}

fn fast_retry(give_up_after: Duration) -> WriterConfig {
    WriterConfig {
        max_backoff: Duration::from_millis(1),
        give_up_after,
        ..WriterConfig::default()
    }
}

/// Waits until the writer has taken every queued record out of the queue.
async fn wait_until_queue_empty(handle: &AuditHandle) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while handle.stats().queued > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    waited.await.expect("writer never took the queued record");
}

#[tokio::test]
async fn shutdown_flushes_every_queued_record() {
    let (_dir, store) = create_store().await;
    let (handle, task) = AuditWriter::spawn(store.clone(), WriterConfig::default());

    for request in 0..10_000 {
        handle.record_now(record(request)).unwrap();
    }
    handle.shutdown().await.unwrap();
    task.await.unwrap();

    assert_eq!(store.audit_count().await.unwrap(), 10_000);
    let stats = handle.stats();
    assert_eq!(stats.written, 10_000);
    assert_eq!(stats.dropped, 0);
}

#[tokio::test]
async fn dropping_handles_flushes_queue() {
    let (_dir, store) = create_store().await;
    let (handle, task) = AuditWriter::spawn(store.clone(), WriterConfig::default());
    let clone = handle.clone();

    for request in 0..1_000 {
        clone.record_now(record(request)).unwrap();
    }
    drop(clone);
    drop(handle);
    task.await.unwrap();

    assert_eq!(store.audit_count().await.unwrap(), 1_000);
}

#[tokio::test]
async fn flush_commits_earlier_records() {
    let (_dir, store) = create_store().await;
    let reader = Store::open(store.path()).await.unwrap();
    let (handle, _task) = AuditWriter::spawn(store, WriterConfig::default());

    for request in 0..3 {
        let slot = handle.try_reserve().unwrap();
        slot.send(record(request));
    }
    handle.flush().await.unwrap();

    assert_eq!(reader.audit_count().await.unwrap(), 3);
}

#[tokio::test]
async fn closed_writer_rejects_new_records() {
    let (_dir, store) = create_store().await;
    let (handle, task) = AuditWriter::spawn(store, WriterConfig::default());

    handle.shutdown().await.unwrap();
    task.await.unwrap();

    assert_eq!(handle.try_reserve().unwrap_err(), AuditBackpressure::Closed);
    assert_eq!(handle.record_now(record(1)), Err(AuditBackpressure::Closed));
    assert_eq!(handle.flush().await, Err(AuditError::Stopped));
}

#[tokio::test]
async fn try_reserve_fails_while_store_locked() {
    let (_dir, store) = create_store().await;
    let config = WriterConfig {
        capacity: 1,
        max_batch: 1,
        flush_interval: Duration::ZERO,
        ..WriterConfig::default()
    };
    let (handle, _task) = AuditWriter::spawn(store.clone(), config);
    // Another process holds the write lock, so the writer blocks on its
    // first batch and the queue stays full behind it.
    let url = format!("sqlite://{}", store.path().display());
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();

    handle.record_now(record(1)).unwrap();
    wait_until_queue_empty(&handle).await;
    handle.record_now(record(2)).unwrap();
    let rejected = handle.try_reserve();

    assert_eq!(
        rejected.unwrap_err(),
        AuditBackpressure::Full { capacity: 1 }
    );
    assert_eq!(handle.stats().queued, 1);
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    handle.flush().await.unwrap();
    assert_eq!(store.audit_count().await.unwrap(), 2);
    assert!(handle.try_reserve().is_ok(), "queue has room again");
}

#[tokio::test]
async fn batches_respect_max_batch() {
    let sink = FlakySink::default();
    let config = WriterConfig {
        max_batch: 4,
        ..WriterConfig::default()
    };
    let (handle, _task) = AuditWriter::spawn(sink.clone(), config);

    // The single-threaded runtime runs the writer only once this task waits,
    // so all ten records are queued before the first batch is taken.
    for request in 0..10 {
        handle.record_now(record(request)).unwrap();
    }
    handle.flush().await.unwrap();

    assert_eq!(sink.batch_sizes(), [4, 4, 2]);
    let expected: Vec<_> = (0..10).map(|i| format!("req-{i}")).collect();
    assert_eq!(sink.request_ids(), expected, "records keep queue order");
}

#[tokio::test]
async fn failed_batch_retried_until_written() {
    let recorder = CountingRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let sink = FlakySink::failing_first(3);
    let (handle, _task) = AuditWriter::spawn(sink.clone(), fast_retry(Duration::from_secs(30)));

    for request in 0..5 {
        handle.record_now(record(request)).unwrap();
    }
    handle.flush().await.unwrap();

    assert_eq!(sink.attempts.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(sink.batch_sizes(), [5], "the batch is written once");
    assert_eq!(handle.stats().written, 5);
    assert_eq!(handle.stats().dropped, 0);
    assert_eq!(recorder.counter_value(RECORDS_WRITTEN_TOTAL), 5);
    assert_eq!(recorder.counter_value(RECORDS_DROPPED_TOTAL), 0);
}

#[tokio::test]
async fn writer_gives_up_and_counts_drops() {
    let recorder = CountingRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let sink = FlakySink::failing_first(usize::MAX);
    let (handle, _task) = AuditWriter::spawn(sink.clone(), fast_retry(Duration::from_millis(20)));

    for request in 0..5 {
        handle.record_now(record(request)).unwrap();
    }
    let flushed = handle.flush().await;

    assert_eq!(flushed, Err(AuditError::RecordsDropped { count: 5 }));
    assert!(
        sink.attempts.load(std::sync::atomic::Ordering::SeqCst) > 1,
        "retried first"
    );
    assert_eq!(handle.stats().dropped, 5);
    assert_eq!(recorder.counter_value(RECORDS_DROPPED_TOTAL), 5);
    assert_eq!(recorder.counter_value(RECORDS_WRITTEN_TOTAL), 0);
}

#[tokio::test]
async fn shutdown_with_dead_store_reports_loss() {
    let sink = FlakySink::failing_first(usize::MAX);
    let config = WriterConfig {
        max_batch: 2,
        ..fast_retry(Duration::from_millis(20))
    };
    let (handle, task) = AuditWriter::spawn(sink.clone(), config);

    for request in 0..6 {
        handle.record_now(record(request)).unwrap();
    }
    let result = handle.shutdown().await;
    task.await.unwrap();

    assert_eq!(result, Err(AuditError::RecordsDropped { count: 6 }));
    assert_eq!(handle.stats().dropped, 6);
    assert!(sink.attempts_at("req-0") > 1, "first batch is retried");
    assert_eq!(sink.attempts_at("req-2"), 1, "later batches fail fast");
    assert_eq!(sink.attempts_at("req-4"), 1, "later batches fail fast");
}

/// Every committed batch reaches the feed with the seqs the store gave its
/// records, in commit order.
#[tokio::test]
async fn feed_gets_committed_records_with_their_seqs() {
    let (_dir, store) = create_store().await;
    let (feed, mut committed) = tokio::sync::mpsc::channel(1_000);
    let (handle, task) = AuditWriter::spawn_with_feed(store.clone(), WriterConfig::default(), feed);
    for request in 0..2_000 {
        handle.record_now(record(request)).unwrap();
    }
    handle.shutdown().await.unwrap();
    task.await.unwrap();

    let mut fed = Vec::new();
    while let Ok(batch) = committed.try_recv() {
        fed.extend(batch);
    }
    let stored = store
        .query_audit(&castellan_store::AuditQuery::after(0, 10_000))
        .await
        .unwrap();
    assert_eq!(fed.len(), 2_000);
    assert_eq!(fed, stored, "the feed differs from the stored records");
}

/// A full feed stops the writer until its receiver takes a batch, so a
/// receiver that keeps judging gets every batch and reads none back.
#[tokio::test]
async fn full_feed_waits_for_its_receiver() {
    let recorder = CountingRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let FedWriter {
        _dir,
        store,
        handle,
        task,
        mut committed,
    } = FedWriter::start(1, Duration::from_secs(60)).await;
    handle.record_now(record(0)).unwrap();
    handle.flush().await.unwrap();

    // Batch 0 fills the feed, so batch 1 commits and then waits for room.
    handle.record_now(record(1)).unwrap();
    let flushing = tokio::spawn({
        let handle = handle.clone();
        async move { handle.flush().await }
    });
    wait_for_counter(&recorder, FEED_WAITS_TOTAL, 1).await;
    assert_eq!(
        store.audit_count().await.unwrap(),
        2,
        "batch 1 is committed"
    );
    assert!(
        !flushing.is_finished(),
        "the writer went on without waiting"
    );

    let first = committed.recv().await.unwrap();
    assert_eq!(first[0].request_id, "req-0");
    flushing.await.unwrap().unwrap();
    let second = committed.try_recv().expect("batch 1 is in the feed");
    assert_eq!(second[0].request_id, "req-1");
    assert_eq!(recorder.counter_value(FEED_BATCHES_SKIPPED_TOTAL), 0);
    handle.shutdown().await.unwrap();
    task.await.unwrap();
}

/// A receiver that stops taking batches costs the writer one wait: the
/// batches after it are committed and left out of the feed at once, until
/// the feed is empty again.
#[tokio::test]
async fn stalled_feed_costs_one_wait() {
    let recorder = CountingRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let FedWriter {
        _dir,
        store,
        handle,
        task,
        mut committed,
    } = FedWriter::start(1, Duration::from_millis(50)).await;
    for request in 0..4 {
        handle.record_now(record(request)).unwrap();
        handle.flush().await.unwrap();
    }
    assert_eq!(store.audit_count().await.unwrap(), 4);
    assert_eq!(recorder.counter_value(FEED_WAITS_TOTAL), 1);
    assert_eq!(recorder.counter_value(FEED_BATCHES_SKIPPED_TOTAL), 3);

    // Empty again: the next batch goes in without a wait, and the writer
    // waits again for the one after it.
    let first = committed.recv().await.unwrap();
    assert_eq!(first[0].request_id, "req-0");
    for request in 4..6 {
        handle.record_now(record(request)).unwrap();
        handle.flush().await.unwrap();
    }
    handle.shutdown().await.unwrap();
    task.await.unwrap();

    assert_eq!(store.audit_count().await.unwrap(), 6);
    let fifth = committed.try_recv().expect("batch 4 is in the feed");
    assert_eq!(fifth.len(), 1);
    assert_eq!(fifth[0].request_id, "req-4");
    assert!(fifth[0].seq.is_some());
    assert!(committed.try_recv().is_err(), "the feed holds one batch");
    assert_eq!(recorder.counter_value(FEED_WAITS_TOTAL), 2);
    assert_eq!(recorder.counter_value(FEED_BATCHES_SKIPPED_TOTAL), 4);
}

/// After a wait ran out, a receiver that takes a batch now and then does
/// not make the writer wait again: only an empty feed does.
#[tokio::test]
async fn stalled_feed_waits_again_once_empty() {
    let recorder = CountingRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let FedWriter {
        _dir,
        store,
        handle,
        task,
        mut committed,
    } = FedWriter::start(2, Duration::from_millis(50)).await;
    let mut flush_one = {
        let handle = handle.clone();
        let mut next = 0;
        move || {
            handle.record_now(record(next)).unwrap();
            next += 1;
            let handle = handle.clone();
            async move { handle.flush().await.unwrap() }
        }
    };
    // Batches 0 and 1 fill the feed, and the wait for batch 2 runs out.
    for _ in 0..3 {
        flush_one().await;
    }
    assert_eq!(recorder.counter_value(FEED_WAITS_TOTAL), 1);

    // One batch taken: batch 3 fits, and batch 4 is left out at once.
    assert_eq!(committed.recv().await.unwrap()[0].request_id, "req-0");
    flush_one().await;
    flush_one().await;
    assert_eq!(recorder.counter_value(FEED_WAITS_TOTAL), 1);
    assert_eq!(recorder.counter_value(FEED_BATCHES_SKIPPED_TOTAL), 2);

    // Empty: batches 5 and 6 fit, and the writer waits again for batch 7.
    assert_eq!(committed.recv().await.unwrap()[0].request_id, "req-1");
    assert_eq!(committed.recv().await.unwrap()[0].request_id, "req-3");
    for _ in 0..3 {
        flush_one().await;
    }
    assert_eq!(recorder.counter_value(FEED_WAITS_TOTAL), 2);
    assert_eq!(recorder.counter_value(FEED_BATCHES_SKIPPED_TOTAL), 3);
    assert_eq!(store.audit_count().await.unwrap(), 8);
    handle.shutdown().await.unwrap();
    task.await.unwrap();
}

/// Records queued ahead of a shutdown request do not wait for a receiver
/// that takes no batches.
#[tokio::test]
async fn shutdown_does_not_wait_for_a_full_feed() {
    let FedWriter {
        _dir,
        store,
        handle,
        task,
        committed: _committed,
    } = FedWriter::start(1, Duration::from_secs(60)).await;
    handle.record_now(record(0)).unwrap();
    handle.flush().await.unwrap();
    handle.record_now(record(1)).unwrap();

    tokio::time::timeout(Duration::from_secs(10), handle.shutdown())
        .await
        .expect("shutdown waited for the feed")
        .unwrap();
    task.await.unwrap();
    assert_eq!(store.audit_count().await.unwrap(), 2);
}

/// A record's acknowledgement does not wait for room in the feed.
#[tokio::test]
async fn acknowledgement_does_not_wait_for_the_feed() {
    let FedWriter {
        _dir,
        store: _,
        handle,
        task: _task,
        committed: _committed,
    } = FedWriter::start(1, Duration::from_secs(60)).await;
    handle.record_now(record(0)).unwrap();
    handle.flush().await.unwrap();

    let ack = handle.record_acknowledged(record(1)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), ack)
        .await
        .expect("the acknowledgement waited for the feed")
        .unwrap();
}

/// A writer whose feed has room for `batches` batches and which waits up to
/// `patience` for room in it, with the feed's receiving end.
struct FedWriter {
    _dir: tempfile::TempDir,
    store: Store,
    handle: AuditHandle,
    task: tokio::task::JoinHandle<()>,
    committed: tokio::sync::mpsc::Receiver<Vec<castellan_store::AuditRecord>>,
}

impl FedWriter {
    async fn start(batches: usize, patience: Duration) -> FedWriter {
        let (dir, store) = create_store().await;
        let (feed, committed) = tokio::sync::mpsc::channel(batches);
        let config = WriterConfig {
            feed_patience: patience,
            ..WriterConfig::default()
        };
        let (handle, task) = AuditWriter::spawn_with_feed(store.clone(), config, feed);
        FedWriter {
            _dir: dir,
            store,
            handle,
            task,
            committed,
        }
    }
}

/// Waits until counter `name` reaches `value`, for at most 30 s.
async fn wait_for_counter(recorder: &CountingRecorder, name: &str, value: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while recorder.counter_value(name) < value {
        assert!(
            std::time::Instant::now() < deadline,
            "counter {name} stayed at {} below {value} for 30 s",
            recorder.counter_value(name)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Holds the store's write lock from another connection, so the writer
/// blocks on its first batch and later records stay queued.
async fn lock_store(store: &Store) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", store.path().display());
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    other
}

/// A writer with the given pacing mark, stuck on its first record because
/// another connection holds the store's write lock, and `queued` more
/// records in its queue behind it.
struct StuckWriter {
    _dir: tempfile::TempDir,
    store: Store,
    handle: AuditHandle,
    task: tokio::task::JoinHandle<()>,
    lock: sqlx::SqliteConnection,
    pace_above: usize,
}

impl StuckWriter {
    async fn start(pace_above: usize, queued: u32) -> StuckWriter {
        Self::with_capacity(64, pace_above, queued).await
    }

    async fn with_capacity(capacity: usize, pace_above: usize, queued: u32) -> StuckWriter {
        let (dir, store) = create_store().await;
        let config = WriterConfig {
            capacity,
            max_batch: 1,
            flush_interval: Duration::ZERO,
            pace_above,
            ..WriterConfig::default()
        };
        let (handle, task) = AuditWriter::spawn(store.clone(), config);
        let lock = lock_store(&store).await;
        handle.record_now(record(1)).unwrap();
        wait_until_queue_empty(&handle).await;
        for request in 2..2 + queued {
            handle.record_now(record(request)).unwrap();
        }
        StuckWriter {
            _dir: dir,
            store,
            handle,
            task,
            lock,
            pace_above,
        }
    }

    /// Starts a task that paces with a patience of a minute, and checks
    /// that it is still waiting 100 ms later.
    async fn pace_in_background(&self) -> tokio::task::JoinHandle<()> {
        let handle = self.handle.clone();
        let waiting = tokio::spawn(async move { handle.pace(Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "pace returned with {} records queued above a mark of {}",
            self.handle.stats().queued,
            self.pace_above
        );
        waiting
    }

    /// Lets the writer commit again.
    async fn release(&mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut self.lock)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn pace_returns_at_once_below_the_mark() {
    let mut writer = StuckWriter::start(2, 2).await;
    assert_eq!(writer.handle.stats().queued, 2);

    // The writer is stuck, so only the depth check can end this wait.
    let paced = tokio::time::timeout(
        Duration::from_secs(5),
        writer.handle.pace(Duration::from_secs(60)),
    );
    paced.await.expect("pace waited with the queue at its mark");
    writer.release().await;
    writer.handle.flush().await.unwrap();
}

#[tokio::test]
async fn pace_waits_until_the_writer_catches_up() {
    let mut writer = StuckWriter::start(1, 3).await;
    let waiting = writer.pace_in_background().await;

    writer.release().await;
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("pace still waits after the writer caught up")
        .unwrap();
    assert!(writer.handle.stats().queued <= 1);
    writer.handle.flush().await.unwrap();
    assert_eq!(writer.store.audit_count().await.unwrap(), 4);
}

#[tokio::test]
async fn pace_gives_up_after_its_patience() {
    let mut writer = StuckWriter::start(0, 1).await;

    let started = std::time::Instant::now();
    let paced = tokio::time::timeout(
        Duration::from_secs(10),
        writer.handle.pace(Duration::from_millis(200)),
    );
    paced.await.expect("pace outlived its patience");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(writer.handle.stats().queued, 1, "the writer is still stuck");
    // Pacing never rejects: the slot reservation that follows decides.
    assert!(writer.handle.try_reserve().is_ok());
    writer.release().await;
    writer.handle.flush().await.unwrap();
}

#[tokio::test]
async fn pace_returns_when_the_writer_ends() {
    let mut writer = StuckWriter::start(0, 1).await;
    let waiting = writer.pace_in_background().await;

    // The writer ends with record 2 still queued, so the queue never
    // drains below the mark.
    writer.task.abort();
    assert!((&mut writer.task).await.unwrap_err().is_cancelled());
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("pace still waits for a writer that ended")
        .unwrap();
    let paced = tokio::time::timeout(
        Duration::from_secs(10),
        writer.handle.pace(Duration::from_secs(60)),
    );
    paced
        .await
        .expect("a new pace waits for a writer that ended");
    writer.release().await;
}

#[tokio::test]
async fn flush_skips_linger() {
    let sink = FlakySink::default();
    let handle = lingering_writer(&sink, WriterConfig::default()).await;

    let flushed = tokio::time::timeout(Duration::from_secs(5), handle.flush()).await;
    assert_eq!(flushed, Ok(Ok(())), "the flush waited for flush_interval");
    assert_eq!(sink.batch_sizes(), [1]);
}

#[tokio::test]
async fn records_sent_while_lingering_join_the_batch() {
    let sink = FlakySink::default();
    let config = WriterConfig {
        flush_interval: Duration::from_millis(500),
        ..WriterConfig::default()
    };
    let (handle, _task) = AuditWriter::spawn(sink.clone(), config);
    for request in 0..5 {
        handle.record_now(record(request)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        sink.batch_sizes().is_empty(),
        "the batch was committed early"
    );

    handle.flush().await.unwrap();
    assert_eq!(sink.batch_sizes(), [5]);
}

#[tokio::test]
async fn pace_ends_the_writers_linger() {
    let sink = FlakySink::default();
    let config = WriterConfig {
        pace_above: 0,
        ..WriterConfig::default()
    };
    let handle = lingering_writer(&sink, config).await;
    handle.record_now(record(1)).unwrap();
    // Both count as queued until the writer ends its wait for more, which
    // would be at its deadline, 30 s away.
    assert_eq!(handle.stats().queued, 2, "the writer lingers on record 0");

    let paced = tokio::time::timeout(Duration::from_secs(5), handle.pace(Duration::from_secs(60)));
    paced.await.expect("pace waited for the writer's linger");
    handle.flush().await.unwrap();
    assert_eq!(sink.batch_sizes(), [2]);
}

#[tokio::test]
async fn pace_ignores_slots_of_requests_in_flight() {
    let (_dir, store) = create_store().await;
    let config = WriterConfig {
        capacity: 64,
        pace_above: 2,
        ..WriterConfig::default()
    };
    let (handle, _task) = AuditWriter::spawn(store.clone(), config);
    // Forwarded requests hold their slots until their responses end.
    let slots: Vec<_> = (0..10).map(|_| handle.try_reserve().unwrap()).collect();

    let paced = tokio::time::timeout(Duration::from_secs(5), handle.pace(Duration::from_secs(60)));
    paced
        .await
        .expect("pace counted reserved slots as queued records");
    assert_eq!(handle.stats().queued, 0);
    for (request, slot) in (0..).zip(slots) {
        slot.send(record(request));
    }
    handle.flush().await.unwrap();
    assert_eq!(store.audit_count().await.unwrap(), 10);
}

#[tokio::test]
async fn pace_mark_stays_below_a_small_capacity() {
    let default_mark = WriterConfig::default().pace_above;
    let mut writer = StuckWriter::with_capacity(4, default_mark, 3).await;

    // Three of four places are taken: above half the capacity, so pacing
    // waits although the default mark of 512 is far off.
    let started = std::time::Instant::now();
    writer.handle.pace(Duration::from_millis(200)).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    writer.release().await;
    writer.handle.flush().await.unwrap();
    assert_eq!(writer.store.audit_count().await.unwrap(), 4);
}
