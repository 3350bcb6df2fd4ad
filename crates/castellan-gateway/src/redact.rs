//! Redaction of the injected credential from responses.
//!
//! An upstream may echo what it received (httpbin's `/headers` does), so
//! every byte of a response passes a scan for the credential in each form it
//! was sent in. Matches are overwritten with `*` of the same length, which
//! keeps `Content-Length` and the framing of JSON and event streams valid.

use bytes::{Bytes, BytesMut};
use http::HeaderValue;

/// The forms of one credential that must never reach an agent.
///
/// Each form matches with every byte written raw or escaped: `%XX` in
/// either hex case, `+` for a space, or a JSON escape (`\/`, `\"`, `\\`,
/// `\u00XX`). Upstreams echo URLs and bodies with their own mix of escapes,
/// and a fixed list of encodings misses mixtures such as `a/b%2Bc`.
#[derive(Debug)]
pub struct Redactor {
    forms: Vec<Vec<u8>>,
    /// For each byte, whether a match can begin with it: [`ESCAPE_START`]
    /// for the bytes that begin an escape, the index plus one of its set in
    /// `followers` for a raw first byte of a form, and 0 for other bytes.
    starts: [u8; 256],
    /// For each raw first byte of a form, the bytes that can come next in a
    /// match, as a set of 256 bits. Checking the second byte keeps a byte
    /// that is common in a body, such as `a` in a body of letters, from
    /// making every offset a candidate.
    followers: Vec<[u64; 4]>,
    /// Maximum match length: every byte escaped as `\u00XX`.
    max_match: usize,
}

/// Value of [`Redactor::starts`] for a byte that begins an escape.
const ESCAPE_START: u8 = u8::MAX;

const MASK: u8 = b'*';

/// Result of matching one form at one position.
enum Match {
    /// The form ends before `end`. With `longer`, the buffer ends while a
    /// longer match, such as one whose last byte is escaped, could still
    /// complete.
    Full {
        end: usize,
        longer: bool,
    },
    /// The buffer ends while the form could still match.
    Partial,
    None,
}

impl Redactor {
    /// Builds a redactor for `forms`; empty forms are ignored.
    ///
    /// Returns `None` when there is nothing to redact.
    pub fn new(forms: impl IntoIterator<Item = Vec<u8>>) -> Option<Self> {
        let mut forms: Vec<Vec<u8>> = forms.into_iter().filter(|f| !f.is_empty()).collect();
        let escaped: Vec<Vec<u8>> = forms
            .iter()
            .filter_map(|form| json_unicode_escaped(form))
            .collect();
        forms.extend(escaped);
        // Longest forms first, so that a match covers as much as possible.
        forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
        forms.dedup();
        if forms.is_empty() {
            return None;
        }
        let mut starts = [0; 256];
        for byte in [b'%', b'+', b'\\'] {
            starts[usize::from(byte)] = ESCAPE_START;
        }
        let mut followers: Vec<[u64; 4]> = Vec::new();
        for form in &forms {
            for first in hex_case_variants(form[0]) {
                let start = &mut starts[usize::from(first)];
                if *start == ESCAPE_START {
                    continue;
                }
                if *start == 0 {
                    // At most 256 sets, one per byte, and ESCAPE_START is
                    // taken by escape bytes, which never get a set.
                    followers.push([0; 4]);
                    *start = u8::try_from(followers.len()).unwrap_or(ESCAPE_START);
                }
                let Some(set) = followers.get_mut(usize::from(*start) - 1) else {
                    continue;
                };
                match form.get(1) {
                    Some(&second) => for_each_encoding(second, |encoding| {
                        for byte in hex_case_variants(encoding[0]) {
                            set[usize::from(byte >> 6)] |= 1 << (byte & 63);
                        }
                    }),
                    // A one-byte form matches whatever follows.
                    None => *set = [u64::MAX; 4],
                }
            }
        }
        let max_match = forms.iter().map(|form| form.len() * 6).max().unwrap_or(0);
        Some(Redactor {
            forms,
            starts,
            followers,
            max_match,
        })
    }

    /// Masks every complete occurrence in `buffer`; returns whether any was found.
    pub fn mask_in_place(&self, buffer: &mut [u8]) -> bool {
        self.mask_starting_before(buffer, buffer.len())
    }

    /// Masks the complete occurrences that start before `limit`, each to
    /// its end even past `limit`; returns whether any was found.
    fn mask_starting_before(&self, buffer: &mut [u8], limit: usize) -> bool {
        let mut found = false;
        let mut position = 0;
        while let Some(candidate) = self
            .next_start(buffer, position)
            .filter(|candidate| *candidate < limit)
        {
            match self.longest_full_match(buffer, candidate) {
                Some(end) => {
                    buffer[candidate..end].fill(MASK);
                    found = true;
                    position = end;
                }
                None => position = candidate + 1,
            }
        }
        found
    }

    /// Returns the first offset at or after `from` whose byte can begin a
    /// match. Response bodies rarely contain one, so this loop is where
    /// redaction spends most of its time.
    fn next_start(&self, buffer: &[u8], from: usize) -> Option<usize> {
        let rest = buffer.get(from..)?;
        rest.iter()
            .enumerate()
            .position(|(offset, &byte)| match self.starts[usize::from(byte)] {
                0 => false,
                ESCAPE_START => true,
                start => match rest.get(offset + 1) {
                    // The chunk ends here, so the next byte is unknown.
                    None => true,
                    Some(&next) => {
                        self.followers[usize::from(start) - 1][usize::from(next >> 6)]
                            & (1 << (next & 63))
                            != 0
                    }
                },
            })
            .map(|offset| from + offset)
    }

    fn longest_full_match(&self, buffer: &[u8], position: usize) -> Option<usize> {
        self.forms
            .iter()
            .filter(|form| first_byte_may_match(form[0], &buffer[position..]))
            .filter_map(|form| match match_form(form, buffer, position) {
                Match::Full { end, .. } => Some(end),
                Match::Partial | Match::None => None,
            })
            .max()
    }

    /// Returns the length of the longest suffix of `buffer` that could still
    /// grow into a match once the next chunk arrives.
    fn pending_suffix(&self, buffer: &[u8]) -> usize {
        let mut position = buffer.len().saturating_sub(self.max_match);
        while let Some(candidate) = self.next_start(buffer, position) {
            let partial = self.forms.iter().any(|form| {
                first_byte_may_match(form[0], &buffer[candidate..])
                    && matches!(
                        match_form(form, buffer, candidate),
                        Match::Partial | Match::Full { longer: true, .. }
                    )
            });
            if partial {
                return buffer.len() - candidate;
            }
            position = candidate + 1;
        }
        0
    }

    /// Tells whether `buffer` contains a complete match anywhere.
    pub fn is_match(&self, buffer: &[u8]) -> bool {
        let mut position = 0;
        while let Some(candidate) = self.next_start(buffer, position) {
            if self.longest_full_match(buffer, candidate).is_some() {
                return true;
            }
            position = candidate + 1;
        }
        false
    }

    /// Returns `value` with every occurrence masked, or `None` if it had none.
    pub fn redact_header(&self, value: &HeaderValue) -> Option<HeaderValue> {
        // Most values contain no credential, so look before copying.
        if !self.is_match(value.as_bytes()) {
            return None;
        }
        let mut bytes = value.as_bytes().to_vec();
        if !self.mask_in_place(&mut bytes) {
            return None;
        }
        // Masking only swaps bytes for '*', which keeps a header value valid.
        HeaderValue::from_bytes(&bytes).ok()
    }
}

/// Buffer offsets that a match in progress has reached, rarely more than a
/// few, so they stay on the stack.
type Offsets = smallvec::SmallVec<[usize; 8]>;

/// Matches `form` at `position`, allowing each byte in any of its encodings.
///
/// Several encodings of a byte have different lengths, so the match tracks
/// every buffer offset reachable after each byte of the form (at most a few).
fn match_form(form: &[u8], buffer: &[u8], position: usize) -> Match {
    let mut offsets: Offsets = smallvec::smallvec![position];
    let mut next = Offsets::new();
    let mut partial = false;
    for &byte in form {
        next.clear();
        for &offset in &offsets {
            for_each_encoding(byte, |encoding| {
                let rest = &buffer[offset..];
                if rest.len() >= encoding.len() {
                    if eq_ignore_hex_case(&rest[..encoding.len()], encoding) {
                        next.push(offset + encoding.len());
                    }
                } else if eq_ignore_hex_case(rest, &encoding[..rest.len()]) {
                    partial = true;
                }
            });
        }
        next.sort_unstable();
        next.dedup();
        if next.is_empty() {
            return if partial { Match::Partial } else { Match::None };
        }
        std::mem::swap(&mut offsets, &mut next);
    }
    offsets.last().map_or(Match::None, |end| Match::Full {
        end: *end,
        longer: partial,
    })
}

/// Returns `form` with each non-ASCII character written as a JSON `\uXXXX`
/// escape of its code point, which is how JSON encoders that escape
/// non-ASCII text output it. Characters beyond the first plane become
/// surrogate pairs. ASCII forms return `None`.
fn json_unicode_escaped(form: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(form).ok()?;
    if text.is_ascii() {
        return None;
    }
    let mut escaped = String::with_capacity(text.len() * 2);
    for character in text.chars() {
        if character.is_ascii() {
            escaped.push(character);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in character.encode_utf16(&mut units) {
            escaped.push_str(&format!("\\u{unit:04x}"));
        }
    }
    Some(escaped.into_bytes())
}

/// Tells whether some encoding of `byte` matches the start of `rest`, or
/// all of `rest` when it is shorter. A cheap test that spares
/// [`match_form`] and its allocations at offsets where a form cannot begin.
fn first_byte_may_match(byte: u8, rest: &[u8]) -> bool {
    let mut may = false;
    for_each_encoding(byte, |encoding| {
        let length = encoding.len().min(rest.len());
        may |= eq_ignore_hex_case(&rest[..length], &encoding[..length]);
    });
    may
}

/// Returns `byte` and, for the letters a to f, its other case, because
/// `eq_ignore_hex_case` matches those letters in either case.
fn hex_case_variants(byte: u8) -> impl Iterator<Item = u8> {
    let other = (byte.is_ascii_hexdigit() && byte.is_ascii_alphabetic()).then_some(byte ^ 0x20);
    std::iter::once(byte).chain(other)
}

/// Calls `visit` with each way `byte` may be written in an echo.
fn for_each_encoding(byte: u8, mut visit: impl FnMut(&[u8])) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let high = HEX[usize::from(byte >> 4)];
    let low = HEX[usize::from(byte & 0x0f)];
    visit(&[byte]);
    visit(&[b'%', high, low]);
    visit(&[b'\\', b'u', b'0', b'0', high, low]);
    match byte {
        b' ' => visit(b"+"),
        b'/' | b'"' | b'\\' => visit(&[b'\\', byte]),
        _ => {}
    }
}

/// Compares bytes, treating hex letters in escapes case-insensitively.
///
/// Only the encodings built above are compared, whose letters are all hex
/// digits or `u`, so a case-insensitive compare of letters is exact enough:
/// a raw letter in a form compares case-insensitively too, which can only
/// mask more, never less.
fn eq_ignore_hex_case(actual: &[u8], expected: &[u8]) -> bool {
    actual.len() == expected.len()
        && actual.iter().zip(expected).all(|(a, e)| {
            a == e
                || (e.is_ascii_hexdigit() && e.is_ascii_alphabetic() && a.eq_ignore_ascii_case(e))
        })
}

/// Redacts a byte stream chunk by chunk, holding back only the bytes that
/// could be the start of a credential split across chunks.
#[derive(Debug, Default)]
pub struct StreamRedactor {
    pending: BytesMut,
}

impl StreamRedactor {
    /// Feeds one chunk; returns the bytes that are safe to send now.
    pub fn feed(&mut self, redactor: &Redactor, chunk: Bytes) -> Bytes {
        if self.pending.is_empty() && redactor.pending_suffix(&chunk) == 0 {
            if !redactor.is_match(&chunk[..]) {
                return chunk;
            }
            let mut owned = BytesMut::from(&chunk[..]);
            redactor.mask_in_place(&mut owned);
            return owned.freeze();
        }
        self.pending.extend_from_slice(&chunk);
        // The held suffix is chosen before masking, so a match that the
        // next chunk could still lengthen is masked once it is complete.
        let ready = self.pending.len() - redactor.pending_suffix(&self.pending);
        redactor.mask_starting_before(&mut self.pending, ready);
        self.pending.split_to(ready).freeze()
    }

    /// Returns the bytes still held at the end of the stream.
    pub fn finish(&mut self, redactor: &Redactor) -> Bytes {
        redactor.mask_in_place(&mut self.pending);
        self.pending.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"sk-live-abcdef123456";

    fn redactor() -> Redactor {
        Redactor::new([SECRET.to_vec(), b"Bearer sk-live-abcdef123456".to_vec()]).expect("forms")
    }

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let redactor = redactor();
        let mut stream = StreamRedactor::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&stream.feed(&redactor, Bytes::copy_from_slice(chunk)));
        }
        out.extend_from_slice(&stream.finish(&redactor));
        out
    }

    #[test]
    fn whole_secret_masked_same_length() {
        let input = b"{\"auth\": \"Bearer sk-live-abcdef123456\"}";
        let output = run(&[input]);
        assert_eq!(output.len(), input.len());
        assert!(!output.windows(SECRET.len()).any(|w| w == SECRET));
        assert!(output.starts_with(b"{\"auth\": \"*****"));
    }

    #[test]
    fn secret_split_across_every_boundary() {
        let input = b"prefix sk-live-abcdef123456 suffix sk-live-abcdef123456";
        for split in 0..input.len() {
            for second in split..input.len() {
                let output = run(&[&input[..split], &input[split..second], &input[second..]]);
                assert_eq!(output.len(), input.len(), "split at {split}/{second}");
                assert!(
                    !output.windows(SECRET.len()).any(|w| w == SECRET),
                    "secret leaked with splits at {split}/{second}"
                );
            }
        }
    }

    /// Masks as the scan did before it skipped ahead to candidate bytes:
    /// the longest full match of any form, tried at every offset.
    fn mask_at_every_offset(redactor: &Redactor, buffer: &mut [u8]) -> bool {
        let mut found = false;
        let mut position = 0;
        while position < buffer.len() {
            let end = redactor
                .forms
                .iter()
                .filter_map(|form| match match_form(form, buffer, position) {
                    Match::Full { end, .. } => Some(end),
                    Match::Partial | Match::None => None,
                })
                .max();
            match end {
                Some(end) => {
                    buffer[position..end].fill(MASK);
                    found = true;
                    position = end;
                }
                None => position += 1,
            }
        }
        found
    }

    #[test]
    fn candidate_scan_masks_like_full_scan() {
        use rand::{Rng, SeedableRng};
        let redactor =
            Redactor::new([b"a/b+c%".to_vec(), b"Bearer a/b+c%".to_vec()]).expect("forms");
        // Pieces of the forms, raw and escaped, and noise, so that random
        // buffers hold many full, partial and failed matches.
        let pieces: [&[u8]; 18] = [
            b"a", b"/", b"b", b"+", b"c", b"%", b"%2F", b"%2f", b"\\/", b"%2B", b" ", b"%25",
            b"\\u0025", b"\\u0061", b"Bearer ", b"a/b+c%", b"x", b"B",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let count = rng.gen_range(0..16);
            let input: Vec<u8> = (0..count)
                .flat_map(|_| pieces[rng.gen_range(0..pieces.len())].iter().copied())
                .collect();
            let mut fast = input.clone();
            let mut slow = input.clone();
            let found = redactor.mask_in_place(&mut fast);
            assert_eq!(found, mask_at_every_offset(&redactor, &mut slow));
            assert_eq!(fast, slow, "{}", String::from_utf8_lossy(&input));
            assert_eq!(redactor.is_match(&input), found);
        }
    }

    /// A body made of a form's first byte makes every offset a possible
    /// start. Echoes inside it must still be masked, in every encoding.
    #[test]
    fn echo_in_run_of_first_byte_masked() {
        let redactor = Redactor::new([b"aXq/9".to_vec()]).expect("form");
        for echo in [
            &b"aXq/9"[..],
            b"AXq/9",
            b"a%58q%2f9",
            b"\\u0061Xq\\/9",
            b"aaXq/9",
        ] {
            let mut buffer = [&[b'a'; 64][..], echo, &[b'a'; 64][..]].concat();
            let mut expected = buffer.clone();
            assert!(
                redactor.mask_in_place(&mut buffer),
                "{}",
                String::from_utf8_lossy(echo)
            );
            assert!(mask_at_every_offset(&redactor, &mut expected));
            assert_eq!(buffer, expected, "{}", String::from_utf8_lossy(echo));
            assert!(!buffer
                .windows(5)
                .any(|window| window.eq_ignore_ascii_case(b"aXq/9")));
        }
        let mut plain = vec![b'a'; 1024];
        assert!(!redactor.mask_in_place(&mut plain));
        assert_eq!(
            redactor.pending_suffix(&plain),
            1,
            "a last `a` may start a match"
        );
    }

    #[test]
    fn upper_cased_hex_secret_masked() {
        let redactor = Redactor::new([b"deadbeef0011".to_vec()]).expect("form");
        for echo in [
            &b"id=DEADBEEF0011;"[..],
            b"id=DeadBeef0011;",
            b"id=deadbeef0011;",
        ] {
            let mut buffer = echo.to_vec();
            assert!(
                redactor.mask_in_place(&mut buffer),
                "{}",
                String::from_utf8_lossy(echo)
            );
            assert_eq!(buffer, b"id=************;");
        }
    }

    #[test]
    fn one_byte_chunks_masked() {
        let input = b"xx sk-live-abcdef123456 yy";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let output = run(&chunks);
        assert_eq!(output, b"xx ******************** yy");
    }

    #[test]
    fn unrelated_chunks_pass_without_delay() {
        let redactor = redactor();
        let mut stream = StreamRedactor::default();
        let event = Bytes::from_static(b"data: {\"delta\": \"hello\"}\n\n");
        assert_eq!(stream.feed(&redactor, event.clone()), event);
        // A chunk ending in a possible credential start is held back...
        let held = stream.feed(&redactor, Bytes::from_static(b"data: sk-li"));
        assert_eq!(&held[..], b"data: ");
        // ...and released once it turns out to be something else.
        let released = stream.feed(&redactor, Bytes::from_static(b"mited\n\n"));
        assert_eq!(&released[..], b"sk-limited\n\n");
    }

    #[test]
    fn mixed_escapes_masked() {
        let redactor = Redactor::new([b"qk/Query+Secret=Pv6".to_vec()]).expect("form");
        let cases: [&[u8]; 6] = [
            b"key=qk/Query+Secret=Pv6&x",
            b"key=qk/Query%2BSecret%3DPv6&x",
            b"key=qk%2fQuery%2bSecret%3dPv6&x",
            b"key=qk%2FQuery%2BSecret%3DPv6&x",
            b"{\"key\": \"qk\\/Query+Secret\\u003dPv6\"}",
            b"key=%71k/Query+Secret=Pv6&x",
        ];
        for input in cases {
            let mut buffer = input.to_vec();
            assert!(
                redactor.mask_in_place(&mut buffer),
                "{}",
                String::from_utf8_lossy(input)
            );
            let text = String::from_utf8_lossy(&buffer);
            assert!(!text.contains("Query"), "{text}");
            assert!(!text.contains("Pv6"), "{text}");
            assert_eq!(buffer.len(), input.len());
        }
    }

    #[test]
    fn non_ascii_json_escapes_masked() {
        let redactor = Redactor::new(["qk-café-𝄞x".as_bytes().to_vec()]).expect("form");
        for echoed in [
            "qk-caf\\u00e9-\\ud834\\udd1ex",
            "qk-caf\\u00E9-\\uD834\\uDD1Ex",
            "qk-café-𝄞x",
        ] {
            let mut buffer = format!("{{\"key\": \"{echoed}\"}}").into_bytes();
            assert!(redactor.mask_in_place(&mut buffer), "{echoed}");
            assert!(
                !String::from_utf8_lossy(&buffer).contains("qk-caf"),
                "{echoed}"
            );
        }
    }

    #[test]
    fn escaped_secret_split_across_chunks() {
        let redactor = Redactor::new([b"a/b+c".to_vec()]).expect("form");
        let input = b"url=a%2Fb%2Bc end";
        for split in 0..input.len() {
            let mut stream = StreamRedactor::default();
            let mut out = Vec::new();
            out.extend_from_slice(&stream.feed(&redactor, Bytes::copy_from_slice(&input[..split])));
            out.extend_from_slice(&stream.feed(&redactor, Bytes::copy_from_slice(&input[split..])));
            out.extend_from_slice(&stream.finish(&redactor));
            assert_eq!(out, b"url=********* end", "split at {split}");
        }
    }

    #[test]
    fn header_values_masked() {
        let redactor = redactor();
        let value = HeaderValue::from_static("Bearer sk-live-abcdef123456");
        let masked = redactor.redact_header(&value).expect("contains the secret");
        assert_eq!(masked.as_bytes(), &[b'*'; 27]);
        assert!(redactor
            .redact_header(&HeaderValue::from_static("clean"))
            .is_none());
    }

    /// Bytes for random forms, so that forms start and continue with every
    /// kind of byte: hex letters in both cases, other letters, escape starts,
    /// bytes with a short escape, a space and the mask byte. Both bytes of
    /// `é` and a byte that is not UTF-8 cover non-ASCII forms.
    const FORM_BYTES: &[u8] = b"aAbEFfgGuqZ09 %+\\/\"=*\xc3\xa9\xff";

    fn random_form(rng: &mut impl rand::Rng) -> Vec<u8> {
        let length = rng.gen_range(1..=5);
        (0..length)
            .map(|_| FORM_BYTES[rng.gen_range(0..FORM_BYTES.len())])
            .collect()
    }

    /// Returns one to five random forms. Some are one byte long, and some
    /// start with the first byte of another form with bit 0x20 flipped,
    /// which is its other case when it is a letter.
    fn random_forms(rng: &mut impl rand::Rng) -> Vec<Vec<u8>> {
        let mut forms: Vec<Vec<u8>> = (0..rng.gen_range(1..=3))
            .map(|_| random_form(rng))
            .collect();
        if rng.gen_bool(0.3) {
            let mut other = random_form(rng);
            other[0] = forms[0][0] ^ 0x20;
            forms.push(other);
        }
        if rng.gen_bool(0.2) {
            forms.push(b"\xc3\xa9x".to_vec());
        }
        forms
    }

    /// Returns pieces that random buffers are built from: every encoding of
    /// every byte of the forms, in both hex cases, the forms themselves,
    /// their first bytes and noise.
    fn pieces_of(redactor: &Redactor) -> Vec<Vec<u8>> {
        let mut pieces: Vec<Vec<u8>> = vec![b"x".to_vec(), b"\\".to_vec(), b"%".to_vec()];
        for form in &redactor.forms {
            pieces.push(form.clone());
            pieces.push(form[..1].to_vec());
            for &byte in form {
                for_each_encoding(byte, |encoding| {
                    pieces.push(encoding.to_vec());
                    pieces.push(encoding.to_ascii_lowercase());
                });
                for variant in hex_case_variants(byte) {
                    pieces.push(vec![variant]);
                }
            }
        }
        pieces
    }

    fn random_buffer(rng: &mut impl rand::Rng, pieces: &[Vec<u8>]) -> Vec<u8> {
        let mut buffer = Vec::new();
        for _ in 0..rng.gen_range(0..14) {
            let piece = &pieces[rng.gen_range(0..pieces.len())];
            // Sometimes a long run of one piece, as in a body of letters.
            let repeat = if rng.gen_bool(0.1) {
                rng.gen_range(2..40)
            } else {
                1
            };
            for _ in 0..repeat {
                buffer.extend_from_slice(piece);
            }
        }
        buffer
    }

    /// Returns the length of the suffix that may still grow into a match,
    /// found by trying every form at every offset.
    fn pending_suffix_at_every_offset(redactor: &Redactor, buffer: &[u8]) -> usize {
        (0..buffer.len())
            .find(|&position| {
                redactor.forms.iter().any(|form| {
                    matches!(
                        match_form(form, buffer, position),
                        Match::Partial | Match::Full { longer: true, .. }
                    )
                })
            })
            .map_or(0, |position| buffer.len() - position)
    }

    fn describe(forms: &[Vec<u8>], input: &[u8]) -> String {
        format!(
            "forms {forms:?}, input {:?}",
            String::from_utf8_lossy(input)
        )
    }

    #[test]
    fn random_forms_mask_like_full_scan() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..600 {
            let forms = random_forms(&mut rng);
            let redactor = Redactor::new(forms.clone()).expect("forms");
            let pieces = pieces_of(&redactor);
            for _ in 0..60 {
                let input = random_buffer(&mut rng, &pieces);
                let context = describe(&forms, &input);
                let mut fast = input.clone();
                let mut slow = input.clone();
                let found = redactor.mask_in_place(&mut fast);
                assert_eq!(
                    found,
                    mask_at_every_offset(&redactor, &mut slow),
                    "{context}"
                );
                assert_eq!(fast, slow, "{context}");
                assert_eq!(redactor.is_match(&input), found, "{context}");
                assert_eq!(
                    redactor.pending_suffix(&input),
                    pending_suffix_at_every_offset(&redactor, &input),
                    "{context}"
                );
                if let Ok(value) = HeaderValue::from_bytes(&input) {
                    let masked = redactor.redact_header(&value);
                    assert_eq!(masked.is_some(), found, "{context}");
                    if let Some(masked) = masked {
                        assert_eq!(masked.as_bytes(), &slow[..], "{context}");
                    }
                }
            }
        }
    }

    /// Streams `input` in chunks ending at `ends` and returns the output.
    fn stream_in_chunks(redactor: &Redactor, input: &[u8], ends: &[usize]) -> Vec<u8> {
        let mut stream = StreamRedactor::default();
        let mut output = Vec::new();
        let mut start = 0;
        for &end in ends {
            let chunk = Bytes::copy_from_slice(&input[start..end]);
            output.extend_from_slice(&stream.feed(redactor, chunk));
            start = end;
        }
        let last = Bytes::copy_from_slice(&input[start..]);
        output.extend_from_slice(&stream.feed(redactor, last));
        output.extend_from_slice(&stream.finish(redactor));
        output
    }

    /// Checks one split of `input`: the stream must mask exactly what
    /// masking the whole input at once masks.
    fn check_stream(redactor: &Redactor, input: &[u8], ends: &[usize], context: &str) {
        let output = stream_in_chunks(redactor, input, ends);
        assert_eq!(output.len(), input.len(), "splits at {ends:?}, {context}");
        // A form containing the mask byte can match bytes that were masked,
        // so there the result depends on the order of masking.
        if redactor.forms.iter().any(|form| form.contains(&MASK)) {
            return;
        }
        let mut expected = input.to_vec();
        mask_at_every_offset(redactor, &mut expected);
        assert_eq!(
            output,
            expected,
            "splits at {ends:?}, {context}: streamed {:?}",
            String::from_utf8_lossy(&output)
        );
    }

    /// A match that the next chunk lengthens, such as a last byte echoed as
    /// an escape, is masked whole.
    #[test]
    fn match_lengthened_by_next_chunk_masked() {
        // Forms, input and the expected output of every split.
        type Case<'a> = (&'a [&'a [u8]], &'a [u8], &'a [u8]);
        let cases: [Case; 3] = [
            (&[b"ab%"], b"x ab%25 y", b"x ***** y"),
            (&[b"ab\\"], b"x ab\\\\ y", b"x **** y"),
            (&[b"abc", b"abcdef"], b"x abcdef y", b"x ****** y"),
        ];
        for (forms, input, expected) in cases {
            let redactor = Redactor::new(forms.iter().map(|form| form.to_vec())).expect("forms");
            for split in 0..=input.len() {
                let output = stream_in_chunks(&redactor, input, &[split]);
                assert_eq!(
                    output,
                    expected,
                    "split at {split}: {}",
                    String::from_utf8_lossy(&output)
                );
            }
        }
    }

    #[test]
    fn random_forms_stream_like_full_scan() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for _ in 0..120 {
            let forms = random_forms(&mut rng);
            let redactor = Redactor::new(forms.clone()).expect("forms");
            let pieces = pieces_of(&redactor);
            for _ in 0..10 {
                let input = random_buffer(&mut rng, &pieces);
                let context = describe(&forms, &input);
                // Every single split of short inputs, every third one of long
                // inputs, then a few random multi-chunk splits.
                let step = if input.len() > 64 { 3 } else { 1 };
                for split in (0..=input.len()).step_by(step) {
                    check_stream(&redactor, &input, &[split], &context);
                }
                for _ in 0..4 {
                    let mut ends: Vec<usize> = (0..rng.gen_range(1..6))
                        .map(|_| rng.gen_range(0..=input.len()))
                        .collect();
                    ends.sort_unstable();
                    check_stream(&redactor, &input, &ends, &context);
                }
            }
        }
    }
}
