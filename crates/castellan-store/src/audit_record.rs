//! The audit record and audit queries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Outcome of one request at the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDecision {
    /// Authorized and forwarded upstream.
    Allow,
    /// Rejected by authentication, authorization or a suspension.
    Deny,
    /// Failed inside castellan or upstream after the decision was made.
    Error,
}

impl AuditDecision {
    /// Returns the lowercase name stored in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDecision::Allow => "allow",
            AuditDecision::Deny => "deny",
            AuditDecision::Error => "error",
        }
    }
}

impl fmt::Display for AuditDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a decision name other than `allow`, `deny` or `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid audit decision `{0}`: expected allow, deny or error")]
pub struct InvalidDecision(pub String);

impl FromStr for AuditDecision {
    type Err = InvalidDecision;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "allow" => Ok(AuditDecision::Allow),
            "deny" => Ok(AuditDecision::Deny),
            "error" => Ok(AuditDecision::Error),
            other => Err(InvalidDecision(other.to_owned())),
        }
    }
}

/// One audited request. This is also the JSON object that
/// `castellan audit tail --json` prints per line; absent values are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the audit log, assigned on insert (`None` before).
    pub seq: Option<i64>,
    /// When the request arrived, in unix milliseconds.
    pub time_ms: i64,
    /// Identifier castellan gave the request, also sent to the agent.
    pub request_id: String,
    /// Authenticated agent, or `None` when authentication failed.
    pub agent: Option<String>,
    /// Id of the agent token used (never the token itself).
    pub token_id: Option<String>,
    /// Client address of the request, such as `127.0.0.1:53211`.
    pub source: String,
    /// Connection the request addressed, or `None` if unknown.
    pub connection: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Normalized path that policy evaluated, without the query string.
    pub path: String,
    pub decision: AuditDecision,
    /// Policy rule that decided the request.
    pub rule: Option<String>,
    /// Explanation of a denial or failure.
    pub reason: Option<String>,
    /// HTTP status sent to the agent.
    pub status: u16,
    /// Request body bytes received from the agent.
    pub bytes_in: u64,
    /// Response body bytes sent to the agent.
    pub bytes_out: u64,
    /// Time from request arrival to the end of the response, in microseconds.
    pub duration_us: u64,
    /// Ids of the scanner rules that matched the request body in the
    /// outbound data-loss check; empty when it found nothing or did not run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
    /// The request's `User-Agent` header (several joined by `, `), at most
    /// 256 bytes, with control and bidirectional characters escaped as
    /// `\u{..}` and backslashes doubled. `None` when the request had none.
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// End of the matching records that a query returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditWindow {
    /// The oldest matching records: follow the log from `after_seq`.
    Oldest,
    /// The newest matching records: the start of `castellan audit tail`.
    Newest,
}

/// Selection of audit records. Results are always in ascending `seq` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records with `seq` greater than this.
    pub after_seq: Option<i64>,
    /// Only records of this agent.
    pub agent: Option<String>,
    /// Maximum records returned, capped at [`MAX_AUDIT_QUERY_LIMIT`].
    pub limit: u32,
    pub window: AuditWindow,
}

/// Maximum records one query returns, so one call's memory stays bounded.
/// Page through more with [`AuditQuery::after_seq`].
pub const MAX_AUDIT_QUERY_LIMIT: u32 = 100_000;

impl AuditQuery {
    /// Selects the last `limit` records.
    pub fn tail(limit: u32) -> AuditQuery {
        AuditQuery {
            after_seq: None,
            agent: None,
            limit,
            window: AuditWindow::Newest,
        }
    }

    /// Selects up to `limit` records following `seq`, oldest first.
    pub fn after(seq: i64, limit: u32) -> AuditQuery {
        AuditQuery {
            after_seq: Some(seq),
            agent: None,
            limit,
            window: AuditWindow::Oldest,
        }
    }

    /// Restricts the query to records of `agent`.
    pub fn for_agent(mut self, agent: impl Into<String>) -> AuditQuery {
        self.agent = Some(agent.into());
        self
    }
}
