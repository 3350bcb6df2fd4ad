//! Escaping of untrusted text for terminals and logs.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Escapes the characters of `text` that a terminal acts on instead of
/// showing: C0 controls (newline and tab included), DEL, C1 controls, the
/// Unicode bidirectional formatting characters that reorder the text
/// around them (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to
/// U+2069), and the line and paragraph separators (U+2028, U+2029). Each
/// becomes a Rust-style escape such as `\u{1b}`. Other text, backslashes
/// and non-ASCII letters included, is returned unchanged and without a
/// copy.
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
    c.is_control() || is_bidi_format(c) || is_line_separator(c)
}

/// Tells whether `c` is the Unicode line or paragraph separator, at which
/// some viewers and editors break lines.
fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
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
            ("line\u{2028}para\u{2029}", "line\\u{2028}para\\u{2029}"),
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

    /// The characters the documentation of [`printable`] lists, written
    /// out here rather than taken from [`is_unprintable`].
    #[test]
    fn printable_escapes_documented_characters() {
        let documented = (0x00..=0x1f)
            .chain(0x7f..=0x9f)
            .chain([0x061c, 0x200e, 0x200f, 0x2028, 0x2029])
            .chain(0x202a..=0x202e)
            .chain(0x2066..=0x2069);
        for code in documented {
            let c = char::from_u32(code).unwrap();
            assert_eq!(
                printable(&c.to_string()),
                format!("\\u{{{code:x}}}"),
                "U+{code:04X}"
            );
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
