//! Bursts of failures in a short window: denied requests per agent for
//! `probing`, failed authentications per source address for
//! `credential_stuffing`.

use std::collections::HashMap;
use std::mem;
use std::net::IpAddr;

/// A sliding-window counter of fixed size: the count of the current
/// aligned window plus the previous window's count weighted by how much of
/// it still overlaps the sliding window. This is the usual approximation
/// of rate limiters; it needs no per-event storage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlidingCounter {
    window: i64,
    current: u32,
    previous: u32,
}

impl Default for SlidingCounter {
    fn default() -> Self {
        SlidingCounter {
            window: i64::MIN,
            current: 0,
            previous: 0,
        }
    }
}

impl SlidingCounter {
    /// Counts one event at `time_ms` and returns the estimated number of
    /// events in the `window_ms` milliseconds ending at it.
    pub(crate) fn add(&mut self, time_ms: i64, window_ms: i64) -> f64 {
        let window_ms = window_ms.max(1);
        let window = time_ms.div_euclid(window_ms);
        if window > self.window {
            self.previous = if window == self.window.saturating_add(1) {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.window = window;
        }
        // A late event for an earlier window counts in the current one.
        self.current = self.current.saturating_add(1);
        let elapsed = time_ms.rem_euclid(window_ms) as f64 / window_ms as f64;
        let overlap = if window == self.window {
            1.0 - elapsed
        } else {
            0.0
        };
        f64::from(self.previous) * overlap + f64::from(self.current)
    }
}

/// Failed-authentication counters per source address, bounded: two
/// generations of at most `capacity` entries each. When the current
/// generation fills, the previous one is dropped and the current one takes
/// its place, so sources seen recently survive and memory stays bounded
/// even when a spray comes from many addresses.
pub(crate) struct SourceTable {
    current: HashMap<IpAddr, SlidingCounter>,
    previous: HashMap<IpAddr, SlidingCounter>,
    capacity: usize,
}

impl SourceTable {
    pub(crate) fn new(capacity: usize) -> Self {
        SourceTable {
            current: HashMap::new(),
            previous: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Counts one failure from `source` and returns the estimated number in
    /// the window ending at `time_ms`.
    pub(crate) fn add(&mut self, source: IpAddr, time_ms: i64, window_ms: i64) -> f64 {
        if let Some(counter) = self.current.get_mut(&source) {
            return counter.add(time_ms, window_ms);
        }
        let mut counter = self.previous.remove(&source).unwrap_or_default();
        let estimate = counter.add(time_ms, window_ms);
        if self.current.len() >= self.capacity {
            self.previous = mem::take(&mut self.current);
        }
        self.current.insert(source, counter);
        estimate
    }

    pub(crate) fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_counts_within_window() {
        let mut counter = SlidingCounter::default();
        let mut estimate = 0.0;
        for second in 0..10 {
            estimate = counter.add(second * 1_000, 60_000);
        }
        assert_eq!(estimate, 10.0);
    }

    #[test]
    fn counter_slides_across_windows() {
        let mut counter = SlidingCounter::default();
        for second in 50..60 {
            counter.add(second * 1_000, 60_000);
        }
        // 30 s into the next window, half of the previous window overlaps.
        let estimate = counter.add(90_000, 60_000);
        assert!((estimate - 6.0).abs() < 1e-9, "{estimate}");
        // Two windows later nothing of the burst is left.
        let estimate = counter.add(200_000, 60_000);
        assert_eq!(estimate, 1.0);
    }

    #[test]
    fn counter_survives_extreme_times() {
        let mut counter = SlidingCounter::default();
        counter.add(i64::MAX, 60_000);
        counter.add(i64::MIN, 60_000);
        counter.add(0, 0);
        counter.add(-5, i64::MIN);
    }

    #[test]
    fn table_stays_bounded() {
        let mut table = SourceTable::new(4);
        for host in 0..100u8 {
            table.add(IpAddr::from([192, 0, 2, host]), 0, 60_000);
        }
        assert!(table.len() <= 8, "{}", table.len());
    }

    #[test]
    fn table_keeps_recent_source_counts() {
        let mut table = SourceTable::new(2);
        let attacker = IpAddr::from([198, 51, 100, 1]);
        table.add(attacker, 0, 60_000);
        table.add(IpAddr::from([192, 0, 2, 1]), 1, 60_000);
        table.add(IpAddr::from([192, 0, 2, 2]), 2, 60_000);
        // The attacker's counter moved to the previous generation, not away.
        assert_eq!(table.add(attacker, 3, 60_000), 2.0);
    }
}
