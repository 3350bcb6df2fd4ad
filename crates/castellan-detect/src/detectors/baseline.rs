//! Per-minute request and volume baselines, for `rate_spike` and the
//! per-minute `volume_spike`.
//!
//! Each agent and connection keeps the request count, request bytes and
//! response bytes of its last active minutes (minutes with at least one
//! call) in fixed ring buffers. When a minute ends, the engine computes the
//! median and the median absolute deviation (MAD) of each series and from
//! them the limit the next minutes are held to. The limit is checked as
//! calls arrive, so a spike is reported within the minute it starts.
//!
//! Body bytes are heavy tailed: an agent that uploads a large file now and
//! then has a median of zero bytes per minute and a few huge minutes. So a
//! minute's bytes must also exceed `volume_expected_ratio` times the bytes
//! its calls usually carry, summed from the typical sizes of each call's
//! method and path template.

use super::{Direction, Finding};
use crate::settings::DetectorSettings;

const MINUTE_MS: i64 = 60_000;
/// Scales a MAD to a standard deviation for normally distributed data.
const MAD_TO_SIGMA: f64 = 1.4826;

/// The last values of one per-minute series, oldest overwritten first.
struct MinuteHistory {
    values: Box<[u64]>,
    len: usize,
    next: usize,
}

impl MinuteHistory {
    fn new(capacity: usize) -> Self {
        MinuteHistory {
            values: vec![0; capacity.max(1)].into_boxed_slice(),
            len: 0,
            next: 0,
        }
    }

    fn push(&mut self, value: u64) {
        self.values[self.next] = value;
        self.next = (self.next + 1) % self.values.len();
        self.len = (self.len + 1).min(self.values.len());
    }

    /// Returns the median and the robust standard deviation (1.4826 × MAD).
    fn median_and_spread(&self, scratch: &mut Vec<u64>) -> (f64, f64) {
        scratch.clear();
        scratch.extend_from_slice(&self.values[..self.len]);
        let median = median_of(scratch);
        for value in scratch.iter_mut() {
            // Deviations are rounded to whole units, which is exact for
            // counts and far below any limit for bytes.
            *value = (*value as f64 - median).abs().round() as u64;
        }
        (median, MAD_TO_SIGMA * median_of(scratch))
    }
}

fn median_of(values: &mut [u64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle] as f64
    } else {
        (values[middle - 1] as f64 + values[middle] as f64) / 2.0
    }
}

/// The limits of one connection, with the medians they came from.
#[derive(Debug, Clone, Copy)]
struct MinuteLimits {
    requests: f64,
    requests_median: f64,
    bytes_in: f64,
    bytes_in_median: f64,
    bytes_out: f64,
    bytes_out_median: f64,
}

/// Computes the limit for a series: at least `floor`, `spike_min_ratio`
/// times the median, and `spike_deviations` robust standard deviations
/// above it.
/// `min_spread` keeps a perfectly regular series from getting a zero spread.
fn limit(
    median: f64,
    spread: f64,
    min_spread: f64,
    floor: f64,
    settings: &DetectorSettings,
) -> f64 {
    let deviation = settings.spike_deviations * spread.max(min_spread);
    (median + deviation)
        .max(median * settings.spike_min_ratio)
        .max(floor)
}

/// The parts of one call a baseline counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    pub(crate) time_ms: i64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Typical request and response sizes of the call's endpoint.
    pub(crate) expected_in: f64,
    pub(crate) expected_out: f64,
}

/// Per-minute state of one agent on one connection.
pub(crate) struct ConnectionBaseline {
    name: Box<str>,
    minute: i64,
    requests: u64,
    bytes_in: u64,
    bytes_out: u64,
    expected_in: f64,
    expected_out: f64,
    /// Flags for the limits this minute already crossed (requests, bytes in,
    /// bytes out), so each fires at most once a minute.
    reported: [bool; 3],
    history_requests: MinuteHistory,
    history_in: MinuteHistory,
    history_out: MinuteHistory,
    limits: Option<MinuteLimits>,
}

impl ConnectionBaseline {
    pub(crate) fn new(name: &str, settings: &DetectorSettings) -> Self {
        let capacity = settings.baseline_minutes;
        ConnectionBaseline {
            name: name.into(),
            minute: i64::MIN,
            requests: 0,
            bytes_in: 0,
            bytes_out: 0,
            expected_in: 0.0,
            expected_out: 0.0,
            reported: [false; 3],
            history_requests: MinuteHistory::new(capacity),
            history_in: MinuteHistory::new(capacity),
            history_out: MinuteHistory::new(capacity),
            limits: None,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Counts one call and, when `armed`, reports the limits it crosses.
    pub(crate) fn observe(
        &mut self,
        call: Call,
        armed: bool,
        settings: &DetectorSettings,
        scratch: &mut Vec<u64>,
        findings: &mut Vec<Finding>,
    ) {
        let minute = call.time_ms.div_euclid(MINUTE_MS);
        // A call that arrives late for an earlier minute counts in the
        // current one. The audit stream is ordered, so this is rare.
        if minute > self.minute {
            self.close_minute(settings, scratch);
            self.minute = minute;
        }
        self.requests += 1;
        self.bytes_in = self.bytes_in.saturating_add(call.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(call.bytes_out);
        self.expected_in += call.expected_in;
        self.expected_out += call.expected_out;
        let Some(limits) = self.limits.filter(|_| armed) else {
            return;
        };
        if !self.reported[0] && self.requests as f64 > limits.requests {
            self.reported[0] = true;
            findings.push(Finding::RateSpike {
                requests: self.requests,
                median: limits.requests_median,
            });
        }
        let expected_ratio = settings.volume_expected_ratio;
        let bytes_in_limit = limits.bytes_in.max(self.expected_in * expected_ratio);
        if !self.reported[1] && self.bytes_in as f64 > bytes_in_limit {
            self.reported[1] = true;
            findings.push(Finding::VolumeMinute {
                direction: Direction::Sent,
                bytes: self.bytes_in,
                median: limits.bytes_in_median,
            });
        }
        let bytes_out_limit = limits.bytes_out.max(self.expected_out * expected_ratio);
        if !self.reported[2] && self.bytes_out as f64 > bytes_out_limit {
            self.reported[2] = true;
            findings.push(Finding::VolumeMinute {
                direction: Direction::Received,
                bytes: self.bytes_out,
                median: limits.bytes_out_median,
            });
        }
    }

    /// Moves the finished minute into the history and recomputes the limits.
    fn close_minute(&mut self, settings: &DetectorSettings, scratch: &mut Vec<u64>) {
        if self.requests == 0 {
            return;
        }
        self.history_requests.push(self.requests);
        self.history_in.push(self.bytes_in);
        self.history_out.push(self.bytes_out);
        self.requests = 0;
        self.bytes_in = 0;
        self.bytes_out = 0;
        self.expected_in = 0.0;
        self.expected_out = 0.0;
        self.reported = [false; 3];
        if self.history_requests.len < settings.min_baseline_minutes.max(1) {
            return;
        }
        let (requests_median, requests_spread) = self.history_requests.median_and_spread(scratch);
        let (bytes_in_median, bytes_in_spread) = self.history_in.median_and_spread(scratch);
        let (bytes_out_median, bytes_out_spread) = self.history_out.median_and_spread(scratch);
        // Request counts vary at least like a Poisson process, whose
        // standard deviation is the square root of its mean.
        let requests_min_spread = requests_median.sqrt().max(1.0);
        self.limits = Some(MinuteLimits {
            requests: limit(
                requests_median,
                requests_spread,
                requests_min_spread,
                settings.min_spike_requests as f64,
                settings,
            ),
            requests_median,
            bytes_in: limit(
                bytes_in_median,
                bytes_in_spread,
                1.0,
                settings.min_spike_bytes_in as f64,
                settings,
            ),
            bytes_in_median,
            bytes_out: limit(
                bytes_out_median,
                bytes_out_spread,
                1.0,
                settings.min_spike_bytes_out as f64,
                settings,
            ),
            bytes_out_median,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DetectorSettings {
        DetectorSettings::default()
    }

    /// Feeds `per_minute` calls in each of `minutes` minutes from
    /// `start_minute`, each with the given actual and expected request bytes.
    fn feed(
        baseline: &mut ConnectionBaseline,
        start_minute: i64,
        minutes: i64,
        per_minute: u64,
        (bytes_in, expected_in): (u64, u64),
        findings: &mut Vec<Finding>,
    ) {
        let settings = settings();
        let mut scratch = Vec::new();
        for minute in start_minute..start_minute + minutes {
            for call in 0..per_minute {
                let call = Call {
                    time_ms: minute * MINUTE_MS + (call as i64 * 100),
                    bytes_in,
                    bytes_out: 500,
                    expected_in: expected_in as f64,
                    expected_out: 500.0,
                };
                baseline.observe(call, true, &settings, &mut scratch, findings);
            }
        }
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median_of(&mut [3, 1, 2]), 2.0);
        assert_eq!(median_of(&mut [4, 1, 3, 2]), 2.5);
        assert_eq!(median_of(&mut []), 0.0);
    }

    #[test]
    fn ring_keeps_last_values() {
        let mut history = MinuteHistory::new(3);
        for value in [100, 100, 100, 1, 2, 3] {
            history.push(value);
        }
        let (median, spread) = history.median_and_spread(&mut Vec::new());
        assert_eq!(median, 2.0);
        assert!((spread - MAD_TO_SIGMA).abs() < 1e-9);
    }

    #[test]
    fn spike_fires_after_baseline() {
        let mut baseline = ConnectionBaseline::new("github", &settings());
        let mut findings = Vec::new();
        feed(&mut baseline, 0, 30, 5, (100, 100), &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
        feed(&mut baseline, 30, 1, 200, (100, 100), &mut findings);
        assert!(
            matches!(
                findings.as_slice(),
                [Finding::RateSpike { requests: 21.., .. }]
            ),
            "{findings:?}"
        );
    }

    #[test]
    fn no_spike_without_enough_history() {
        let mut baseline = ConnectionBaseline::new("github", &settings());
        let mut findings = Vec::new();
        feed(&mut baseline, 0, 5, 2, (100, 100), &mut findings);
        feed(&mut baseline, 5, 1, 500, (100, 100), &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn small_counts_never_trip_the_floor() {
        let mut baseline = ConnectionBaseline::new("github", &settings());
        let mut findings = Vec::new();
        // A quiet agent: one call a minute, then three.
        feed(&mut baseline, 0, 40, 1, (0, 0), &mut findings);
        feed(&mut baseline, 40, 1, 3, (0, 0), &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn upload_volume_fires_as_sent() {
        let mut baseline = ConnectionBaseline::new("github", &settings());
        let mut findings = Vec::new();
        feed(&mut baseline, 0, 30, 4, (1_000, 1_000), &mut findings);
        feed(&mut baseline, 30, 1, 4, (4_000_000, 1_000), &mut findings);
        assert!(
            matches!(
                findings.as_slice(),
                [Finding::VolumeMinute {
                    direction: Direction::Sent,
                    ..
                }]
            ),
            "{findings:?}"
        );
    }

    #[test]
    fn usual_large_uploads_are_quiet() {
        let mut baseline = ConnectionBaseline::new("storage", &settings());
        let mut findings = Vec::new();
        // Mostly small calls, so the median minute carries no upload bytes.
        feed(&mut baseline, 0, 40, 2, (0, 0), &mut findings);
        // Five usual 24 MiB uploads in one minute: far above the median
        // minute, but what those calls usually carry.
        feed(&mut baseline, 40, 1, 5, (24 << 20, 24 << 20), &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn disarmed_baseline_learns_silently() {
        let settings = settings();
        let mut baseline = ConnectionBaseline::new("github", &settings);
        let mut findings = Vec::new();
        let mut scratch = Vec::new();
        for minute in 0..40 {
            let calls = if minute == 35 { 500 } else { 3 };
            for call in 0..calls {
                let call = Call {
                    time_ms: minute * MINUTE_MS + call,
                    bytes_in: 0,
                    bytes_out: 0,
                    expected_in: 0.0,
                    expected_out: 0.0,
                };
                baseline.observe(call, false, &settings, &mut scratch, &mut findings);
            }
        }
        assert!(findings.is_empty(), "{findings:?}");
    }
}
