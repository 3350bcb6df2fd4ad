//! Flood limits: failed authentications per source address, requests per
//! agent and minute, and requests in flight per agent.
//!
//! The state outlives configuration reloads, so a reload cannot reset a
//! limit that an attacker is pressing against.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Above this many tracked keys, full buckets are dropped first (a full
/// bucket behaves exactly like a missing one), then arbitrary ones until
/// a tenth of the room is free, so the scan runs rarely.
const MAX_TRACKED_KEYS: usize = 100_000;

/// Token buckets keyed by address or agent, each refilling `capacity`
/// tokens per minute.
struct Buckets<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, capacity: u32, now: Instant) {
        let rate = f64::from(capacity) / 60.0;
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(capacity));
        self.updated = now;
    }

    /// Time until one whole token is available.
    fn wait(&self, capacity: u32) -> Duration {
        let rate = f64::from(capacity) / 60.0;
        Duration::from_secs_f64(((1.0 - self.tokens) / rate).max(0.0))
    }
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    fn new() -> Self {
        Buckets {
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or returns how long to wait for one.
    fn take(&self, key: &K, capacity: u32, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(key) {
            evict_full(&mut buckets, capacity, now);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: f64::from(capacity),
            updated: now,
        });
        bucket.refill(capacity, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(bucket.wait(capacity))
        }
    }

    /// Returns how long `key` must wait for a token, without taking one.
    fn empty_for(&self, key: &K, capacity: u32, now: Instant) -> Option<Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.get_mut(key)?;
        bucket.refill(capacity, now);
        (bucket.tokens < 1.0).then(|| bucket.wait(capacity))
    }
}

fn evict_full<K: Eq + Hash>(buckets: &mut HashMap<K, Bucket>, capacity: u32, now: Instant) {
    buckets.retain(|_, bucket| {
        bucket.refill(capacity, now);
        bucket.tokens < f64::from(capacity)
    });
    // NOTE: past this point an attacker with more than 90,000 addresses can
    // push out the state of other addresses. Such an attacker already has
    // enough fresh addresses to avoid the limit, so little is lost.
    let target = MAX_TRACKED_KEYS / 10 * 9;
    if buckets.len() > target {
        let mut excess = buckets.len() - target;
        buckets.retain(|_, _| {
            if excess == 0 {
                return true;
            }
            excess -= 1;
            false
        });
    }
}

/// The gateway's flood limits.
pub struct Limits {
    auth_failures: Buckets<IpAddr>,
    agent_requests: Buckets<String>,
    in_flight: Mutex<HashMap<String, Arc<AtomicU32>>>,
}

/// One request counted against its agent's concurrency limit until dropped.
pub struct InFlight {
    counter: Arc<AtomicU32>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            auth_failures: Buckets::new(),
            agent_requests: Buckets::new(),
            in_flight: Mutex::new(HashMap::new()),
        }
    }
}

impl Limits {
    /// Returns how long `source` must wait when it has used up its failed
    /// authentications.
    pub fn auth_blocked(&self, source: IpAddr, per_minute: u32) -> Option<Duration> {
        self.auth_failures
            .empty_for(&source, per_minute, Instant::now())
    }

    /// Counts a failed authentication from `source`.
    pub fn auth_failed(&self, source: IpAddr, per_minute: u32) {
        let _ = self.auth_failures.take(&source, per_minute, Instant::now());
    }

    /// Counts a request of `agent`, or returns how long to wait.
    pub fn agent_request(&self, agent: &str, per_minute: Option<u32>) -> Result<(), Duration> {
        match per_minute {
            None => Ok(()),
            Some(capacity) => {
                self.agent_requests
                    .take(&agent.to_string(), capacity, Instant::now())
            }
        }
    }

    /// Counts a request of `agent` in flight, unless `max` already are.
    pub fn enter(&self, agent: &str, max: u32) -> Option<InFlight> {
        let counter = {
            let mut counters = self
                .in_flight
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(counters.entry(agent.to_string()).or_default())
        };
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current < max).then_some(current + 1)
            })
            .ok()
            .map(|_| InFlight { counter })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_then_refills() {
        let buckets = Buckets::new();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(buckets.take(&"a", 3, start).is_ok());
        }
        let wait = buckets.take(&"a", 3, start).expect_err("bucket is empty");
        assert!(wait <= Duration::from_secs(20), "{wait:?}");
        assert!(wait >= Duration::from_secs(19), "{wait:?}");
        assert!(buckets.take(&"b", 3, start).is_ok(), "keys are independent");
        let later = start + Duration::from_secs(20);
        assert!(
            buckets.take(&"a", 3, later).is_ok(),
            "one token refilled after 20 s"
        );
        assert!(buckets.take(&"a", 3, later).is_err());
    }

    #[test]
    fn auth_block_only_after_failures() {
        let limits = Limits::default();
        let source: IpAddr = "192.0.2.1".parse().expect("address");
        assert!(limits.auth_blocked(source, 2).is_none());
        limits.auth_failed(source, 2);
        assert!(limits.auth_blocked(source, 2).is_none());
        limits.auth_failed(source, 2);
        assert!(limits.auth_blocked(source, 2).is_some());
        let other: IpAddr = "192.0.2.2".parse().expect("address");
        assert!(limits.auth_blocked(other, 2).is_none());
    }

    #[test]
    fn concurrency_released_on_drop() {
        let limits = Limits::default();
        let first = limits.enter("bot", 2).expect("first slot");
        let second = limits.enter("bot", 2).expect("second slot");
        assert!(limits.enter("bot", 2).is_none(), "third exceeds the limit");
        assert!(limits.enter("other", 2).is_some(), "agents are independent");
        drop(first);
        assert!(limits.enter("bot", 2).is_some(), "a slot was released");
        drop(second);
    }

    #[test]
    fn full_buckets_evicted_at_capacity() {
        let buckets = Buckets::new();
        let start = Instant::now();
        let mut map = HashMap::new();
        map.insert(
            1,
            Bucket {
                tokens: 5.0,
                updated: start,
            },
        );
        map.insert(
            2,
            Bucket {
                tokens: 0.0,
                updated: start,
            },
        );
        evict_full(&mut map, 5, start);
        assert!(!map.contains_key(&1));
        assert!(map.contains_key(&2));
        assert!(buckets.take(&3, 5, start).is_ok());
    }
}
