//! A bounded cache of Cedar outcomes, consulted by `Policy::authorize` after
//! the network check, so a repeated request skips building and evaluating
//! the Cedar request.
//!
//! Cedar's decision is a pure function of the agent's roles (each the
//! principal of its own rules' evaluation, fixed for one compiled policy),
//! the connection, the method, the path depth and the path segments that
//! some policy reads ([`ContextShape`]). The key contains the agent's name, which
//! fixes its roles, and the rest of those inputs, so two requests with the
//! same key get the same Cedar outcome. The cache stores that
//! outcome rather than a [`crate::Decision`], because some reasons quote
//! the full path, which can differ between requests with the same key.
//!
//! The cache lives inside `Policy`, which a configuration reload replaces
//! as a whole, so no entry outlives the policies it was computed from.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use cedar_policy::PolicyId;

use crate::authorize::AccessRequest;
use crate::cedar_text::ContextShape;

/// Maximum number of cached outcomes of one compiled policy.
///
/// 8,192 entries cover 8 distinct requests (connection, method and the
/// path within the context shape) for each of 1,000 agents. No key is
/// longer than [`MAX_KEY_BYTES`], so a full cache takes at most about
/// 9 MiB, an estimate of 1 KiB of key plus about 64 bytes of outcome and
/// table overhead per entry. An agent that sends unique paths only evicts
/// entries and never grows the cache.
pub(crate) const MAX_ENTRIES: usize = 8_192;

/// Number of independently locked parts of the cache, so that requests on
/// several worker threads rarely wait for the same lock.
const SHARDS: usize = 16;

/// Maximum number of entries of one shard. A full shard is cleared before
/// the next insert, which is simpler and more predictable than tracking
/// recency, and costs only a few misses on a busy key.
const SHARD_ENTRIES: usize = MAX_ENTRIES / SHARDS;

/// Maximum length of an encoded key. Requests with a longer key, such as
/// ones with very long path segments, are evaluated every time, so that
/// their keys cannot inflate the memory the cache takes.
pub(crate) const MAX_KEY_BYTES: usize = 1_024;

/// The result of Cedar's evaluation of a request, without the parts of the
/// request that reasons quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Allowed by the permit at this position of `Policy::compiled`, the
    /// first deciding policy in reporting order.
    Allowed(usize),
    /// Denied by the forbid at this position of `Policy::compiled`, the
    /// first deciding policy in reporting order.
    Forbidden(usize),
    /// Denied because the named policy raised an evaluation error.
    EvaluationFailed(PolicyId),
    /// Denied because Cedar allowed without a permit that this policy
    /// compiled.
    AllowedWithoutPermit,
    /// Denied because no policy decided.
    NoRule,
}

/// An encoded cache key and the shard it belongs to.
pub(crate) struct CacheKey {
    bytes: Vec<u8>,
    shard: usize,
}

/// Cached outcomes by encoded key, behind one lock.
type Shard = Mutex<HashMap<Box<[u8]>, Outcome>>;

/// Cached outcomes by key, split into [`SHARDS`] maps of at most
/// [`SHARD_ENTRIES`] entries each.
pub(crate) struct DecisionCache {
    shards: Box<[Shard]>,
    /// Picks the shard of a key. Randomly seeded like the maps themselves,
    /// so that a client cannot choose paths that all land in one shard.
    shard_hasher: RandomState,
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_hasher: RandomState::new(),
        }
    }
}

impl DecisionCache {
    /// Encodes the key of `request` for a policy whose contexts have
    /// `shape`, or returns `None` when the key would be longer than
    /// [`MAX_KEY_BYTES`].
    pub(crate) fn key(&self, request: &AccessRequest<'_>, shape: ContextShape) -> Option<CacheKey> {
        let bytes = encode_key(request, shape)?;
        let shard = self.shard_hasher.hash_one(&bytes) as usize % SHARDS;
        Some(CacheKey { bytes, shard })
    }

    /// Returns the cached outcome for `key`, if there is one.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Outcome> {
        let shard = self.shards[key.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.get(key.bytes.as_slice()).cloned()
    }

    /// Stores `outcome` for `key`, first clearing the key's shard when it
    /// is full.
    pub(crate) fn insert(&self, key: CacheKey, outcome: Outcome) {
        // A thread that panicked while holding the lock cannot have left the
        // map half-updated, because every change below is a single call.
        let mut shard = self.shards[key.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= SHARD_ENTRIES && !shard.contains_key(key.bytes.as_slice()) {
            shard.clear();
        }
        shard.insert(key.bytes.into_boxed_slice(), outcome);
    }

    /// Removes every cached outcome.
    #[cfg(test)]
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            shard.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    /// Returns the number of cached outcomes.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// Encodes the agent, the connection, the method, the path depth and the
/// segments that `shape` covers into bytes.
///
/// The depth comes first as 8 bytes. Each text field follows with its
/// length as 4 bytes, so a field boundary can never be read elsewhere.
/// The depth and `shape` fix how many segment fields follow, so two
/// different requests always have different keys.
fn encode_key(request: &AccessRequest<'_>, shape: ContextShape) -> Option<Vec<u8>> {
    let path = request.path;
    let depth = path.depth();
    let fields = || {
        let from_start = path.segments().take(depth.min(shape.from_start));
        let from_end = path.segments().rev().take(depth.min(shape.from_end));
        [request.agent, request.connection, request.method]
            .into_iter()
            .chain(from_start)
            .chain(from_end)
    };
    let length = fields().try_fold(8usize, |total, field| total.checked_add(4 + field.len()))?;
    if length > MAX_KEY_BYTES {
        return None;
    }
    let mut bytes = Vec::with_capacity(length);
    bytes.extend_from_slice(&(depth as u64).to_le_bytes());
    for field in fields() {
        // Every field is shorter than MAX_KEY_BYTES, so its length fits.
        let field_length = u32::try_from(field.len()).ok()?;
        bytes.extend_from_slice(&field_length.to_le_bytes());
        bytes.extend_from_slice(field.as_bytes());
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::atomic::Ordering;

    use castellan_model::NormalizedPath;

    use super::*;
    use crate::reference::{compile, reference_authorize};
    use crate::Policy;

    const SHAPE: ContextShape = ContextShape {
        from_start: 2,
        from_end: 1,
    };

    fn key_of(agent: &str, connection: &str, method: &str, path: &str) -> Option<Vec<u8>> {
        let path = NormalizedPath::parse(path).expect("test path is valid");
        let request = AccessRequest {
            agent,
            connection,
            method,
            path: &path,
            source: IpAddr::from([127, 0, 0, 1]),
        };
        encode_key(&request, SHAPE)
    }

    #[test]
    fn key_ignores_segments_outside_shape() {
        let first = key_of("bot", "blog", "GET", "/a/b/c/d");
        let second = key_of("bot", "blog", "GET", "/a/b/x/d");
        assert!(first.is_some());
        assert_eq!(first, second);
    }

    #[test]
    fn key_separates_every_input() {
        let base = key_of("bot", "blog", "GET", "/a/b/c/d");
        let others = [
            key_of("bot2", "blog", "GET", "/a/b/c/d"),
            key_of("bot", "crm", "GET", "/a/b/c/d"),
            key_of("bot", "blog", "get", "/a/b/c/d"),
            key_of("bot", "blog", "GET", "/a/b/c/d/e"),
            key_of("bot", "blog", "GET", "/a/x/c/d"),
            key_of("bot", "blog", "GET", "/a/b/c/x"),
            key_of("bot", "blog", "GET", "/a/b/c/d/"),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn key_fields_cannot_shift() {
        // Without length prefixes these would concatenate to the same bytes.
        assert_ne!(
            key_of("ab", "c", "GET", "/x"),
            key_of("a", "bc", "GET", "/x")
        );
        assert_ne!(
            key_of("bot", "blog", "GET", "/ab/c"),
            key_of("bot", "blog", "GET", "/a/bc")
        );
    }

    #[test]
    fn long_key_not_encoded() {
        let long = format!("/a/{}", "x".repeat(MAX_KEY_BYTES));
        assert_eq!(key_of("bot", "blog", "GET", &long), None);
        // The last segment counts twice, as `s1` and as `r0`.
        let fitting = format!("/a/{}", "x".repeat(MAX_KEY_BYTES / 4));
        assert!(key_of("bot", "blog", "GET", &fitting).is_some());
    }

    fn evaluations(policy: &Policy) -> usize {
        policy.evaluations.load(Ordering::Relaxed)
    }

    fn request<'a>(agent: &'a str, path: &'a NormalizedPath, source: [u8; 4]) -> AccessRequest<'a> {
        AccessRequest {
            agent,
            connection: "blog",
            method: "GET",
            path,
            source: IpAddr::from(source),
        }
    }

    #[test]
    fn cache_hit_skips_cedar() {
        let policy = compile(&["10.0.0.0/8"]);
        // Neither path is allowed, so the reason quotes each full path.
        // They differ only in the fourth of five segments, which no
        // policy reads.
        let first = NormalizedPath::parse("/drafts/x/y/a/b").expect("valid path");
        let second = NormalizedPath::parse("/drafts/x/y/c/b").expect("valid path");
        let first_expected =
            reference_authorize(&policy, &request("anywhere", &first, [127, 0, 0, 1]));
        let second_expected =
            reference_authorize(&policy, &request("anywhere", &second, [127, 0, 0, 1]));
        assert_ne!(first_expected.reason, second_expected.reason);

        let before = evaluations(&policy);
        let decided = policy.authorize(&request("anywhere", &first, [127, 0, 0, 1]));
        assert_eq!(decided, first_expected);
        assert_eq!(evaluations(&policy), before + 1, "a miss evaluates once");
        assert_eq!(policy.decisions.len(), 1);

        let repeated = policy.authorize(&request("anywhere", &first, [127, 0, 0, 1]));
        assert_eq!(repeated, first_expected);
        let same_key = policy.authorize(&request("anywhere", &second, [127, 0, 0, 1]));
        assert_eq!(same_key, second_expected);
        assert_eq!(evaluations(&policy), before + 1, "hits do not evaluate");

        let other = NormalizedPath::parse("/drafts/z/y/a/b").expect("valid path");
        policy.authorize(&request("anywhere", &other, [127, 0, 0, 1]));
        assert_eq!(evaluations(&policy), before + 2, "a new key evaluates");
    }

    #[test]
    fn network_check_precedes_cache() {
        let policy = compile(&["10.0.0.0/8"]);
        let path = NormalizedPath::parse("/drafts/x").expect("valid path");
        let inside = policy.authorize(&request("office", &path, [10, 1, 2, 3]));
        assert!(inside.allowed, "{}", inside.reason);

        let outside = policy.authorize(&request("office", &path, [11, 0, 0, 1]));
        assert!(!outside.allowed);
        assert_eq!(outside.rule.as_deref(), Some("agents.office.networks"));
    }

    #[test]
    fn cache_stays_within_bound() {
        let policy = compile(&["10.0.0.0/8"]);
        let requests = 2 * MAX_ENTRIES + 100;
        let mut allowed = 0;
        for i in 0..requests {
            // Allowed, forbidden and undecided requests, each with a path
            // segment that the policies read, so every key is new.
            let raw = match i % 3 {
                0 => format!("/drafts/{i}"),
                1 => format!("/posts/{i}/admin"),
                _ => format!("/contacts/{i}"),
            };
            let path = NormalizedPath::parse(&raw).expect("valid path");
            let request = request("anywhere", &path, [127, 0, 0, 1]);
            let expected = reference_authorize(&policy, &request);
            let before = evaluations(&policy);
            let decided = policy.authorize(&request);
            assert_eq!(decided, expected, "{raw}");
            assert_eq!(evaluations(&policy), before + 1, "{raw} is a new key");
            let entries = policy.decisions.len();
            assert!(entries <= MAX_ENTRIES, "{entries} entries after {raw}");
            allowed += usize::from(decided.allowed);
        }
        assert_eq!(allowed, requests.div_ceil(3));
        assert!(policy.decisions.len() > 0, "a full cache still stores");

        // The latest outcome is kept and still decides correctly.
        let last = format!("/drafts/{}", requests - requests % 3);
        let path = NormalizedPath::parse(&last).expect("valid path");
        let request = request("anywhere", &path, [127, 0, 0, 1]);
        let before = evaluations(&policy);
        assert!(policy.authorize(&request).allowed);
        assert_eq!(evaluations(&policy), before, "{last} was cached last");
    }

    #[test]
    fn long_key_evaluated_every_time() {
        let policy = compile(&["10.0.0.0/8"]);
        let raw = format!("/drafts/{}", "x".repeat(MAX_KEY_BYTES));
        let path = NormalizedPath::parse(&raw).expect("valid path");
        let request = request("anywhere", &path, [127, 0, 0, 1]);
        let expected = reference_authorize(&policy, &request);
        let before = evaluations(&policy);
        for _ in 0..3 {
            assert_eq!(policy.authorize(&request), expected);
        }
        assert_eq!(evaluations(&policy), before + 3);
        assert_eq!(policy.decisions.len(), 0);
    }
}
