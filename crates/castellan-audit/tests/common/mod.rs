//! Test sinks, a metrics recorder and record builders for the writer tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use castellan_audit::{
    AuditDecision, AuditHandle, AuditRecord, AuditSink, AuditWriter, WriterConfig,
};
use castellan_store::StoreError;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

pub fn record(request: u32) -> AuditRecord {
    AuditRecord {
        seq: None,
        time_ms: 1_700_000_000_000 + i64::from(request),
        request_id: format!("req-{request}"),
        agent: Some("alpha".to_owned()),
        token_id: Some("tok-1".to_owned()),
        source: "127.0.0.1:50000".to_owned(),
        connection: Some("github".to_owned()),
        method: "POST".to_owned(),
        path: "/graphql".to_owned(),
        decision: AuditDecision::Allow,
        rule: Some("role:writer".to_owned()),
        reason: None,
        status: 200,
        bytes_in: 10,
        bytes_out: 20,
        duration_us: 300,
        findings: Vec::new(),
        user_agent: None,
    }
}

/// Starts a writer on `sink` with a flush interval of 30 s and `config`'s
/// other settings, and lets it take a plain record and start waiting for
/// more.
pub async fn lingering_writer(sink: &FlakySink, config: WriterConfig) -> AuditHandle {
    let config = WriterConfig {
        flush_interval: std::time::Duration::from_secs(30),
        ..config
    };
    let (handle, _task) = AuditWriter::spawn(sink.clone(), config);
    handle.record_now(record(0)).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(sink.batch_sizes().is_empty(), "a plain record lingers");
    handle
}

fn busy() -> StoreError {
    StoreError::Busy {
        operation: "test write",
        source: None,
    }
}

/// Sink that fails its first `failures` attempts, then stores every batch.
#[derive(Clone, Default)]
pub struct FlakySink {
    pub failures: Arc<AtomicUsize>,
    pub attempts: Arc<AtomicUsize>,
    pub batches: Arc<Mutex<Vec<Vec<AuditRecord>>>>,
    /// First request id of the batch passed to each attempt.
    pub attempted: Arc<Mutex<Vec<String>>>,
}

impl FlakySink {
    pub fn failing_first(failures: usize) -> FlakySink {
        let sink = FlakySink::default();
        sink.failures.store(failures, Ordering::SeqCst);
        sink
    }

    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().unwrap().iter().map(Vec::len).collect()
    }

    /// Returns how many attempts were made at the batch starting with `id`.
    pub fn attempts_at(&self, id: &str) -> usize {
        self.attempted
            .lock()
            .unwrap()
            .iter()
            .filter(|a| *a == id)
            .count()
    }

    pub fn request_ids(&self) -> Vec<String> {
        let batches = self.batches.lock().unwrap();
        batches
            .iter()
            .flatten()
            .map(|r| r.request_id.clone())
            .collect()
    }
}

impl AuditSink for FlakySink {
    async fn write_batch(&self, records: &mut [AuditRecord]) -> Result<(), StoreError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(first) = records.first() {
            self.attempted
                .lock()
                .unwrap()
                .push(first.request_id.clone());
        }
        let remaining = self.failures.load(Ordering::SeqCst);
        if remaining > 0 {
            self.failures.store(remaining - 1, Ordering::SeqCst);
            return Err(busy());
        }
        self.batches.lock().unwrap().push(records.to_vec());
        Ok(())
    }
}

/// Recorder that keeps counters by name, for use as a thread-local recorder
/// with the single-threaded test runtime.
#[derive(Default)]
pub struct CountingRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl CountingRecorder {
    pub fn counter_value(&self, name: &str) -> u64 {
        let counters = self.counters.lock().unwrap();
        counters.get(name).map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap();
        let counter = counters.entry(key.name().to_owned()).or_default();
        Counter::from_arc(Arc::clone(counter))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
