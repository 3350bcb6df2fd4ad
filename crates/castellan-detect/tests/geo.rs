//! Geolocation against the real GeoLite2 City database (the July 2018 file
//! shipped by the Python package `maxminddb-geolite2`) and against damaged
//! and wrong-type files.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use castellan_detect::{GeoDatabase, GeoError, GeoPoint, Locate};

const INSTALL_HINT: &str = "run `pip install -r tests/peers/requirements.txt` from the \
     repository root, or set CASTELLAN_TEST_GEOLITE2 to a GeoLite2-City.mmdb file";

/// Finds GeoLite2-City.mmdb: CASTELLAN_TEST_GEOLITE2 if set, else the copy
/// inside the installed Python package. Panics with the install command
/// when neither exists, because these tests must not pass without data.
fn geolite2_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CASTELLAN_TEST_GEOLITE2") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CASTELLAN_TEST_GEOLITE2={} is not a file: {INSTALL_HINT}",
            path.display()
        );
        return path;
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import _maxminddb_geolite2, os; print(os.path.dirname(_maxminddb_geolite2.__file__))",
        ])
        .output()
        .unwrap_or_else(|error| panic!("failed to run python3 ({error}): {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "python3 cannot import _maxminddb_geolite2 ({}): {INSTALL_HINT}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let directory = String::from_utf8(output.stdout).expect("python3 prints a UTF-8 path");
    let path = Path::new(directory.trim()).join("GeoLite2-City.mmdb");
    assert!(
        path.is_file(),
        "{} is missing: {INSTALL_HINT}",
        path.display()
    );
    path
}

fn open_geolite2() -> GeoDatabase {
    let path = geolite2_path();
    GeoDatabase::open(&path).unwrap_or_else(|error| panic!("{error}"))
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address parses")
}

/// Writes a small MaxMind DB with the Python package `mmdb-writer` (from
/// the same requirements file) and returns its path inside `directory`.
fn write_mmdb(directory: &Path, database_type: &str, networks: &str) -> PathBuf {
    let path = directory.join(format!("{database_type}.mmdb"));
    let script = format!(
        "from mmdb_writer import MMDBWriter\n\
         from netaddr import IPSet\n\
         writer = MMDBWriter(ip_version=6, database_type={database_type:?}, ipv4_compatible=True)\n\
         for network, record in {networks}:\n\
         \x20   writer.insert_network(IPSet([network]), record)\n\
         writer.to_db_file({:?})\n",
        path.display().to_string()
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|error| panic!("failed to run python3 ({error}): {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "mmdb-writer failed ({}): {INSTALL_HINT}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    path
}

#[test]
fn public_addresses_land_in_their_cities() {
    let database = open_geolite2();
    assert_eq!(database.database_type(), "GeoLite2-City");
    // (address, latitude, longitude, place) as the 2018 file records them;
    // the tolerance of one degree absorbs small corrections between builds.
    let cases = [
        ("193.0.14.129", 52.37, 4.90, "Amsterdam, RIPE NCC"),
        ("130.149.7.201", 52.51, 13.33, "Berlin, TU Berlin"),
        ("128.30.52.100", 42.36, -71.10, "Cambridge MA, MIT"),
        ("129.132.19.216", 47.37, 8.55, "Zurich, ETH"),
        ("196.25.1.1", -26.23, 28.06, "Johannesburg"),
        ("200.89.75.1", -33.45, -70.67, "Santiago de Chile"),
        ("150.101.1.1", -34.93, 138.60, "Adelaide"),
        (
            "2001:67c:2e8:22::c100:68b",
            52.37,
            4.90,
            "Amsterdam over IPv6",
        ),
    ];
    for (address, latitude, longitude, place) in cases {
        let point = database
            .locate(ip(address))
            .unwrap_or_else(|| panic!("{address} ({place}) has no location"));
        assert!(
            (point.latitude - latitude).abs() < 1.0,
            "{address} ({place}): latitude {}",
            point.latitude
        );
        assert!(
            (point.longitude - longitude).abs() < 1.0,
            "{address} ({place}): longitude {}",
            point.longitude
        );
    }
}

#[test]
fn ipv4_mapped_address_is_located() {
    let database = open_geolite2();
    let plain = database.locate(ip("193.0.14.129"));
    let mapped = database.locate(ip("::ffff:193.0.14.129"));
    assert!(plain.is_some());
    assert_eq!(plain, mapped);
}

#[test]
fn private_and_special_addresses_have_no_location() {
    let database = open_geolite2();
    for address in [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "0.0.0.0",
        "169.254.10.10",
        "::1",
        "fe80::1",
        "fd00::1",
    ] {
        assert_eq!(database.locate(ip(address)), None, "{address}");
    }
}

#[test]
fn distances_between_located_addresses_are_plausible() {
    let database = open_geolite2();
    let locate = |address: &str| -> GeoPoint {
        database
            .locate(ip(address))
            .unwrap_or_else(|| panic!("{address} has no location"))
    };
    let amsterdam = locate("193.0.14.129");
    let berlin = locate("130.149.7.201");
    let cambridge = locate("128.30.52.100");
    let adelaide = locate("150.101.1.1");
    // Great-circle distances between the city centres, rounded.
    let cases = [
        (amsterdam, berlin, 570.0, "Amsterdam-Berlin"),
        (amsterdam, cambridge, 5_560.0, "Amsterdam-Cambridge MA"),
        (berlin, adelaide, 15_340.0, "Berlin-Adelaide"),
    ];
    for (a, b, expected, pair) in cases {
        let distance = a.distance_km(&b);
        assert!(
            (distance - expected).abs() < expected * 0.05,
            "{pair}: {distance:.0} km, expected about {expected} km"
        );
    }
}

#[test]
fn missing_file_is_reported_with_its_path() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("absent.mmdb");
    let error = GeoDatabase::open(&path).unwrap_err();
    assert!(matches!(error, GeoError::Missing { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("absent.mmdb"), "{message}");
    assert!(message.contains("not found"), "{message}");
}

#[test]
fn directory_is_reported_as_unreadable() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let error = GeoDatabase::open(directory.path()).unwrap_err();
    assert!(matches!(error, GeoError::Unreadable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&directory.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn damaged_files_are_reported_as_corrupt() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let real = std::fs::read(geolite2_path()).expect("GeoLite2 file is readable");
    // A fixed linear congruential sequence: arbitrary bytes, same every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect();
    let cases: [(&str, &[u8]); 3] = [
        ("empty.mmdb", &[]),
        ("truncated.mmdb", &real[..real.len() / 2]),
        ("noise.mmdb", &noise),
    ];
    for (name, bytes) in cases {
        let path = directory.path().join(name);
        std::fs::write(&path, bytes).expect("test file written");
        let error = GeoDatabase::open(&path).unwrap_err();
        assert!(
            matches!(error, GeoError::Corrupt { .. }),
            "{name}: {error:?}"
        );
        let message = error.to_string();
        assert!(message.contains(name), "{message}");
        assert!(message.contains("download it again"), "{message}");
    }
}

#[test]
fn database_without_cities_is_rejected() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = write_mmdb(
        directory.path(),
        "GeoLite2-ASN",
        "[('1.0.0.0/24', {'autonomous_system_number': 13335})]",
    );
    let error = GeoDatabase::open(&path).unwrap_err();
    assert!(matches!(error, GeoError::NotCity { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("GeoLite2-ASN"), "{message}");
    assert!(message.contains("City database"), "{message}");
}

#[test]
fn record_without_coordinates_has_no_location() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = write_mmdb(
        directory.path(),
        "GeoIP2-City",
        "[('1.0.0.0/24', {'country': {'iso_code': 'AU'}}), \
          ('2.0.0.0/24', {'location': {'latitude': 10.5, 'longitude': 20.25}})]",
    );
    let database = GeoDatabase::open(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(database.locate(ip("1.0.0.7")), None);
    assert_eq!(
        database.locate(ip("2.0.0.7")),
        Some(GeoPoint {
            latitude: 10.5,
            longitude: 20.25
        })
    );
    assert_eq!(database.locate(ip("3.0.0.7")), None);
}
