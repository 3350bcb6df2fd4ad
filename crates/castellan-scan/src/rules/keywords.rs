//! The keyword prefilter: one pass over an input that finds every keyword,
//! ASCII case-insensitively, overlapping occurrences included.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::{Builder, DFA};
use aho_corasick::{Anchored, MatchKind, PatternID};

use crate::error::ScanError;

/// Number of parts that an input of at least [`INTERLEAVED_MIN_LEN`] bytes
/// is split into, four because `advance_streams` names each stream. One
/// loop advances a DFA state in each part, so the CPU overlaps their chains
/// of dependent table lookups. Timed alone over 97 MB of crate sources, the
/// keyword pass ran about 1.6 times as fast with four streams as with two,
/// and 2.3 times as fast as with one.
const STREAMS: usize = 4;

/// Shorter inputs are searched in one stream: the other streams' setup and
/// the bytes they read twice would cost more than they save.
const INTERLEAVED_MIN_LEN: usize = 4 * 1024;

/// A compiled keyword set.
///
/// It drives the aho-corasick DFA with its own loop instead of
/// `find_overlapping_iter`. That iterator spent about 19 instructions per
/// byte (callgrind, aho-corasick 1.1) and was the largest cost of a scan.
/// This loop does one table lookup and one compare per byte. The matches
/// are the same: every pattern at every end offset, in order of end offset.
#[derive(Debug, Clone)]
pub(crate) struct KeywordSearch {
    dfa: DFA,
    start: StateID,
    /// Bytes of context a stream needs before its first reported match, so
    /// the DFA is in the same state as a search from the start of the input.
    overlap: usize,
}

impl KeywordSearch {
    pub(crate) fn new(keywords: &[String]) -> Result<Self, ScanError> {
        let prefilter_error = |message: String| ScanError::Prefilter { message };
        let dfa = Builder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            // The search loops never call a prefilter, and with one the start
            // state would count as special, so every return to it would
            // leave the fast path.
            .prefilter(false)
            .build(keywords)
            .map_err(|error| prefilter_error(error.to_string()))?;
        let start = dfa
            .start_state(Anchored::No)
            .map_err(|error| prefilter_error(error.to_string()))?;
        let overlap = dfa.max_pattern_len();
        Ok(KeywordSearch {
            dfa,
            start,
            overlap,
        })
    }

    /// Calls `report(pattern, start)` for every keyword occurrence in `data`,
    /// in order of end offset, the order of `find_overlapping_iter`.
    pub(crate) fn for_each_match(&self, data: &[u8], mut report: impl FnMut(usize, usize)) {
        // An empty keyword makes the start state a match state: it matches
        // at offset 0 before any byte is read, and after every byte.
        self.report_state(self.start, 0, &mut report);
        if data.len() < INTERLEAVED_MIN_LEN {
            let mut state = self.start;
            for (offset, &byte) in data.iter().enumerate() {
                state = self.dfa.next_state(Anchored::No, state, byte);
                if self.dfa.is_special(state) {
                    self.report_state(state, offset + 1, &mut report);
                }
            }
            return;
        }
        self.interleaved(data, &mut report);
    }

    /// Searches [`STREAMS`] parts of `data` in one loop. Stream `k` reports
    /// matches that end in part `k`. It starts `overlap` bytes before its
    /// part, so its state is exact from the first byte of the part, and it
    /// drops matches that end before the part.
    fn interleaved(&self, data: &[u8], report: &mut impl FnMut(usize, usize)) {
        let part = data.len() / STREAMS;
        let part_start = |k: usize| k * part;
        let part_end = |k: usize| {
            if k + 1 == STREAMS {
                data.len()
            } else {
                (k + 1) * part
            }
        };

        let starts: [usize; STREAMS] =
            std::array::from_fn(|k| part_start(k).saturating_sub(self.overlap));
        // Every stream is at least `part` bytes long: the loop below advances
        // all of them over that many bytes, and then each one finishes alone.
        let streams: [&[u8]; STREAMS] = std::array::from_fn(|k| &data[starts[k]..starts[k] + part]);
        let mut states = [self.start; STREAMS];
        let mut found: [Vec<(usize, usize)>; STREAMS] = std::array::from_fn(|_| Vec::new());

        let mut offset = 0;
        while offset < part {
            offset = self.advance_streams(&streams, &mut states, offset);
            // `advance_streams` stops after byte `offset - 1` of the streams
            // when one of them is in a special state, or at their end.
            for k in 0..STREAMS {
                if self.dfa.is_special(states[k]) {
                    self.collect_state(states[k], starts[k] + offset, &mut found[k]);
                }
            }
        }

        for k in 0..STREAMS {
            let tail_start = starts[k] + part;
            for (offset, &byte) in data[tail_start..part_end(k)].iter().enumerate() {
                states[k] = self.dfa.next_state(Anchored::No, states[k], byte);
                if self.dfa.is_special(states[k]) {
                    self.collect_state(states[k], tail_start + offset + 1, &mut found[k]);
                }
            }
        }

        // Parts are in input order, so this keeps the order of end offsets.
        for (k, matches) in found.iter().enumerate() {
            for &(pattern, start) in matches {
                let end = start + self.dfa.pattern_len(PatternID::must(pattern));
                if k == 0 || end > part_start(k) {
                    report(pattern, start);
                }
            }
        }
    }

    /// Advances the states of four streams of equal length from byte
    /// `offset` on, until one of them enters a special state or the streams
    /// end, and returns the offset after the last byte read.
    ///
    /// The four streams are named one by one so that the compiler keeps
    /// their positions and states in registers. With the match handling in
    /// the same loop, or the streams in an array, it kept them on the stack,
    /// and the keyword pass took about 12 instructions per byte instead of
    /// about 9.6 (callgrind, 97 MB of crate sources).
    #[inline(always)]
    fn advance_streams(
        &self,
        streams: &[&[u8]; 4],
        states: &mut [StateID; 4],
        offset: usize,
    ) -> usize {
        let len = streams[0].len();
        let (a, b, c, d) = (
            &streams[0][offset..len],
            &streams[1][offset..len],
            &streams[2][offset..len],
            &streams[3][offset..len],
        );
        let [mut state_a, mut state_b, mut state_c, mut state_d] = *states;
        let mut read = 0;
        for (((&byte_a, &byte_b), &byte_c), &byte_d) in a.iter().zip(b).zip(c).zip(d) {
            // Advancing every state before checking any keeps the lookups of
            // different streams independent of each other.
            state_a = self.dfa.next_state(Anchored::No, state_a, byte_a);
            state_b = self.dfa.next_state(Anchored::No, state_b, byte_b);
            state_c = self.dfa.next_state(Anchored::No, state_c, byte_c);
            state_d = self.dfa.next_state(Anchored::No, state_d, byte_d);
            read += 1;
            if self.dfa.is_special(state_a)
                || self.dfa.is_special(state_b)
                || self.dfa.is_special(state_c)
                || self.dfa.is_special(state_d)
            {
                break;
            }
        }
        *states = [state_a, state_b, state_c, state_d];
        offset + read
    }

    /// Appends the matches of a match state ending at `end` to `found`.
    #[cold]
    #[inline(never)]
    fn collect_state(&self, state: StateID, end: usize, found: &mut Vec<(usize, usize)>) {
        self.report_state(state, end, &mut |pattern, start| {
            found.push((pattern, start))
        });
    }

    /// Reports the patterns of a match state ending at `end` as (pattern, start).
    /// Kept out of line so the search loops hold their states in registers.
    #[cold]
    #[inline(never)]
    fn report_state(&self, state: StateID, end: usize, report: &mut impl FnMut(usize, usize)) {
        if !self.dfa.is_match(state) {
            return;
        }
        for index in 0..self.dfa.match_len(state) {
            let pattern = self.dfa.match_pattern(state, index);
            report(pattern.as_usize(), end - self.dfa.pattern_len(pattern));
        }
    }
}

#[cfg(test)]
mod tests {
    use aho_corasick::{AhoCorasick, AhoCorasickBuilder};

    use super::*;

    const KEYWORDS: [&str; 9] = [
        "key",
        "key-",
        "passw",
        "password=",
        "://",
        "q~",
        "eyj",
        "sk-ant-api",
        "-us",
    ];

    /// Returns (pattern, start) pairs from the aho-corasick iterator, the
    /// reference the own loop must reproduce exactly.
    fn reference(keywords: &[String], data: &[u8]) -> Vec<(usize, usize)> {
        let automaton: AhoCorasick = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(keywords)
            .expect("keywords compile");
        automaton
            .find_overlapping_iter(data)
            .map(|found| (found.pattern().as_usize(), found.start()))
            .collect()
    }

    fn own(keywords: &[String], data: &[u8]) -> Vec<(usize, usize)> {
        let search = KeywordSearch::new(keywords).expect("keywords compile");
        let mut matches = Vec::new();
        search.for_each_match(data, |pattern, start| matches.push((pattern, start)));
        matches
    }

    /// Builds text of `len` bytes from keyword fragments, case changes,
    /// newlines and filler, from a fixed seed so failures repeat.
    fn generated_text(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let pieces: [&[u8]; 12] = [
            b"KEY",
            b"key-",
            b"Passw",
            b"password=",
            b"https://",
            b"q~",
            b"eyJ",
            b"sk-ant-api",
            b"-US",
            b"\r\n",
            b"\xe9\xff",
            b"x",
        ];
        let mut text = Vec::with_capacity(len + 16);
        while text.len() < len {
            let piece = pieces[(next() % pieces.len() as u64) as usize];
            let cut = 1 + (next() % piece.len() as u64) as usize;
            text.extend_from_slice(&piece[..cut]);
            if next() % 3 == 0 {
                text.push(b' ');
            }
        }
        text.truncate(len);
        text
    }

    fn keyword_list(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| word.to_string()).collect()
    }

    #[test]
    fn matches_equal_reference_on_short_inputs() {
        let keywords = keyword_list(&KEYWORDS);
        for seed in 1..200 {
            let text = generated_text(seed, (seed as usize * 37) % 3000);
            assert_eq!(
                own(&keywords, &text),
                reference(&keywords, &text),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn matches_equal_reference_on_interleaved_inputs() {
        let keywords = keyword_list(&KEYWORDS);
        // Lengths at the threshold, and with every remainder modulo STREAMS,
        // so the last part is longer than the others by 0 to 3 bytes.
        let lengths = [
            INTERLEAVED_MIN_LEN,
            INTERLEAVED_MIN_LEN + 1,
            INTERLEAVED_MIN_LEN + 2,
            INTERLEAVED_MIN_LEN + 3,
            50_001,
            200_000,
        ];
        for (seed, len) in lengths.into_iter().enumerate() {
            let text = generated_text(seed as u64 + 7, len);
            let expected = reference(&keywords, &text);
            assert!(
                expected.len() > len / 20,
                "{len}: too few matches to compare"
            );
            assert_eq!(own(&keywords, &text), expected, "length {len}");
        }
    }

    #[test]
    fn keywords_across_part_boundaries_are_found_once() {
        let keywords = keyword_list(&["password="]);
        let mut text = vec![b'.'; 40_000];
        let part = text.len() / STREAMS;
        // Place a keyword across each boundary between parts, so one stream
        // reads its start and the next stream reads its end, and one that
        // ends exactly at a boundary.
        let starts = [part - 4, 2 * part - 1, 3 * part - 9, part + 100];
        for start in starts {
            text[start..start + 9].copy_from_slice(b"PassWord=");
        }
        let mut expected: Vec<(usize, usize)> = starts.iter().map(|&start| (0, start)).collect();
        expected.sort_by_key(|&(_, start)| start);
        assert_eq!(own(&keywords, &text), expected);
    }

    #[test]
    fn empty_keyword_matches_every_offset() {
        let keywords = keyword_list(&["", "ab"]);
        for text in [&b""[..], b"xab", &generated_text(3, 20_000)] {
            assert_eq!(own(&keywords, text), reference(&keywords, text));
        }
    }

    #[test]
    fn no_keywords_match_nothing() {
        let text = generated_text(5, 30_000);
        assert!(own(&[], &text).is_empty());
    }
}
