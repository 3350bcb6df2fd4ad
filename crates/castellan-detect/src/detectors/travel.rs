//! The last known position of each agent token, for `impossible_travel`.

use std::net::IpAddr;

use super::Finding;
use crate::geo::{GeoPoint, Locate};
use crate::settings::DetectorSettings;

const HOUR_MS: f64 = 3_600_000.0;

/// The last located call of one agent token.
struct TokenTrail {
    /// Token id, or empty for calls that carried none.
    token: Box<str>,
    last_used_ms: i64,
    /// The address of the last call, located or not.
    source: Option<IpAddr>,
    /// The last located call.
    position: Option<Position>,
}

#[derive(Clone, Copy)]
struct Position {
    point: GeoPoint,
    source: IpAddr,
    /// The last call from `source`, which is the last time the token was
    /// known to be at `point`.
    seen_ms: i64,
}

/// The trails of one agent's tokens, at most `max_tokens_per_agent`.
#[derive(Default)]
pub(crate) struct TokenTrails {
    trails: Vec<TokenTrail>,
}

impl TokenTrails {
    /// Records a call with `token` from `source` and reports a jump that
    /// would need a speed above the limit.
    pub(crate) fn observe(
        &mut self,
        token: &str,
        source: IpAddr,
        time_ms: i64,
        locator: &dyn Locate,
        settings: &DetectorSettings,
        findings: &mut Vec<Finding>,
    ) {
        let index = match self.trails.iter().position(|trail| &*trail.token == token) {
            Some(index) => index,
            None => self.add_trail(token, settings.max_tokens_per_agent),
        };
        let trail = &mut self.trails[index];
        trail.last_used_ms = time_ms;
        if trail.source == Some(source) {
            // Same address as before: when it is the located one, the token
            // is still there now, which shortens the time for the next jump.
            if let Some(position) = &mut trail.position {
                if position.source == source {
                    position.seen_ms = time_ms;
                }
            }
            return;
        }
        trail.source = Some(source);
        // An address the locator cannot place gives no position to compare.
        let Some(point) = locator.locate(source) else {
            return;
        };
        if let Some(previous) = trail.position {
            let distance_km = previous.point.distance_km(&point);
            let elapsed_ms = time_ms.abs_diff(previous.seen_ms).max(1);
            let speed_kmh = distance_km / (elapsed_ms as f64 / HOUR_MS);
            if distance_km >= settings.min_travel_distance_km
                && speed_kmh > settings.max_travel_speed_kmh
            {
                findings.push(Finding::ImpossibleTravel {
                    distance_km,
                    elapsed_ms,
                    speed_kmh,
                });
            }
        }
        trail.position = Some(Position {
            point,
            source,
            seen_ms: time_ms,
        });
    }

    /// Adds a trail for a new token, replacing the least recently used one
    /// when the agent already has `capacity` trails.
    fn add_trail(&mut self, token: &str, capacity: usize) -> usize {
        let trail = TokenTrail {
            token: token.into(),
            last_used_ms: i64::MIN,
            source: None,
            position: None,
        };
        if self.trails.len() < capacity.max(1) {
            self.trails.push(trail);
            return self.trails.len() - 1;
        }
        let oldest = self
            .trails
            .iter()
            .enumerate()
            .min_by_key(|(_, trail)| trail.last_used_ms)
            .map_or(0, |(index, _)| index);
        self.trails[oldest] = trail;
        oldest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places 198.51.100.x in Paris, 203.0.113.x in Tokyo, 192.0.2.x in
    /// Lyon (about 390 km from Paris) and nothing else.
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
                [192, 0, 2] => Some(GeoPoint {
                    latitude: 45.7640,
                    longitude: 4.8357,
                }),
                _ => None,
            }
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address parses")
    }

    const MINUTE: i64 = 60_000;

    fn run(calls: &[(&str, &str, i64)]) -> Vec<Finding> {
        let settings = DetectorSettings::default();
        let mut trails = TokenTrails::default();
        let mut findings = Vec::new();
        for (token, source, time) in calls {
            trails.observe(token, ip(source), *time, &Table, &settings, &mut findings);
        }
        findings
    }

    #[test]
    fn paris_to_tokyo_in_an_hour_fires() {
        let findings = run(&[
            ("t1", "198.51.100.1", 0),
            ("t1", "203.0.113.1", 60 * MINUTE),
        ]);
        assert!(
            matches!(findings.as_slice(), [Finding::ImpossibleTravel { distance_km, .. }] if *distance_km > 9_000.0),
            "{findings:?}"
        );
    }

    #[test]
    fn paris_to_tokyo_in_a_day_is_quiet() {
        let findings = run(&[
            ("t1", "198.51.100.1", 0),
            ("t1", "203.0.113.1", 24 * 60 * MINUTE),
        ]);
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn nearby_city_is_quiet() {
        let findings = run(&[("t1", "198.51.100.1", 0), ("t1", "192.0.2.1", MINUTE)]);
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn different_tokens_are_separate() {
        let findings = run(&[("t1", "198.51.100.1", 0), ("t2", "203.0.113.1", MINUTE)]);
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn unplaced_address_is_skipped() {
        let findings = run(&[
            ("t1", "198.51.100.1", 0),
            ("t1", "10.0.0.1", MINUTE),
            ("t1", "198.51.100.2", 2 * MINUTE),
        ]);
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn staying_put_refreshes_time() {
        // Seen in Paris until 23 h, then Tokyo at 24 h: one hour apart.
        let findings = run(&[
            ("t1", "198.51.100.1", 0),
            ("t1", "198.51.100.1", 23 * 60 * MINUTE),
            ("t1", "203.0.113.1", 24 * 60 * MINUTE),
        ]);
        assert_eq!(findings.len(), 1, "{findings:?}");
    }

    #[test]
    fn token_table_is_bounded() {
        let settings = DetectorSettings::default();
        let mut trails = TokenTrails::default();
        let mut findings = Vec::new();
        for index in 0..100 {
            let token = format!("t{index}");
            trails.observe(
                &token,
                ip("198.51.100.1"),
                index,
                &Table,
                &settings,
                &mut findings,
            );
        }
        assert_eq!(trails.trails.len(), settings.max_tokens_per_agent);
    }
}
