//! The audit stage: every request ends in exactly one audit record, written
//! when the response is complete so it carries the final byte counts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use castellan_audit::{AuditHandle, AuditSlot};
use castellan_store::{now_ms, AuditDecision, AuditRecord};

use crate::limits::InFlight;

/// Facts about a request gathered as it passes the stages.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub time_ms: i64,
    pub started: Instant,
    pub request_id: String,
    pub source: SocketAddr,
    pub method: String,
    /// The normalized path, or the raw path cut to a safe length when it did
    /// not normalize.
    pub path: String,
    pub connection: Option<String>,
    pub agent: Option<String>,
    pub token_id: Option<String>,
}

impl RequestFacts {
    pub fn new(request_id: String, source: SocketAddr, method: &str, raw_path: &str) -> Self {
        RequestFacts {
            time_ms: now_ms(),
            started: Instant::now(),
            request_id,
            source,
            method: method.to_string(),
            path: truncate(raw_path, 1024),
            connection: None,
            agent: None,
            token_id: None,
        }
    }

    /// Builds the record for an outcome.
    pub fn record(
        &self,
        decision: AuditDecision,
        status: u16,
        rule: Option<String>,
        reason: Option<String>,
        bytes_in: u64,
        bytes_out: u64,
    ) -> AuditRecord {
        AuditRecord {
            seq: None,
            time_ms: self.time_ms,
            request_id: self.request_id.clone(),
            agent: self.agent.clone(),
            token_id: self.token_id.clone(),
            source: self.source.to_string(),
            connection: self.connection.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            decision,
            rule,
            reason,
            status,
            bytes_in,
            bytes_out,
            duration_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The audit record of a request that passed the policy, from the moment
/// its audit slot is reserved until its response body ends.
///
/// Dropping it unfinished (the agent went away while the upstream was still
/// working) still writes a record, so no forwarded request goes unrecorded.
pub struct Completion {
    facts: RequestFacts,
    slot: Option<AuditSlot>,
    audit: AuditHandle,
    /// Status sent to the agent, once known.
    status: Option<u16>,
    rule: Option<String>,
    sent: Arc<AtomicU64>,
    finished: bool,
    /// Holds the agent's concurrency slot until the record is written.
    in_flight: Option<Arc<InFlight>>,
}

/// Status recorded when the agent closed the connection before any
/// response was sent (the code nginx uses for the same case).
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Completion {
    pub fn new(
        facts: RequestFacts,
        slot: Option<AuditSlot>,
        audit: AuditHandle,
        rule: Option<String>,
        sent: Arc<AtomicU64>,
        in_flight: Option<Arc<InFlight>>,
    ) -> Self {
        Completion {
            facts,
            slot,
            audit,
            status: None,
            rule,
            sent,
            finished: false,
            in_flight,
        }
    }

    pub fn facts(&self) -> &RequestFacts {
        &self.facts
    }

    pub fn set_status(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// Hands the reserved slot to a rejection record instead.
    pub fn take_slot(mut self) -> (RequestFacts, Option<AuditSlot>) {
        self.finished = true;
        let slot = self.slot.take();
        (self.facts.clone(), slot)
    }

    /// Writes the record; `failure` describes a response that did not end
    /// normally.
    pub fn finish(mut self, received: u64, failure: Option<&str>) {
        self.write(received, failure);
    }

    fn write(&mut self, received: u64, failure: Option<&str>) {
        self.finished = true;
        let decision = if failure.is_some() {
            AuditDecision::Error
        } else {
            AuditDecision::Allow
        };
        let record = self.facts.record(
            decision,
            self.status.unwrap_or(CLIENT_CLOSED_REQUEST),
            self.rule.take(),
            failure.map(str::to_string),
            self.sent.load(Ordering::Relaxed),
            received,
        );
        submit(&self.audit, self.slot.take(), record);
        self.in_flight = None;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.finished {
            self.write(
                0,
                Some("agent closed the connection before the upstream responded"),
            );
        }
    }
}

/// Sends a record through a reserved slot, or tries to queue it when the
/// connection runs fail-open and no slot was reserved.
pub fn submit(audit: &AuditHandle, slot: Option<AuditSlot>, record: AuditRecord) {
    match slot {
        Some(slot) => slot.send(record),
        None => {
            if audit.record_now(record).is_err() {
                metrics::counter!("castellan_audit_records_unqueued_total").increment(1);
                log_unqueued();
            }
        }
    }
}

/// Logs lost records at most once a second, with the count since the last
/// line, so a flood of requests cannot flood the log as well.
fn log_unqueued() {
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    static LAST_LOG_SECOND: AtomicU64 = AtomicU64::new(0);
    UNLOGGED.fetch_add(1, Ordering::Relaxed);
    let second = u64::try_from(now_ms() / 1000).unwrap_or_default();
    let last = LAST_LOG_SECOND.load(Ordering::Relaxed);
    if second > last
        && LAST_LOG_SECOND
            .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let lost = UNLOGGED.swap(0, Ordering::Relaxed);
        tracing::error!(
            records = lost,
            "audit queue full: records could not be queued (see castellan_audit_records_unqueued_total)"
        );
    }
}
