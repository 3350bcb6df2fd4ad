//! The matched secret value, kept only for `--import` and never printed.

use std::fmt;

use zeroize::Zeroizing;

/// Bytes of a matched secret. `Debug` is redacted, the bytes are wiped on
/// drop, and the type implements neither `Display` nor `Serialize`.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// Returns the raw bytes, for storing them in a vault.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Returns the length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Returns whether the value is empty (never true for a finding).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue([redacted; {} bytes])", self.0.len())
    }
}

/// Builds a preview that shows at most the first four characters, and fewer
/// for short values, so no preview ever reveals enough to use the secret.
pub(crate) fn redacted_preview(secret: &[u8]) -> String {
    let text = String::from_utf8_lossy(secret);
    let chars = text.chars().count();
    let shown = (chars / 5).min(4);
    let head: String = text
        .chars()
        .take(shown)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("{head}…({chars} chars)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_hides_most_of_value() {
        let cases = [
            (
                "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
                "ghp_…(40 chars)",
            ),
            ("short", "s…(5 chars)"),
            ("abc", "…(3 chars)"),
            ("-----BEGIN\nKEY", "--…(14 chars)"),
            ("\n\nabcdefghij", "??…(12 chars)"),
        ];
        for (secret, expected) in cases {
            assert_eq!(redacted_preview(secret.as_bytes()), expected, "{secret:?}");
        }
    }

    #[test]
    fn debug_output_is_redacted() {
        let value = SecretValue::new(b"super-secret-value");
        assert_eq!(format!("{value:?}"), "SecretValue([redacted; 18 bytes])");
    }
}
