//! Findings: where a secret was found, without the secret itself in any
//! printable form.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::secret::SecretValue;

/// One secret found in one input.
///
/// Serializes without the secret; `Debug` shows it redacted.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule_id: String,
    pub description: String,
    /// 1-based line of the first byte of the secret.
    pub line: usize,
    /// 1-based column of the first byte of the secret, in Unicode code points.
    pub column: usize,
    /// Byte offsets of the secret in the input (for base64 content: of the
    /// encoded run that contains it).
    pub start: usize,
    pub end: usize,
    /// At most the first four characters, then the length.
    pub preview: String,
    /// Stable id of this rule and secret, for baselines; see [`fingerprint`].
    pub fingerprint: String,
    /// `base64` when the secret was found inside base64-encoded content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    #[serde(skip)]
    pub secret: SecretValue,
}

/// Computes the fingerprint of a secret under a rule: the first 16 bytes of
/// SHA-256 over a domain tag, the rule id and the secret, as hex.
///
/// NOTE: for a low-entropy password, a dictionary attack can confirm a guess
/// against the fingerprint, so baselines deserve the care of the code they cover.
pub fn fingerprint(rule_id: &str, secret: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"castellan-scan fingerprint v1\0");
    hasher.update(rule_id.as_bytes());
    hasher.update(b"\0");
    hasher.update(secret);
    hasher.finalize()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_depends_on_rule_and_secret() {
        let base = fingerprint("github-pat", b"value-one");
        assert_eq!(base.len(), 32);
        assert_eq!(base, fingerprint("github-pat", b"value-one"));
        assert_ne!(base, fingerprint("gitlab-pat", b"value-one"));
        assert_ne!(base, fingerprint("github-pat", b"value-two"));
    }
}
