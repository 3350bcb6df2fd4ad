//! The alert vocabulary shared by the detectors, the store, the
//! configuration and the CLI: what kinds of alerts exist and how severe
//! they are.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind of behaviour a detector flags. The snake_case names appear in `castellan.toml`,
/// the store, JSON output and webhook bodies, so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// One agent token used from two places too far apart for the time
    /// between the calls.
    ImpossibleTravel,
    /// First use from a network the agent never used after learning.
    NewNetwork,
    /// A call from outside the agent's declared `networks`.
    OutsideNetworks,
    /// Requests per minute far above the agent's baseline for a connection.
    RateSpike,
    /// Bytes sent or received far above the agent's baseline.
    VolumeSpike,
    /// A burst of denied requests from one agent.
    Probing,
    /// A burst of failed authentications from one source address.
    CredentialStuffing,
    /// Activity in an hour of the week the agent was never active in.
    UnusualHours,
    /// First call of a method and path template the agent never used.
    NewEndpoint,
    /// An agent unused for a long time becomes active.
    DormantAgent,
    /// A canary token, which grants nothing, was presented.
    CanaryToken,
    /// Rotating an upstream key through its rotation command failed, or
    /// revoking the old key did; the current version stays in use.
    RotationFailed,
}

impl AlertKind {
    /// Every kind, in declaration order.
    pub const ALL: [AlertKind; 12] = [
        AlertKind::ImpossibleTravel,
        AlertKind::NewNetwork,
        AlertKind::OutsideNetworks,
        AlertKind::RateSpike,
        AlertKind::VolumeSpike,
        AlertKind::Probing,
        AlertKind::CredentialStuffing,
        AlertKind::UnusualHours,
        AlertKind::NewEndpoint,
        AlertKind::DormantAgent,
        AlertKind::CanaryToken,
        AlertKind::RotationFailed,
    ];

    /// The kinds the behaviour detectors raise from the audit log, in
    /// declaration order; the rest come from castellan's own jobs.
    pub const DETECTED: [AlertKind; 11] = [
        AlertKind::ImpossibleTravel,
        AlertKind::NewNetwork,
        AlertKind::OutsideNetworks,
        AlertKind::RateSpike,
        AlertKind::VolumeSpike,
        AlertKind::Probing,
        AlertKind::CredentialStuffing,
        AlertKind::UnusualHours,
        AlertKind::NewEndpoint,
        AlertKind::DormantAgent,
        AlertKind::CanaryToken,
    ];

    /// Returns the snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ImpossibleTravel => "impossible_travel",
            AlertKind::NewNetwork => "new_network",
            AlertKind::OutsideNetworks => "outside_networks",
            AlertKind::RateSpike => "rate_spike",
            AlertKind::VolumeSpike => "volume_spike",
            AlertKind::Probing => "probing",
            AlertKind::CredentialStuffing => "credential_stuffing",
            AlertKind::UnusualHours => "unusual_hours",
            AlertKind::NewEndpoint => "new_endpoint",
            AlertKind::DormantAgent => "dormant_agent",
            AlertKind::CanaryToken => "canary_token",
            AlertKind::RotationFailed => "rotation_failed",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an alert kind name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown alert kind `{0}`: expected one of {kinds}", kinds = kind_names())]
pub struct UnknownAlertKind(pub String);

fn kind_names() -> String {
    AlertKind::ALL.map(AlertKind::as_str).join(", ")
}

impl FromStr for AlertKind {
    type Err = UnknownAlertKind;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        AlertKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| UnknownAlertKind(name.to_owned()))
    }
}

/// The urgency of an alert, ordered `Low < Medium < High < Critical`, so a
/// response rule can apply from a minimum severity up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Every severity, from the lowest.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Returns the lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a severity name other than low, medium, high or critical.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown severity `{0}`: expected low, medium, high or critical")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|severity| severity.as_str() == name)
            .ok_or_else(|| UnknownSeverity(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in AlertKind::ALL {
            assert_eq!(kind.as_str().parse::<AlertKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).expect("kind serializes");
            assert_eq!(json, format!("\"{kind}\""));
        }
        for severity in Severity::ALL {
            assert_eq!(severity.as_str().parse::<Severity>(), Ok(severity));
        }
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let error = "travel".parse::<AlertKind>().unwrap_err().to_string();
        assert!(error.contains("`travel`"), "{error}");
        assert!(error.contains("canary_token"), "{error}");
        let error = "urgent".parse::<Severity>().unwrap_err().to_string();
        assert!(error.contains("`urgent`"), "{error}");
        assert!(error.contains("critical"), "{error}");
    }

    #[test]
    fn severities_are_ordered() {
        assert!(Severity::Low < Severity::Medium);
        assert!(Severity::High < Severity::Critical);
    }
}
