//! Detector parameters. Every threshold the detectors use is a field here,
//! so an operator can tune them and the documentation can list them.

use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const MIB: u64 = 1024 * 1024;

/// Detector parameters; [`Default`] gives the documented defaults.
///
/// Durations are measured on observation time (`Observation::time_ms`),
/// never on the wall clock, so replaying the same traffic gives the same
/// signals.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorSettings {
    /// How long each agent is observed, from its first observation, before
    /// the detectors that compare against its history (new network, new
    /// endpoint, unusual hours, rate and volume spikes) may raise anything.
    /// Default 7 days, so every hour of the week is seen once.
    pub learning_period: Duration,
    /// Idle time after which a call from an agent raises `dormant_agent`.
    /// The waking agent also starts a new learning period, because a
    /// baseline over a month old is a poor guide to its current work.
    /// Default 30 days.
    pub dormant_after: Duration,
    /// Minimum time between two signals of the same kind and subject. A
    /// burst of suspicious calls raises one signal per interval instead of
    /// one per call. Default 10 minutes.
    pub repeat_interval: Duration,

    /// Speed above which two calls with the same agent token from two
    /// located addresses raise `impossible_travel`. Default 900 km/h, the
    /// cruising speed of an airliner.
    pub max_travel_speed_kmh: f64,
    /// Minimum distance between two located addresses for
    /// `impossible_travel`. City-level geolocation is often off by a few
    /// hundred kilometres and one provider's networks are placed in several
    /// cities of a region, so nearby jumps are ignored. Default 500 km.
    pub min_travel_distance_km: f64,

    /// Prefix length that groups IPv4 addresses into one network for
    /// `new_network`. Default 24 (a /24 is the usual allocation to one site).
    pub network_prefix_v4: u8,
    /// Prefix length that groups IPv6 addresses into one network for
    /// `new_network`. Default 48 (the usual allocation to one site).
    /// Calls from inside the agent's declared networks are never new: the
    /// operator already named them.
    pub network_prefix_v6: u8,
    /// Hours on either side of an hour of the week that also make it usual
    /// for `unusual_hours`: with 1, an agent seen at 09:00 on Mondays may
    /// start at 08:00 without an alert. Working days that start or end a
    /// few minutes earlier or later than usual land in the next clock hour,
    /// and one learning week covers each hour of the week only once. Default 1.
    pub unusual_hours_tolerance: u8,

    /// Networks remembered per agent. Once full, a call from an unknown
    /// network still raises `new_network` but the network is not stored.
    /// Default 1,024.
    pub max_networks_per_agent: usize,

    /// Active minutes (minutes with at least one call) of history kept per
    /// agent and connection for the rate and volume baselines. Default 60.
    pub baseline_minutes: usize,
    /// Active minutes of history needed before `rate_spike` or the
    /// per-minute `volume_spike` may fire for an agent and connection.
    /// Default 20.
    pub min_baseline_minutes: usize,
    /// Distance above the median, in robust standard deviations (1.4826 ×
    /// the median absolute deviation), at which a minute counts as a spike.
    /// Default 6.
    pub spike_deviations: f64,
    /// Minimum ratio of a spike minute to the median minute. Keeps a very
    /// regular agent, whose deviation is close to zero, from alerting on
    /// small changes, and leaves room for benign bursts of two to three
    /// times the usual rate. Default 6.
    pub spike_min_ratio: f64,
    /// Requests in one minute below which `rate_spike` never fires,
    /// whatever the baseline. Default 30.
    pub min_spike_requests: u64,
    /// Request bytes (data leaving) in one minute below which the
    /// per-minute `volume_spike` for uploads never fires. Default 1 MiB.
    pub min_spike_bytes_in: u64,
    /// Response bytes in one minute below which the per-minute
    /// `volume_spike` for downloads never fires. Default 8 MiB.
    pub min_spike_bytes_out: u64,
    /// Ratio of a minute's request or response bytes to the bytes its calls
    /// usually carry at which the minute counts as a spike, on top of the
    /// median and MAD limit. The usual bytes are the sum of the typical
    /// sizes of each call's method and path template. Body sizes are heavy
    /// tailed, so the median and MAD alone would flag busy but normal
    /// minutes of agents that move large files. Default 10.
    pub volume_expected_ratio: f64,

    /// Ratio of one request or response body to the agent's typical size
    /// for the same method and path template (a geometric mean) at which
    /// `volume_spike` fires. Default 20.
    pub large_body_ratio: f64,
    /// Body size below which the single-body rule of `volume_spike` never
    /// fires. Default 1 MiB.
    pub min_large_body_bytes: u64,
    /// Calls of a method and path template needed before its typical body
    /// sizes are trusted. Default 20.
    pub min_endpoint_samples: u32,
    /// Method and path templates remembered per agent. Once full, a new
    /// template still raises `new_endpoint` but is not stored. Default 1,024.
    pub max_endpoints_per_agent: usize,

    /// Window over which denied requests from one agent are counted for
    /// `probing`. Default 2 minutes.
    pub probing_window: Duration,
    /// Denied requests from one agent within `probing_window` that raise
    /// `probing`. Default 10.
    pub probing_min_denials: u32,
    /// Window over which failed authentications from one source address are
    /// counted for `credential_stuffing`. Default 1 minute.
    pub stuffing_window: Duration,
    /// Failed authentications from one source address within
    /// `stuffing_window` that raise `credential_stuffing`. Default 10.
    pub stuffing_min_failures: u32,
    /// Source addresses tracked for `credential_stuffing`. The table keeps
    /// two generations of this size and drops the older one when the newer
    /// fills, so memory stays bounded under a spray from many addresses.
    /// Default 65,536.
    pub max_tracked_sources: usize,

    /// Connections tracked per agent for the rate and volume baselines;
    /// calls on further connections are not baselined. Default 64.
    pub max_connections_per_agent: usize,
    /// Agent tokens tracked per agent for `impossible_travel`; the least
    /// recently used is replaced when full. Default 16.
    pub max_tokens_per_agent: usize,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        DetectorSettings {
            learning_period: 7 * DAY,
            dormant_after: 30 * DAY,
            repeat_interval: 10 * MINUTE,
            max_travel_speed_kmh: 900.0,
            min_travel_distance_km: 500.0,
            network_prefix_v4: 24,
            network_prefix_v6: 48,
            unusual_hours_tolerance: 1,
            max_networks_per_agent: 1024,
            baseline_minutes: 60,
            min_baseline_minutes: 20,
            spike_deviations: 6.0,
            spike_min_ratio: 6.0,
            min_spike_requests: 30,
            min_spike_bytes_in: MIB,
            min_spike_bytes_out: 8 * MIB,
            volume_expected_ratio: 10.0,
            large_body_ratio: 20.0,
            min_large_body_bytes: MIB,
            min_endpoint_samples: 20,
            max_endpoints_per_agent: 1024,
            probing_window: 2 * MINUTE,
            probing_min_denials: 10,
            stuffing_window: MINUTE,
            stuffing_min_failures: 10,
            max_tracked_sources: 65_536,
            max_connections_per_agent: 64,
            max_tokens_per_agent: 16,
        }
    }
}

/// Converts a duration to whole milliseconds, saturating at `i64::MAX`.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
