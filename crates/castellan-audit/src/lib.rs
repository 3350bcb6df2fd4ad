//! Audit records for every checkpoint decision: a bounded queue the gateway
//! reserves a slot in before forwarding, a batching writer task, and the
//! formatting `castellan audit tail` prints.
#![forbid(unsafe_code)]

mod format;
mod handle;
mod metrics;
mod sink;
mod writer;

pub use castellan_store::{AuditDecision, AuditQuery, AuditRecord, AuditWindow};
pub use format::{format_line, format_time, write_json_line};
pub use handle::{
    AuditBackpressure, AuditError, AuditHandle, AuditSlot, CommitAck, CommitError, WriterStats,
};
pub use metrics::{
    BACKPRESSURE_TOTAL, BATCH_DURATION_SECONDS, FEED_BATCHES_SKIPPED_TOTAL, FEED_WAITS_TOTAL,
    FEED_WAIT_SECONDS, PACED_TOTAL, PACE_TIMEOUTS_TOTAL, QUEUE_DEPTH, RECORDS_DROPPED_TOTAL,
    RECORDS_WRITTEN_TOTAL,
};
pub use sink::AuditSink;
pub use writer::{AuditWriter, WriterConfig};
