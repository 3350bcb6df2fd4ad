//! Scoring the detectors against generated traffic with labelled attacks.
//!
//! [`evaluate`] feeds a [`Traffic`] through a fresh [`Engine`] on one
//! thread and matches every signal to the attack episodes:
//!
//! - A signal is a **true positive** when an episode has the same subject,
//!   lists the signal's kind (as its own kind or in [`Episode::also`]), and
//!   the signal's time lies between the episode's start and its end plus
//!   [`TOLERANCE_MS`]. Every other signal is a **false positive**.
//! - An episode is **detected** when a signal of its own kind matches it.
//!   Recall is detected episodes over episodes; precision is true positives
//!   over signals. The engine already limits repeats of one kind and
//!   subject, so signals are counted one by one.
//! - The **delay** of a detected episode is the time from its first
//!   malicious call to the first matching signal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use castellan_model::AlertKind;

use crate::engine::{Engine, Signal};
use crate::generator::{Episode, Traffic, MINUTE_MS};
use crate::geo::Locate;
use crate::settings::DetectorSettings;

/// Time after an episode's last malicious call within which a signal still
/// counts as caused by it: 15 minutes. A window-based detector reports at
/// the end of its window (one minute for rates, probing and stuffing), and
/// a stolen token's jump back home is seen at the real agent's next call.
pub const TOLERANCE_MS: i64 = 15 * MINUTE_MS;

/// Score of one detector (one alert kind).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorScore {
    pub kind: AlertKind,
    /// Episodes of this kind.
    pub episodes: usize,
    /// Episodes of this kind with at least one matching signal.
    pub detected: usize,
    /// Signals of this kind that match an episode.
    pub true_positives: usize,
    /// Signals of this kind that match none; kept for inspection.
    pub false_positives: Vec<Signal>,
    /// Delay of each detected episode, in milliseconds.
    pub delays_ms: Vec<i64>,
}

impl DetectorScore {
    fn new(kind: AlertKind) -> DetectorScore {
        DetectorScore {
            kind,
            episodes: 0,
            detected: 0,
            true_positives: 0,
            false_positives: Vec::new(),
            delays_ms: Vec::new(),
        }
    }

    /// Total signals of this kind.
    pub fn signals(&self) -> usize {
        self.true_positives + self.false_positives.len()
    }

    /// True positives over signals, or `None` without signals.
    pub fn precision(&self) -> Option<f64> {
        let signals = self.signals();
        (signals > 0).then(|| self.true_positives as f64 / signals as f64)
    }

    /// Detected episodes over episodes, or `None` without episodes.
    pub fn recall(&self) -> Option<f64> {
        (self.episodes > 0).then(|| self.detected as f64 / self.episodes as f64)
    }

    /// Median detection delay (the lower middle value for an even count).
    pub fn median_delay(&self) -> Option<Duration> {
        let mut delays = self.delays_ms.clone();
        delays.sort_unstable();
        let middle = delays.len().checked_sub(1)? / 2;
        Some(duration_of(delays[middle]))
    }

    /// Maximum detection delay.
    pub fn max_delay(&self) -> Option<Duration> {
        self.delays_ms.iter().max().map(|&ms| duration_of(ms))
    }

    fn absorb(&mut self, other: DetectorScore) {
        self.episodes += other.episodes;
        self.detected += other.detected;
        self.true_positives += other.true_positives;
        self.false_positives.extend(other.false_positives);
        self.delays_ms.extend(other.delays_ms);
    }
}

fn duration_of(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Result of running the engine over one or more traffics.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// One score per alert kind, in [`AlertKind::DETECTED`] order.
    pub scores: Vec<DetectorScore>,
    /// Observations fed to the engine.
    pub observations: usize,
    /// Wall time spent inside [`Engine::observe`] calls and the loop
    /// around them; generation and scoring are excluded.
    pub engine_time: Duration,
}

impl Evaluation {
    /// Score of `kind`.
    pub fn score(&self, kind: AlertKind) -> &DetectorScore {
        self.scores
            .iter()
            .find(|score| score.kind == kind)
            .expect("an evaluation scores every alert kind")
    }

    /// Observations per second of engine time, on one thread.
    pub fn throughput(&self) -> f64 {
        self.observations as f64 / self.engine_time.as_secs_f64().max(1e-9)
    }

    /// Total signals of all kinds.
    pub fn signals(&self) -> usize {
        self.scores.iter().map(DetectorScore::signals).sum()
    }

    /// Adds the counts of `other` to these, as for several scenarios.
    pub fn merge(&mut self, other: Evaluation) {
        for (mine, theirs) in self.scores.iter_mut().zip(other.scores) {
            mine.absorb(theirs);
        }
        self.observations += other.observations;
        self.engine_time += other.engine_time;
    }
}

/// Runs a fresh engine with `settings` over `traffic` and scores it.
pub fn evaluate(traffic: &Traffic, settings: DetectorSettings) -> Evaluation {
    let locator: Arc<dyn Locate> = traffic.locator.clone();
    let mut engine = Engine::new(settings, Some(locator));
    engine.set_context(traffic.context.clone());
    let mut signals = Vec::new();
    let started = Instant::now();
    for observation in &traffic.observations {
        engine.observe(observation, &mut signals);
    }
    let engine_time = started.elapsed();
    Evaluation {
        scores: score(&traffic.episodes, signals),
        observations: traffic.observations.len(),
        engine_time,
    }
}

/// Returns whether `signal` falls in the window of `episode`, for the
/// same subject.
fn within(signal: &Signal, episode: &Episode) -> bool {
    signal.subject == episode.subject
        && signal.time_ms >= episode.start_ms
        && signal.time_ms <= episode.end_ms + TOLERANCE_MS
}

/// Matches signals to episodes (see the module documentation).
pub fn score(episodes: &[Episode], signals: Vec<Signal>) -> Vec<DetectorScore> {
    let mut scores: Vec<DetectorScore> = AlertKind::DETECTED.map(DetectorScore::new).to_vec();
    let index = |kind: AlertKind| {
        AlertKind::DETECTED
            .iter()
            .position(|candidate| *candidate == kind)
            .expect("ALL lists every kind")
    };
    for episode in episodes {
        let score = &mut scores[index(episode.kind)];
        score.episodes += 1;
        let first = signals
            .iter()
            .filter(|signal| signal.kind == episode.kind && within(signal, episode))
            .map(|signal| signal.time_ms)
            .min();
        if let Some(time_ms) = first {
            score.detected += 1;
            score.delays_ms.push(time_ms - episode.start_ms);
        }
    }
    for signal in signals {
        let explained = episodes.iter().any(|episode| {
            (episode.kind == signal.kind || episode.also.contains(&signal.kind))
                && within(&signal, episode)
        });
        let score = &mut scores[index(signal.kind)];
        if explained {
            score.true_positives += 1;
        } else {
            score.false_positives.push(signal);
        }
    }
    scores
}
