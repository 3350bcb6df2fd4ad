//! Commit acknowledgements: the path that `audit_durability = "strict"`
//! waits on before a response may end.

mod common;

use std::sync::Arc;
use std::time::Duration;

use castellan_audit::{AuditRecord, AuditSink, AuditWriter, CommitError, WriterConfig};
use castellan_store::{Store, StoreError};
use common::{lingering_writer, record, FlakySink};
use tokio::sync::Semaphore;

/// Sink whose writes wait for a permit, so a test can hold a batch in the
/// middle of its commit.
#[derive(Clone)]
struct GatedSink {
    gate: Arc<Semaphore>,
    inner: FlakySink,
}

impl GatedSink {
    fn closed() -> GatedSink {
        GatedSink {
            gate: Arc::new(Semaphore::new(0)),
            inner: FlakySink::default(),
        }
    }
}

impl AuditSink for GatedSink {
    async fn write_batch(&self, records: &mut [AuditRecord]) -> Result<(), StoreError> {
        let permit = self.gate.acquire().await.expect("the gate is never closed");
        permit.forget();
        self.inner.write_batch(records).await
    }
}

/// Tells whether `ack` is still unresolved after the writer had time to run.
async fn still_pending<F: std::future::Future + Unpin>(ack: &mut F) -> bool {
    tokio::time::timeout(Duration::from_millis(100), ack)
        .await
        .is_err()
}

#[tokio::test]
async fn ack_waits_for_commit() {
    let sink = GatedSink::closed();
    let (handle, _task) = AuditWriter::spawn(sink.clone(), WriterConfig::default());

    let mut ack = handle.record_acknowledged(record(1)).unwrap();
    assert!(
        still_pending(&mut ack).await,
        "the ack resolved while the commit was still blocked"
    );
    assert!(sink.inner.request_ids().is_empty());

    sink.gate.add_permits(1);
    assert_eq!(ack.await, Ok(()));
    assert_eq!(sink.inner.request_ids(), ["req-1"]);
}

#[tokio::test]
async fn acked_record_visible_to_other_connection() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("castellan.db"))
        .await
        .unwrap();
    let reader = Store::open(store.path()).await.unwrap();
    let (handle, _task) = AuditWriter::spawn(store, WriterConfig::default());

    for request in 0..20 {
        let ack = handle.record_acknowledged(record(request)).unwrap();
        ack.await.unwrap();
        let committed = reader.audit_count().await.unwrap();
        assert_eq!(committed, u64::from(request) + 1, "after ack {request}");
    }
}

#[tokio::test]
async fn acked_records_still_batched() {
    let sink = FlakySink::default();
    let config = WriterConfig {
        max_batch: 4,
        ..WriterConfig::default()
    };
    let (handle, _task) = AuditWriter::spawn(sink.clone(), config);

    // The single-threaded runtime runs the writer only once this task waits,
    // so all ten records are queued before the first batch is taken.
    let acks: Vec<_> = (0..10)
        .map(|request| handle.record_acknowledged(record(request)).unwrap())
        .collect();
    for (request, ack) in acks.into_iter().enumerate() {
        assert_eq!(ack.await, Ok(()), "record {request}");
    }

    assert_eq!(sink.batch_sizes(), [4, 4, 2]);
    let expected: Vec<_> = (0..10).map(|i| format!("req-{i}")).collect();
    assert_eq!(sink.request_ids(), expected, "records keep queue order");
}

#[tokio::test]
async fn acked_record_commits_with_plain_records() {
    let sink = FlakySink::default();
    let (handle, _task) = AuditWriter::spawn(sink.clone(), WriterConfig::default());

    handle.record_now(record(0)).unwrap();
    handle.record_now(record(1)).unwrap();
    let ack = handle.record_acknowledged(record(2)).unwrap();
    handle.record_now(record(3)).unwrap();
    ack.await.unwrap();

    assert_eq!(sink.batch_sizes(), [4], "one transaction for all four");
}

#[tokio::test]
async fn acked_record_skips_linger() {
    let sink = FlakySink::default();
    let handle = lingering_writer(&sink, WriterConfig::default()).await;

    let ack = handle.record_acknowledged(record(1)).unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(5), ack).await;
    assert_eq!(acked, Ok(Ok(())), "the ack did not wait for flush_interval");
    assert_eq!(sink.batch_sizes(), [2]);
}

#[tokio::test]
async fn ack_after_retried_commit() {
    let sink = FlakySink::failing_first(2);
    let config = WriterConfig {
        max_backoff: Duration::from_millis(1),
        ..WriterConfig::default()
    };
    let (handle, _task) = AuditWriter::spawn(sink.clone(), config);

    let ack = handle.record_acknowledged(record(7)).unwrap();

    assert_eq!(ack.await, Ok(()));
    assert_eq!(sink.attempts_at("req-7"), 3);
    assert_eq!(sink.request_ids(), ["req-7"]);
}

#[tokio::test]
async fn writer_giving_up_fails_ack() {
    let sink = FlakySink::failing_first(usize::MAX);
    let config = WriterConfig {
        max_backoff: Duration::from_millis(1),
        give_up_after: Duration::from_millis(20),
        ..WriterConfig::default()
    };
    let (handle, _task) = AuditWriter::spawn(sink.clone(), config);

    let first = handle.record_acknowledged(record(1)).unwrap();
    let second = handle.record_acknowledged(record(2)).unwrap();

    assert_eq!(first.await, Err(CommitError::GaveUp));
    assert_eq!(second.await, Err(CommitError::GaveUp));
    assert!(sink.attempts_at("req-1") > 1, "retried before giving up");
    assert_eq!(handle.stats().dropped, 2);
    assert_eq!(handle.stats().written, 0);
}

#[tokio::test]
async fn stopped_writer_fails_ack() {
    let sink = GatedSink::closed();
    let (handle, task) = AuditWriter::spawn(sink.clone(), WriterConfig::default());

    let mut ack = handle.record_acknowledged(record(1)).unwrap();
    assert!(still_pending(&mut ack).await, "the commit is blocked");
    task.abort();

    let result = tokio::time::timeout(Duration::from_secs(5), ack).await;
    assert_eq!(result, Ok(Err(CommitError::Stopped)));
    assert!(sink.inner.request_ids().is_empty());
}

#[tokio::test]
async fn dropped_ack_still_commits() {
    let sink = FlakySink::default();
    let (handle, _task) = AuditWriter::spawn(sink.clone(), WriterConfig::default());

    drop(handle.record_acknowledged(record(1)).unwrap());
    handle.flush().await.unwrap();

    assert_eq!(sink.request_ids(), ["req-1"]);
    assert_eq!(handle.stats().written, 1);
}
