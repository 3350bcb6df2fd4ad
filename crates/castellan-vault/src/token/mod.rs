//! Agent tokens: what an agent presents to castellan in place of an upstream key.
//!
//! Format (50 ASCII characters), modelled on GitHub's token format:
//!
//! ```text
//! cst_ | 40 random base62 characters | 6 base62 characters of CRC32(prefix + random)
//! ```
//!
//! Base62 uses `0-9A-Za-z`. The random part carries about 238 bits from the OS
//! CSPRNG. The checksum lets [`parse_token`] reject typos and garbage without a store
//! lookup. CRC32 detects every error burst of up to 32 bits, which covers every
//! single-character substitution and every swap of two adjacent characters within the
//! random part. The fixed prefix lets scanners and log redaction find tokens
//! ([`looks_like_token`]). The store keeps only the SHA-256 [`TokenHash`].

mod base62;
mod hash;

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

pub use hash::TokenHash;

/// Prefix of every agent token.
pub const TOKEN_PREFIX: &str = "cst_";
/// Prefix of every public token id.
pub const TOKEN_ID_PREFIX: &str = "tok_";
/// Total length of an agent token in bytes.
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + RANDOM_LEN + base62::CHECKSUM_LEN;

const RANDOM_LEN: usize = 40;
const BODY_LEN: usize = TOKEN_PREFIX.len() + RANDOM_LEN;
const TOKEN_ID_RANDOM_LEN: usize = 12;

/// Reasons a string is not a well-formed agent token. Messages never quote the candidate,
/// which may be a real credential pasted into the wrong place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("agent token does not start with `cst_`; check that the whole token was copied")]
    MissingPrefix,

    #[error(
        "agent token is {found} characters long, expected {TOKEN_LEN}; \
         check that the whole token was copied"
    )]
    WrongLength { found: usize },

    #[error(
        "agent token contains a character that is not a letter or digit at position \
         {position}; check that the token was copied without changes"
    )]
    InvalidCharacter { position: usize },

    #[error(
        "agent token checksum does not match, so the token contains a typo; \
         copy it again or issue a new token"
    )]
    ChecksumMismatch,

    #[error("token hash is not 64 hexadecimal characters; the stored value is damaged")]
    InvalidHashHex,
}

/// A newly issued agent token. Print it to the operator once, store only its
/// [`TokenHash`]; `Debug` is redacted and the string is wiped on drop.
pub struct AgentToken(SecretString);

impl AgentToken {
    /// Generates a new random token with a valid checksum.
    pub fn generate() -> Self {
        let mut token = String::with_capacity(TOKEN_LEN);
        token.push_str(TOKEN_PREFIX);
        base62::push_random(&mut token, RANDOM_LEN);
        let checksum = base62::encode_checksum(crc32fast::hash(token.as_bytes()));
        token.extend(checksum.iter().copied().map(char::from));
        Self(SecretString::from(token))
    }

    /// Returns the token text, for the single time it is shown to the operator.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Returns the hash the store keeps for this token.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.expose())
    }
}

impl fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentToken([redacted])")
    }
}

/// Checks prefix, length, alphabet and checksum, then returns the SHA-256 hash of the
/// whole token for the store lookup.
pub fn parse_token(candidate: &str) -> Result<TokenHash, TokenError> {
    let bytes = candidate.as_bytes();
    if !bytes.starts_with(TOKEN_PREFIX.as_bytes()) {
        return Err(TokenError::MissingPrefix);
    }
    if bytes.len() != TOKEN_LEN {
        return Err(TokenError::WrongLength { found: bytes.len() });
    }
    if let Some(offset) = bytes[TOKEN_PREFIX.len()..]
        .iter()
        .position(|&byte| !base62::is_base62(byte))
    {
        return Err(TokenError::InvalidCharacter {
            position: TOKEN_PREFIX.len() + offset,
        });
    }

    let (body, checksum) = bytes.split_at(BODY_LEN);
    if base62::encode_checksum(crc32fast::hash(body)) != checksum {
        return Err(TokenError::ChecksumMismatch);
    }
    Ok(TokenHash::of(candidate))
}

/// Reports whether `candidate` has the prefix and length of an agent token, without
/// checking alphabet or checksum; meant for scanners and log redaction.
pub fn looks_like_token(candidate: &str) -> bool {
    candidate.len() == TOKEN_LEN && candidate.starts_with(TOKEN_PREFIX)
}

/// Generates a public, non-secret token id (`tok_` and 12 base62 characters) used to
/// list and revoke tokens.
pub fn new_token_id() -> String {
    let mut id = String::with_capacity(TOKEN_ID_PREFIX.len() + TOKEN_ID_RANDOM_LEN);
    id.push_str(TOKEN_ID_PREFIX);
    base62::push_random(&mut id, TOKEN_ID_RANDOM_LEN);
    id
}

/// Length in bytes of a token id in the form [`new_token_id`] writes.
pub const GENERATED_ID_LEN: usize = TOKEN_ID_PREFIX.len() + TOKEN_ID_RANDOM_LEN;

/// A token id in the form [`new_token_id`] writes, packed into 9 bytes.
///
/// Each half of the 12 base62 characters spells a number below 62^6, about 5.7e10,
/// which fits in 36 bits, so the two halves take 72. Unpacking, which the gateway does
/// on every token lookup, then needs only 64-bit arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedTokenId([u8; 9]);

/// Characters in each half of a generated id's random part.
const HALF_LEN: usize = TOKEN_ID_RANDOM_LEN / 2;

/// Mask of the 36 bits that hold one half.
const HALF_MASK: u64 = (1 << 36) - 1;

impl PackedTokenId {
    /// Packs `id`, or returns `None` unless it is `tok_` followed by exactly 12 base62
    /// characters.
    pub fn pack(id: &str) -> Option<Self> {
        let digits = id.strip_prefix(TOKEN_ID_PREFIX)?.as_bytes();
        if digits.len() != TOKEN_ID_RANDOM_LEN {
            return None;
        }
        let (first, second) = digits.split_at(HALF_LEN);
        let bits = u128::from(half_value(first)?) | u128::from(half_value(second)?) << 36;
        let mut packed = [0; 9];
        packed.copy_from_slice(&bits.to_le_bytes()[..9]);
        Some(Self(packed))
    }

    /// Writes the id back as text: `tok_` and the 12 characters it was packed from.
    pub fn unpack(&self) -> [u8; GENERATED_ID_LEN] {
        let mut bytes = [0; 16];
        bytes[..9].copy_from_slice(&self.0);
        let bits = u128::from_le_bytes(bytes);
        let mut id = [0; GENERATED_ID_LEN];
        id[..TOKEN_ID_PREFIX.len()].copy_from_slice(TOKEN_ID_PREFIX.as_bytes());
        let (first, second) = id[TOKEN_ID_PREFIX.len()..].split_at_mut(HALF_LEN);
        write_half(first, bits as u64 & HALF_MASK);
        write_half(second, (bits >> 36) as u64 & HALF_MASK);
        id
    }
}

/// Returns the number that base62 `digits` spell, or `None` if one is not base62.
fn half_value(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |value, &byte| {
        Some(value * 62 + u64::from(base62::digit_value(byte)?))
    })
}

/// Writes `value` as base62 digits filling `out`, most significant first.
fn write_half(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = base62::digit_char((value % 62) as u8);
        value /= 62;
    }
}
