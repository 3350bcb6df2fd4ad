//! Base64-encoded content inside an input, scanned as one more layer.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Shortest base64 run worth decoding: 24 characters carry 18 bytes, enough
/// for the shortest provider keys.
pub(crate) const MIN_RUN: usize = 24;

/// Maximum run length decoded, so one huge blob (an embedded image) costs little.
const MAX_RUN: usize = 64 * 1024;

/// Share of printable bytes below which decoded content is treated as binary.
const MIN_PRINTABLE: f64 = 0.9;

/// Bytes of the standard base64 alphabet. URL-safe base64 is left out on
/// purpose: its `_` and `-` would turn long identifiers into runs.
const ALPHABET: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
        byte += 1;
    }
    table
};

/// Returns the byte ranges of padded base64 runs of at least [`MIN_RUN`]
/// characters, the form config files use.
pub(crate) fn base64_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        if !ALPHABET[usize::from(data[offset])] {
            offset += 1;
            continue;
        }
        let start = offset;
        while offset < data.len() && ALPHABET[usize::from(data[offset])] {
            offset += 1;
        }
        if offset - start >= MIN_RUN {
            push_run(data, start, offset, &mut runs);
        }
    }
    runs
}

fn push_run(data: &[u8], start: usize, mut end: usize, runs: &mut Vec<(usize, usize)>) {
    let len = end - start;
    if len > MAX_RUN {
        return;
    }
    while end < data.len() && end - start < len + 2 && data[end] == b'=' {
        end += 1;
    }
    if !(end - start).is_multiple_of(4) {
        return;
    }
    // Random base64 mixes cases and digits; identifiers and words do not.
    let run = &data[start..start + len];
    let upper = run.iter().any(u8::is_ascii_uppercase);
    let lower = run.iter().any(u8::is_ascii_lowercase);
    let digit = run.iter().any(u8::is_ascii_digit);
    if upper && lower && digit {
        runs.push((start, end));
    }
}

/// Decodes a run if it is valid base64 of mostly printable text.
pub(crate) fn decode_text(run: &[u8]) -> Option<Vec<u8>> {
    let decoded = STANDARD.decode(run).ok()?;
    let printable = decoded
        .iter()
        .filter(|&&byte| byte.is_ascii_graphic() || byte.is_ascii_whitespace())
        .count();
    (!decoded.is_empty() && printable as f64 / decoded.len() as f64 >= MIN_PRINTABLE)
        .then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_need_length_and_mixed_characters() {
        let data = b"a: c2VjcmV0LXZhbHVlLWluLWJhc2U2NA== b: short c: MixedCase_Ident1_WithUnderscores d: c2VjcmV0LXZhbHVlLWluLWJhc2U2NA";
        let runs = base64_runs(data);
        assert_eq!(runs.len(), 1);
        let (start, end) = runs[0];
        assert_eq!(&data[start..end], b"c2VjcmV0LXZhbHVlLWluLWJhc2U2NA==");
    }

    #[test]
    fn decoding_keeps_text_only() {
        assert_eq!(
            decode_text(b"c2VjcmV0LXZhbHVlLWluLWJhc2U2NA=="),
            Some(b"secret-value-in-base64".to_vec())
        );
        assert_eq!(decode_text(b"AAECAwQFBgcICQoLDA0ODxAREhMU"), None);
    }
}
