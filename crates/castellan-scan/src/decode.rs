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
///
/// Checks windows of [`MIN_RUN`] bytes from their last byte backwards, so a
/// byte outside the alphabet near the window end skips the bytes before it.
/// Source code rarely has runs that long, so most bytes are never read.
pub(crate) fn base64_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let in_alphabet = |byte: &u8| ALPHABET[usize::from(*byte)];
    let mut runs = Vec::new();
    // Invariant: `start` is 0 or follows a byte outside the alphabet, so a
    // run found at `start` is maximal on the left.
    let mut start = 0;
    while start + MIN_RUN <= data.len() {
        let window = &data[start..start + MIN_RUN];
        if let Some(last_outside) = window.iter().rposition(|byte| !in_alphabet(byte)) {
            start += last_outside + 1;
            continue;
        }
        let end = data[start + MIN_RUN..]
            .iter()
            .position(|byte| !in_alphabet(byte))
            .map_or(data.len(), |outside| start + MIN_RUN + outside);
        push_run(data, start, end, &mut runs);
        start = end + 1;
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

    /// Finds runs byte by byte, the plain form of [`base64_runs`].
    fn reference_runs(data: &[u8]) -> Vec<(usize, usize)> {
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

    /// Builds `len` bytes of runs of random length (0 to 40) of base64
    /// characters, separated by `=`, spaces, newlines and other bytes, from
    /// a fixed seed so that failures repeat.
    fn generated_text(seed: u64, len: usize) -> Vec<u8> {
        const RUN_BYTES: &[u8] = b"AbZz09+/Qx7Kp";
        const SEPARATORS: &[u8] = b"= \n_-.\"\xff";
        let mut state = seed | 1;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let mut text = Vec::with_capacity(len + 64);
        while text.len() < len {
            for _ in 0..next(41) {
                text.push(RUN_BYTES[next(RUN_BYTES.len())]);
            }
            for _ in 0..1 + next(3) {
                text.push(SEPARATORS[next(SEPARATORS.len())]);
            }
        }
        text.truncate(len);
        text
    }

    #[test]
    fn runs_equal_byte_by_byte_search() {
        let mut total_runs = 0;
        for seed in 1..300 {
            let text = generated_text(seed, (seed as usize * 53) % 4000);
            let expected = reference_runs(&text);
            total_runs += expected.len();
            assert_eq!(base64_runs(&text), expected, "seed {seed}");
        }
        assert!(
            total_runs > 100,
            "only {total_runs} runs: the inputs test too little"
        );
    }

    #[test]
    fn runs_at_input_edges_are_found() {
        let run = b"c2VjcmV0LXZhbHVlLWluLWJhc2U2NA==";
        // The whole input, a run ending at the input end without padding, a
        // run after a separator, and a run of exactly 32 characters.
        let cases: [&[u8]; 4] = [
            run,
            &run[..28],
            b"x c2VjcmV0LXZhbHVlLWluLWJhc2U2NA==",
            b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
        ];
        for data in cases {
            assert_eq!(base64_runs(data), reference_runs(data), "{data:?}");
            assert_eq!(base64_runs(data).len(), 1, "{data:?}");
        }
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
