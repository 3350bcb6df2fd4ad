//! Names of the metrics the audit writer reports through the `metrics` facade.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Counter of audit records committed to the store.
pub const RECORDS_WRITTEN_TOTAL: &str = "castellan_audit_records_written_total";
/// Counter of audit records lost after the writer gave up retrying.
pub const RECORDS_DROPPED_TOTAL: &str = "castellan_audit_records_dropped_total";
/// Counter of slot reservations rejected because the queue was full.
pub const BACKPRESSURE_TOTAL: &str = "castellan_audit_backpressure_total";
/// Counter of requests that waited for the writer because the queue was
/// above its pacing mark.
pub const PACED_TOTAL: &str = "castellan_audit_paced_total";
/// Counter of those waits that ended at their time limit.
pub const PACE_TIMEOUTS_TOTAL: &str = "castellan_audit_pace_timeouts_total";
/// Gauge of records waiting in the queue.
pub const QUEUE_DEPTH: &str = "castellan_audit_queue_depth";
/// Counter of committed batches left out of a full feed, whose receiver
/// then reads them from the store.
pub const FEED_BATCHES_SKIPPED_TOTAL: &str = "castellan_audit_feed_batches_skipped_total";
/// Counter of committed batches for which the writer waited because the
/// feed was full.
pub const FEED_WAITS_TOTAL: &str = "castellan_audit_feed_waits_total";
/// Histogram of the time each of those waits took, which is how long the
/// writer, and the requests paced behind it, waited for the monitor.
pub const FEED_WAIT_SECONDS: &str = "castellan_audit_feed_wait_seconds";
/// Histogram of the time one successful batch write took.
pub const BATCH_DURATION_SECONDS: &str = "castellan_audit_batch_duration_seconds";

/// Registers descriptions with the installed recorder, if any.
pub(crate) fn describe() {
    describe_counter!(
        RECORDS_WRITTEN_TOTAL,
        "Audit records committed to the store"
    );
    describe_counter!(
        RECORDS_DROPPED_TOTAL,
        "Audit records lost after the writer gave up retrying"
    );
    describe_counter!(
        BACKPRESSURE_TOTAL,
        "Audit slot reservations rejected because the queue was full"
    );
    describe_counter!(
        FEED_BATCHES_SKIPPED_TOTAL,
        "Committed audit batches left out of the detection monitor's full feed"
    );
    describe_counter!(
        FEED_WAITS_TOTAL,
        "Committed audit batches for which the writer waited for room in the detection monitor's feed"
    );
    describe_histogram!(
        FEED_WAIT_SECONDS,
        Unit::Seconds,
        "Time the audit writer waited for room in the detection monitor's feed"
    );
    describe_counter!(
        PACED_TOTAL,
        "Requests that waited for the audit writer to catch up"
    );
    describe_counter!(
        PACE_TIMEOUTS_TOTAL,
        "Waits for the audit writer that ended at their time limit"
    );
    describe_gauge!(QUEUE_DEPTH, "Audit records waiting in the queue");
    describe_histogram!(
        BATCH_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one successful audit batch write"
    );
}
