//! The individual detectors. Each module keeps the state of one concern and
//! reports what it detects as a [`Finding`]. The engine turns findings into
//! signals after its repeat limit.

pub(crate) mod agent;
mod baseline;
mod bursts;
mod endpoint;
mod finding;
mod hours;
mod network;
mod travel;

pub(crate) use bursts::SourceTable;
pub(crate) use finding::{Direction, Finding};

use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for keys that are already well-mixed `u64` values (path template
/// hashes, network prefixes). Agents cannot choose these freely enough to
/// matter: templates and networks are capped per agent.
#[derive(Default)]
pub(crate) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        // Multiplication by an odd constant (the 64-bit golden ratio) spreads
        // the low bits upward. The xor folds the high bits back down, because
        // the table picks buckets from the low bits.
        let mixed = (self.0 ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = mixed ^ (mixed >> 32);
    }
}

pub(crate) type BuildU64Hasher = BuildHasherDefault<U64Hasher>;
