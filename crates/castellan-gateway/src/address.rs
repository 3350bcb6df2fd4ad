//! Classification of upstream IP addresses, so that a connection cannot be
//! pointed at loopback, private networks or cloud metadata services unless
//! it sets `allow_private = true`.
//!
//! IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4,
//! Teredo) are classified by the IPv4 address they carry, because a dual-stack
//! host or a translator delivers them there.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of network an upstream address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable: always allowed.
    Public,
    /// A cloud instance metadata or platform service address.
    Metadata,
    Loopback,
    /// RFC 1918 private networks and deprecated IPv6 site-local addresses.
    Private,
    /// RFC 6598 carrier-grade NAT space, also used by tailnets.
    SharedAddressSpace,
    LinkLocal,
    /// IPv6 unique local addresses (fc00::/7).
    UniqueLocal,
    /// `0.0.0.0/8` and `::`, which many stacks dial as the local host.
    Unspecified,
    Multicast,
    Broadcast,
    /// Ranges reserved for documentation examples.
    Documentation,
    /// Ranges reserved for benchmarking networks.
    Benchmarking,
    /// Other special-purpose ranges that no upstream API lives in.
    Reserved,
}

impl AddressClass {
    /// Tells whether the class is rejected unless the connection sets
    /// `allow_private = true`.
    pub fn is_internal(self) -> bool {
        self != AddressClass::Public
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            AddressClass::Public => "a public address",
            AddressClass::Metadata => "a cloud metadata address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::SharedAddressSpace => "a carrier-grade NAT address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::UniqueLocal => "a unique local address",
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Documentation => "a documentation address",
            AddressClass::Benchmarking => "a benchmarking address",
            AddressClass::Reserved => "a reserved address",
        };
        f.write_str(text)
    }
}

/// Metadata and platform service addresses of the major clouds: AWS, GCP
/// and Azure (169.254.169.254), AWS ECS task metadata (169.254.170.2),
/// Alibaba (100.100.100.200), Oracle (192.0.0.192) and Azure WireServer
/// (168.63.129.16, which is outside every private range).
const METADATA_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
    Ipv4Addr::new(168, 63, 129, 16),
];

/// The AWS instance metadata service over IPv6.
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// IPv4 special-purpose ranges (IANA registry), checked in order after the
/// metadata addresses.
const V4_RANGES: [(Ipv4Addr, u8, AddressClass); 16] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, AddressClass::Unspecified),
    (Ipv4Addr::new(10, 0, 0, 0), 8, AddressClass::Private),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        AddressClass::SharedAddressSpace,
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, AddressClass::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, AddressClass::LinkLocal),
    (Ipv4Addr::new(172, 16, 0, 0), 12, AddressClass::Private),
    (Ipv4Addr::new(192, 0, 0, 0), 24, AddressClass::Reserved),
    (Ipv4Addr::new(192, 0, 2, 0), 24, AddressClass::Documentation),
    (Ipv4Addr::new(192, 88, 99, 0), 24, AddressClass::Reserved),
    (Ipv4Addr::new(192, 168, 0, 0), 16, AddressClass::Private),
    (Ipv4Addr::new(198, 18, 0, 0), 15, AddressClass::Benchmarking),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        AddressClass::Documentation,
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        AddressClass::Documentation,
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, AddressClass::Multicast),
    (Ipv4Addr::BROADCAST, 32, AddressClass::Broadcast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, AddressClass::Reserved),
];

/// IPv6 special-purpose ranges that carry no IPv4 address, checked after
/// the forms that do.
const V6_RANGES: [(Ipv6Addr, u8, AddressClass); 11] = [
    (
        Ipv6Addr::new(0x0100, 0, 0, 0, 0, 0, 0, 0),
        64,
        AddressClass::Reserved,
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        AddressClass::Private,
    ),
    (
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0),
        48,
        AddressClass::Benchmarking,
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        AddressClass::Documentation,
    ),
    (
        Ipv6Addr::new(0x2001, 0x10, 0, 0, 0, 0, 0, 0),
        28,
        AddressClass::Reserved,
    ),
    (
        Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0),
        28,
        AddressClass::Reserved,
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        AddressClass::Documentation,
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        AddressClass::UniqueLocal,
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddressClass::LinkLocal,
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddressClass::Private,
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        AddressClass::Multicast,
    ),
];

/// Classifies `address`, looking through IPv6 forms that embed IPv4.
pub fn classify(address: IpAddr) -> AddressClass {
    match address {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(address: Ipv4Addr) -> AddressClass {
    if METADATA_V4.contains(&address) {
        return AddressClass::Metadata;
    }
    let bits = u32::from(address);
    V4_RANGES
        .iter()
        .find(|(network, prefix, _)| in_prefix(bits, u32::from(*network), *prefix))
        .map_or(AddressClass::Public, |(_, _, class)| *class)
}

fn classify_v6(address: Ipv6Addr) -> AddressClass {
    if address.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if address.is_loopback() {
        return AddressClass::Loopback;
    }
    if METADATA_V6.contains(&address) {
        return AddressClass::Metadata;
    }
    if let Some(embedded) = embedded_v4(address) {
        return classify_v4(embedded);
    }
    let bits = u128::from(address);
    V6_RANGES
        .iter()
        .find(|(network, prefix, _)| in_prefix_v6(bits, u128::from(*network), *prefix))
        .map_or(AddressClass::Public, |(_, _, class)| *class)
}

/// Returns the IPv4 address that an IPv6 address delivers to, if any. The
/// forms that carry one are IPv4-mapped `::ffff:0:0/96`, IPv4-translated
/// `::ffff:0:0:0/96` (RFC 2765), IPv4-compatible `::/96`, NAT64
/// `64:ff9b::/96` (RFC 6052), 6to4 `2002::/16` (RFC 3056) and the Teredo
/// client address in `2001::/32` (RFC 4380, stored inverted).
fn embedded_v4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(address);
    let low = Ipv4Addr::from(bits as u32);
    let segments = address.segments();
    let low_prefixes = [0xffff << 32, 0xffff << 48, 0, 0x0064_ff9b << 96];
    if low_prefixes
        .iter()
        .any(|network| in_prefix_v6(bits, *network, 96))
    {
        return Some(low);
    }
    if segments[0] == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    if segments[0] == 0x2001 && segments[1] == 0 {
        return Some(Ipv4Addr::from(!(bits as u32)));
    }
    None
}

fn in_prefix(address: u32, network: u32, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    address & mask == network & mask
}

fn in_prefix_v6(address: u128, network: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    address & mask == network & mask
}

#[cfg(test)]
mod tests;
