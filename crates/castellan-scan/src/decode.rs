//! Base64-encoded content inside an input, scanned as one more layer.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

/// Shortest base64 run worth decoding: 24 characters carry 18 bytes, enough
/// for the shortest provider keys.
pub(crate) const MIN_RUN: usize = 24;

/// Longest run decoded, so one huge blob (an embedded image) costs little.
const MAX_RUN: usize = 64 * 1024;

/// Share of printable bytes below which decoded content is treated as binary.
const MIN_PRINTABLE: f64 = 0.9;

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// Returns the byte ranges of base64 runs of at least [`MIN_RUN`] characters.
pub(crate) fn base64_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (offset, &byte) in data.iter().enumerate() {
        let in_alphabet = byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'-' | b'_');
        match (in_alphabet, start) {
            (true, None) => start = Some(offset),
            (false, Some(begin)) => {
                push_run(data, begin, offset, &mut runs);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(begin) = start {
        push_run(data, begin, data.len(), &mut runs);
    }
    runs
}

fn push_run(data: &[u8], start: usize, mut end: usize, runs: &mut Vec<(usize, usize)>) {
    let len = end - start;
    if !(MIN_RUN..=MAX_RUN).contains(&len) {
        return;
    }
    // Random base64 mixes cases and digits; identifiers and words do not.
    let run = &data[start..end];
    let upper = run.iter().any(u8::is_ascii_uppercase);
    let lower = run.iter().any(u8::is_ascii_lowercase);
    let digit = run.iter().any(u8::is_ascii_digit);
    if !(upper && lower && digit) {
        return;
    }
    while end < data.len() && end - start < len + 2 && data[end] == b'=' {
        end += 1;
    }
    runs.push((start, end));
}

/// Decodes a run if it is valid base64 of mostly printable text.
pub(crate) fn decode_text(run: &[u8]) -> Option<Vec<u8>> {
    let decoded = STANDARD_LENIENT
        .decode(run)
        .or_else(|_| URL_SAFE_LENIENT.decode(run))
        .ok()?;
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
        let data = b"a: c2VjcmV0LXZhbHVlLWluLWJhc2U2NA== b: short c: all_lowercase_identifier_here_ok";
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
        assert_eq!(decode_text(b"c2VjcmV0LXZhbHVlLWluLWJhc2U2NA"), Some(b"secret-value-in-base64".to_vec()));
        assert_eq!(decode_text(b"AAECAwQFBgcICQoLDA0ODxAREhMU"), None);
    }
}
