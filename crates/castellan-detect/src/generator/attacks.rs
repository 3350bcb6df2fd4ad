//! Attack episodes: two of each alert kind, spread over the days after
//! learning, each written into the traffic as the calls an attacker (or a
//! compromised agent) would make, and labelled.

use std::collections::HashMap;
use std::net::IpAddr;

use castellan_model::AlertKind;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::agents::{
    plan_agent, spread, unauthenticated, AgentPlan, Endpoint, Home, NetworkUse, Rhythm, Roster,
    Template, FRANKFURT, GITHUB, JIRA, REPOSITORIES,
};
use super::places::{Network, World, CITIES};
use super::{Episode, ATTACK_START_DAY, DAY_MS, MINUTE_MS, START_MS};
use crate::observation::{Observation, Outcome};

/// Episodes injected per alert kind.
const EPISODES_PER_KIND: usize = 2;
/// Minimum days between two attacks on the same agent, so each episode's
/// signals are attributable to it.
const AGENT_REST_DAYS: u32 = 2;

const MIB: f64 = 1024.0 * 1024.0;

/// Method and path templates agents never use in benign traffic: admin
/// and bulk-read calls an intruder tries.
const UNUSUAL: &[Endpoint] = &[
    unusual("github", "DELETE", "/repos/acme/{name}"),
    unusual("github", "GET", "/repos/acme/{name}/actions/secrets"),
    unusual("github", "GET", "/orgs/acme/members"),
    unusual("openai", "GET", "/v1/files"),
    unusual("openai", "POST", "/v1/fine_tuning/jobs"),
    unusual("slack", "GET", "/api/users.list"),
    unusual("slack", "POST", "/api/admin.users.invite"),
    unusual("stripe", "GET", "/v1/customers"),
    unusual("stripe", "POST", "/v1/payouts"),
    unusual("storage", "DELETE", "/backups/{date}/{uuid}"),
    unusual("storage", "GET", "/"),
    unusual("jira", "GET", "/rest/api/3/users/search"),
    unusual("jira", "DELETE", "/rest/api/3/issue/{n}"),
    unusual("linkedin", "GET", "/v2/connections"),
    unusual("pagerduty", "GET", "/users"),
    unusual("pagerduty", "DELETE", "/services/{key}"),
];

const fn unusual(
    connection: &'static str,
    method: &'static str,
    template: &'static str,
) -> Endpoint {
    Endpoint {
        connection,
        method,
        template,
        bytes_in: 0.0,
        bytes_out: 6e3,
    }
}

/// An agent that goes quiet for over a month and then wakes up.
const DORMANT: Template = Template {
    name: "legacy-importer",
    rhythm: Rhythm::AlwaysOn {
        utc_offset: 1,
        swing: 0.5,
    },
    rate: 0.4,
    connections: &[GITHUB, JIRA],
    names: REPOSITORIES,
    homes: &[Home::V4(FRANKFURT)],
    network_use: NetworkUse::PerCall,
    declared: false,
    first_day: 0,
};

/// Owner of the canary token that belongs to an agent.
const CANARY_OWNER: &str = "deploy-admin";

/// Writes the attack episodes into a scenario's calls.
pub(crate) struct Injector<'a> {
    rng: &'a mut StdRng,
    world: &'a mut World,
    roster: &'a mut Roster,
    days: u32,
    /// Agent name -> (attacks so far, last attack day).
    attacked: HashMap<String, (u32, u32)>,
    dormant_count: u32,
    canary_count: u32,
}

impl<'a> Injector<'a> {
    pub fn new(
        rng: &'a mut StdRng,
        world: &'a mut World,
        roster: &'a mut Roster,
        days: u32,
    ) -> Injector<'a> {
        Injector {
            rng,
            world,
            roster,
            days,
            attacked: HashMap::new(),
            dormant_count: 0,
            canary_count: 0,
        }
    }

    /// Injects every episode, in a shuffled order of kinds, one slot each,
    /// with slots evenly spread from [`ATTACK_START_DAY`] to the day before
    /// the last.
    pub fn inject_all(&mut self, calls: &mut Vec<Observation>, episodes: &mut Vec<Episode>) {
        let mut kinds: Vec<AlertKind> = AlertKind::DETECTED
            .iter()
            .flat_map(|kind| std::iter::repeat_n(*kind, EPISODES_PER_KIND))
            .collect();
        kinds.shuffle(self.rng);
        let span = self.days.saturating_sub(ATTACK_START_DAY + 1).max(1);
        for (index, kind) in kinds.iter().enumerate() {
            let day = ATTACK_START_DAY + (index as u32 * span) / kinds.len() as u32;
            let episode = self.inject(*kind, day, calls);
            episodes.push(episode);
        }
    }

    fn inject(&mut self, kind: AlertKind, day: u32, calls: &mut Vec<Observation>) -> Episode {
        match kind {
            AlertKind::ImpossibleTravel => self.impossible_travel(day, calls),
            AlertKind::NewNetwork => self.new_network(day, calls),
            AlertKind::OutsideNetworks => self.outside_networks(day, calls),
            AlertKind::RateSpike => self.rate_spike(day, calls),
            AlertKind::VolumeSpike => self.volume_spike(day, calls),
            AlertKind::Probing => self.probing(day, calls),
            AlertKind::CredentialStuffing => self.credential_stuffing(day, calls),
            AlertKind::UnusualHours => self.unusual_hours(day, calls),
            AlertKind::NewEndpoint => self.new_endpoint(day, calls),
            AlertKind::DormantAgent => self.dormant_agent(day, calls),
            AlertKind::CanaryToken => self.canary_token(day, calls),
            AlertKind::RotationFailed => {
                unreachable!("rotation failures come from rotation jobs, not from traffic")
            }
        }
    }

    /// Picks the least attacked agent that satisfies `eligible` and was not
    /// attacked in the last [`AGENT_REST_DAYS`] days.
    fn target(&mut self, day: u32, eligible: impl Fn(&AgentPlan) -> bool) -> usize {
        let candidates: Vec<usize> = (0..self.roster.agents.len())
            .filter(|&index| {
                let agent = &self.roster.agents[index];
                let rested = self
                    .attacked
                    .get(&agent.name)
                    .is_none_or(|&(_, last)| last + AGENT_REST_DAYS <= day);
                agent.attackable && rested && eligible(agent)
            })
            .collect();
        let count = |index: &usize| {
            self.attacked
                .get(&self.roster.agents[*index].name)
                .map_or(0, |&(count, _)| count)
        };
        let fewest = candidates.iter().map(count).min().expect(
            "every attack kind has an eligible agent in the team template, \
             which has more agents than attacks within the rest period",
        );
        let least: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|index| count(index) == fewest)
            .collect();
        let chosen = least[self.rng.gen_range(0..least.len())];
        let entry = self
            .attacked
            .entry(self.roster.agents[chosen].name.clone())
            .or_insert((0, day));
        entry.0 += 1;
        entry.1 = day;
        chosen
    }

    /// Allocates a public network in the agent's home city, or in a random city for
    /// agents on a LAN.
    fn nearby_network(&mut self, agent: usize) -> Network {
        let home = self.roster.agents[agent]
            .networks
            .iter()
            .find_map(|network| network.city);
        let city = home.unwrap_or_else(|| self.rng.gen_range(0..CITIES.len()));
        self.world.public_v4(self.rng, city, 1)
    }

    /// Allocates a public network on another continent than the agent's home.
    fn foreign_network(&mut self, home: Option<usize>) -> Network {
        let continent = home.map(|city| CITIES[city].continent);
        let choices: Vec<usize> = (0..CITIES.len())
            .filter(|&city| Some(CITIES[city].continent) != continent)
            .collect();
        let city = choices[self.rng.gen_range(0..choices.len())];
        self.world.public_v4(self.rng, city, 1)
    }

    /// Kinds a stolen token used from `network` also raises.
    fn network_side_effects(&self, agent: usize, network: &Network) -> Vec<AlertKind> {
        let declared = &self.roster.agents[agent].declared;
        let mut also = vec![AlertKind::NewNetwork];
        if !declared.is_empty() && !declared.iter().any(|net| net.contains(&network.hosts[0])) {
            also.push(AlertKind::OutsideNetworks);
        }
        also
    }

    /// Appends `count` usual calls by `agent` from `source`, starting at
    /// `start` with gaps of `gap_ms` on average, and returns the last time.
    fn usual_calls(
        &mut self,
        agent: usize,
        source: IpAddr,
        start: i64,
        count: usize,
        gap_ms: i64,
        calls: &mut Vec<Observation>,
    ) -> i64 {
        let plan = &self.roster.agents[agent];
        let mut time = start;
        for index in 0..count {
            if index > 0 {
                time += self.rng.gen_range(gap_ms / 2..gap_ms * 3 / 2);
            }
            let day = day_of(time);
            let endpoint = plan.pick_endpoint(self.rng);
            calls.push(plan.call(self.rng, day, time, source, endpoint));
        }
        time
    }

    /// Injects the agent token used from another continent while the agent keeps
    /// calling from home.
    fn impossible_travel(&mut self, day: u32, calls: &mut Vec<Observation>) -> Episode {
        let agent = self.target(day, AgentPlan::is_located);
        let plan = &self.roster.agents[agent];
        let start = plan.busy_time(self.rng, day);
        let home = plan.networks.iter().find(|network| network.city.is_some());
        let home = home.expect("target is located").clone();
        // A call from home two minutes before, so the jump is certain.
        let home_source = home.host(self.rng);
        self.usual_calls(agent, home_source, start - 2 * MINUTE_MS, 1, 0, calls);
        let network = self.foreign_network(home.city);
        let source = network.hosts[0];
        let count = self.rng.gen_range(4..9);
        let end = self.usual_calls(agent, source, start, count, 3 * MINUTE_MS, calls);
        // And one from home right after, as the real agent carries on.
        self.usual_calls(agent, home_source, end + MINUTE_MS, 1, 0, calls);
        let also = self.network_side_effects(agent, &network);
        self.episode(AlertKind::ImpossibleTravel, agent, start, end, also)
    }

    /// Injects the agent token used from an unseen network in the same city.
    fn new_network(&mut self, day: u32, calls: &mut Vec<Observation>) -> Episode {
        let agent = self.target(day, |plan| plan.declared.is_empty());
        let start = self.roster.agents[agent].busy_time(self.rng, day);
        let network = self.nearby_network(agent);
        let count = self.rng.gen_range(4..9);
        let end = self.usual_calls(agent, network.hosts[0], start, count, 2 * MINUTE_MS, calls);
        self.episode(AlertKind::NewNetwork, agent, start, end, Vec::new())
    }

    /// Injects the agent token used from outside the agent's declared networks.
    fn outside_networks(&mut self, day: u32, calls: &mut Vec<Observation>) -> Episode {
        let agent = self.target(day, |plan| !plan.declared.is_empty());
        let start = self.roster.agents[agent].busy_time(self.rng, day);
        let network = self.nearby_network(agent);
        let count = self.rng.gen_range(3..7);
        let end = self.usual_calls(agent, network.hosts[0], start, count, 2 * MINUTE_MS, calls);
        let also = vec![AlertKind::NewNetwork];
        self.episode(AlertKind::OutsideNetworks, agent, start, end, also)
    }

    /// Injects a compromised agent scraping one connection at many times its rate.
    fn rate_spike(&mut self, day: u32, calls: &mut Vec<Observation>) -> Episode {
        let agent = self.target(day, |_| true);
        let plan = &self.roster.agents[agent];
        let start = plan.busy_time(self.rng, day);
        let connection = plan.pick_endpoint(self.rng).connection;
        let endpoints: Vec<Endpoint> = plan
            .endpoints
            .iter()
            .map(|(endpoint, _)| *endpoint)
            .filter(|endpoint| endpoint.connection == connection)
            .collect();
        let per_minute = (plan.rate * 10.0).max(60.0) * self.rng.gen_range(1.0..1.5);
        let minutes = self.rng.gen_range(8..15);
        let count = (per_minute * f64::from(minutes)) as usize;
        let source = plan.networks[0].host(self.rng);
        let gap = (MINUTE_MS as f64 / per_minute) as i64;
        let mut time = start;
        for _ in 0..count {
            let endpoint = endpoints[self.rng.gen_range(0..endpoints.len())];
            calls.push(plan.call(self.rng, day_of(time), time, source, endpoint));
            time += self.rng.gen_range(gap / 2..gap * 3 / 2);
        }
        let also = vec![AlertKind::VolumeSpike];
        self.episode(AlertKind::RateSpike, agent, start, time, also)
    }

    /// Data leaving through a usual endpoint: huge downloads, or huge
    /// uploads into an endpoint that usually takes small bodies.
    fn volume_spike(&mut self, day: u32, calls: &mut Vec<Observation>) -> Episode {
        let agent = self.target(day, |_| true);
        let plan = &self.roster.agents[agent];
        let start = plan.busy_time(self.rng, day);
        let uploads: Vec<Endpoint> = plan
            .endpoints
            .iter()
            .map(|(endpoint, _)| *endpoint)
            .filter(|endpoint| endpoint.bytes_in > 0.0 && endpoint.bytes_in < MIB)
            .collect();
        let upload = !uploads.is_empty() && self.rng.gen_bool(0.5);
        let downloads: Vec<Endpoint> = plan
            .endpoints
            .iter()
            .map(|(endpoint, _)| *endpoint)
            .filter(|endpoint| endpoint.bytes_out > 0.0 && endpoint.bytes_out < MIB)
            .collect();
        let choices = if upload { &uploads } else { &downloads };
        let endpoint = choices[self.rng.gen_range(0..choices.len())];

        let source = plan.networks[0].host(self.rng);
        let mut time = start;
        let count = self.rng.gen_range(4..9);
        for index in 0..count {
            let mut call = plan.call(self.rng, day_of(time), time, source, endpoint);
            let median = self.rng.gen_range(30.0..90.0) * MIB;
            let bytes = spread(self.rng, median);
            if upload {
                call.bytes_in = bytes;
            } else {
                call.bytes_out = bytes;
            }
            calls.push(call);
            if index + 1 < count {
                time += self.rng.gen_range(MINUTE_MS..3 * MINUTE_MS);
            }
        }
        self.episode(AlertKind::VolumeSpike, agent, start, time, Vec::new())
    }

    /// Injects a compromised agent trying admin calls its role does not allow.
    fn probing(&mut self, day: u32, calls: &mut Vec<Observation>) -> Episode {
        let agent = self.target(day, |_| true);
        let plan = &self.roster.agents[agent];
        let start = plan.busy_time(self.rng, day);
        let source = plan.networks[0].host(self.rng);
        let count = self.rng.gen_range(25..46);
        let mut time = start;
        for index in 0..count {
            let endpoint = UNUSUAL[self.rng.gen_range(0..UNUSUAL.len())];
            let mut call = plan.call(self.rng, day_of(time), time, source, endpoint);
            call.outcome = Outcome::Denied;
            call.status = 403;
            call.bytes_out = 180;
            calls.push(call);
            if index + 1 < count {
                time += self.rng.gen_range(1_000..8_000);
            }
        }
        let also = vec![AlertKind::NewEndpoint, AlertKind::RateSpike];
        self.episode(AlertKind::Probing, agent, start, time, also)
    }

    /// Guessed agent tokens sprayed from one foreign address.
    fn credential_stuffing(&mut self, day: u32, calls: &mut Vec<Observation>) -> Episode {
        let network = self.foreign_network(None);
        let source = network.hosts[0];
        let start = START_MS + i64::from(day) * DAY_MS + self.rng.gen_range(0..DAY_MS);
        let count = self.rng.gen_range(60..200);
        let usual: Vec<Endpoint> = [GITHUB, JIRA].concat();
        let mut time = start;
        for index in 0..count {
            let endpoint = usual[self.rng.gen_range(0..usual.len())];
            calls.push(unauthenticated(self.rng, time, source, endpoint));
            if index + 1 < count {
                time += self.rng.gen_range(500..5_000);
            }
        }
        Episode {
            kind: AlertKind::CredentialStuffing,
            subject: source.to_string(),
            start_ms: start,
            end_ms: time,
            also: Vec::new(),
        }
    }

    /// Injects the agent token used from home in an hour the agent never works.
    fn unusual_hours(&mut self, day: u32, calls: &mut Vec<Observation>) -> Episode {
        let agent = self.target(day, |plan| !matches!(plan.rhythm, Rhythm::AlwaysOn { .. }));
        let plan = &self.roster.agents[agent];
        let start = plan
            .quiet_time(self.rng, day)
            .expect("only agents with quiet hours are targeted");
        let source = plan.networks[0].host(self.rng);
        let count = self.rng.gen_range(8..21);
        let end = self.usual_calls(agent, source, start, count, 2 * MINUTE_MS, calls);
        self.episode(AlertKind::UnusualHours, agent, start, end, Vec::new())
    }

    /// Injects a compromised agent calling an allowed endpoint it never used.
    fn new_endpoint(&mut self, day: u32, calls: &mut Vec<Observation>) -> Episode {
        let agent = self.target(day, |_| true);
        let plan = &self.roster.agents[agent];
        let start = plan.busy_time(self.rng, day);
        let connections: Vec<&str> = plan
            .endpoints
            .iter()
            .map(|(endpoint, _)| endpoint.connection)
            .collect();
        let choices: Vec<Endpoint> = UNUSUAL
            .iter()
            .copied()
            .filter(|endpoint| connections.contains(&endpoint.connection))
            .collect();
        let endpoint = choices[self.rng.gen_range(0..choices.len())];
        let source = plan.networks[0].host(self.rng);
        let count = self.rng.gen_range(1..6);
        let mut time = start;
        for index in 0..count {
            calls.push(plan.call(self.rng, day_of(time), time, source, endpoint));
            if index + 1 < count {
                time += self.rng.gen_range(10_000..MINUTE_MS);
            }
        }
        self.episode(AlertKind::NewEndpoint, agent, start, time, Vec::new())
    }

    /// Injects an agent that calls again after over 30 idle days. In a long
    /// enough run it is active in its first days and then pauses. Otherwise
    /// its last use before the run comes from the context.
    fn dormant_agent(&mut self, day: u32, calls: &mut Vec<Observation>) -> Episode {
        const ACTIVE_DAYS: u32 = 4;
        const IDLE_DAYS: u32 = 32;
        self.dormant_count += 1;
        let mut plan = plan_agent(self.rng, self.world, &DORMANT, 1);
        plan.name = format!("{}-{}", DORMANT.name, self.dormant_count);
        plan.attackable = false;

        if day >= ACTIVE_DAYS + IDLE_DAYS {
            plan.pause = ACTIVE_DAYS..day;
        } else {
            plan.first_day = day;
            plan.last_used_before_ms = START_MS - i64::from(self.rng.gen_range(35..90)) * DAY_MS;
        }
        let mut own = Vec::new();
        plan.generate(self.rng, self.days, &mut own);

        // Local midnight: the first calls of the day may fall on the
        // previous UTC day.
        let wake_day_start = plan.rhythm.local_midnight(day);
        let first_call = own
            .iter()
            .filter(|call| call.agent.is_some() && call.time_ms >= wake_day_start)
            .map(|call| call.time_ms)
            .min();
        // The rhythm calls every day, but a short last day may end first.
        let wake = match first_call {
            Some(time) => time,
            None => {
                let time = plan.busy_time(self.rng, day).min(self.end_ms() - MINUTE_MS);
                let source = plan.networks[0].host(self.rng);
                own.push(plan.benign_call(self.rng, day, time, source));
                time
            }
        };
        calls.extend(own);

        let subject = plan.name.clone();
        self.roster.agents.push(plan);
        Episode {
            kind: AlertKind::DormantAgent,
            subject,
            start_ms: wake,
            end_ms: wake,
            also: Vec::new(),
        }
    }

    /// Injects a canary token presented from abroad: first one issued to a decoy
    /// agent, then one issued to no agent.
    fn canary_token(&mut self, day: u32, calls: &mut Vec<Observation>) -> Episode {
        self.canary_count += 1;
        let owned = self.canary_count % 2 == 1;
        let token = self.roster.canary_tokens[usize::from(!owned)].clone();
        let network = self.foreign_network(None);
        let source = network.hosts[0];
        let start = START_MS + i64::from(day) * DAY_MS + self.rng.gen_range(0..DAY_MS);
        let mut time = start;
        let count = self.rng.gen_range(1..4);
        for index in 0..count {
            let endpoint = GITHUB[self.rng.gen_range(0..GITHUB.len())];
            let mut call = unauthenticated(self.rng, time, source, endpoint);
            call.token_id = Some(token.clone());
            call.agent = owned.then(|| CANARY_OWNER.to_owned());
            calls.push(call);
            if index + 1 < count {
                time += self.rng.gen_range(2_000..30_000);
            }
        }
        let subject = if owned {
            CANARY_OWNER.to_owned()
        } else {
            source.to_string()
        };
        Episode {
            kind: AlertKind::CanaryToken,
            subject,
            start_ms: start,
            end_ms: time,
            also: Vec::new(),
        }
    }

    fn end_ms(&self) -> i64 {
        START_MS + i64::from(self.days) * DAY_MS
    }

    fn episode(
        &self,
        kind: AlertKind,
        agent: usize,
        start_ms: i64,
        end_ms: i64,
        also: Vec<AlertKind>,
    ) -> Episode {
        Episode {
            kind,
            subject: self.roster.agents[agent].name.clone(),
            start_ms,
            end_ms,
            also,
        }
    }
}

/// Day of the run (from 0) that contains `time_ms`.
fn day_of(time_ms: i64) -> u32 {
    u32::try_from((time_ms - START_MS).div_euclid(DAY_MS)).unwrap_or(0)
}
