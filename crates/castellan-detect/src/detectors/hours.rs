//! Hours of the week an agent is active in, for `unusual_hours`.

const HOUR_MS: i64 = 60 * 60 * 1000;
const HOURS_PER_WEEK: i64 = 7 * 24;
/// 1970-01-01 was a Thursday, which is hour 72 of a week starting Monday.
const EPOCH_HOUR_OF_WEEK: i64 = 3 * 24;

/// Returns the hour of the week (UTC) of a unix time in milliseconds:
/// 0 is Monday 00:00 to 00:59, 167 is Sunday 23:00 to 23:59.
pub(crate) fn hour_of_week(time_ms: i64) -> u8 {
    let hours = time_ms.div_euclid(HOUR_MS);
    // The remainder is in 0..168, so it fits a u8.
    (hours + EPOCH_HOUR_OF_WEEK).rem_euclid(HOURS_PER_WEEK) as u8
}

/// Formats an hour of the week as `Monday 14:00 UTC`.
pub(crate) fn hour_of_week_text(hour: u8) -> String {
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let day = DAYS[usize::from(hour / 24) % 7];
    format!("{day} {:02}:00 UTC", hour % 24)
}

/// One bit per hour of the week.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WeekHours([u64; 3]);

impl WeekHours {
    /// Marks `hour` as active and returns whether it was active before.
    pub(crate) fn mark(&mut self, hour: u8) -> bool {
        let word = usize::from(hour / 64);
        let bit = 1u64 << (hour % 64);
        let was_active = self.0[word] & bit != 0;
        self.0[word] |= bit;
        was_active
    }

    /// Returns whether the agent was active within `tolerance` hours of
    /// `hour`, wrapping around the end of the week.
    pub(crate) fn is_near_active(&self, hour: u8, tolerance: u8) -> bool {
        let tolerance = i64::from(tolerance).min(HOURS_PER_WEEK / 2);
        (-tolerance..=tolerance).any(|offset| {
            // The sum is in 0..168, so it fits a u8.
            let near = (i64::from(hour) + offset).rem_euclid(HOURS_PER_WEEK) as u8;
            self.0[usize::from(near / 64)] & (1u64 << (near % 64)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_thursday_midnight() {
        assert_eq!(hour_of_week(0), 72);
        assert_eq!(hour_of_week_text(72), "Thursday 00:00 UTC");
    }

    #[test]
    fn known_monday_is_hour_zero() {
        // 2024-01-01T00:30:00Z was a Monday.
        assert_eq!(hour_of_week(1_704_069_000_000), 0);
        // 2024-01-07T23:59:59Z was the Sunday after.
        assert_eq!(hour_of_week(1_704_671_999_000), 167);
    }

    #[test]
    fn negative_times_wrap() {
        // One hour before the epoch: Wednesday 23:00.
        assert_eq!(hour_of_week(-1), 71);
        assert!(hour_of_week(i64::MIN) < 168);
    }

    #[test]
    fn tolerance_covers_neighbours_and_wraps() {
        let mut hours = WeekHours::default();
        hours.mark(0);
        assert!(hours.is_near_active(0, 0));
        assert!(!hours.is_near_active(1, 0));
        assert!(hours.is_near_active(1, 1));
        assert!(hours.is_near_active(167, 1));
        assert!(!hours.is_near_active(2, 1));
        assert!(hours.is_near_active(100, 255));
    }

    #[test]
    fn mark_reports_previous_state() {
        let mut hours = WeekHours::default();
        assert!(!hours.mark(167));
        assert!(hours.mark(167));
        assert!(!hours.mark(0));
    }
}
