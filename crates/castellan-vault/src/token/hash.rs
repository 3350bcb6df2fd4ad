//! SHA-256 hashes of agent tokens, the only form of a token the store keeps.

use std::fmt;
use std::hash::{Hash, Hasher};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::TokenError;
use crate::hex;

/// SHA-256 of the whole token string, including the `cst_` prefix.
///
/// A fast hash is enough because tokens carry about 238 random bits, so a leaked hash
/// cannot be brute-forced back to a token.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub(crate) fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Returns the hash as 64 lowercase hex characters, the form the store keeps.
    pub fn to_hex(&self) -> String {
        let mut out = Vec::with_capacity(64);
        hex::encode_into(&self.0, &mut out);
        out.into_iter().map(char::from).collect()
    }

    /// Parses 64 hex characters written by [`TokenHash::to_hex`] (either case).
    pub fn from_hex(hex: &str) -> Result<Self, TokenError> {
        let mut hash = [0u8; 32];
        hex::decode_into(hex.as_bytes(), &mut hash).ok_or(TokenError::InvalidHashHex)?;
        Ok(Self(hash))
    }
}

/// Compares in constant time. A lookup that compares a presented token's hash with a
/// stored one must not reveal through timing how many leading bytes matched.
impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TokenHash {}

/// Hashes the bytes, consistent with `Eq`, so hashes can key an in-memory cache.
impl Hash for TokenHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Shows only the first 8 hex characters, enough to tell hashes apart in logs.
impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        write!(f, "TokenHash({}…)", &hex[..8])
    }
}
