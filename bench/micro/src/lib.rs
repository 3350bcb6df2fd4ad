//! Fixtures for the microbenchmarks of Castellan's request path.
//!
//! The criterion benches (`cargo bench -p castellan-bench`) and the
//! `percentiles` binary build their inputs here, so both time the same work.
//! Each fixture mirrors what the gateway does for one request: it calls the
//! same library functions with data shaped like the `bench/run` load test.
#![forbid(unsafe_code)]

pub mod audit;
pub mod http1;
pub mod paths;
pub mod policy;
pub mod secrets;
pub mod tokens;

/// Fills `samples` by timing `operation` once per element, in nanoseconds.
/// Every sample includes the cost of the two `Instant` calls around it.
pub fn time_each<T>(samples: &mut [u64], mut operation: impl FnMut() -> T) {
    for sample in samples.iter_mut() {
        let start = std::time::Instant::now();
        std::hint::black_box(operation());
        let elapsed = start.elapsed().as_nanos();
        *sample = u64::try_from(elapsed).unwrap_or(u64::MAX);
    }
}

/// Returns the value at `quantile` (0.0 to 1.0) of `samples`, sorting them
/// first, by the nearest-rank method.
///
/// # Panics
///
/// Panics if `samples` is empty.
pub fn percentile(samples: &mut [u64], quantile: f64) -> u64 {
    assert!(!samples.is_empty(), "percentile of an empty sample set");
    samples.sort_unstable();
    let rank = (quantile * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut samples, 0.5), 50);
        assert_eq!(percentile(&mut samples, 0.99), 99);
        assert_eq!(percentile(&mut samples, 1.0), 100);
        assert_eq!(percentile(&mut samples, 0.0), 1);
    }
}
