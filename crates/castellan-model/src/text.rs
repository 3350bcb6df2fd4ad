//! Escaping of untrusted text for terminals and logs.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Escapes the characters of `text` that a terminal acts on instead of
/// showing: C0 controls (newline and tab included), DEL, C1 controls, and
/// the Unicode bidirectional formatting characters that reorder the text
/// around them (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to
/// U+2069). Each becomes a Rust-style escape such as `\u{1b}`. Other text,
/// backslashes and non-ASCII letters included, is returned unchanged and
/// without a copy.
///
/// Stored names, notes, paths, request data and file contents go through
/// it before they reach a terminal or a log line. An escape sequence in
/// them could move the cursor, recolor or retitle the operator's terminal,
/// or forge output lines.
pub fn printable(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(is_unprintable) else {
        return Cow::Borrowed(text);
    };
    let mut escaped = String::with_capacity(text.len() + 8);
    escaped.push_str(&text[..first]);
    for c in text[first..].chars() {
        if is_unprintable(c) {
            let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// Tells whether [`printable`] escapes `c`.
pub fn is_unprintable(c: char) -> bool {
    c.is_control() || is_bidi_format(c)
}

/// Unicode bidirectional marks, embeddings, overrides and isolates.
fn is_bidi_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_terminal_controls() {
        let cases = [
            ("tok\u{1b}]0;owned\u{7}", "tok\\u{1b}]0;owned\\u{7}"),
            ("\u{1b}[2J\u{1b}[H", "\\u{1b}[2J\\u{1b}[H"),
            ("two\nlines\r", "two\\u{a}lines\\u{d}"),
            ("tab\there", "tab\\u{9}here"),
            ("nul\0", "nul\\u{0}"),
            ("del\u{7f}", "del\\u{7f}"),
            ("csi\u{9b}31m", "csi\\u{9b}31m"),
            ("nel\u{85}", "nel\\u{85}"),
            ("exe.\u{202e}txt", "exe.\\u{202e}txt"),
            ("\u{2066}isolate\u{2069}", "\\u{2066}isolate\\u{2069}"),
            ("mark\u{200f}\u{61c}", "mark\\u{200f}\\u{61c}"),
        ];
        for (text, expected) in cases {
            assert_eq!(printable(text), expected, "for {text:?}");
        }
    }

    #[test]
    fn printable_keeps_ordinary_text() {
        let cases = [
            "",
            "reader-bot",
            "ops@example.com",
            "Zoë Ångström, 東京, مرحبا",
            "C:\\Users\\bot \\u{1b} \"quoted\"",
            "emoji \u{1f512} and zero\u{200b}width",
        ];
        for text in cases {
            let printed = printable(text);
            assert!(matches!(printed, Cow::Borrowed(_)), "{text:?} was copied");
            assert_eq!(printed, text);
        }
    }

    #[test]
    fn printable_output_has_no_controls() {
        let every_char = (0..=0x2100)
            .filter_map(char::from_u32)
            .chain(['\u{202e}', '\u{2069}']);
        let text: String = every_char.collect();
        let printed = printable(&text);
        let unprintable: Vec<char> = printed.chars().filter(|c| is_unprintable(*c)).collect();
        assert!(unprintable.is_empty(), "{unprintable:?}");
    }
}
