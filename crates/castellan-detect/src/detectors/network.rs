//! Grouping of source addresses into networks, for `new_network`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::BuildU64Hasher;

/// The networks one agent has called from, keyed by prefix.
pub(crate) struct KnownNetworks {
    prefixes: HashSet<u64, BuildU64Hasher>,
}

/// Outcome of checking a source against the known networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetworkCheck {
    Known,
    /// First call from this network; it is now remembered.
    New,
    /// First call from this network, but the table is full.
    NewUnstored,
}

impl KnownNetworks {
    pub(crate) fn new() -> Self {
        KnownNetworks {
            prefixes: HashSet::default(),
        }
    }

    /// Looks up the network of `key` and remembers it if there is room.
    pub(crate) fn check_and_insert(&mut self, key: u64, capacity: usize) -> NetworkCheck {
        if self.prefixes.contains(&key) {
            NetworkCheck::Known
        } else if self.prefixes.len() < capacity {
            self.prefixes.insert(key);
            NetworkCheck::New
        } else {
            NetworkCheck::NewUnstored
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.prefixes.len()
    }
}

/// Tag bit that keeps IPv4 keys apart from IPv6 keys, whose prefixes use at
/// most the low 64 bits minus this one.
const V4_TAG: u64 = 1 << 63;

/// Returns the key of the network containing `address`: the first
/// `prefix_v4` bits of an IPv4 address or the first `prefix_v6` bits of an
/// IPv6 address. Prefixes are clamped to 32 and 63 bits.
pub(crate) fn network_key(address: IpAddr, prefix_v4: u8, prefix_v6: u8) -> u64 {
    match address {
        IpAddr::V4(v4) => {
            let prefix = u32::from(prefix_v4.min(32));
            let bits = u64::from(u32::from(v4));
            V4_TAG | (bits >> (32 - prefix))
        }
        IpAddr::V6(v6) => {
            let prefix = u32::from(prefix_v6.min(63));
            let high = (u128::from(v6) >> 64) as u64;
            if prefix == 0 {
                0
            } else {
                high >> (64 - prefix)
            }
        }
    }
}

/// Formats the network containing `address` in CIDR notation.
pub(crate) fn network_text(address: IpAddr, prefix_v4: u8, prefix_v6: u8) -> String {
    match address {
        IpAddr::V4(v4) => {
            let prefix = prefix_v4.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let prefix = prefix_v6.min(63);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address parses")
    }

    #[test]
    fn same_slash_24_shares_key() {
        let a = network_key(ip("198.51.100.7"), 24, 48);
        let b = network_key(ip("198.51.100.250"), 24, 48);
        let c = network_key(ip("198.51.101.7"), 24, 48);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn same_slash_48_shares_key() {
        let a = network_key(ip("2001:db8:1:1::1"), 24, 48);
        let b = network_key(ip("2001:db8:1:ffff::9"), 24, 48);
        let c = network_key(ip("2001:db8:2::1"), 24, 48);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ipv4_and_ipv6_keys_differ() {
        let v4 = network_key(ip("0.0.0.1"), 24, 48);
        let v6 = network_key(ip("::1"), 24, 48);
        assert_ne!(v4, v6);
    }

    #[test]
    fn extreme_prefixes_do_not_panic() {
        for prefix in [0, 1, 32, 63, 64, 128, 255] {
            network_key(ip("203.0.113.9"), prefix, prefix);
            network_key(ip("2001:db8::1"), prefix, prefix);
            network_text(ip("203.0.113.9"), prefix, prefix);
            network_text(ip("2001:db8::1"), prefix, prefix);
        }
    }

    #[test]
    fn network_text_is_cidr() {
        assert_eq!(network_text(ip("198.51.100.7"), 24, 48), "198.51.100.0/24");
        assert_eq!(
            network_text(ip("2001:db8:1:2::3"), 24, 48),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn full_table_reports_unstored() {
        let mut networks = KnownNetworks::new();
        assert_eq!(networks.check_and_insert(1, 1), NetworkCheck::New);
        assert_eq!(networks.check_and_insert(1, 1), NetworkCheck::Known);
        assert_eq!(networks.check_and_insert(2, 1), NetworkCheck::NewUnstored);
        assert_eq!(networks.len(), 1);
    }
}
