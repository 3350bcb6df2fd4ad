//! Method and path templates, for `new_endpoint`, and the typical body
//! sizes per template, for the single-body `volume_spike`.
//!
//! A template replaces the path segments that look like identifiers with
//! `*`, so `/repos/42/issues/7` and `/repos/43/issues/9` are one endpoint.
//! A segment is an identifier when it is
//! - all digits, or digits with `-`, `_`, `.` or `:` (`1234`, `2024-05-01`),
//! - a UUID in its 36-character hyphenated form,
//! - 8 or more hex digits with at least one digit (object ids, hashes),
//! - 20 or more characters of letters, digits, `-` and `_` mixing letters
//!   and digits (random keys and opaque ids).
//!
//! Names such as `users`, `v1` or `hello-world` stay as they are.

use std::hash::{DefaultHasher, Hasher};

/// Hashes the method and path template of a request without allocating.
/// `DefaultHasher::new` uses fixed keys, so a hash is stable within one
/// build of castellan; hashes are never stored.
pub(crate) fn endpoint_hash(method: &str, path: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(method.as_bytes());
    for segment in path.split('/') {
        hasher.write_u8(b'/');
        if is_identifier(segment) {
            hasher.write_u8(b'*');
        } else {
            hasher.write(segment.as_bytes());
        }
    }
    hasher.finish()
}

/// Formats the template as `GET /repos/*/issues`.
pub(crate) fn endpoint_text(method: &str, path: &str) -> String {
    let template = path
        .split('/')
        .map(|segment| if is_identifier(segment) { "*" } else { segment })
        .collect::<Vec<_>>()
        .join("/");
    format!("{method} {template}")
}

/// Returns whether a path segment looks like an identifier (see the
/// module documentation).
pub(crate) fn is_identifier(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let digits = bytes.iter().filter(|byte| byte.is_ascii_digit()).count();
    if digits == 0 {
        return false;
    }
    let numeric = bytes
        .iter()
        .all(|byte| byte.is_ascii_digit() || matches!(byte, b'-' | b'_' | b'.' | b':'));
    if numeric || is_uuid(bytes) {
        return true;
    }
    if bytes.len() >= 8 && bytes.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    let letters = bytes
        .iter()
        .filter(|byte| byte.is_ascii_alphabetic())
        .count();
    bytes.len() >= 20
        && letters > 0
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
}

fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

/// Typical request and response body sizes of one endpoint, as running
/// means of `log2(bytes + 1)`: a geometric mean, so one large body moves
/// it little and body sizes spread over orders of magnitude compare fairly.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EndpointSizes {
    samples: u32,
    log_in: f64,
    log_out: f64,
}

/// Weight of the newest body in the running means once the endpoint has
/// enough samples: about the last 50 calls dominate.
const MEAN_WEIGHT: f64 = 0.02;

impl EndpointSizes {
    pub(crate) fn samples(&self) -> u32 {
        self.samples
    }

    /// Typical request body size in bytes.
    pub(crate) fn typical_in(&self) -> f64 {
        self.log_in.exp2() - 1.0
    }

    /// Typical response body size in bytes.
    pub(crate) fn typical_out(&self) -> f64 {
        self.log_out.exp2() - 1.0
    }

    /// Adds one call. Sizes beyond `cap_ratio` times the typical size are
    /// clipped first, so an outlier the detector reported does not become
    /// the new normal.
    pub(crate) fn add(&mut self, bytes_in: u64, bytes_out: u64, cap_ratio: f64) {
        let cap = cap_ratio.max(1.0).log2();
        let log_in = log_size(bytes_in);
        let log_out = log_size(bytes_out);
        self.samples = self.samples.saturating_add(1);
        if self.samples == 1 {
            self.log_in = log_in;
            self.log_out = log_out;
            return;
        }
        // A plain mean while samples are few, then an exponential one.
        let weight = (1.0 / f64::from(self.samples)).max(MEAN_WEIGHT);
        self.log_in += weight * (log_in.min(self.log_in + cap) - self.log_in);
        self.log_out += weight * (log_out.min(self.log_out + cap) - self.log_out);
    }
}

fn log_size(bytes: u64) -> f64 {
    // Precision loss above 2^53 bytes does not matter for a log scale.
    (bytes as f64 + 1.0).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_recognized() {
        let cases = [
            ("42", true),
            ("2024-05-01", true),
            ("1.2.3", true),
            ("0b6f1d2e-8c1a-4f0e-9a5b-3c2d1e0f9a8b", true),
            ("9fceb02d0ae598e95dc970b74767f19372d61af8", true),
            ("65a1f0c2e4b0a1b2c3d4e5f6", true),
            ("a1B2c3D4e5F6g7H8i9J0kL", true),
            ("users", false),
            ("v1", false),
            ("hello-world", false),
            ("deadbeefcafe", false),
            ("", false),
            ("chat-completions-endpoint", false),
        ];
        for (segment, expected) in cases {
            assert_eq!(is_identifier(segment), expected, "{segment:?}");
        }
    }

    #[test]
    fn ids_share_a_template() {
        let a = endpoint_hash("GET", "/repos/42/issues/7");
        let b = endpoint_hash("GET", "/repos/43/issues/9");
        let c = endpoint_hash("POST", "/repos/43/issues/9");
        let d = endpoint_hash("GET", "/repos/43/pulls/9");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(
            endpoint_text("GET", "/repos/42/issues/7"),
            "GET /repos/*/issues/*"
        );
    }

    #[test]
    fn segment_boundaries_matter() {
        assert_ne!(endpoint_hash("GET", "/ab/c"), endpoint_hash("GET", "/a/bc"));
    }

    #[test]
    fn sizes_follow_geometric_mean() {
        let mut sizes = EndpointSizes::default();
        for _ in 0..30 {
            sizes.add(0, 1023, 20.0);
        }
        assert_eq!(sizes.samples(), 30);
        assert!((sizes.typical_out() - 1023.0).abs() < 1.0);
        assert!(sizes.typical_in().abs() < 1e-9);
    }

    #[test]
    fn outliers_are_clipped() {
        let mut sizes = EndpointSizes::default();
        for _ in 0..100 {
            sizes.add(0, 1000, 20.0);
        }
        sizes.add(0, 1_000_000_000, 20.0);
        // Without clipping one gigabyte would move the mean a lot further.
        assert!(sizes.typical_out() < 1100.0, "{}", sizes.typical_out());
    }
}
