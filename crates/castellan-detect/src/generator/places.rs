//! Cities, the networks the generator allocates in them, and the in-memory
//! locator that maps those networks back to positions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::rngs::StdRng;
use rand::Rng;

use crate::geo::{GeoPoint, Locate};

/// A city where agents run or attackers call from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct City {
    pub name: &'static str,
    pub continent: &'static str,
    pub point: GeoPoint,
    /// First octet of the IPv4 networks allocated in this city.
    first_octet: u8,
}

const fn city(
    name: &'static str,
    continent: &'static str,
    latitude: f64,
    longitude: f64,
    first_octet: u8,
) -> City {
    City {
        name,
        continent,
        point: GeoPoint {
            latitude,
            longitude,
        },
        first_octet,
    }
}

/// Cities on six continents, with the first octet of a provider block there.
pub(crate) const CITIES: [City; 14] = [
    city("Frankfurt", "Europe", 50.11, 8.68, 78),
    city("Amsterdam", "Europe", 52.37, 4.90, 145),
    city("London", "Europe", 51.51, -0.13, 51),
    city("Paris", "Europe", 48.86, 2.35, 91),
    city("Ashburn", "North America", 39.04, -77.49, 3),
    city("Portland", "North America", 45.52, -122.68, 34),
    city("Toronto", "North America", 43.65, -79.38, 99),
    city("Sao Paulo", "South America", -23.55, -46.63, 177),
    city("Singapore", "Asia", 1.35, 103.82, 13),
    city("Tokyo", "Asia", 35.68, 139.69, 126),
    city("Mumbai", "Asia", 19.08, 72.88, 103),
    city("Sydney", "Oceania", -33.87, 151.21, 101),
    city("Johannesburg", "Africa", -26.20, 28.05, 41),
    city("Lagos", "Africa", 6.52, 3.38, 197),
];

/// One network the generator uses, with the hosts that call from it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Network {
    pub net: IpNet,
    /// Index into [`CITIES`], or `None` for a private network.
    pub city: Option<usize>,
    pub hosts: Vec<IpAddr>,
}

impl Network {
    pub fn host(&self, rng: &mut StdRng) -> IpAddr {
        self.hosts[rng.gen_range(0..self.hosts.len())]
    }
}

/// Allocator of distinct networks, remembering where each one is.
#[derive(Debug, Default)]
pub(crate) struct World {
    next_v4: u16,
    next_v6: u16,
    next_private: u8,
    located: Vec<(IpNet, GeoPoint)>,
}

impl World {
    /// Allocates a fresh public /24 in `city` with `hosts` addresses. Its
    /// position is the city's, moved by up to about 15 km, as geolocation
    /// of two providers in one city differs by that much.
    pub fn public_v4(&mut self, rng: &mut StdRng, city: usize, hosts: usize) -> Network {
        self.next_v4 += 1;
        let [second, third] = self.next_v4.wrapping_mul(37).to_be_bytes();
        let base = Ipv4Addr::new(CITIES[city].first_octet, second, third, 0);
        let net = IpNet::V4(Ipv4Net::new(base, 24).expect("24 is a valid IPv4 prefix"));
        self.locate_net(rng, net, city);
        Network {
            net,
            city: Some(city),
            hosts: pick_hosts(rng, net, hosts),
        }
    }

    /// Allocates a fresh public IPv6 /48 in `city`.
    pub fn public_v6(&mut self, rng: &mut StdRng, city: usize, hosts: usize) -> Network {
        self.next_v6 += 1;
        let base = Ipv6Addr::new(0x2a01, 0x4f8, self.next_v6, 0, 0, 0, 0, 0);
        let net = IpNet::V6(Ipv6Net::new(base, 48).expect("48 is a valid IPv6 prefix"));
        self.locate_net(rng, net, city);
        Network {
            net,
            city: Some(city),
            hosts: pick_hosts(rng, net, hosts),
        }
    }

    /// Allocates a private /24 (a LAN), which has no position.
    pub fn private_v4(&mut self, rng: &mut StdRng, hosts: usize) -> Network {
        self.next_private += 1;
        let base = Ipv4Addr::new(10, 20, self.next_private, 0);
        let net = IpNet::V4(Ipv4Net::new(base, 24).expect("24 is a valid IPv4 prefix"));
        Network {
            net,
            city: None,
            hosts: pick_hosts(rng, net, hosts),
        }
    }

    fn locate_net(&mut self, rng: &mut StdRng, net: IpNet, city: usize) {
        let center = CITIES[city].point;
        let point = GeoPoint {
            latitude: center.latitude + rng.gen_range(-0.1..0.1),
            longitude: center.longitude + rng.gen_range(-0.1..0.1),
        };
        self.located.push((net, point));
    }

    /// Builds the locator for every public network allocated so far.
    pub fn locator(&self) -> CityLocator {
        CityLocator {
            networks: self.located.clone(),
        }
    }
}

/// Picks `count` distinct host addresses inside `net`.
fn pick_hosts(rng: &mut StdRng, net: IpNet, count: usize) -> Vec<IpAddr> {
    let mut hosts: Vec<IpAddr> = Vec::with_capacity(count);
    while hosts.len() < count.max(1) {
        let offset: u8 = rng.gen_range(2..250);
        let host = match net {
            IpNet::V4(net) => {
                let [a, b, c, _] = net.network().octets();
                IpAddr::V4(Ipv4Addr::new(a, b, c, offset))
            }
            IpNet::V6(net) => {
                let mut segments = net.network().segments();
                segments[3] = rng.gen_range(1..16);
                segments[7] = u16::from(offset);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        };
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// The generator's geolocation table: each allocated public network at a
/// city position. Addresses outside them (private ones included) have none.
#[derive(Debug, Clone)]
pub struct CityLocator {
    networks: Vec<(IpNet, GeoPoint)>,
}

impl Locate for CityLocator {
    fn locate(&self, ip: IpAddr) -> Option<GeoPoint> {
        // A few dozen networks: a linear scan is faster than any index.
        self.networks
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, point)| *point)
    }
}
