//! Seeded synthetic traffic for evaluating the detectors: weeks of benign
//! multi-agent calls with labelled attack episodes injected into them.
//!
//! The same [`Scenario`] always produces the same [`Traffic`], because every
//! random choice comes from one `StdRng` seeded with the scenario's seed and
//! no wall clock is read. Benign traffic follows daily rhythms (office
//! hours, nightly batches, services running around the clock with a daily
//! swing), uses one to three home networks per agent, and contains benign
//! bursts, denials, upstream failures and mistyped tokens. After
//! [`ATTACK_START_DAY`], one episode of each [`AlertKind`] is injected at a
//! time (two per kind), each labelled with its kind, subject and window.

mod agents;
mod attacks;
mod places;

use std::collections::HashMap;
use std::sync::Arc;

use castellan_model::AlertKind;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::engine::Context;
use crate::observation::Observation;

pub use places::CityLocator;

/// Start of every scenario: Monday 2026-01-05 00:00 UTC, in unix milliseconds.
pub const START_MS: i64 = 1_767_571_200_000;
/// One day in milliseconds.
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// First day (counted from 0) on which attacks are injected. It leaves two
/// days of margin after the default 7-day learning period of the agents
/// that exist from day 0.
pub const ATTACK_START_DAY: u32 = 9;
/// Minimum length of a scenario in days: the learning period, then room for
/// the 22 attack episodes spaced about a day apart.
pub const MIN_DAYS: u32 = 21;

/// Parameters of one generated run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Short label for tables, such as `home-lab`.
    pub name: String,
    /// Seed of the random generator.
    pub seed: u64,
    /// Length of the run in days, at least [`MIN_DAYS`].
    pub days: u32,
    /// How many copies of the agent roster run side by side (1 gives 12
    /// agents), each with its own networks, rhythms and endpoints.
    pub teams: u32,
    /// Whether attack episodes are injected. Without them the traffic is
    /// benign only and every signal is a false positive.
    pub attacks: bool,
}

impl Scenario {
    /// Creates a scenario with attacks and one team.
    pub fn new(name: &str, seed: u64, days: u32) -> Scenario {
        Scenario {
            name: name.to_owned(),
            seed,
            days: days.max(MIN_DAYS),
            teams: 1,
            attacks: true,
        }
    }

    /// Returns the scenarios the evaluation reports on: three seeds, one
    /// and two teams, 35 and 45 days.
    pub fn default_set() -> Vec<Scenario> {
        vec![
            Scenario::new("home-lab", 1, 35),
            Scenario {
                teams: 2,
                ..Scenario::new("startup", 2, 35)
            },
            Scenario {
                teams: 2,
                ..Scenario::new("company", 3, 45)
            },
        ]
    }

    /// Returns this scenario without attack episodes.
    pub fn benign(&self) -> Scenario {
        Scenario {
            name: format!("{}-benign", self.name),
            attacks: false,
            ..self.clone()
        }
    }

    /// Generates the traffic. Deterministic: equal scenarios give equal traffic.
    pub fn generate(&self) -> Traffic {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let days = self.days.max(MIN_DAYS);
        let mut world = places::World::default();
        let mut roster = agents::Roster::build(&mut rng, &mut world, self.teams);
        let mut calls = Vec::new();
        for agent in &roster.agents {
            agent.generate(&mut rng, days, &mut calls);
        }
        let mut episodes = Vec::new();
        if self.attacks {
            let mut injector = attacks::Injector::new(&mut rng, &mut world, &mut roster, days);
            injector.inject_all(&mut calls, &mut episodes);
        }
        // A stable sort keeps the order of calls with the same millisecond.
        calls.sort_by_key(|call| call.time_ms);
        let mut observations = calls;
        for (index, observation) in observations.iter_mut().enumerate() {
            observation.seq = index as i64 + 1;
        }
        episodes.sort_by_key(|episode: &Episode| episode.start_ms);
        Traffic {
            observations,
            episodes,
            context: roster.context(),
            locator: Arc::new(world.locator()),
            start_ms: START_MS,
            end_ms: START_MS + i64::from(days) * DAY_MS,
        }
    }
}

/// One labelled attack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// The detector that should catch it.
    pub kind: AlertKind,
    /// The subject the signal must carry: the agent name, or the source
    /// address for credential stuffing and for a canary token without owner.
    pub subject: String,
    /// Time of the first and the last malicious call, in unix milliseconds.
    pub start_ms: i64,
    pub end_ms: i64,
    /// Other kinds this attack legitimately raises for the same subject: a
    /// stolen token used from abroad is also a new network. Signals of these
    /// kinds in the window are correct but not required.
    pub also: Vec<AlertKind>,
}

/// Generated observations with their labels and the context to run them in.
#[derive(Clone)]
pub struct Traffic {
    /// All calls in time order, `seq` numbered from 1.
    pub observations: Vec<Observation>,
    /// Attack episodes by start time, empty for benign scenarios.
    pub episodes: Vec<Episode>,
    /// Canary token ids, declared networks and last uses before the run.
    pub context: Context,
    /// Positions of every generated network.
    pub locator: Arc<CityLocator>,
    /// First and last instant covered, in unix milliseconds.
    pub start_ms: i64,
    pub end_ms: i64,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic")
            .field("observations", &self.observations.len())
            .field("episodes", &self.episodes.len())
            .finish_non_exhaustive()
    }
}

impl Traffic {
    /// Counts the observations per agent (`None` for unauthenticated calls).
    pub fn calls_per_agent(&self) -> HashMap<Option<String>, usize> {
        let mut counts = HashMap::new();
        for observation in &self.observations {
            *counts.entry(observation.agent.clone()).or_insert(0) += 1;
        }
        counts
    }
}
