//! Geolocation of source addresses, for the impossible-travel detector.
//!
//! The engine queries a [`Locate`] implementation for coordinates. In
//! production that is a [`GeoDatabase`] reading a MaxMind GeoIP2 or
//! GeoLite2 City file. Tests and the evaluation use an in-memory table.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{path, MaxMindDbError, Reader};

/// Mean Earth radius in kilometres (IUGG value), used by the haversine formula.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A position on Earth in decimal degrees (WGS 84, as MaxMind databases store it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    /// Degrees north of the equator, from -90 to 90.
    pub latitude: f64,
    /// Degrees east of Greenwich, from -180 to 180.
    pub longitude: f64,
}

impl GeoPoint {
    /// Computes the great-circle distance to `other` in kilometres with the
    /// haversine formula on a sphere, which is within about 0.5% of the
    /// ellipsoidal distance: far finer than the accuracy of IP geolocation.
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        let latitude_a = self.latitude.to_radians();
        let latitude_b = other.latitude.to_radians();
        let half_dlat = (latitude_b - latitude_a) / 2.0;
        let half_dlon = (other.longitude - self.longitude).to_radians() / 2.0;
        let h =
            half_dlat.sin().powi(2) + latitude_a.cos() * latitude_b.cos() * half_dlon.sin().powi(2);
        // Rounding can push h a hair above 1 for antipodal points.
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

/// Maps a source address to a position.
pub trait Locate: Send + Sync {
    /// Returns the position of `ip`, or `None` when it has none (private,
    /// loopback and unallocated addresses, or addresses the data does not cover).
    fn locate(&self, ip: IpAddr) -> Option<GeoPoint>;
}

/// Error opening a geolocation database.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error(
        "geolocation database {} not found: download a GeoLite2 or GeoIP2 City \
         database (.mmdb) from MaxMind and set its path",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error(
        "failed to read geolocation database {}: {source}; check that it is a \
         readable file",
        path.display()
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "geolocation database {} is not a valid MaxMind DB file ({source}): it may \
         be truncated or damaged, so download it again",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
    #[error(
        "geolocation database {} is a {database_type} database, which has no city \
         locations: use a GeoLite2 or GeoIP2 City database instead",
        path.display()
    )]
    NotCity {
        path: PathBuf,
        database_type: String,
    },
}

/// A MaxMind GeoIP2 or GeoLite2 City database, loaded into memory.
pub struct GeoDatabase {
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let metadata = self.reader.metadata();
        f.debug_struct("GeoDatabase")
            .field("database_type", &metadata.database_type)
            .field("build_epoch", &metadata.build_epoch)
            .finish()
    }
}

impl GeoDatabase {
    /// Reads the whole file at `path` and checks that it is a MaxMind DB
    /// whose type carries city locations (`GeoIP2-City`, `GeoLite2-City`
    /// or `GeoIP2-Enterprise`).
    pub fn open(path: &Path) -> Result<GeoDatabase, GeoError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => GeoError::Missing {
                path: path.to_owned(),
            },
            _ => GeoError::Unreadable {
                path: path.to_owned(),
                source,
            },
        })?;
        let reader = Reader::from_source(bytes).map_err(|source| GeoError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
        let database_type = &reader.metadata().database_type;
        if !has_city_locations(database_type) {
            return Err(GeoError::NotCity {
                path: path.to_owned(),
                database_type: database_type.clone(),
            });
        }
        Ok(GeoDatabase { reader })
    }

    /// Returns the database type from the file's metadata, such as `GeoLite2-City`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }
}

/// Tells whether a MaxMind database type has a `location` record per network.
fn has_city_locations(database_type: &str) -> bool {
    database_type.ends_with("-City") || database_type.ends_with("-Enterprise")
}

impl Locate for GeoDatabase {
    /// Returns `None` for addresses without coordinates, and also when the
    /// record cannot be decoded: a damaged entry must not stop detection, and
    /// the caller treats an unknown position like a private address.
    fn locate(&self, ip: IpAddr) -> Option<GeoPoint> {
        let result = self.reader.lookup(ip.to_canonical()).ok()?;
        let latitude: f64 = result.decode_path(&path!["location", "latitude"]).ok()??;
        let longitude: f64 = result.decode_path(&path!["location", "longitude"]).ok()??;
        Some(GeoPoint {
            latitude,
            longitude,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_matches_known_city_pairs() {
        let paris = GeoPoint {
            latitude: 48.8566,
            longitude: 2.3522,
        };
        let new_york = GeoPoint {
            latitude: 40.7128,
            longitude: -74.0060,
        };
        let distance = paris.distance_km(&new_york);
        // Published great-circle distance: about 5,837 km.
        assert!((distance - 5837.0).abs() < 20.0, "{distance}");
        assert_eq!(paris.distance_km(&paris), 0.0);
        assert!((distance - new_york.distance_km(&paris)).abs() < 1e-9);
    }

    #[test]
    fn distance_of_antipodes_is_half_circumference() {
        let a = GeoPoint {
            latitude: 10.0,
            longitude: 20.0,
        };
        let b = GeoPoint {
            latitude: -10.0,
            longitude: -160.0,
        };
        let half = std::f64::consts::PI * EARTH_RADIUS_KM;
        // Haversine loses digits near antipodes, where asin is steep, so allow 10 m.
        assert!((a.distance_km(&b) - half).abs() < 0.01);
    }

    #[test]
    fn city_types_are_recognized() {
        assert!(has_city_locations("GeoLite2-City"));
        assert!(has_city_locations("GeoIP2-City"));
        assert!(has_city_locations("GeoIP2-Enterprise"));
        assert!(!has_city_locations("GeoLite2-Country"));
        assert!(!has_city_locations("GeoLite2-ASN"));
    }
}
