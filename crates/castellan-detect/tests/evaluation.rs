//! Accuracy of the detectors on generated traffic, the generator's
//! determinism and shape, and the scoring rules. Nothing here measures time.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use castellan_detect::evaluation::{evaluate, score, Evaluation, TOLERANCE_MS};
use castellan_detect::generator::{Episode, Scenario, DAY_MS, MINUTE_MS};
use castellan_detect::{DetectorSettings, Locate, Outcome, Signal};
use castellan_model::{AlertKind, Severity};

const MIN_RECALL: f64 = 0.95;
const MIN_PRECISION: f64 = 0.9;

fn evaluate_default_set() -> Evaluation {
    let mut total: Option<Evaluation> = None;
    for scenario in Scenario::default_set() {
        let evaluation = evaluate(&scenario.generate(), DetectorSettings::default());
        match &mut total {
            Some(total) => total.merge(evaluation),
            None => total = Some(evaluation),
        }
    }
    total.expect("the default set is not empty")
}

fn describe_false_positives(evaluation: &Evaluation, kind: AlertKind) -> String {
    evaluation
        .score(kind)
        .false_positives
        .iter()
        .take(5)
        .map(|signal| {
            format!(
                "\n  {} at {}: {}",
                signal.subject, signal.time_ms, signal.summary
            )
        })
        .collect()
}

#[test]
fn default_set_meets_accuracy_targets() {
    let evaluation = evaluate_default_set();
    for kind in AlertKind::DETECTED {
        let score = evaluation.score(kind);
        assert!(score.episodes > 0, "{kind}: the default set has no episode");
        let recall = score.recall().unwrap_or(0.0);
        assert!(
            recall >= MIN_RECALL,
            "{kind}: recall {recall:.3} ({} of {} episodes) is below {MIN_RECALL}",
            score.detected,
            score.episodes
        );
        let precision = score.precision().unwrap_or(0.0);
        assert!(
            precision >= MIN_PRECISION,
            "{kind}: precision {precision:.3} ({} of {} signals) is below {MIN_PRECISION}; \
             first false positives:{}",
            score.true_positives,
            score.signals(),
            describe_false_positives(&evaluation, kind)
        );
    }
}

#[test]
fn benign_traffic_raises_few_signals() {
    let scenario = Scenario::default_set()[0].benign();
    let traffic = scenario.generate();
    assert!(traffic.episodes.is_empty());
    let evaluation = evaluate(&traffic, DetectorSettings::default());
    // Kinds whose trigger never occurs in benign traffic: no canary token,
    // no agent idle for 30 days, no burst of 10 failed authentications, no
    // call outside declared networks, no home networks 500 km apart.
    for kind in [
        AlertKind::CanaryToken,
        AlertKind::DormantAgent,
        AlertKind::CredentialStuffing,
        AlertKind::OutsideNetworks,
        AlertKind::ImpossibleTravel,
    ] {
        let signals = evaluation.score(kind).signals();
        assert_eq!(signals, 0, "{kind} fired on benign traffic");
    }
    // The rest may fire now and then: at most one signal per agent and
    // fortnight in total.
    let agents = traffic
        .calls_per_agent()
        .keys()
        .filter(|agent| agent.is_some())
        .count();
    let fortnights = (traffic.end_ms - traffic.start_ms) as f64 / (14.0 * DAY_MS as f64);
    let limit = (agents as f64 * fortnights) as usize;
    let signals = evaluation.signals();
    let by_kind: Vec<String> = evaluation
        .scores
        .iter()
        .filter(|score| score.signals() > 0)
        .map(|score| format!("{} {}", score.kind, score.signals()))
        .collect();
    assert!(
        signals <= limit,
        "{signals} signals on benign traffic, limit {limit}: {by_kind:?}"
    );
}

#[test]
fn generator_is_deterministic_per_seed() {
    let scenario = Scenario::new("determinism", 11, 21);
    let first = scenario.generate();
    let second = scenario.generate();
    assert_eq!(first.observations, second.observations);
    assert_eq!(first.episodes, second.episodes);
    assert_eq!(first.context, second.context);
    let other = Scenario::new("determinism", 12, 21).generate();
    assert_ne!(first.observations, other.observations);
}

#[test]
fn generated_traffic_has_realistic_shape() {
    let scenario = Scenario::new("shape", 5, 35);
    let traffic = scenario.generate();
    let observations = &traffic.observations;

    let ordered = observations
        .windows(2)
        .all(|pair| pair[0].time_ms <= pair[1].time_ms && pair[0].seq < pair[1].seq);
    assert!(ordered, "observations are not in time and seq order");
    let span_days =
        (observations[observations.len() - 1].time_ms - observations[0].time_ms) / DAY_MS;
    assert!(span_days >= 30, "traffic spans only {span_days} days");

    let agents = traffic.calls_per_agent();
    let named = agents.keys().filter(|agent| agent.is_some()).count();
    assert!(named >= 10, "only {named} agents");

    // Networks per agent, as /24 or /48 prefixes.
    let mut networks: HashMap<&str, HashSet<String>> = HashMap::new();
    for observation in observations {
        if let (Some(agent), Outcome::Allowed) = (&observation.agent, observation.outcome) {
            networks
                .entry(agent)
                .or_default()
                .insert(prefix(observation.source));
        }
    }
    let multi_homed = networks
        .values()
        .filter(|prefixes| prefixes.len() >= 2)
        .count();
    assert!(
        multi_homed >= 3,
        "only {multi_homed} agents use several networks"
    );

    let denied = observations
        .iter()
        .filter(|observation| observation.outcome == Outcome::Denied)
        .count();
    let unauthenticated = observations
        .iter()
        .filter(|observation| observation.outcome == Outcome::Unauthenticated)
        .count();
    let failed = observations
        .iter()
        .filter(|observation| observation.outcome == Outcome::Failed)
        .count();
    assert!(denied > 100, "{denied} denials");
    assert!(
        unauthenticated > 100,
        "{unauthenticated} failed authentications"
    );
    assert!(failed > 100, "{failed} upstream failures");

    let located: HashSet<String> = observations
        .iter()
        .filter_map(|observation| traffic.locator.locate(observation.source))
        .map(|point| format!("{:.0},{:.0}", point.latitude, point.longitude))
        .collect();
    assert!(
        located.len() >= 6,
        "calls come from only {} places",
        located.len()
    );
    let private = observations
        .iter()
        .any(|observation| traffic.locator.locate(observation.source).is_none());
    assert!(private, "no call from a LAN address");
}

fn prefix(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", segments[0], segments[1], segments[2])
        }
    }
}

#[test]
fn episodes_cover_every_kind_after_learning() {
    let scenario = Scenario::new("episodes", 6, 35);
    let traffic = scenario.generate();
    let learning_end = traffic.start_ms + 7 * DAY_MS;
    for kind in AlertKind::DETECTED {
        let count = traffic
            .episodes
            .iter()
            .filter(|episode| episode.kind == kind)
            .count();
        assert_eq!(count, 2, "{kind}");
    }
    for episode in &traffic.episodes {
        assert!(
            episode.start_ms >= learning_end,
            "{episode:?} starts while learning"
        );
        assert!(episode.end_ms >= episode.start_ms, "{episode:?}");
        assert!(
            episode.end_ms < traffic.end_ms,
            "{episode:?} ends after the run"
        );
        // Every episode is backed by calls from its subject in its window.
        let backed = traffic.observations.iter().any(|observation| {
            let in_window =
                observation.time_ms >= episode.start_ms && observation.time_ms <= episode.end_ms;
            let subject = observation
                .agent
                .clone()
                .filter(|_| episode.kind != AlertKind::CredentialStuffing)
                .unwrap_or_else(|| observation.source.to_string());
            in_window && subject == episode.subject
        });
        assert!(backed, "no call behind {episode:?}");
    }
    let canaries = &traffic.context.canary_tokens;
    let canary_calls = traffic
        .observations
        .iter()
        .filter(|observation| {
            observation
                .token_id
                .as_ref()
                .is_some_and(|token| canaries.contains(token))
        })
        .count();
    assert!(canary_calls >= 2, "{canary_calls} canary calls");
}

fn signal(kind: AlertKind, subject: &str, time_ms: i64) -> Signal {
    Signal {
        kind,
        severity: Severity::High,
        agent: Some(subject.to_owned()),
        source: "192.0.2.1".parse().expect("test address parses"),
        subject: subject.to_owned(),
        seq: 1,
        time_ms,
        summary: String::new(),
    }
}

#[test]
fn scoring_matches_kind_subject_and_window() {
    let episode = Episode {
        kind: AlertKind::ImpossibleTravel,
        subject: "bot".to_owned(),
        start_ms: 10 * MINUTE_MS,
        end_ms: 20 * MINUTE_MS,
        also: vec![AlertKind::NewNetwork],
    };
    let signals = vec![
        // Detected 2 minutes after the start.
        signal(AlertKind::ImpossibleTravel, "bot", 12 * MINUTE_MS),
        // Late but within the tolerance: still a true positive.
        signal(
            AlertKind::ImpossibleTravel,
            "bot",
            20 * MINUTE_MS + TOLERANCE_MS,
        ),
        // After the tolerance: false.
        signal(
            AlertKind::ImpossibleTravel,
            "bot",
            21 * MINUTE_MS + TOLERANCE_MS,
        ),
        // Before the attack: false.
        signal(AlertKind::ImpossibleTravel, "bot", 9 * MINUTE_MS),
        // Another agent: false.
        signal(AlertKind::ImpossibleTravel, "other", 12 * MINUTE_MS),
        // A side effect the episode lists: true, but no episode of its own.
        signal(AlertKind::NewNetwork, "bot", 11 * MINUTE_MS),
        // A kind the episode does not cause: false.
        signal(AlertKind::RateSpike, "bot", 11 * MINUTE_MS),
    ];
    let scores = score(&[episode], signals);
    let travel = scores
        .iter()
        .find(|score| score.kind == AlertKind::ImpossibleTravel)
        .expect("travel scored");
    assert_eq!(travel.episodes, 1);
    assert_eq!(travel.detected, 1);
    assert_eq!(travel.true_positives, 2);
    assert_eq!(travel.false_positives.len(), 3);
    assert_eq!(travel.delays_ms, vec![2 * MINUTE_MS]);
    assert_eq!(travel.recall(), Some(1.0));
    assert_eq!(travel.precision(), Some(0.4));

    let network = scores
        .iter()
        .find(|score| score.kind == AlertKind::NewNetwork)
        .expect("new network scored");
    assert_eq!(network.episodes, 0);
    assert_eq!(network.true_positives, 1);
    assert_eq!(network.recall(), None);

    let rate = scores
        .iter()
        .find(|score| score.kind == AlertKind::RateSpike)
        .expect("rate spike scored");
    assert_eq!(rate.false_positives.len(), 1);
    assert_eq!(rate.precision(), Some(0.0));
}

#[test]
fn missed_episode_lowers_recall() {
    let episodes = [
        Episode {
            kind: AlertKind::Probing,
            subject: "bot".to_owned(),
            start_ms: 0,
            end_ms: MINUTE_MS,
            also: Vec::new(),
        },
        Episode {
            kind: AlertKind::Probing,
            subject: "bot".to_owned(),
            start_ms: 10 * DAY_MS,
            end_ms: 10 * DAY_MS + MINUTE_MS,
            also: Vec::new(),
        },
    ];
    let scores = score(&episodes, vec![signal(AlertKind::Probing, "bot", 30_000)]);
    let probing = scores
        .iter()
        .find(|score| score.kind == AlertKind::Probing)
        .expect("probing scored");
    assert_eq!(probing.detected, 1);
    assert_eq!(probing.recall(), Some(0.5));
    assert_eq!(
        probing.median_delay().map(|delay| delay.as_millis()),
        Some(30_000)
    );
}
