//! Everything the engine remembers about one agent, and the per-agent
//! detectors that read and update it.

use std::collections::HashMap;

use ipnet::IpNet;

use super::baseline::{Call, ConnectionBaseline};
use super::bursts::SlidingCounter;
use super::endpoint::{endpoint_hash, EndpointSizes};
use super::hours::{hour_of_week, WeekHours};
use super::network::{network_key, KnownNetworks, NetworkCheck};
use super::travel::TokenTrails;
use super::{BuildU64Hasher, Direction, Finding};
use crate::geo::Locate;
use crate::observation::{Observation, Outcome};
use crate::settings::{millis, DetectorSettings};

/// Settings in the units the detectors compare against, converted once.
pub(crate) struct Limits {
    pub(crate) settings: DetectorSettings,
    pub(crate) learning_ms: i64,
    pub(crate) dormant_ms: i64,
    pub(crate) repeat_ms: i64,
    pub(crate) probing_window_ms: i64,
    pub(crate) stuffing_window_ms: i64,
}

impl Limits {
    pub(crate) fn new(settings: DetectorSettings) -> Self {
        Limits {
            learning_ms: millis(settings.learning_period),
            dormant_ms: millis(settings.dormant_after),
            repeat_ms: millis(settings.repeat_interval),
            probing_window_ms: millis(settings.probing_window),
            stuffing_window_ms: millis(settings.stuffing_window),
            settings,
        }
    }
}

/// The state of one agent. Its size is bounded by the per-agent limits in
/// [`DetectorSettings`]: networks, endpoints, connections and tokens.
pub(crate) struct AgentState {
    /// Start of the current learning period: the first call, or the call
    /// that woke the agent after it was dormant.
    learning_start_ms: i64,
    /// The agent's last call, or the last use known from before the
    /// engine's history.
    last_active_ms: Option<i64>,
    declared: Vec<IpNet>,
    hours: WeekHours,
    networks: KnownNetworks,
    endpoints: HashMap<u64, EndpointSizes, BuildU64Hasher>,
    connections: Vec<ConnectionBaseline>,
    tokens: TokenTrails,
    denials: SlidingCounter,
}

impl AgentState {
    /// Creates the state of an agent first seen at `time_ms`.
    pub(crate) fn new(time_ms: i64, last_used_ms: Option<i64>, declared: Vec<IpNet>) -> Self {
        AgentState {
            learning_start_ms: time_ms,
            last_active_ms: last_used_ms,
            declared,
            hours: WeekHours::default(),
            networks: KnownNetworks::new(),
            endpoints: HashMap::default(),
            connections: Vec::new(),
            tokens: TokenTrails::default(),
            denials: SlidingCounter::default(),
        }
    }

    /// Replaces the declared networks and merges a last use known from
    /// outside the engine.
    pub(crate) fn update_context(&mut self, last_used_ms: Option<i64>, declared: Vec<IpNet>) {
        self.declared = declared;
        self.last_active_ms = self.last_active_ms.max(last_used_ms);
    }

    /// Updates the state with one authenticated call and reports what the
    /// per-agent detectors find in it.
    pub(crate) fn observe(
        &mut self,
        observation: &Observation,
        limits: &Limits,
        locator: Option<&dyn Locate>,
        scratch: &mut Vec<u64>,
        findings: &mut Vec<Finding>,
    ) {
        let settings = &limits.settings;
        let time_ms = observation.time_ms;
        self.check_dormant(time_ms, limits, findings);
        if let Some(locator) = locator {
            let token = observation.token_id.as_deref().unwrap_or("");
            let source = observation.source;
            self.tokens
                .observe(token, source, time_ms, locator, settings, findings);
        }
        let outside = self.check_declared(observation, findings);
        if observation.outcome == Outcome::Denied {
            let denials = self.denials.add(time_ms, limits.probing_window_ms);
            if denials >= f64::from(settings.probing_min_denials) {
                findings.push(Finding::Probing { denials });
            }
        }

        // A call from outside the declared networks was denied and is not
        // the agent's own behaviour, so the baselines do not learn from it.
        if outside {
            return;
        }
        let armed = time_ms >= self.learning_start_ms.saturating_add(limits.learning_ms);
        self.check_network(observation, armed, settings, findings);
        self.check_hour(time_ms, armed, settings, findings);

        // Denied calls reached no upstream, so endpoints and volumes ignore them.
        if observation.outcome == Outcome::Denied {
            return;
        }
        let (expected_in, expected_out) =
            self.check_endpoint(observation, armed, settings, findings);
        let call = Call {
            time_ms,
            bytes_in: observation.bytes_in,
            bytes_out: observation.bytes_out,
            expected_in,
            expected_out,
        };
        let connection = observation.connection.as_deref().unwrap_or("");
        self.check_rate(connection, call, armed, settings, scratch, findings);
    }

    /// Reports a call from outside the declared networks and returns
    /// whether it was one.
    fn check_declared(&self, observation: &Observation, findings: &mut Vec<Finding>) -> bool {
        let outside = !self.declared.is_empty()
            && !self
                .declared
                .iter()
                .any(|network| network.contains(&observation.source));
        if outside {
            findings.push(Finding::OutsideNetworks);
        }
        outside
    }

    fn check_hour(
        &mut self,
        time_ms: i64,
        armed: bool,
        settings: &DetectorSettings,
        findings: &mut Vec<Finding>,
    ) {
        let hour = hour_of_week(time_ms);
        let usual = self
            .hours
            .is_near_active(hour, settings.unusual_hours_tolerance);
        self.hours.mark(hour);
        if !usual && armed {
            findings.push(Finding::UnusualHours { hour });
        }
    }

    fn check_dormant(&mut self, time_ms: i64, limits: &Limits, findings: &mut Vec<Finding>) {
        if let Some(last_ms) = self.last_active_ms {
            let idle_ms = time_ms.saturating_sub(last_ms);
            if idle_ms >= limits.dormant_ms {
                findings.push(Finding::DormantAgent { idle_ms });
                self.learning_start_ms = time_ms;
            }
        }
        self.last_active_ms = Some(
            self.last_active_ms
                .map_or(time_ms, |last| last.max(time_ms)),
        );
    }

    fn check_network(
        &mut self,
        observation: &Observation,
        armed: bool,
        settings: &DetectorSettings,
        findings: &mut Vec<Finding>,
    ) {
        let key = network_key(
            observation.source,
            settings.network_prefix_v4,
            settings.network_prefix_v6,
        );
        let check = self
            .networks
            .check_and_insert(key, settings.max_networks_per_agent);
        // The caller already returned for calls outside declared networks,
        // so with a declaration the source is inside one.
        if check != NetworkCheck::Known && armed && self.declared.is_empty() {
            findings.push(Finding::NewNetwork);
        }
    }

    /// Checks the method and path template and the body sizes of a call,
    /// and returns the request and response sizes expected for it: the
    /// endpoint's typical sizes once it has enough samples, else the actual
    /// sizes.
    fn check_endpoint(
        &mut self,
        observation: &Observation,
        armed: bool,
        settings: &DetectorSettings,
        findings: &mut Vec<Finding>,
    ) -> (f64, f64) {
        let actual = (observation.bytes_in as f64, observation.bytes_out as f64);
        let key = endpoint_hash(&observation.method, &observation.path);
        let capacity = settings.max_endpoints_per_agent;
        let sizes = match self.endpoints.get_mut(&key) {
            Some(sizes) => sizes,
            None => {
                if armed {
                    findings.push(Finding::NewEndpoint);
                }
                if self.endpoints.len() >= capacity {
                    return actual;
                }
                self.endpoints.entry(key).or_default()
            }
        };
        let trusted = sizes.samples() >= settings.min_endpoint_samples;
        let expected = if trusted {
            (sizes.typical_in(), sizes.typical_out())
        } else {
            actual
        };
        if armed && trusted {
            let bodies = [
                (Direction::Sent, observation.bytes_in, sizes.typical_in()),
                (
                    Direction::Received,
                    observation.bytes_out,
                    sizes.typical_out(),
                ),
            ];
            for (direction, bytes, typical) in bodies {
                let limit =
                    (typical * settings.large_body_ratio).max(settings.min_large_body_bytes as f64);
                if bytes as f64 > limit {
                    findings.push(Finding::LargeBody {
                        direction,
                        bytes,
                        typical,
                    });
                }
            }
        }
        sizes.add(
            observation.bytes_in,
            observation.bytes_out,
            settings.large_body_ratio,
        );
        expected
    }

    fn check_rate(
        &mut self,
        name: &str,
        call: Call,
        armed: bool,
        settings: &DetectorSettings,
        scratch: &mut Vec<u64>,
        findings: &mut Vec<Finding>,
    ) {
        let index = match self.connections.iter().position(|c| c.name() == name) {
            Some(index) => index,
            None if self.connections.len() < settings.max_connections_per_agent => {
                self.connections
                    .push(ConnectionBaseline::new(name, settings));
                self.connections.len() - 1
            }
            None => return,
        };
        self.connections[index].observe(call, armed, settings, scratch, findings);
    }
}
