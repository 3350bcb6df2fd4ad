//! Findings: one detector's report on one observation, before the engine's
//! repeat limit turns it into a signal. A finding carries numbers only, so
//! the summary text is built only for the findings that become signals.

use castellan_model::{AlertKind, Severity};

use super::endpoint::endpoint_text;
use super::hours::hour_of_week_text;
use super::network::network_text;
use crate::observation::Observation;
use crate::settings::{millis, DetectorSettings};

/// Direction of a body through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Request bodies: data leaving through the gateway.
    Sent,
    /// Response bodies the agent received.
    Received,
}

impl Direction {
    fn verb(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// One detector's report on one observation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Finding {
    CanaryToken,
    CredentialStuffing {
        failures: f64,
    },
    OutsideNetworks,
    DormantAgent {
        idle_ms: i64,
    },
    ImpossibleTravel {
        distance_km: f64,
        elapsed_ms: u64,
        speed_kmh: f64,
    },
    Probing {
        denials: f64,
    },
    NewNetwork,
    UnusualHours {
        hour: u8,
    },
    NewEndpoint,
    RateSpike {
        requests: u64,
        median: f64,
    },
    VolumeMinute {
        direction: Direction,
        bytes: u64,
        median: f64,
    },
    LargeBody {
        direction: Direction,
        bytes: u64,
        typical: f64,
    },
}

impl Finding {
    pub(crate) fn kind(&self) -> AlertKind {
        match self {
            Finding::CanaryToken => AlertKind::CanaryToken,
            Finding::CredentialStuffing { .. } => AlertKind::CredentialStuffing,
            Finding::OutsideNetworks => AlertKind::OutsideNetworks,
            Finding::DormantAgent { .. } => AlertKind::DormantAgent,
            Finding::ImpossibleTravel { .. } => AlertKind::ImpossibleTravel,
            Finding::Probing { .. } => AlertKind::Probing,
            Finding::NewNetwork => AlertKind::NewNetwork,
            Finding::UnusualHours { .. } => AlertKind::UnusualHours,
            Finding::NewEndpoint => AlertKind::NewEndpoint,
            Finding::RateSpike { .. } => AlertKind::RateSpike,
            Finding::VolumeMinute { .. } | Finding::LargeBody { .. } => AlertKind::VolumeSpike,
        }
    }

    pub(crate) fn severity(&self) -> Severity {
        match self {
            Finding::CanaryToken => Severity::Critical,
            Finding::CredentialStuffing { .. }
            | Finding::OutsideNetworks
            | Finding::ImpossibleTravel { .. }
            | Finding::Probing { .. } => Severity::High,
            Finding::DormantAgent { .. } | Finding::NewNetwork | Finding::RateSpike { .. } => {
                Severity::Medium
            }
            Finding::VolumeMinute { direction, .. } | Finding::LargeBody { direction, .. } => {
                match direction {
                    Direction::Sent => Severity::High,
                    Direction::Received => Severity::Medium,
                }
            }
            Finding::UnusualHours { .. } | Finding::NewEndpoint => Severity::Low,
        }
    }

    /// Builds the one-line summary of a signal. It names tokens only by id,
    /// shows paths as templates (identifier segments replaced by `*`) and
    /// includes no headers, bodies or query strings.
    pub(crate) fn describe(
        &self,
        observation: &Observation,
        settings: &DetectorSettings,
    ) -> String {
        let agent = observation.agent.as_deref().unwrap_or("(none)");
        let source = observation.source;
        let connection = observation.connection.as_deref().unwrap_or("(none)");
        match self {
            Finding::CanaryToken => format!(
                "canary token {} presented from {source} for {} on connection {connection}",
                observation.token_id.as_deref().unwrap_or("(unknown)"),
                endpoint_text(&observation.method, &observation.path),
            ),
            Finding::CredentialStuffing { failures } => format!(
                "{failures:.0} failed authentications from {source} within {} s",
                millis(settings.stuffing_window) / 1000,
            ),
            Finding::OutsideNetworks => {
                format!("agent {agent} called from {source}, outside its declared networks")
            }
            Finding::DormantAgent { idle_ms } => format!(
                "agent {agent} active again from {source} after {:.1} days without calls",
                *idle_ms as f64 / 86_400_000.0,
            ),
            Finding::ImpossibleTravel {
                distance_km,
                elapsed_ms,
                speed_kmh,
            } => format!(
                "token {} of agent {agent} moved {distance_km:.0} km to {source} in {:.1} minutes \
                 ({speed_kmh:.0} km/h, limit {:.0} km/h)",
                observation.token_id.as_deref().unwrap_or("(none)"),
                *elapsed_ms as f64 / 60_000.0,
                settings.max_travel_speed_kmh,
            ),
            Finding::Probing { denials } => format!(
                "{denials:.0} denied requests from agent {agent} within {} s, the last {} \
                 on connection {connection}",
                millis(settings.probing_window) / 1000,
                endpoint_text(&observation.method, &observation.path),
            ),
            Finding::NewNetwork => format!(
                "agent {agent} called from {source} in network {}, first use after learning",
                network_text(
                    source,
                    settings.network_prefix_v4,
                    settings.network_prefix_v6
                ),
            ),
            Finding::UnusualHours { hour } => format!(
                "agent {agent} active on {}, an hour of the week it was never active in",
                hour_of_week_text(*hour),
            ),
            Finding::NewEndpoint => format!(
                "agent {agent} called {} on connection {connection}, first use after learning",
                endpoint_text(&observation.method, &observation.path),
            ),
            Finding::RateSpike { requests, median } => format!(
                "agent {agent} made {requests} requests in one minute on connection \
                 {connection}, median {median:.1} per active minute"
            ),
            Finding::VolumeMinute {
                direction,
                bytes,
                median,
            } => format!(
                "agent {agent} {} {bytes} body bytes in one minute on connection {connection}, \
                 median {median:.0} per active minute",
                direction.verb(),
            ),
            Finding::LargeBody {
                direction,
                bytes,
                typical,
            } => format!(
                "agent {agent} {} one body of {bytes} bytes on {} (connection {connection}), \
                 typical {typical:.0} bytes",
                direction.verb(),
                endpoint_text(&observation.method, &observation.path),
            ),
        }
    }
}
