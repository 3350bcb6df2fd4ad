//! The detection engine: routes each observation to the detectors, keeps
//! their state, and limits repeated signals.
//!
//! The engine runs on the audit stream, outside the request path. It reads
//! time only from observations, so replaying the same stream gives the
//! same signals. The detectors, with the settings that tune them:
//!
//! | kind | fires on | severity | learns first |
//! | --- | --- | --- | --- |
//! | `canary_token` | any observation carrying a canary token id | critical | no |
//! | `credential_stuffing` | `stuffing_min_failures` failed authentications from one source within `stuffing_window` | high | no |
//! | `outside_networks` | a call from outside the agent's declared networks | high | no |
//! | `impossible_travel` | one token at two located addresses at least `min_travel_distance_km` apart, faster than `max_travel_speed_kmh` | high | no |
//! | `probing` | `probing_min_denials` denied requests from one agent within `probing_window` | high | no |
//! | `dormant_agent` | a call after `dormant_after` without calls | medium | no |
//! | `new_network` | a call from a network (`network_prefix_v4`, `network_prefix_v6`) the agent never used, outside its declared networks | medium | yes |
//! | `rate_spike` | requests in one minute on one connection above the median and MAD limit of its active minutes | medium | yes, and `min_baseline_minutes` |
//! | `volume_spike` | body bytes in one minute above both the median and MAD limit and `volume_expected_ratio` × the usual bytes of its calls, or one body `large_body_ratio` × its endpoint's typical size | high for request bodies, medium for responses | yes, and `min_endpoint_samples` |
//! | `unusual_hours` | a call in an hour of the week (UTC) with no activity within `unusual_hours_tolerance` hours | low | yes |
//! | `new_endpoint` | a method and path template the agent never called | low | yes |
//!
//! Calls that were not authenticated reach only the canary and credential
//! stuffing detectors. Calls from outside the declared networks teach the
//! baselines nothing, and denied calls teach endpoints and volumes nothing.
//! Every detector's signals pass one repeat limit per kind and subject
//! (`repeat_interval`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use castellan_model::{AlertKind, Severity};
use ipnet::IpNet;

use crate::detectors::agent::{AgentState, Limits};
use crate::detectors::{Finding, SourceTable};
use crate::geo::Locate;
use crate::observation::{Observation, Outcome};
use crate::settings::DetectorSettings;

/// Facts from the configuration and the store that the detectors need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Ids of canary tokens: any observation carrying one raises CanaryToken (critical).
    pub canary_tokens: HashSet<String>,
    /// Agent name -> declared `networks`; an agent absent or with an empty list may call from anywhere.
    pub declared_networks: HashMap<String, Vec<IpNet>>,
    /// Agent name -> last use known from before the engine's own history (for DormantAgent after a restart).
    pub last_used_ms: HashMap<String, i64>,
}

/// One detection, ready to be stored as (or folded into) an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// The detector that raised it.
    pub kind: AlertKind,
    /// Critical for a canary token, otherwise fixed per detector (see the
    /// detector documentation).
    pub severity: Severity,
    /// The agent of the observation, if one was authenticated or owns the
    /// canary token presented.
    pub agent: Option<String>,
    /// Source address of the observation.
    pub source: IpAddr,
    /// Aggregation key: repeats with the same (kind, subject) fold into one open alert.
    /// The agent name for per-agent kinds; the source address for CredentialStuffing
    /// and for a canary use with no agent.
    pub subject: String,
    /// The observation that raised it (audit seq = evidence id) and its time.
    pub seq: i64,
    /// Time of that observation, in unix milliseconds.
    pub time_ms: i64,
    /// One line for humans: what was seen, with numbers (never a secret; tokens only by id).
    pub summary: String,
}

/// The streaming detectors and their state.
///
/// Feed every audit record in order to [`Engine::observe`]. After a
/// restart, replay recent history through [`Engine::learn`] first.
///
/// Memory is bounded per agent by the `max_*` fields of
/// [`DetectorSettings`], and for source addresses by `max_tracked_sources`.
/// Only authenticated calls create agent state, so the configuration
/// bounds the number of agents.
pub struct Engine {
    limits: Limits,
    locator: Option<Arc<dyn Locate>>,
    context: Context,
    agent_ids: HashMap<Box<str>, usize>,
    agents: Vec<AgentState>,
    sources: SourceTable,
    repeats: RepeatLimiter,
    /// Reused for every observation, so the hot path does not allocate.
    findings: Vec<Finding>,
    scratch: Vec<u64>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.limits.settings)
            .field("locator", &self.locator.is_some())
            .field("agents", &self.agents.len())
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates an engine with no history. Without a `locator`,
    /// `impossible_travel` is off.
    pub fn new(settings: DetectorSettings, locator: Option<Arc<dyn Locate>>) -> Engine {
        Engine {
            sources: SourceTable::new(settings.max_tracked_sources),
            repeats: RepeatLimiter::new(settings.max_tracked_sources),
            limits: Limits::new(settings),
            locator,
            context: Context::default(),
            agent_ids: HashMap::new(),
            agents: Vec::new(),
            findings: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Replaces the context, for example after the configuration changed.
    /// Agents already seen take their new declared networks at once.
    pub fn set_context(&mut self, context: Context) {
        for (name, &id) in &self.agent_ids {
            let last_used = context.last_used_ms.get(&**name).copied();
            let declared = context.declared_networks.get(&**name).cloned();
            self.agents[id].update_context(last_used, declared.unwrap_or_default());
        }
        self.context = context;
    }

    /// Updates state and appends the signals this observation raises.
    pub fn observe(&mut self, observation: &Observation, signals: &mut Vec<Signal>) {
        self.step(observation, Some(signals));
    }

    /// Updates state only (replaying history after a restart): raises nothing.
    pub fn learn(&mut self, observation: &Observation) {
        self.step(observation, None);
    }

    fn step(&mut self, observation: &Observation, signals: Option<&mut Vec<Signal>>) {
        self.findings.clear();
        let is_canary = observation
            .token_id
            .as_deref()
            .is_some_and(|token| self.context.canary_tokens.contains(token));
        // A canary grants nothing and belongs to no real use of the agent,
        // so it teaches the other detectors nothing either.
        if is_canary {
            self.findings.push(Finding::CanaryToken);
            let subject = match observation.agent.as_deref() {
                Some(agent) => Subject::Agent(agent),
                None => Subject::Source(observation.source),
            };
            self.emit(observation, subject, signals);
            return;
        }
        if observation.outcome == Outcome::Unauthenticated {
            let settings = &self.limits.settings;
            let failures = self.sources.add(
                observation.source,
                observation.time_ms,
                self.limits.stuffing_window_ms,
            );
            if failures >= f64::from(settings.stuffing_min_failures) {
                self.findings.push(Finding::CredentialStuffing { failures });
            }
            self.emit(observation, Subject::Source(observation.source), signals);
            return;
        }
        let Some(name) = observation.agent.as_deref() else {
            return;
        };
        let id = self.agent_id(name, observation.time_ms);
        self.agents[id].observe(
            observation,
            &self.limits,
            self.locator.as_deref(),
            &mut self.scratch,
            &mut self.findings,
        );
        self.emit(observation, Subject::Agent(name), signals);
    }

    /// Returns the index of an agent's state, creating it on first sight.
    fn agent_id(&mut self, name: &str, time_ms: i64) -> usize {
        if let Some(&id) = self.agent_ids.get(name) {
            return id;
        }
        let last_used = self.context.last_used_ms.get(name).copied();
        let declared = self.context.declared_networks.get(name).cloned();
        let id = self.agents.len();
        self.agents.push(AgentState::new(
            time_ms,
            last_used,
            declared.unwrap_or_default(),
        ));
        self.agent_ids.insert(name.into(), id);
        id
    }

    /// Turns the pending findings into signals, subject to the repeat limit.
    fn emit(
        &mut self,
        observation: &Observation,
        subject: Subject<'_>,
        signals: Option<&mut Vec<Signal>>,
    ) {
        let Some(signals) = signals else {
            return;
        };
        for finding in self.findings.drain(..) {
            let kind = finding.kind();
            let severity = finding.severity();
            if !self.repeats.allow(
                kind,
                subject,
                severity,
                observation.time_ms,
                self.limits.repeat_ms,
            ) {
                continue;
            }
            signals.push(Signal {
                kind,
                severity,
                agent: observation.agent.clone(),
                source: observation.source,
                subject: subject.to_string(),
                seq: observation.seq,
                time_ms: observation.time_ms,
                summary: finding.describe(observation, &self.limits.settings),
            });
        }
    }
}

/// The aggregation subject of a signal, borrowed while checking the limit.
#[derive(Debug, Clone, Copy)]
enum Subject<'a> {
    Agent(&'a str),
    Source(IpAddr),
}

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Agent(name) => f.write_str(name),
            Subject::Source(address) => write!(f, "{address}"),
        }
    }
}

/// Owned form of [`Subject`], as a map key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SubjectKey {
    Agent(Box<str>),
    Source(IpAddr),
}

/// The last signal per kind and subject: a repeat within the interval is
/// dropped unless it is more severe than the signal before it.
struct RepeatLimiter {
    last: HashMap<(AlertKind, SubjectKey), (i64, Severity)>,
    /// Size at which expired entries are pruned.
    prune_at: usize,
}

impl RepeatLimiter {
    fn new(prune_at: usize) -> Self {
        RepeatLimiter {
            last: HashMap::new(),
            prune_at: prune_at.max(16),
        }
    }

    fn allow(
        &mut self,
        kind: AlertKind,
        subject: Subject<'_>,
        severity: Severity,
        time_ms: i64,
        interval_ms: i64,
    ) -> bool {
        // Findings are rare, so building the owned key here costs little;
        // the per-request path never gets this far.
        let key = match subject {
            Subject::Agent(name) => SubjectKey::Agent(name.into()),
            Subject::Source(address) => SubjectKey::Source(address),
        };
        if let Some((last_ms, last_severity)) = self.last.get(&(kind, key.clone())) {
            let recent = time_ms.saturating_sub(*last_ms) < interval_ms;
            if recent && severity <= *last_severity {
                return false;
            }
        }
        if self.last.len() >= self.prune_at {
            self.last
                .retain(|_, (last_ms, _)| time_ms.saturating_sub(*last_ms) < interval_ms);
            // Every entry is still recent: forget them all rather than grow
            // without bound, at the price of a few early repeats.
            if self.last.len() >= self.prune_at {
                self.last.clear();
            }
        }
        self.last.insert((kind, key), (time_ms, severity));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::GeoPoint;

    /// 2024-01-01T00:00:00Z, a Monday.
    const START: i64 = 1_704_067_200_000;
    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    const HOME: &str = "198.51.100.10";

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address parses")
    }

    fn call(agent: &str, time_ms: i64) -> Observation {
        Observation {
            seq: time_ms - START,
            time_ms,
            agent: Some(agent.to_owned()),
            token_id: Some(format!("{agent}-token")),
            source: ip(HOME),
            connection: Some("github".to_owned()),
            method: "GET".to_owned(),
            path: "/repos/42/issues".to_owned(),
            outcome: Outcome::Allowed,
            status: 200,
            bytes_in: 0,
            bytes_out: 2_000,
        }
    }

    fn denied(agent: &str, time_ms: i64) -> Observation {
        Observation {
            outcome: Outcome::Denied,
            status: 403,
            ..call(agent, time_ms)
        }
    }

    fn unauthenticated(source: &str, time_ms: i64) -> Observation {
        Observation {
            agent: None,
            token_id: None,
            source: ip(source),
            outcome: Outcome::Unauthenticated,
            status: 401,
            ..call("nobody", time_ms)
        }
    }

    /// Observes a call every 10 minutes for 8 days from `START`, which
    /// covers every hour of the week and ends the learning period, and
    /// returns the time of the last call.
    fn warm_up(engine: &mut Engine, agent: &str) -> i64 {
        let mut signals = Vec::new();
        let mut time = START;
        while time < START + 8 * DAY {
            engine.observe(&call(agent, time), &mut signals);
            time += 10 * MINUTE;
        }
        assert!(signals.is_empty(), "normal traffic raised {signals:?}");
        time
    }

    fn observe_all(engine: &mut Engine, observations: &[Observation]) -> Vec<Signal> {
        let mut signals = Vec::new();
        for observation in observations {
            engine.observe(observation, &mut signals);
        }
        signals
    }

    fn kinds(signals: &[Signal]) -> Vec<AlertKind> {
        signals.iter().map(|signal| signal.kind).collect()
    }

    fn engine() -> Engine {
        Engine::new(DetectorSettings::default(), None)
    }

    /// Places 198.51.100.x in Paris and 203.0.113.x in Tokyo.
    struct Table;

    impl Locate for Table {
        fn locate(&self, ip: IpAddr) -> Option<GeoPoint> {
            let IpAddr::V4(v4) = ip else { return None };
            match v4.octets()[..3] {
                [198, 51, 100] => Some(GeoPoint {
                    latitude: 48.8566,
                    longitude: 2.3522,
                }),
                [203, 0, 113] => Some(GeoPoint {
                    latitude: 35.6762,
                    longitude: 139.6503,
                }),
                _ => None,
            }
        }
    }

    #[test]
    fn canary_is_critical_with_agent_subject() {
        let mut engine = engine();
        let mut context = Context::default();
        context.canary_tokens.insert("bot-token".to_owned());
        engine.set_context(context);
        let mut observation = call("bot", START);
        observation.outcome = Outcome::Unauthenticated;
        observation.status = 401;
        let signals = observe_all(&mut engine, &[observation]);
        assert_eq!(kinds(&signals), [AlertKind::CanaryToken]);
        assert_eq!(signals[0].severity, Severity::Critical);
        assert_eq!(signals[0].subject, "bot");
        assert!(
            signals[0].summary.contains("bot-token"),
            "{}",
            signals[0].summary
        );
        assert!(
            signals[0].summary.contains("GET /repos/*/issues"),
            "{}",
            signals[0].summary
        );
    }

    #[test]
    fn repeat_limiter_stays_bounded() {
        let mut limiter = RepeatLimiter::new(16);
        for host in 0..200u8 {
            let subject = Subject::Source(IpAddr::from([192, 0, 2, host]));
            let time = i64::from(host) * 1_000;
            let kind = AlertKind::CredentialStuffing;
            assert!(limiter.allow(kind, subject, Severity::High, time, 600_000));
        }
        assert!(limiter.last.len() <= 16, "{}", limiter.last.len());
    }

    #[test]
    fn repeat_limiter_allows_after_interval() {
        let mut limiter = RepeatLimiter::new(16);
        let subject = Subject::Agent("bot");
        let kind = AlertKind::RateSpike;
        assert!(limiter.allow(kind, subject, Severity::Medium, 0, 600_000));
        assert!(!limiter.allow(kind, subject, Severity::Medium, 599_999, 600_000));
        assert!(!limiter.allow(kind, subject, Severity::Low, 599_999, 600_000));
        // A more severe repeat passes and starts its own interval.
        assert!(limiter.allow(kind, subject, Severity::High, 599_999, 600_000));
        assert!(!limiter.allow(kind, subject, Severity::High, 600_000, 600_000));
        assert!(limiter.allow(kind, subject, Severity::High, 1_199_999, 600_000));
        // Another kind for the same subject has its own limit.
        let other = AlertKind::Probing;
        assert!(limiter.allow(other, subject, Severity::High, 1_199_999, 600_000));
    }

    #[test]
    fn canary_without_agent_uses_source() {
        let mut engine = engine();
        let mut context = Context::default();
        context.canary_tokens.insert("trap".to_owned());
        engine.set_context(context);
        let mut observation = unauthenticated("203.0.113.5", START);
        observation.token_id = Some("trap".to_owned());
        let signals = observe_all(&mut engine, &[observation]);
        assert_eq!(kinds(&signals), [AlertKind::CanaryToken]);
        assert_eq!(signals[0].subject, "203.0.113.5");
        assert_eq!(signals[0].agent, None);
    }

    #[test]
    fn stuffing_fires_on_burst_from_one_source() {
        let mut engine = engine();
        let burst: Vec<_> = (0..50)
            .map(|index| unauthenticated("203.0.113.5", START + index * 500))
            .collect();
        let signals = observe_all(&mut engine, &burst);
        assert_eq!(kinds(&signals), [AlertKind::CredentialStuffing]);
        assert_eq!(signals[0].subject, "203.0.113.5");
        assert_eq!(signals[0].severity, Severity::High);
    }

    #[test]
    fn stuffing_ignores_occasional_failures() {
        let mut engine = engine();
        // One failure every two minutes for a day: an expired token retried.
        let failures: Vec<_> = (0..720)
            .map(|index| unauthenticated("203.0.113.5", START + index * 2 * MINUTE))
            .collect();
        assert!(observe_all(&mut engine, &failures).is_empty());
    }

    #[test]
    fn stuffing_counts_per_source() {
        let mut engine = engine();
        // Nine failures from each of many sources: none reaches ten.
        let mut spread = Vec::new();
        for host in 1..=20 {
            for index in 0..9 {
                spread.push(unauthenticated(
                    &format!("203.0.113.{host}"),
                    START + index * 100,
                ));
            }
        }
        assert!(observe_all(&mut engine, &spread).is_empty());
    }

    #[test]
    fn outside_networks_fires_and_inside_is_quiet() {
        let mut engine = engine();
        let mut context = Context::default();
        let declared = vec!["198.51.100.0/24".parse().expect("network parses")];
        context.declared_networks.insert("bot".to_owned(), declared);
        engine.set_context(context);
        let inside = call("bot", START);
        let mut outside = denied("bot", START + MINUTE);
        outside.source = ip("203.0.113.9");
        assert!(observe_all(&mut engine, &[inside]).is_empty());
        let signals = observe_all(&mut engine, &[outside]);
        assert_eq!(kinds(&signals), [AlertKind::OutsideNetworks]);
        assert_eq!(signals[0].severity, Severity::High);
    }

    #[test]
    fn context_change_reaches_known_agents() {
        let mut engine = engine();
        let mut outside = call("bot", START);
        outside.source = ip("203.0.113.9");
        assert!(observe_all(&mut engine, &[outside.clone()]).is_empty());
        let mut context = Context::default();
        let declared = vec!["198.51.100.0/24".parse().expect("network parses")];
        context.declared_networks.insert("bot".to_owned(), declared);
        engine.set_context(context);
        outside.time_ms += MINUTE;
        let signals = observe_all(&mut engine, &[outside]);
        assert_eq!(kinds(&signals), [AlertKind::OutsideNetworks]);
    }

    #[test]
    fn probing_fires_once_per_burst_interval() {
        let mut engine = engine();
        // 1,000 denials over five minutes: one signal, not one per request.
        let burst: Vec<_> = (0..1000)
            .map(|index| denied("bot", START + index * 300))
            .collect();
        let signals = observe_all(&mut engine, &burst);
        assert_eq!(kinds(&signals), [AlertKind::Probing]);
        assert_eq!(signals[0].severity, Severity::High);
        // A second burst after the repeat interval is reported again.
        let later: Vec<_> = (0..20)
            .map(|index| denied("bot", START + 20 * MINUTE + index * 100))
            .collect();
        assert_eq!(
            kinds(&observe_all(&mut engine, &later)),
            [AlertKind::Probing]
        );
    }

    #[test]
    fn few_denials_are_not_probing() {
        let mut engine = engine();
        let sparse: Vec<_> = (0..100)
            .map(|index| denied("bot", START + index * MINUTE))
            .collect();
        assert!(observe_all(&mut engine, &sparse).is_empty());
    }

    #[test]
    fn new_network_fires_after_learning() {
        let mut engine = engine();
        let end = warm_up(&mut engine, "bot");
        let mut moved = call("bot", end);
        moved.source = ip("192.0.2.77");
        let signals = observe_all(&mut engine, &[moved.clone()]);
        assert_eq!(kinds(&signals), [AlertKind::NewNetwork]);
        assert_eq!(signals[0].severity, Severity::Medium);
        assert!(
            signals[0].summary.contains("192.0.2.0/24"),
            "{}",
            signals[0].summary
        );
        // The network is known from now on.
        moved.time_ms += 11 * MINUTE;
        assert!(observe_all(&mut engine, &[moved]).is_empty());
    }

    #[test]
    fn declared_network_is_never_new() {
        let mut engine = engine();
        let mut context = Context::default();
        let declared = vec!["192.0.2.0/23".parse().expect("network parses")];
        context.declared_networks.insert("bot".to_owned(), declared);
        engine.set_context(context);
        let mut first = call("bot", START);
        first.source = ip("192.0.2.1");
        let mut time = START;
        let mut signals = observe_all(&mut engine, &[first]);
        while time < START + 8 * DAY {
            let mut usual = call("bot", time);
            usual.source = ip("192.0.2.1");
            engine.observe(&usual, &mut signals);
            time += 10 * MINUTE;
        }
        // The other /24 of the declaration was never used, yet is declared.
        let mut other = call("bot", time);
        other.source = ip("192.0.3.1");
        engine.observe(&other, &mut signals);
        assert!(signals.is_empty(), "{signals:?}");
    }

    #[test]
    fn new_network_is_quiet_while_learning() {
        let mut engine = engine();
        let mut first = call("bot", START);
        let mut second = call("bot", START + DAY);
        first.source = ip("192.0.2.1");
        second.source = ip("2001:db8:5::1");
        assert!(observe_all(&mut engine, &[first, second]).is_empty());
    }

    #[test]
    fn unusual_hour_fires_after_learning() {
        let mut engine = engine();
        // Active only on weekdays 09:00 to 16:59 for two weeks.
        let mut signals = Vec::new();
        for day in 0..14 {
            if day % 7 >= 5 {
                continue;
            }
            for hour in 9..17 {
                engine.observe(&call("bot", START + day * DAY + hour * HOUR), &mut signals);
            }
        }
        assert!(signals.is_empty(), "{signals:?}");
        let usual = call("bot", START + 14 * DAY + 10 * HOUR);
        assert!(observe_all(&mut engine, &[usual]).is_empty());
        // One hour past the usual end is within the tolerance.
        let late = call("bot", START + 14 * DAY + 17 * HOUR + 30 * MINUTE);
        assert!(observe_all(&mut engine, &[late]).is_empty());
        let night = call("bot", START + 14 * DAY + 3 * HOUR);
        let signals = observe_all(&mut engine, &[night]);
        assert_eq!(kinds(&signals), [AlertKind::UnusualHours]);
        assert_eq!(signals[0].severity, Severity::Low);
        assert!(
            signals[0].summary.contains("Monday 03:00 UTC"),
            "{}",
            signals[0].summary
        );
    }

    #[test]
    fn new_endpoint_fires_after_learning_only() {
        let mut engine = engine();
        let mut early = call("bot", START + HOUR);
        early.path = "/user".to_owned();
        assert!(observe_all(&mut engine, &[early]).is_empty());
        let end = warm_up(&mut engine, "bot");
        // Another issue id is the same endpoint.
        let mut same = call("bot", end);
        same.path = "/repos/7/issues".to_owned();
        assert!(observe_all(&mut engine, &[same]).is_empty());
        let mut new = call("bot", end + MINUTE);
        new.method = "DELETE".to_owned();
        new.path = "/repos/7".to_owned();
        let signals = observe_all(&mut engine, &[new]);
        assert_eq!(kinds(&signals), [AlertKind::NewEndpoint]);
        assert!(
            signals[0].summary.contains("DELETE /repos/*"),
            "{}",
            signals[0].summary
        );
    }

    #[test]
    fn dormant_agent_from_context_seed() {
        let mut engine = engine();
        let mut context = Context::default();
        context
            .last_used_ms
            .insert("bot".to_owned(), START - 45 * DAY);
        context.last_used_ms.insert("fresh".to_owned(), START - DAY);
        engine.set_context(context);
        let signals = observe_all(&mut engine, &[call("bot", START), call("fresh", START)]);
        assert_eq!(kinds(&signals), [AlertKind::DormantAgent]);
        assert_eq!(signals[0].subject, "bot");
        assert_eq!(signals[0].severity, Severity::Medium);
    }

    #[test]
    fn dormant_agent_after_long_gap() {
        let mut engine = engine();
        let first = call("bot", START);
        let short_gap = call("bot", START + 29 * DAY);
        let long_gap = call("bot", START + 60 * DAY);
        // The short gap ends the learning period, so other kinds may fire.
        let signals = observe_all(&mut engine, &[first, short_gap]);
        assert!(
            !kinds(&signals).contains(&AlertKind::DormantAgent),
            "{signals:?}"
        );
        let signals = observe_all(&mut engine, &[long_gap]);
        assert!(
            kinds(&signals).contains(&AlertKind::DormantAgent),
            "{signals:?}"
        );
    }

    #[test]
    fn dormant_wake_restarts_learning() {
        let mut engine = engine();
        let end = warm_up(&mut engine, "bot");
        let wake = end + 40 * DAY;
        let signals = observe_all(&mut engine, &[call("bot", wake)]);
        assert_eq!(kinds(&signals), [AlertKind::DormantAgent]);
        // A new network right after waking is part of the new learning period.
        let mut moved = call("bot", wake + HOUR);
        moved.source = ip("192.0.2.77");
        assert!(observe_all(&mut engine, &[moved]).is_empty());
    }

    #[test]
    fn rate_spike_fires_against_baseline() {
        let mut engine = engine();
        let end = warm_up(&mut engine, "bot");
        let burst: Vec<_> = (0..300)
            .map(|index| call("bot", end + index * 100))
            .collect();
        let signals = observe_all(&mut engine, &burst);
        assert_eq!(kinds(&signals), [AlertKind::RateSpike]);
        assert_eq!(signals[0].severity, Severity::Medium);
    }

    #[test]
    fn large_response_then_upload_escalate() {
        let mut engine = engine();
        let end = warm_up(&mut engine, "bot");
        let mut download = call("bot", end);
        download.bytes_out = 50_000_000;
        let signals = observe_all(&mut engine, &[download]);
        assert_eq!(kinds(&signals), [AlertKind::VolumeSpike]);
        assert_eq!(signals[0].severity, Severity::Medium);
        // Data leaving is more severe, so the repeat limit lets it through.
        let mut upload = call("bot", end + MINUTE);
        upload.method = "GET".to_owned();
        upload.bytes_in = 20_000_000;
        let signals = observe_all(&mut engine, &[upload]);
        assert_eq!(kinds(&signals), [AlertKind::VolumeSpike]);
        assert_eq!(signals[0].severity, Severity::High);
    }

    #[test]
    fn impossible_travel_needs_a_locator() {
        let paris = call("bot", START);
        let mut tokyo = call("bot", START + 10 * MINUTE);
        tokyo.source = ip("203.0.113.20");
        let mut located = Engine::new(DetectorSettings::default(), Some(Arc::new(Table)));
        let signals = observe_all(&mut located, &[paris.clone(), tokyo.clone()]);
        assert_eq!(kinds(&signals), [AlertKind::ImpossibleTravel]);
        assert_eq!(signals[0].severity, Severity::High);
        assert!(
            signals[0].summary.contains("bot-token"),
            "{}",
            signals[0].summary
        );
        assert!(observe_all(&mut engine(), &[paris, tokyo]).is_empty());
    }

    #[test]
    fn learn_primes_state_silently() {
        let mut engine = engine();
        let mut first = call("bot", START);
        first.source = ip("203.0.113.9");
        let mut context = Context::default();
        context
            .last_used_ms
            .insert("bot".to_owned(), START - 90 * DAY);
        engine.set_context(context);
        // Dormant, then a probing burst: learning raises neither.
        engine.learn(&first);
        for index in 0..50 {
            engine.learn(&denied("bot", START + index * 100));
        }
        let mut time = START + MINUTE;
        while time < START + 8 * DAY {
            engine.learn(&call("bot", time));
            time += 10 * MINUTE;
        }
        // The learning period ran during the replay, so a new network is
        // reported at once and the known one is not.
        let mut new = call("bot", time);
        new.source = ip("192.0.2.7");
        let known = call("bot", time + MINUTE);
        let signals = observe_all(&mut engine, &[known, new]);
        assert_eq!(kinds(&signals), [AlertKind::NewNetwork]);
    }

    #[test]
    fn debug_output_names_no_agents() {
        let mut engine = engine();
        observe_all(&mut engine, &[call("secret-project-bot", START)]);
        let text = format!("{engine:?}");
        assert!(text.contains("agents: 1"), "{text}");
        assert!(!text.contains("secret-project-bot"), "{text}");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn observation() -> impl Strategy<Value = Observation> {
        let outcome = prop_oneof![
            Just(Outcome::Allowed),
            Just(Outcome::Denied),
            Just(Outcome::Unauthenticated),
            Just(Outcome::Failed),
        ];
        let agent = proptest::option::of(prop_oneof![Just("a"), Just("b"), Just("")]);
        let token = proptest::option::of(prop_oneof![Just("t1"), Just("canary"), Just("")]);
        let source = prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ];
        let time = prop_oneof![any::<i64>(), 0i64..40 * 86_400_000];
        (
            (any::<i64>(), time, agent, token, source),
            (
                outcome,
                "[A-Z]{0,6}",
                "(/[a-z0-9-]{0,40}){0,5}",
                any::<u16>(),
            ),
            (any::<u64>(), any::<u64>()),
        )
            .prop_map(|((seq, time_ms, agent, token, source), rest, bytes)| {
                let (outcome, method, path, status) = rest;
                Observation {
                    seq,
                    time_ms,
                    agent: agent.map(str::to_owned),
                    token_id: token.map(str::to_owned),
                    source,
                    connection: Some("c".to_owned()),
                    method,
                    path,
                    outcome,
                    status,
                    bytes_in: bytes.0,
                    bytes_out: bytes.1,
                }
            })
    }

    fn small_settings() -> DetectorSettings {
        // Small limits reach the capacity and eviction paths quickly.
        DetectorSettings {
            learning_period: std::time::Duration::from_secs(60),
            min_baseline_minutes: 2,
            baseline_minutes: 3,
            max_tracked_sources: 4,
            max_networks_per_agent: 3,
            max_endpoints_per_agent: 3,
            max_connections_per_agent: 1,
            max_tokens_per_agent: 1,
            ..DetectorSettings::default()
        }
    }

    fn context() -> Context {
        let mut context = Context::default();
        context.canary_tokens.insert("canary".to_owned());
        let network = "10.0.0.0/8".parse().expect("network parses");
        context
            .declared_networks
            .insert("a".to_owned(), vec![network]);
        context.last_used_ms.insert("b".to_owned(), 0);
        context
    }

    proptest! {
        #[test]
        fn engine_never_panics(observations in proptest::collection::vec(observation(), 0..200)) {
            let mut engine = Engine::new(small_settings(), None);
            engine.set_context(context());
            let mut signals = Vec::new();
            for observation in &observations {
                engine.observe(observation, &mut signals);
            }
            for signal in &signals {
                prop_assert!(!signal.summary.is_empty());
                prop_assert!(!signal.subject.is_empty() || signal.agent.as_deref() == Some(""));
            }
        }

        /// learn() updates the same state as observe(): after replaying a
        /// prefix silently, the next observation raises at least what it
        /// raises after observing the prefix (which may have used up the
        /// repeat limit).
        #[test]
        fn learn_matches_observe(
            prefix in proptest::collection::vec(observation(), 0..150),
            last in observation(),
        ) {
            let mut learned = Engine::new(small_settings(), None);
            let mut observed = Engine::new(small_settings(), None);
            learned.set_context(context());
            observed.set_context(context());
            let mut discarded = Vec::new();
            for observation in &prefix {
                learned.learn(observation);
                observed.observe(observation, &mut discarded);
            }
            let mut after_learn = Vec::new();
            let mut after_observe = Vec::new();
            learned.observe(&last, &mut after_learn);
            observed.observe(&last, &mut after_observe);
            for signal in &after_observe {
                prop_assert!(after_learn.contains(signal), "{signal:?} missing from {after_learn:?}");
            }
        }
    }
}
