//! Redaction of the injected credential from responses.
//!
//! An upstream may echo what it received (httpbin's `/headers` does), so
//! every byte of a response passes a scan for the credential in each form it
//! was sent in. Matches are overwritten with `*` of the same length, which
//! keeps `Content-Length` and the framing of JSON and event streams valid.

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::{Bytes, BytesMut};
use http::HeaderValue;

/// The forms of one credential that must never reach an agent.
#[derive(Debug)]
pub struct Redactor {
    automaton: AhoCorasick,
    /// Every form, to find partial matches at the end of a chunk.
    forms: Vec<Vec<u8>>,
}

const MASK: u8 = b'*';

impl Redactor {
    /// Builds a redactor for `forms`; empty forms are ignored.
    ///
    /// Returns `None` when there is nothing to redact.
    pub fn new(forms: impl IntoIterator<Item = Vec<u8>>) -> Option<Self> {
        let mut forms: Vec<Vec<u8>> = forms.into_iter().filter(|f| !f.is_empty()).collect();
        forms.sort();
        forms.dedup();
        if forms.is_empty() {
            return None;
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&forms)
            .ok()?;
        Some(Redactor { automaton, forms })
    }

    /// Masks every complete occurrence in `buffer`; returns whether any was found.
    pub fn mask_in_place(&self, buffer: &mut [u8]) -> bool {
        let matches: Vec<_> = self
            .automaton
            .find_iter(&*buffer)
            .map(|m| m.range())
            .collect();
        for range in &matches {
            buffer[range.clone()].fill(MASK);
        }
        !matches.is_empty()
    }

    /// Returns the length of the longest suffix of `buffer` that is a proper
    /// prefix of some form: bytes that may complete into a match once the
    /// next chunk arrives.
    fn pending_suffix(&self, buffer: &[u8]) -> usize {
        let longest = self.forms.iter().map(Vec::len).max().unwrap_or(0);
        let limit = longest.saturating_sub(1).min(buffer.len());
        (1..=limit)
            .rev()
            .find(|&k| {
                let suffix = &buffer[buffer.len() - k..];
                self.forms
                    .iter()
                    .any(|form| form.len() > k && form.starts_with(suffix))
            })
            .unwrap_or(0)
    }

    /// Returns `value` with every occurrence masked, or `None` if it had none.
    pub fn redact_header(&self, value: &HeaderValue) -> Option<HeaderValue> {
        let mut bytes = value.as_bytes().to_vec();
        if !self.mask_in_place(&mut bytes) {
            return None;
        }
        // Masking only swaps bytes for '*', which keeps a header value valid.
        HeaderValue::from_bytes(&bytes).ok()
    }
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
            if !redactor.automaton.is_match(&chunk[..]) {
                return chunk;
            }
            let mut owned = BytesMut::from(&chunk[..]);
            redactor.mask_in_place(&mut owned);
            return owned.freeze();
        }
        self.pending.extend_from_slice(&chunk);
        redactor.mask_in_place(&mut self.pending);
        let hold = redactor.pending_suffix(&self.pending);
        let ready = self.pending.len() - hold;
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
    fn header_values_masked() {
        let redactor = redactor();
        let value = HeaderValue::from_static("Bearer sk-live-abcdef123456");
        let masked = redactor.redact_header(&value).expect("contains the secret");
        assert_eq!(masked.as_bytes(), &[b'*'; 27]);
        assert!(redactor
            .redact_header(&HeaderValue::from_static("clean"))
            .is_none());
    }
}
