//! Structural checks that confirm a match before it becomes a finding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// A check that a rule runs on each candidate secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Validator {
    /// No check beyond the rule's pattern, entropy and placeholder filters.
    #[default]
    None,
    /// Castellan agent token: `cst_`, 40 base62 characters, base62 CRC32.
    CastellanToken,
    /// JSON Web Token whose header decodes to a JSON object with `alg`.
    Jwt,
}

impl Validator {
    /// Returns whether `secret` passes the check.
    pub fn accepts(self, secret: &[u8]) -> bool {
        match self {
            Validator::None => true,
            Validator::CastellanToken => is_castellan_token(secret),
            Validator::Jwt => is_jwt(secret),
        }
    }
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TOKEN_PREFIX: &[u8] = b"cst_";
const TOKEN_RANDOM_LEN: usize = 40;
const TOKEN_CHECKSUM_LEN: usize = 6;
const TOKEN_LEN: usize = 4 + TOKEN_RANDOM_LEN + TOKEN_CHECKSUM_LEN;

/// Checks a Castellan agent token: the last 6 characters are the CRC32 of the
/// prefix and random part, in base62 (`0-9A-Za-z`), zero-padded on the left.
pub fn is_castellan_token(candidate: &[u8]) -> bool {
    if candidate.len() != TOKEN_LEN || !candidate.starts_with(TOKEN_PREFIX) {
        return false;
    }
    let (body, checksum) = candidate.split_at(TOKEN_LEN - TOKEN_CHECKSUM_LEN);
    if !body[TOKEN_PREFIX.len()..]
        .iter()
        .all(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    encode_checksum(crc32fast::hash(body)) == checksum
}

fn encode_checksum(mut value: u32) -> [u8; TOKEN_CHECKSUM_LEN] {
    let mut out = [BASE62[0]; TOKEN_CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

fn is_jwt(candidate: &[u8]) -> bool {
    let Some(header) = candidate.split(|&byte| byte == b'.').next() else {
        return false;
    };
    let Ok(decoded) = URL_SAFE_NO_PAD.decode(header.trim_ascii_end()) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&decoded)
        .is_ok_and(|header| header.contains_key("alg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a token the way the vault does, from a fixed random part.
    fn token_with(random: &str) -> String {
        let body = format!("cst_{random}");
        let checksum = encode_checksum(crc32fast::hash(body.as_bytes()));
        format!("{body}{}", String::from_utf8_lossy(&checksum))
    }

    #[test]
    fn castellan_token_checksum_is_verified() {
        let good = token_with("Vq3XbN8rTz1LmK5pWc7YdH2sGf9JhA4uEo6iRnB0");
        assert!(is_castellan_token(good.as_bytes()));

        let mut typo = good.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(!is_castellan_token(&typo), "one changed character");

        let short = &good[..good.len() - 1];
        assert!(!is_castellan_token(short.as_bytes()), "truncated");

        let wrong_prefix = good.replacen("cst_", "cst-", 1);
        assert!(!is_castellan_token(wrong_prefix.as_bytes()), "prefix");
    }

    #[test]
    fn checksum_encoding_is_zero_padded() {
        assert_eq!(&encode_checksum(0), b"000000");
        assert_eq!(&encode_checksum(61), b"00000z");
        assert_eq!(&encode_checksum(62), b"000010");
        assert_eq!(&encode_checksum(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn jwt_header_must_name_algorithm() {
        let cases = [
            ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", true),
            ("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.sig", false),
            ("eyJhbGciOiJIUzI1NiJ9garbage.eyJ.sig", false),
        ];
        for (token, expected) in cases {
            assert_eq!(
                Validator::Jwt.accepts(token.as_bytes()),
                expected,
                "{token}"
            );
        }
    }
}
