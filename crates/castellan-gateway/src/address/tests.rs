use std::net::IpAddr;

use super::classify;
use super::AddressClass::{self, *};

fn assert_classes(cases: &[(&str, AddressClass)]) {
    for (text, expected) in cases {
        let address: IpAddr = text.parse().expect("a valid test address");
        assert_eq!(classify(address), *expected, "{text}");
    }
}

#[test]
fn ipv4_special_ranges_classified() {
    assert_classes(&[
        ("0.0.0.0", Unspecified),
        ("0.255.255.255", Unspecified),
        ("10.0.0.1", Private),
        ("10.255.255.255", Private),
        ("100.64.0.1", SharedAddressSpace),
        ("100.127.255.255", SharedAddressSpace),
        ("127.0.0.1", Loopback),
        ("127.255.255.254", Loopback),
        ("169.254.0.1", LinkLocal),
        ("169.254.255.255", LinkLocal),
        ("172.16.0.1", Private),
        ("172.31.255.255", Private),
        ("192.0.0.8", Reserved),
        ("192.0.2.1", Documentation),
        ("192.88.99.1", Reserved),
        ("192.168.0.1", Private),
        ("192.168.255.255", Private),
        ("198.18.0.1", Benchmarking),
        ("198.19.255.255", Benchmarking),
        ("198.51.100.7", Documentation),
        ("203.0.113.9", Documentation),
        ("224.0.0.1", Multicast),
        ("239.255.255.255", Multicast),
        ("240.0.0.1", Reserved),
        ("255.255.255.254", Reserved),
        ("255.255.255.255", Broadcast),
    ]);
}

#[test]
fn ipv4_range_edges_stay_public() {
    assert_classes(&[
        ("1.1.1.1", Public),
        ("8.8.8.8", Public),
        ("9.255.255.255", Public),
        ("11.0.0.0", Public),
        ("100.63.255.255", Public),
        ("100.128.0.0", Public),
        ("126.255.255.255", Public),
        ("128.0.0.0", Public),
        ("169.253.255.255", Public),
        ("169.255.0.0", Public),
        ("172.15.255.255", Public),
        ("172.32.0.0", Public),
        ("192.167.255.255", Public),
        ("192.169.0.0", Public),
        ("198.17.255.255", Public),
        ("198.20.0.0", Public),
        ("223.255.255.255", Public),
    ]);
}

#[test]
fn metadata_addresses_classified() {
    assert_classes(&[
        ("169.254.169.254", Metadata),
        ("169.254.170.2", Metadata),
        ("100.100.100.200", Metadata),
        ("192.0.0.192", Metadata),
        ("168.63.129.16", Metadata),
        ("fd00:ec2::254", Metadata),
    ]);
}

#[test]
fn ipv6_special_ranges_classified() {
    assert_classes(&[
        ("::", Unspecified),
        ("::1", Loopback),
        ("100::1", Reserved),
        ("64:ff9b:1::1", Private),
        ("2001:2::1", Benchmarking),
        ("2001:db8::1", Documentation),
        ("2001:10::1", Reserved),
        ("2001:20::1", Reserved),
        ("3fff::1", Documentation),
        ("fc00::1", UniqueLocal),
        ("fd12:3456::1", UniqueLocal),
        ("fd00:ec2::253", UniqueLocal),
        ("fe80::1", LinkLocal),
        ("febf:ffff::1", LinkLocal),
        ("fec0::1", Private),
        ("ff02::1", Multicast),
        ("2606:4700::1111", Public),
        ("2a00:1450:4001::200e", Public),
        ("fbff:ffff::1", Public),
    ]);
}

#[test]
fn embedded_ipv4_classified_as_carried() {
    assert_classes(&[
        // IPv4-mapped.
        ("::ffff:127.0.0.1", Loopback),
        ("::ffff:7f00:1", Loopback),
        ("::ffff:169.254.169.254", Metadata),
        ("::ffff:10.1.2.3", Private),
        ("::ffff:8.8.8.8", Public),
        // IPv4-translated.
        ("::ffff:0:127.0.0.1", Loopback),
        ("::ffff:0:8.8.8.8", Public),
        // IPv4-compatible.
        ("::127.0.0.1", Loopback),
        ("::169.254.169.254", Metadata),
        ("::8.8.8.8", Public),
        // NAT64 well-known prefix.
        ("64:ff9b::127.0.0.1", Loopback),
        ("64:ff9b::a9fe:a9fe", Metadata),
        ("64:ff9b::192.168.1.1", Private),
        ("64:ff9b::8.8.8.8", Public),
        // 6to4.
        ("2002:7f00:1::", Loopback),
        ("2002:a9fe:a9fe::1", Metadata),
        ("2002:c0a8:101::", Private),
        ("2002:808:808::1", Public),
        // Teredo, whose client address is stored inverted.
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", Loopback),
        ("2001:0:4136:e378:8000:63bf:5601:5601", Metadata),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", Public),
    ]);
}

#[test]
fn only_public_class_allowed() {
    assert!(!Public.is_internal());
    for class in [
        Metadata,
        Loopback,
        Private,
        SharedAddressSpace,
        LinkLocal,
        UniqueLocal,
        Unspecified,
        Multicast,
        Broadcast,
        Documentation,
        Benchmarking,
        Reserved,
    ] {
        assert!(class.is_internal(), "{class:?}");
    }
}
