//! The benign agents: their rhythms, endpoints and networks, and the calls
//! they make day by day.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::net::IpAddr;

use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::Rng;

use super::places::{Network, World};
use super::{DAY_MS, HOUR_MS, MINUTE_MS, START_MS};
use crate::engine::Context;
use crate::observation::{Observation, Outcome};

/// When an agent is active, in its local time (hours east of UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rhythm {
    /// Monday to Friday between `start` and `end` (fractional hours), with
    /// a quieter lunch hour. The day's start and end move by up to 25
    /// minutes, so they stay within the same clock hour.
    Office {
        utc_offset: i64,
        start: f64,
        end: f64,
    },
    /// Every night from `start` for about `minutes`.
    Nightly {
        utc_offset: i64,
        start: f64,
        minutes: f64,
    },
    /// Around the clock, busiest at 14:00 local time, quieter at weekends.
    /// `swing` (0 to 1) is the relative daily amplitude of the rate.
    AlwaysOn { utc_offset: i64, swing: f64 },
}

impl Rhythm {
    fn utc_offset(self) -> i64 {
        match self {
            Rhythm::Office { utc_offset, .. }
            | Rhythm::Nightly { utc_offset, .. }
            | Rhythm::AlwaysOn { utc_offset, .. } => utc_offset,
        }
    }

    /// Start of local midnight of `day` in unix milliseconds.
    pub fn local_midnight(self, day: u32) -> i64 {
        START_MS + i64::from(day) * DAY_MS - self.utc_offset() * HOUR_MS
    }
}

/// One method and path template of a connection, with typical body sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Endpoint {
    pub connection: &'static str,
    pub method: &'static str,
    /// Path with placeholders: `{n}` a number, `{uuid}`, `{sha}` 40 hex
    /// digits, `{key}` a 24-character opaque id, `{date}` a day, `{name}`
    /// one of the agent's few fixed names (repositories, channels).
    pub template: &'static str,
    /// Median request and response body sizes in bytes.
    pub bytes_in: f64,
    pub bytes_out: f64,
}

const fn endpoint(
    connection: &'static str,
    method: &'static str,
    template: &'static str,
    bytes_in: f64,
    bytes_out: f64,
) -> Endpoint {
    Endpoint {
        connection,
        method,
        template,
        bytes_in,
        bytes_out,
    }
}

const MB: f64 = 1024.0 * 1024.0;

pub(crate) const GITHUB: &[Endpoint] = &[
    endpoint("github", "GET", "/repos/acme/{name}/pulls", 0.0, 40e3),
    endpoint("github", "GET", "/repos/acme/{name}/pulls/{n}", 0.0, 12e3),
    endpoint(
        "github",
        "GET",
        "/repos/acme/{name}/pulls/{n}/files",
        0.0,
        60e3,
    ),
    endpoint("github", "GET", "/repos/acme/{name}/issues/{n}", 0.0, 6e3),
    endpoint(
        "github",
        "POST",
        "/repos/acme/{name}/issues/{n}/comments",
        900.0,
        2e3,
    ),
    endpoint(
        "github",
        "GET",
        "/repos/acme/{name}/commits/{sha}",
        0.0,
        25e3,
    ),
];
pub(crate) const OPENAI: &[Endpoint] = &[
    endpoint("openai", "POST", "/v1/chat/completions", 6e3, 3e3),
    endpoint("openai", "POST", "/v1/embeddings", 4e3, 30e3),
    endpoint("openai", "GET", "/v1/models", 0.0, 8e3),
];
pub(crate) const SLACK: &[Endpoint] = &[
    endpoint("slack", "POST", "/api/chat.postMessage", 1.2e3, 500.0),
    endpoint("slack", "GET", "/api/conversations.history", 0.0, 20e3),
    endpoint("slack", "GET", "/api/users.info", 0.0, 2e3),
];
pub(crate) const STRIPE: &[Endpoint] = &[
    endpoint("stripe", "GET", "/v1/charges/{key}", 0.0, 3e3),
    endpoint("stripe", "GET", "/v1/invoices", 0.0, 50e3),
    endpoint("stripe", "GET", "/v1/customers/{key}", 0.0, 2.5e3),
    endpoint("stripe", "POST", "/v1/refunds", 300.0, 2e3),
];
pub(crate) const STORAGE: &[Endpoint] = &[
    endpoint("storage", "PUT", "/backups/{date}/{uuid}", 24.0 * MB, 300.0),
    endpoint("storage", "GET", "/backups/{date}", 0.0, 12e3),
    endpoint("storage", "HEAD", "/backups/{date}/{uuid}", 0.0, 0.0),
];
pub(crate) const JIRA: &[Endpoint] = &[
    endpoint("jira", "GET", "/rest/api/3/issue/{n}", 0.0, 8e3),
    endpoint(
        "jira",
        "POST",
        "/rest/api/3/issue/{n}/comment",
        1.5e3,
        1.2e3,
    ),
    endpoint("jira", "GET", "/rest/api/3/search", 0.0, 45e3),
];
pub(crate) const LINKEDIN: &[Endpoint] = &[
    endpoint("linkedin", "GET", "/v2/me", 0.0, 1e3),
    endpoint("linkedin", "POST", "/v2/ugcPosts", 2e3, 400.0),
    endpoint(
        "linkedin",
        "GET",
        "/v2/organizations/{n}/followers",
        0.0,
        15e3,
    ),
];
pub(crate) const PAGERDUTY: &[Endpoint] = &[
    endpoint("pagerduty", "GET", "/incidents", 0.0, 15e3),
    endpoint("pagerduty", "GET", "/incidents/{key}", 0.0, 4e3),
    endpoint("pagerduty", "POST", "/incidents/{key}/notes", 700.0, 900.0),
];

pub(crate) const REPOSITORIES: &[&str] = &["gateway", "web-app", "infra", "docs"];
const CHANNELS: &[&str] = &["ops", "support", "releases"];

/// Spread of an agent's calls over its home networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetworkUse {
    /// Each call from any of them (a pool of NAT gateways or runners).
    PerCall,
    /// One network for a whole day (office one day, VPN the next).
    PerDay,
}

/// One benign agent.
#[derive(Debug, Clone)]
pub(crate) struct AgentPlan {
    pub name: String,
    pub rhythm: Rhythm,
    /// Mean calls per minute while active, before the daily swing.
    pub rate: f64,
    pub endpoints: Vec<(Endpoint, f64)>,
    pub names: &'static [&'static str],
    pub networks: Vec<Network>,
    pub network_use: NetworkUse,
    /// Declared `networks` in the configuration; empty means anywhere.
    pub declared: Vec<IpNet>,
    /// First day with calls.
    pub first_day: u32,
    /// Days without any call, for an agent left dormant within the run.
    pub pause: std::ops::Range<u32>,
    /// Last use before the run, for the engine's context.
    pub last_used_before_ms: i64,
    /// Rotation phase of the agent token, in days.
    token_phase: u32,
    /// Whether attacks may target it: false for agents still learning.
    pub attackable: bool,
}

/// Days an agent token is used before it is rotated.
const TOKEN_LIFETIME_DAYS: u32 = 30;

impl AgentPlan {
    /// Id of the agent token in use on `day`.
    pub fn token_id(&self, day: u32) -> String {
        let generation = (day + self.token_phase) / TOKEN_LIFETIME_DAYS + 1;
        format!("tok-{}-{generation}", self.name)
    }

    /// Returns whether any home network has a position.
    pub fn is_located(&self) -> bool {
        self.networks.iter().any(|network| network.city.is_some())
    }

    /// Active intervals of `day` in unix milliseconds, with the base rate.
    fn active_intervals(&self, rng: &mut StdRng, day: u32) -> Vec<(i64, i64)> {
        let midnight = self.rhythm.local_midnight(day);
        let jitter = |rng: &mut StdRng, limit: f64| (rng.gen_range(-limit..limit) * 60e3) as i64;
        match self.rhythm {
            Rhythm::Office { start, end, .. } => {
                if day % 7 >= 5 {
                    return Vec::new();
                }
                let begin = midnight + (start * HOUR_MS as f64) as i64 + jitter(rng, 25.0);
                let finish = midnight + (end * HOUR_MS as f64) as i64 + jitter(rng, 25.0);
                vec![(begin, finish)]
            }
            Rhythm::Nightly { start, minutes, .. } => {
                let begin = midnight + (start * HOUR_MS as f64) as i64 + jitter(rng, 5.0).abs();
                let length = minutes * rng.gen_range(0.6..1.6) * MINUTE_MS as f64;
                vec![(begin, begin + length as i64)]
            }
            Rhythm::AlwaysOn { .. } => vec![(midnight, midnight + DAY_MS)],
        }
    }

    /// Relative call rate at `time_ms` (1 is the base rate).
    fn rate_factor(&self, time_ms: i64) -> f64 {
        let local_ms = time_ms + self.rhythm.utc_offset() * HOUR_MS - START_MS;
        let hour = local_ms.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64;
        let weekend = local_ms.div_euclid(DAY_MS).rem_euclid(7) >= 5;
        match self.rhythm {
            Rhythm::Office { .. } if (12.0..13.0).contains(&hour) => 0.4,
            Rhythm::Office { .. } | Rhythm::Nightly { .. } => 1.0,
            Rhythm::AlwaysOn { swing, .. } => {
                let daily = 1.0 + swing * (2.0 * PI * (hour - 14.0) / 24.0).cos();
                if weekend {
                    daily * 0.6
                } else {
                    daily
                }
            }
        }
    }

    /// Picks a time when the agent is normally busy on `day` or soon after: at
    /// least an hour after the start and two before the end of an active
    /// interval, so calls from home surround it.
    pub fn busy_time(&self, rng: &mut StdRng, day: u32) -> i64 {
        for day in day..day + 7 {
            let mut day_rng = rng.clone();
            for (begin, end) in self.active_intervals(&mut day_rng, day) {
                let (low, high) = match self.rhythm {
                    Rhythm::AlwaysOn { .. } => (begin + 9 * HOUR_MS, begin + 19 * HOUR_MS),
                    Rhythm::Nightly { .. } => (begin + 3 * MINUTE_MS, end - 10 * MINUTE_MS),
                    Rhythm::Office { .. } => (begin + HOUR_MS, end - 2 * HOUR_MS),
                };
                if low < high {
                    return rng.gen_range(low..high);
                }
            }
        }
        // Every rhythm has a busy day within a week, so this is not reached.
        self.rhythm.local_midnight(day) + 12 * HOUR_MS
    }

    /// Picks a time on `day` in an hour the agent is never active, or `None` for
    /// agents that run around the clock.
    pub fn quiet_time(&self, rng: &mut StdRng, day: u32) -> Option<i64> {
        let local_hour = match self.rhythm {
            Rhythm::Office { .. } => 3,
            Rhythm::Nightly { start, .. } => (start as i64 + 12) % 24,
            Rhythm::AlwaysOn { .. } => return None,
        };
        let base = self.rhythm.local_midnight(day) + local_hour * HOUR_MS;
        Some(base + rng.gen_range(0..20 * MINUTE_MS))
    }

    /// Appends the agent's benign calls for days `first_day..days`.
    pub fn generate(&self, rng: &mut StdRng, days: u32, calls: &mut Vec<Observation>) {
        for day in self.first_day..days {
            if self.pause.contains(&day) {
                continue;
            }
            let network = self.pick_network(rng);
            for (begin, end) in self.active_intervals(rng, day) {
                self.poisson_calls(rng, day, network, (begin, end), 1.0, calls);
                // A benign burst: a backlog or a busy hour, two to three
                // times the usual rate for 5 to 15 minutes. Batch jobs run
                // at the pace of their own loop, so they get longer runs on
                // busy nights instead.
                let batch = matches!(self.rhythm, Rhythm::Nightly { .. });
                if !batch && end - begin > 30 * MINUTE_MS && rng.gen_bool(0.3) {
                    let length = rng.gen_range(5..15) * MINUTE_MS;
                    let start = rng.gen_range(begin..end - length);
                    let extra = rng.gen_range(1.0..2.0);
                    self.poisson_calls(rng, day, network, (start, start + length), extra, calls);
                }
                // A mistyped or stale token: a few failed authentications.
                if rng.gen_bool(0.08) {
                    let time = rng.gen_range(begin..end);
                    self.failed_authentications(rng, network, time, calls);
                }
            }
        }
    }

    fn pick_network(&self, rng: &mut StdRng) -> usize {
        rng.gen_range(0..self.networks.len())
    }

    /// Appends calls with exponential gaps at `scale` times the rate,
    /// thinned by the daily rhythm.
    fn poisson_calls(
        &self,
        rng: &mut StdRng,
        day: u32,
        day_network: usize,
        (begin, end): (i64, i64),
        scale: f64,
        calls: &mut Vec<Observation>,
    ) {
        let peak = self.rate * scale * 2.0 / MINUTE_MS as f64;
        let mut time = begin as f64;
        loop {
            time += -(1.0 - rng.gen::<f64>()).ln() / peak;
            if time >= end as f64 {
                break;
            }
            let accept = self.rate_factor(time as i64) / 2.0;
            if rng.gen::<f64>() < accept {
                let network = match self.network_use {
                    NetworkUse::PerCall => self.pick_network(rng),
                    NetworkUse::PerDay => day_network,
                };
                let source = self.networks[network].host(rng);
                calls.push(self.benign_call(rng, day, time as i64, source));
            }
        }
    }

    /// Builds one call to one of the agent's usual endpoints, with rare benign
    /// denials and upstream failures.
    pub fn benign_call(
        &self,
        rng: &mut StdRng,
        day: u32,
        time_ms: i64,
        source: IpAddr,
    ) -> Observation {
        let endpoint = self.pick_endpoint(rng);
        let mut call = self.call(rng, day, time_ms, source, endpoint);
        let roll = rng.gen::<f64>();
        if roll < 0.003 {
            // A resource the role does not cover, such as a private repository.
            call.outcome = Outcome::Denied;
            call.status = 403;
            call.bytes_out = 180;
        } else if roll < 0.007 {
            call.outcome = Outcome::Failed;
            call.status = [502, 503, 504][rng.gen_range(0..3)];
            call.bytes_out = 120;
        }
        call
    }

    pub fn pick_endpoint(&self, rng: &mut StdRng) -> Endpoint {
        let total: f64 = self.endpoints.iter().map(|(_, weight)| weight).sum();
        let mut target = rng.gen_range(0.0..total);
        for (endpoint, weight) in &self.endpoints {
            if target < *weight {
                return *endpoint;
            }
            target -= weight;
        }
        self.endpoints[self.endpoints.len() - 1].0
    }

    /// Builds a call to `endpoint` with body sizes spread around its medians:
    /// allowed, unless `source` is outside the agent's declared networks,
    /// where the gateway denies it.
    pub fn call(
        &self,
        rng: &mut StdRng,
        day: u32,
        time_ms: i64,
        source: IpAddr,
        endpoint: Endpoint,
    ) -> Observation {
        let status = if endpoint.method == "POST" { 201 } else { 200 };
        let outside =
            !self.declared.is_empty() && !self.declared.iter().any(|net| net.contains(&source));
        let mut call = Observation {
            seq: 0,
            time_ms,
            agent: Some(self.name.clone()),
            token_id: Some(self.token_id(day)),
            source,
            connection: Some(endpoint.connection.to_owned()),
            method: endpoint.method.to_owned(),
            path: fill_template(rng, endpoint.template, self.names, day),
            outcome: Outcome::Allowed,
            status,
            bytes_in: spread(rng, endpoint.bytes_in),
            bytes_out: spread(rng, endpoint.bytes_out),
        };
        if outside {
            call.outcome = Outcome::Denied;
            call.status = 403;
            call.bytes_out = 180;
        }
        call
    }

    fn failed_authentications(
        &self,
        rng: &mut StdRng,
        network: usize,
        time_ms: i64,
        calls: &mut Vec<Observation>,
    ) {
        let source = self.networks[network].host(rng);
        let endpoint = self.pick_endpoint(rng);
        let mut time = time_ms;
        for _ in 0..rng.gen_range(1..4) {
            calls.push(unauthenticated(rng, time, source, endpoint));
            time += rng.gen_range(1_000..20_000);
        }
    }
}

/// Builds a request whose agent token was not recognized.
pub(crate) fn unauthenticated(
    rng: &mut StdRng,
    time_ms: i64,
    source: IpAddr,
    endpoint: Endpoint,
) -> Observation {
    Observation {
        seq: 0,
        time_ms,
        agent: None,
        token_id: None,
        source,
        connection: Some(endpoint.connection.to_owned()),
        method: endpoint.method.to_owned(),
        path: fill_template(rng, endpoint.template, REPOSITORIES, 0),
        outcome: Outcome::Unauthenticated,
        status: 401,
        bytes_in: spread(rng, endpoint.bytes_in),
        bytes_out: 90,
    }
}

/// Draws a body size from a log-normal distribution around `median`
/// (sigma 0.5, so 95% of sizes fall within 0.37 to 2.7 times the median).
pub(crate) fn spread(rng: &mut StdRng, median: f64) -> u64 {
    if median <= 0.0 {
        return 0;
    }
    // Box-Muller transform of two uniform numbers into a standard normal one.
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos();
    (median * (0.5 * normal).exp()) as u64
}

/// Replaces the placeholders of `template` (see [`Endpoint::template`]).
pub(crate) fn fill_template(rng: &mut StdRng, template: &str, names: &[&str], day: u32) -> String {
    let mut path = String::with_capacity(template.len() + 40);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').expect("placeholders are closed");
        match &rest[open + 1..close] {
            "n" => path.push_str(&rng.gen_range(1..40_000u32).to_string()),
            "uuid" => path.push_str(&random_uuid(rng)),
            "sha" => path.push_str(&random_chars(rng, 40, b"0123456789abcdef")),
            "key" => {
                path.push_str("ch_");
                path.push_str(&random_chars(rng, 24, ALPHANUMERIC));
            }
            "date" => {
                let days = START_MS / DAY_MS + i64::from(day);
                path.push_str(&civil_date(days));
            }
            "name" => path.push_str(names[rng.gen_range(0..names.len())]),
            other => unreachable!("unknown placeholder {other} in {template}"),
        }
        rest = &rest[close + 1..];
    }
    path.push_str(rest);
    path
}

const ALPHANUMERIC: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn random_chars(rng: &mut StdRng, count: usize, alphabet: &[u8]) -> String {
    let mut text: String = (0..count)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect();
    // Opaque ids always mix letters and digits; force one digit so a rare
    // all-letter draw does not turn into a different template.
    text.replace_range(0..1, "7");
    text
}

fn random_uuid(rng: &mut StdRng) -> String {
    let hex = random_chars(rng, 32, b"0123456789abcdef");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Formats days since 1970-01-01 as `YYYY-MM-DD` (proleptic Gregorian).
fn civil_date(days: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The agents of a scenario and the context the engine runs with.
#[derive(Debug)]
pub(crate) struct Roster {
    pub agents: Vec<AgentPlan>,
    pub canary_tokens: Vec<String>,
}

/// One entry of the team template: name, rhythm, rate, connections,
/// home cities (`None` for a LAN), how networks are used, and whether the
/// networks are declared.
pub(crate) struct Template {
    pub name: &'static str,
    pub rhythm: Rhythm,
    pub rate: f64,
    pub connections: &'static [&'static [Endpoint]],
    pub names: &'static [&'static str],
    pub homes: &'static [Home],
    pub network_use: NetworkUse,
    pub declared: bool,
    pub first_day: u32,
}

#[derive(Clone, Copy)]
pub(crate) enum Home {
    V4(usize),
    V6(usize),
    Lan,
}

pub(crate) const FRANKFURT: usize = 0;
const AMSTERDAM: usize = 1;
const LONDON: usize = 2;
const PARIS: usize = 3;
const ASHBURN: usize = 4;
const PORTLAND: usize = 5;
const SINGAPORE: usize = 8;
const TOKYO: usize = 9;

const TEAM: &[Template] = &[
    Template {
        name: "pr-reviewer",
        rhythm: Rhythm::Office {
            utc_offset: 1,
            start: 8.5,
            end: 17.5,
        },
        rate: 1.2,
        connections: &[GITHUB, OPENAI],
        names: REPOSITORIES,
        homes: &[Home::V4(FRANKFURT), Home::V4(FRANKFURT)],
        network_use: NetworkUse::PerDay,
        declared: true,
        first_day: 0,
    },
    Template {
        name: "support-bot",
        rhythm: Rhythm::AlwaysOn {
            utc_offset: -5,
            swing: 0.6,
        },
        rate: 1.5,
        connections: &[SLACK, OPENAI, JIRA],
        names: CHANNELS,
        homes: &[Home::V4(ASHBURN), Home::V4(ASHBURN)],
        network_use: NetworkUse::PerCall,
        declared: false,
        first_day: 0,
    },
    Template {
        name: "billing-sync",
        rhythm: Rhythm::Nightly {
            utc_offset: -5,
            start: 2.2,
            minutes: 30.0,
        },
        rate: 25.0,
        connections: &[STRIPE],
        names: CHANNELS,
        homes: &[Home::V4(ASHBURN)],
        network_use: NetworkUse::PerCall,
        declared: true,
        first_day: 0,
    },
    Template {
        name: "backup-runner",
        rhythm: Rhythm::Nightly {
            utc_offset: 1,
            start: 3.1,
            minutes: 40.0,
        },
        rate: 2.0,
        connections: &[STORAGE],
        names: CHANNELS,
        homes: &[Home::Lan],
        network_use: NetworkUse::PerCall,
        declared: true,
        first_day: 0,
    },
    Template {
        name: "linkedin-bot",
        rhythm: Rhythm::Office {
            utc_offset: 0,
            start: 9.5,
            end: 18.5,
        },
        rate: 0.6,
        connections: &[LINKEDIN, OPENAI],
        names: CHANNELS,
        homes: &[Home::V4(LONDON)],
        network_use: NetworkUse::PerCall,
        declared: false,
        first_day: 0,
    },
    Template {
        name: "ci-deployer",
        rhythm: Rhythm::Office {
            utc_offset: -8,
            start: 8.5,
            end: 17.5,
        },
        rate: 1.0,
        connections: &[GITHUB, STORAGE],
        names: REPOSITORIES,
        homes: &[Home::V4(PORTLAND), Home::V4(PORTLAND), Home::V4(PORTLAND)],
        network_use: NetworkUse::PerCall,
        declared: false,
        first_day: 0,
    },
    Template {
        name: "triage-agent",
        rhythm: Rhythm::AlwaysOn {
            utc_offset: 1,
            swing: 0.4,
        },
        rate: 1.0,
        connections: &[GITHUB, JIRA, OPENAI],
        names: REPOSITORIES,
        homes: &[Home::V6(FRANKFURT), Home::V4(FRANKFURT)],
        network_use: NetworkUse::PerCall,
        declared: true,
        first_day: 0,
    },
    Template {
        name: "report-writer",
        rhythm: Rhythm::Office {
            utc_offset: 9,
            start: 9.5,
            end: 18.5,
        },
        rate: 0.7,
        connections: &[OPENAI, SLACK, JIRA],
        names: CHANNELS,
        homes: &[Home::V4(TOKYO)],
        network_use: NetworkUse::PerCall,
        declared: false,
        first_day: 0,
    },
    Template {
        name: "pager-bridge",
        rhythm: Rhythm::AlwaysOn {
            utc_offset: 1,
            swing: 0.3,
        },
        rate: 0.8,
        connections: &[SLACK, PAGERDUTY],
        names: CHANNELS,
        homes: &[Home::V4(AMSTERDAM), Home::V4(AMSTERDAM)],
        network_use: NetworkUse::PerCall,
        declared: false,
        first_day: 0,
    },
    Template {
        name: "data-exporter",
        rhythm: Rhythm::Nightly {
            utc_offset: 8,
            start: 1.3,
            minutes: 40.0,
        },
        rate: 8.0,
        connections: &[STORAGE, STRIPE],
        names: CHANNELS,
        homes: &[Home::V4(SINGAPORE)],
        network_use: NetworkUse::PerCall,
        declared: true,
        first_day: 0,
    },
    Template {
        name: "onboarding-agent",
        rhythm: Rhythm::Office {
            utc_offset: 1,
            start: 8.5,
            end: 16.5,
        },
        rate: 0.5,
        connections: &[SLACK, JIRA],
        names: CHANNELS,
        homes: &[Home::V4(PARIS)],
        network_use: NetworkUse::PerCall,
        declared: false,
        first_day: 12,
    },
    Template {
        name: "home-assistant",
        rhythm: Rhythm::AlwaysOn {
            utc_offset: 1,
            swing: 0.8,
        },
        rate: 0.3,
        connections: &[OPENAI, SLACK],
        names: CHANNELS,
        homes: &[Home::Lan],
        network_use: NetworkUse::PerCall,
        declared: false,
        first_day: 0,
    },
];

impl Roster {
    /// Builds `teams` copies of the team, each with its own networks and
    /// randomized rates, schedules and endpoint mix.
    pub fn build(rng: &mut StdRng, world: &mut World, teams: u32) -> Roster {
        let mut agents = Vec::new();
        for team in 1..=teams.max(1) {
            for template in TEAM {
                agents.push(plan_agent(rng, world, template, team));
            }
        }
        Roster {
            agents,
            canary_tokens: vec![
                "tok-canary-deploy-admin".to_owned(),
                "tok-canary-ci".to_owned(),
            ],
        }
    }

    /// Builds the engine context: canary tokens, declared networks, last uses.
    pub fn context(&self) -> Context {
        let mut declared_networks = HashMap::new();
        let mut last_used_ms = HashMap::new();
        for agent in &self.agents {
            if !agent.declared.is_empty() {
                declared_networks.insert(agent.name.clone(), agent.declared.clone());
            }
            last_used_ms.insert(agent.name.clone(), agent.last_used_before_ms);
        }
        Context {
            canary_tokens: self.canary_tokens.iter().cloned().collect(),
            declared_networks,
            last_used_ms,
        }
    }
}

pub(crate) fn plan_agent(
    rng: &mut StdRng,
    world: &mut World,
    template: &Template,
    team: u32,
) -> AgentPlan {
    let name = if team == 1 {
        template.name.to_owned()
    } else {
        format!("{}-{team}", template.name)
    };
    let networks: Vec<Network> = template
        .homes
        .iter()
        .map(|home| {
            let hosts = rng.gen_range(1..4);
            match *home {
                Home::V4(city) => world.public_v4(rng, city, hosts),
                Home::V6(city) => world.public_v6(rng, city, hosts),
                Home::Lan => world.private_v4(rng, hosts),
            }
        })
        .collect();
    let declared = if template.declared {
        networks
            .iter()
            .map(|network| declared_net(network.net))
            .collect()
    } else {
        Vec::new()
    };
    let endpoints = template
        .connections
        .iter()
        .flat_map(|connection| connection.iter())
        .map(|endpoint| (*endpoint, rng.gen_range(1.0..4.0)))
        .collect();
    let rhythm = match template.rhythm {
        Rhythm::Office {
            utc_offset,
            start,
            end,
        } => Rhythm::Office {
            utc_offset,
            start,
            end: end - f64::from(rng.gen_range(0..2u8)),
        },
        other => other,
    };
    AgentPlan {
        name,
        rhythm,
        rate: template.rate * rng.gen_range(0.7..1.4),
        endpoints,
        names: template.names,
        networks,
        network_use: template.network_use,
        declared,
        first_day: template.first_day,
        pause: 0..0,
        last_used_before_ms: START_MS - rng.gen_range(1..18) * HOUR_MS,
        token_phase: rng.gen_range(0..TOKEN_LIFETIME_DAYS),
        attackable: template.first_day == 0,
    }
}

/// Returns the declared range for a home network: a LAN /24 is declared as its
/// /16, public networks as themselves.
fn declared_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V4(v4) if v4.network().is_private() => ipnet::Ipv4Net::new(v4.network(), 16)
            .map(|wide| IpNet::V4(wide.trunc()))
            .unwrap_or(net),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn civil_date_matches_calendar() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(START_MS / DAY_MS), "2026-01-05");
        assert_eq!(civil_date(START_MS / DAY_MS + 55), "2026-03-01");
    }

    #[test]
    fn templates_fill_every_placeholder() {
        let mut rng = StdRng::seed_from_u64(7);
        let path = fill_template(
            &mut rng,
            "/a/{n}/{uuid}/{sha}/{key}/{date}/{name}",
            &["x"],
            0,
        );
        assert!(!path.contains('{'), "{path}");
        assert!(path.ends_with("/2026-01-05/x"), "{path}");
    }
}
