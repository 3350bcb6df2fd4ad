//! The audit stage: every request ends in exactly one audit record, written
//! when the response is complete so it carries the final byte counts.
//!
//! Under `audit_durability = "strict"`, submitting a record also returns a
//! [`PendingCommit`] that the response body waits on before its final frame.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use castellan_audit::{AuditBackpressure, AuditHandle, AuditSlot, CommitAck, CommitError};
use castellan_model::AuditDurability;
use castellan_store::{now_ms, AuditDecision, AuditRecord};
use castellan_vault::token::TOKEN_PREFIX;
use http::header::USER_AGENT;
use http::HeaderMap;

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
    /// Scanner rules that matched the request body; see [`crate::inspect`].
    pub findings: Vec<String>,
    /// The agent's `User-Agent`, prepared by [`audit_user_agent`].
    pub user_agent: Option<String>,
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
            findings: Vec::new(),
            user_agent: None,
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
        self.clone()
            .into_record(decision, status, rule, reason, bytes_in, bytes_out)
    }

    /// Builds the record for an outcome, moving the request's text into it
    /// instead of copying it.
    pub fn into_record(
        self,
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
            duration_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            source: socket_text(self.source),
            request_id: self.request_id,
            agent: self.agent,
            token_id: self.token_id,
            connection: self.connection,
            method: self.method,
            path: self.path,
            decision,
            rule,
            reason,
            status,
            bytes_in,
            bytes_out,
            findings: self.findings,
            user_agent: self.user_agent,
        }
    }

    /// Returns facts with the same time and source and no text, left
    /// behind when the original moves into a record.
    fn emptied(&self) -> RequestFacts {
        RequestFacts {
            time_ms: self.time_ms,
            started: self.started,
            request_id: String::new(),
            source: self.source,
            method: String::new(),
            path: String::new(),
            connection: None,
            agent: None,
            token_id: None,
            findings: Vec::new(),
            user_agent: None,
        }
    }
}

/// Writes `address` as `SocketAddr`'s `Display` does, without the
/// formatting machinery for the common IPv4 case, which runs once per
/// request.
fn socket_text(address: SocketAddr) -> String {
    let SocketAddr::V4(v4) = address else {
        return address.to_string();
    };
    let mut text = String::with_capacity(21);
    for (index, octet) in v4.ip().octets().into_iter().enumerate() {
        if index > 0 {
            text.push('.');
        }
        push_decimal(&mut text, u32::from(octet));
    }
    text.push(':');
    push_decimal(&mut text, u32::from(v4.port()));
    text
}

fn push_decimal(text: &mut String, value: u32) {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        text.push(char::from(digit));
    }
}

/// Longest `User-Agent` kept in an audit record, in bytes after escaping.
pub const MAX_USER_AGENT_BYTES: usize = 256;

/// Returns the request's `User-Agent` for the audit record: every value
/// joined by `", "` (so a second header cannot hide a browser behind a
/// first one), cut to [`MAX_USER_AGENT_BYTES`], or `None` without one.
///
/// The header is agent-controlled, so it is escaped the way `castellan
/// audit tail` escapes paths and reasons: backslashes are doubled, and
/// control and bidirectional formatting characters become `\u{..}`. Bytes
/// that are not UTF-8 become U+FFFD. A longer value is cut between two
/// characters, never inside an escape, and ends in `...` within the limit.
///
/// Anything shaped like an agent token (`cst_` and the letters and digits
/// after it) is replaced by [`TOKEN_MASK`] first, because audit records
/// hold token ids and never tokens, even when an agent puts its token here.
pub fn audit_user_agent(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(USER_AGENT).iter().peekable();
    values.peek()?;
    let mut escaped = String::new();
    // Byte lengths of `escaped` after each character or separator, so a cut
    // can land only between them.
    let mut boundaries = Vec::new();
    'values: for (index, value) in values.enumerate() {
        if index > 0 {
            escaped.push_str(", ");
            boundaries.push(escaped.len());
        }
        let text = mask_agent_tokens(&String::from_utf8_lossy(value.as_bytes()));
        for c in text.chars() {
            if escaped.len() > MAX_USER_AGENT_BYTES {
                break 'values;
            }
            push_escaped(&mut escaped, c);
            boundaries.push(escaped.len());
        }
    }
    if escaped.len() > MAX_USER_AGENT_BYTES {
        let budget = MAX_USER_AGENT_BYTES - "...".len();
        let end = boundaries
            .iter()
            .copied()
            .take_while(|&boundary| boundary <= budget)
            .last()
            .unwrap_or(0);
        escaped.truncate(end);
        escaped.push_str("...");
    }
    Some(escaped)
}

/// Text that replaces an agent token in an audited header value.
pub const TOKEN_MASK: &str = "cst_[removed]";

fn mask_agent_tokens(text: &str) -> String {
    let mut masked = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(TOKEN_PREFIX) {
        masked.push_str(&rest[..start]);
        let after = &rest[start + TOKEN_PREFIX.len()..];
        let body = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        if body == 0 {
            masked.push_str(TOKEN_PREFIX);
        } else {
            masked.push_str(TOKEN_MASK);
        }
        rest = &after[body..];
    }
    masked.push_str(rest);
    masked
}

fn push_escaped(out: &mut String, c: char) {
    if c == '\\' {
        out.push_str("\\\\");
    } else if c.is_control() || is_bidi_control(c) {
        out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
    } else {
        out.push(c);
    }
}

/// Characters that reorder the display of surrounding text (Unicode bidi
/// embeddings, overrides, isolates and marks).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
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
    durability: AuditDurability,
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
        durability: AuditDurability,
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
            durability,
        }
    }

    pub fn facts(&self) -> &RequestFacts {
        &self.facts
    }

    pub fn facts_mut(&mut self) -> &mut RequestFacts {
        &mut self.facts
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
    /// normally. Returns the commit that the end of the response must wait
    /// for under `audit_durability = "strict"`.
    pub fn finish(mut self, received: u64, failure: Option<&str>) -> Option<PendingCommit> {
        self.write(received, failure)
    }

    fn write(&mut self, received: u64, failure: Option<&str>) -> Option<PendingCommit> {
        self.finished = true;
        let decision = if failure.is_some() {
            AuditDecision::Error
        } else {
            AuditDecision::Allow
        };
        // Nothing reads the facts after the record is written.
        let emptied = self.facts.emptied();
        let facts = std::mem::replace(&mut self.facts, emptied);
        let record = facts.into_record(
            decision,
            self.status.unwrap_or(CLIENT_CLOSED_REQUEST),
            self.rule.take(),
            failure.map(str::to_string),
            self.sent.load(Ordering::Relaxed),
            received,
        );
        let commit = submit(&self.audit, self.slot.take(), record, self.durability);
        self.in_flight = None;
        commit
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.finished {
            // The response is gone with the body, so no caller waits for
            // the commit.
            let _ = self.write(
                0,
                Some("agent closed the connection before the response was sent"),
            );
        }
    }
}

/// Sends a record through a reserved slot, or tries to queue it when the
/// connection runs fail-open and no slot was reserved.
///
/// Under [`AuditDurability::Strict`] it returns the commit that the response
/// must wait for. That includes a record of a fail-open connection that
/// could not be queued: the request was forwarded, but its response must
/// still not end cleanly without a record.
pub fn submit(
    audit: &AuditHandle,
    slot: Option<AuditSlot>,
    record: AuditRecord,
    durability: AuditDurability,
) -> Option<PendingCommit> {
    if durability == AuditDurability::Strict {
        let request_id = record.request_id.clone();
        let ack = match slot {
            Some(slot) => Ok(slot.send_acknowledged(record)),
            None => audit.record_acknowledged(record),
        };
        if ack.is_err() {
            metrics::counter!("castellan_audit_records_unqueued_total").increment(1);
            log_unqueued();
        }
        return Some(PendingCommit { request_id, ack });
    }
    match slot {
        Some(slot) => slot.send(record),
        None => {
            if audit.record_now(record).is_err() {
                metrics::counter!("castellan_audit_records_unqueued_total").increment(1);
                log_unqueued();
            }
        }
    }
    None
}

/// The commit of one request's audit record, which the final frame of its
/// response waits for under `audit_durability = "strict"`.
///
/// Resolves to an error when the record was not committed; the response is
/// then aborted, and the error is logged and counted in
/// `castellan_audit_responses_aborted_total`.
pub struct PendingCommit {
    request_id: String,
    ack: Result<CommitAck, AuditBackpressure>,
}

/// Reason a response under `audit_durability = "strict"` was aborted.
#[derive(Debug, thiserror::Error)]
pub enum RecordNotCommitted {
    #[error("the audit record could not be queued: {0}")]
    Unqueued(AuditBackpressure),
    #[error("the audit record was not committed: {0}")]
    Commit(CommitError),
}

impl Future for PendingCommit {
    type Output = Result<(), RecordNotCommitted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = match &mut this.ack {
            Ok(ack) => match Pin::new(ack).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result.map_err(RecordNotCommitted::Commit),
            },
            Err(backpressure) => Err(RecordNotCommitted::Unqueued(*backpressure)),
        };
        if let Err(error) = &result {
            metrics::counter!("castellan_audit_responses_aborted_total").increment(1);
            log_aborted(&this.request_id, error);
        }
        Poll::Ready(result)
    }
}

/// Logs a response aborted for its audit record at most once a second,
/// with the count since the last line. A store outage aborts every
/// response, and the writer already logs each failed batch.
fn log_aborted(request_id: &str, error: &RecordNotCommitted) {
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    static LAST_LOG_SECOND: AtomicU64 = AtomicU64::new(0);
    UNLOGGED.fetch_add(1, Ordering::Relaxed);
    if claim_log_second(&LAST_LOG_SECOND) {
        let aborted = UNLOGGED.swap(0, Ordering::Relaxed);
        tracing::error!(
            responses = aborted,
            request_id,
            %error,
            "responses aborted because their audit records were not committed (audit_durability = \"strict\")"
        );
    }
}

/// Returns true for the first caller in each new second of `last_second`.
fn claim_log_second(last_second: &AtomicU64) -> bool {
    let second = u64::try_from(now_ms() / 1000).unwrap_or_default();
    let last = last_second.load(Ordering::Relaxed);
    second > last
        && last_second
            .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Logs lost records at most once a second, with the count since the last
/// line, so a flood of requests cannot flood the log as well.
fn log_unqueued() {
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    static LAST_LOG_SECOND: AtomicU64 = AtomicU64::new(0);
    UNLOGGED.fetch_add(1, Ordering::Relaxed);
    if claim_log_second(&LAST_LOG_SECOND) {
        let lost = UNLOGGED.swap(0, Ordering::Relaxed);
        tracing::error!(
            records = lost,
            "audit queue full: records could not be queued (see castellan_audit_records_unqueued_total)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn socket_text_matches_display() {
        let addresses = [
            "0.0.0.0:0",
            "127.0.0.1:8750",
            "10.20.30.40:9",
            "255.255.255.255:65535",
            "192.168.1.100:10000",
            "[::1]:8750",
            "[2001:db8::7]:443",
        ];
        for text in addresses {
            let address: SocketAddr = text.parse().expect("a valid socket address");
            assert_eq!(socket_text(address), address.to_string());
        }
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            let value = HeaderValue::from_bytes(value).expect("valid header value");
            headers.append(USER_AGENT, value);
        }
        headers
    }

    #[test]
    fn user_agent_kept_as_sent() {
        let sent = headers(&[b"python-httpx/0.27.0"]);
        assert_eq!(
            audit_user_agent(&sent).as_deref(),
            Some("python-httpx/0.27.0")
        );
        assert_eq!(audit_user_agent(&HeaderMap::new()), None);
    }

    #[test]
    fn user_agent_values_joined() {
        let sent = headers(&[b"curl/8.5.0", b"Mozilla/5.0"]);
        assert_eq!(
            audit_user_agent(&sent).as_deref(),
            Some("curl/8.5.0, Mozilla/5.0")
        );
    }

    #[test]
    fn user_agent_controls_escaped() {
        // A tab, a C1 control (U+0085) and a right-to-left override in
        // UTF-8, then a byte that is not UTF-8: all reach the gateway.
        let sent = headers(&[b"bot\t1 \xc2\x85 \\ \xe2\x80\xae end \xff"]);
        assert_eq!(
            audit_user_agent(&sent).as_deref(),
            Some("bot\\u{9}1 \\u{85} \\\\ \\u{202e} end \u{fffd}")
        );
    }

    #[test]
    fn agent_token_in_user_agent_masked() {
        let token = castellan_vault::AgentToken::generate();
        let value = format!("bot/1.0 ({}) cst_ cst_x", token.expose());
        let audited = audit_user_agent(&headers(&[value.as_bytes()])).unwrap();
        assert!(!audited.contains(token.expose()), "{audited}");
        assert_eq!(
            audited, "bot/1.0 (cst_[removed]) cst_ cst_[removed]",
            "only the prefix with letters or digits after it is masked"
        );
    }

    #[test]
    fn long_user_agent_cut_at_limit() {
        let long = "a".repeat(1_000);
        let cut = audit_user_agent(&headers(&[long.as_bytes()])).unwrap();
        assert_eq!(cut.len(), MAX_USER_AGENT_BYTES);
        assert!(cut.ends_with("a..."), "{cut}");

        let exact = "b".repeat(MAX_USER_AGENT_BYTES);
        let kept = audit_user_agent(&headers(&[exact.as_bytes()])).unwrap();
        assert_eq!(kept, exact, "a value at the limit is not cut");
    }

    #[test]
    fn cut_never_splits_escape() {
        // 250 letters, then tabs whose escapes (`\u{9}`, 5 bytes) cross the
        // cut at 253 bytes.
        let mut value = "c".repeat(250).into_bytes();
        value.extend_from_slice(&[b'\t'; 20]);
        let cut = audit_user_agent(&headers(&[&value])).unwrap();
        assert!(cut.len() <= MAX_USER_AGENT_BYTES, "{}", cut.len());
        assert_eq!(cut, format!("{}...", "c".repeat(250)));

        // 248 letters and one escape fill the 253 bytes before `...`.
        let mut value = "d".repeat(248).into_bytes();
        value.extend_from_slice(&[b'\t'; 20]);
        let cut = audit_user_agent(&headers(&[&value])).unwrap();
        assert_eq!(cut, format!("{}\\u{{9}}...", "d".repeat(248)));
        assert_eq!(cut.len(), MAX_USER_AGENT_BYTES);
    }

    #[test]
    fn cut_never_splits_multibyte_character() {
        let value = "é".repeat(200);
        let cut = audit_user_agent(&headers(&[value.as_bytes()])).unwrap();
        assert!(cut.len() <= MAX_USER_AGENT_BYTES);
        assert!(cut.ends_with("é..."), "{cut}");
    }
}
