//! Base62 with the alphabet `0-9A-Za-z`, in that order.

use rand::distributions::{Alphanumeric, Distribution};
use rand::rngs::OsRng;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Width of a base62-encoded CRC32: 62^6 (about 5.7e10) exceeds u32::MAX.
pub(crate) const CHECKSUM_LEN: usize = 6;

/// Appends `len` uniformly random base62 characters drawn from the OS CSPRNG.
///
/// `Alphanumeric` samples by rejection, so every character is equally likely and each
/// one carries log2(62), about 5.95, bits.
pub(crate) fn push_random(out: &mut String, len: usize) {
    out.extend(Alphanumeric.sample_iter(OsRng).take(len).map(char::from));
}

pub(crate) fn is_base62(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

/// Returns the value of base62 character `byte`, or `None` for any other byte.
pub(crate) fn digit_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'Z' => Some(byte - b'A' + 10),
        b'a'..=b'z' => Some(byte - b'a' + 36),
        _ => None,
    }
}

/// Returns the base62 character of `value`, which must be below 62.
pub(crate) fn digit_char(value: u8) -> u8 {
    ALPHABET[usize::from(value)]
}

/// Encodes `value` as exactly [`CHECKSUM_LEN`] characters, zero-padded on the left.
pub(crate) fn encode_checksum(mut value: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [ALPHABET[0]; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}
