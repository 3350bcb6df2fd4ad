//! Hex encoding for key files and token hashes, written out so key bytes never pass
//! through `format!`, whose buffers are not wiped.

/// Lowercase hex digits, indexed by nibble.
pub(crate) const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Decodes `hex` into `out`, which must be exactly half as long. Returns `None` on a
/// wrong length or a character that is not a hex digit (either case).
pub(crate) fn decode_into(hex: &[u8], out: &mut [u8]) -> Option<()> {
    if hex.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (digit_value(pair[0])? << 4) | digit_value(pair[1])?;
    }
    Some(())
}

/// Appends the lowercase hex form of `bytes` to `out`.
pub(crate) fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
}

fn digit_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}
