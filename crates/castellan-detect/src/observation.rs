//! The detectors' view of one audit record.

use std::net::{IpAddr, SocketAddr};

use castellan_model::canonical_ip;
use castellan_store::{AuditDecision, AuditRecord};

/// The checkpoint's outcome for a request, in the classes the detectors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Authorized and forwarded upstream.
    Allowed,
    /// The agent authenticated but the request was denied: policy, a
    /// declared network, a limit or a suspension.
    Denied,
    /// No agent could be authenticated from the request.
    Unauthenticated,
    /// Failed inside castellan or upstream after the decision.
    Failed,
}

/// One audited request, reduced to what the detectors use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Position in the audit log: alerts cite it as evidence.
    pub seq: i64,
    /// When the request arrived, in unix milliseconds.
    pub time_ms: i64,
    /// The authenticated agent, or the owner of the token presented when
    /// that token was a canary.
    pub agent: Option<String>,
    /// Id of the agent token presented, when one was recognized.
    pub token_id: Option<String>,
    /// Source address, with IPv4-mapped IPv6 addresses unmapped.
    pub source: IpAddr,
    pub connection: Option<String>,
    pub method: String,
    /// Normalized path, without the query string.
    pub path: String,
    pub outcome: Outcome,
    /// HTTP status sent to the agent.
    pub status: u16,
    /// Request body bytes: data leaving through the gateway.
    pub bytes_in: u64,
    /// Response body bytes the agent received.
    pub bytes_out: u64,
}

/// Error for an audit record the detectors cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidObservation {
    #[error(
        "audit record {request_id} has no sequence number; only stored records can be observed"
    )]
    MissingSeq { request_id: String },
    #[error("audit record {seq} has source {address:?}, which is not an IP address or IP:port")]
    BadSource { seq: i64, address: String },
}

impl Observation {
    /// Converts a stored audit record.
    pub fn from_record(record: &AuditRecord) -> Result<Observation, InvalidObservation> {
        let seq = record.seq.ok_or_else(|| InvalidObservation::MissingSeq {
            request_id: record.request_id.clone(),
        })?;
        let source = parse_source(&record.source).ok_or_else(|| InvalidObservation::BadSource {
            seq,
            address: record.source.clone(),
        })?;
        let outcome = match (record.decision, &record.agent) {
            (AuditDecision::Allow, _) => Outcome::Allowed,
            (AuditDecision::Error, _) => Outcome::Failed,
            (AuditDecision::Deny, None) => Outcome::Unauthenticated,
            (AuditDecision::Deny, Some(_)) if record.status == 401 => Outcome::Unauthenticated,
            (AuditDecision::Deny, Some(_)) => Outcome::Denied,
        };
        Ok(Observation {
            seq,
            time_ms: record.time_ms,
            agent: record.agent.clone(),
            token_id: record.token_id.clone(),
            source,
            connection: record.connection.clone(),
            method: record.method.clone(),
            path: record.path.clone(),
            outcome,
            status: record.status,
            bytes_in: record.bytes_in,
            bytes_out: record.bytes_out,
        })
    }
}

/// Parses `ip:port`, `[ipv6]:port` or a bare address.
fn parse_source(text: &str) -> Option<IpAddr> {
    let ip = match text.parse::<SocketAddr>() {
        Ok(address) => address.ip(),
        Err(_) => text.parse::<IpAddr>().ok()?,
    };
    Some(canonical_ip(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(decision: AuditDecision, agent: Option<&str>, status: u16) -> AuditRecord {
        AuditRecord {
            seq: Some(7),
            time_ms: 1_700_000_000_000,
            request_id: "req-1".to_owned(),
            agent: agent.map(str::to_owned),
            token_id: None,
            source: "[::ffff:203.0.113.9]:41000".to_owned(),
            connection: Some("github".to_owned()),
            method: "GET".to_owned(),
            path: "/repos".to_owned(),
            decision,
            rule: None,
            reason: None,
            status,
            bytes_in: 10,
            bytes_out: 20,
            duration_us: 5,
            findings: Vec::new(),
            user_agent: None,
        }
    }

    #[test]
    fn outcome_follows_decision_and_status() {
        let cases = [
            (AuditDecision::Allow, Some("bot"), 200, Outcome::Allowed),
            (AuditDecision::Error, Some("bot"), 502, Outcome::Failed),
            (AuditDecision::Deny, None, 401, Outcome::Unauthenticated),
            (
                AuditDecision::Deny,
                Some("bot"),
                401,
                Outcome::Unauthenticated,
            ),
            (AuditDecision::Deny, Some("bot"), 403, Outcome::Denied),
        ];
        for (decision, agent, status, expected) in cases {
            let observation = Observation::from_record(&record(decision, agent, status))
                .expect("record converts");
            assert_eq!(observation.outcome, expected, "{decision} {status}");
        }
    }

    #[test]
    fn mapped_source_is_unmapped() {
        let observation = Observation::from_record(&record(AuditDecision::Allow, Some("bot"), 200))
            .expect("record converts");
        assert_eq!(observation.source, "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn unusable_records_are_rejected() {
        let mut unsaved = record(AuditDecision::Allow, Some("bot"), 200);
        unsaved.seq = None;
        assert!(matches!(
            Observation::from_record(&unsaved),
            Err(InvalidObservation::MissingSeq { .. })
        ));
        let mut garbled = record(AuditDecision::Allow, Some("bot"), 200);
        garbled.source = "not-an-address".to_owned();
        let error = Observation::from_record(&garbled).unwrap_err();
        assert!(error.to_string().contains("not-an-address"), "{error}");
    }
}
