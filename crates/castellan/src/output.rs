//! Helpers for command output.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;

pub use castellan_model::text::{is_unprintable, printable};

/// Returns a table in the style every command uses.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(header.to_vec());
    table
}

/// Escapes each line of `text` with [`printable`] but keeps its line
/// breaks, for multi-line messages such as configuration errors, whose
/// lines can quote keys and values from the file. A `\r` before a line
/// break is escaped.
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    if !text.contains(|c: char| c != '\n' && is_unprintable(c)) {
        return Cow::Borrowed(text);
    }
    let lines: Vec<Cow<'_, str>> = text.split('\n').map(printable).collect();
    Cow::Owned(lines.join("\n"))
}

/// Serializes `value` as indented JSON for stdout, with the characters
/// that [`printable`] escapes and JSON leaves raw (DEL, C1 controls and
/// the bidirectional formatting characters) written as `\uXXXX` escapes.
/// JSON's own syntax is ASCII, so each of them sits inside a string, and
/// the escape keeps the document's meaning: a parser reads the same value.
pub fn json_pretty<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value).map(escape_json_unprintable)
}

/// Like [`json_pretty`], on one line, for output with one value per line.
pub fn json_line<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string(value).map(escape_json_unprintable)
}

/// Escapes the unprintable characters of serialized JSON other than the
/// line breaks of its layout. JSON escapes the C0 controls inside strings
/// itself, so a raw line break can only be layout.
pub fn escape_json_unprintable(json: String) -> String {
    let unprintable = |c: char| c != '\n' && is_unprintable(c);
    if !json.contains(unprintable) {
        return json;
    }
    let mut escaped = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unprintable(c) {
            // Every such character is in the Basic Multilingual Plane, so
            // four hex digits are enough.
            let _ = write!(escaped, "\\u{:04x}", u32::from(c));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// First millisecond of year 10000, which RFC 3339 cannot write.
const MAX_RFC3339_MS: i64 = 253_402_300_800_000;

/// Formats unix milliseconds as an RFC 3339 UTC time, or `-` outside years
/// 1970 to 9999.
pub fn time(ms: i64) -> String {
    let Ok(ms) = u64::try_from(ms) else {
        return "-".into();
    };
    if ms >= MAX_RFC3339_MS as u64 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Formats the time since `ms` as a short age such as `3d` or `5h`.
pub fn age(ms: i64, now_ms: i64) -> String {
    let seconds = (now_ms - ms).max(0) / 1000;
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text that a terminal acts on: a C1 control sequence introducer, a
    /// right-to-left override, an isolate, DEL, and C0 controls that JSON
    /// escapes itself.
    const HOSTILE: &str = "a\u{9b}31m\u{202e}moc.\u{2066}x\u{7f}\u{1b}]0;t\u{7}\n";

    #[test]
    fn json_escapes_terminal_controls() {
        let value = serde_json::json!({ "owner": HOSTILE, "list": [HOSTILE] });
        for json in [json_pretty(&value).unwrap(), json_line(&value).unwrap()] {
            let raw: Vec<char> = json
                .chars()
                .filter(|&c| c != '\n' && is_unprintable(c))
                .collect();
            assert_eq!(raw, Vec::<char>::new(), "{json}");
            assert!(json.contains(r"\u009b31m\u202emoc.\u2066x\u007f"), "{json}");
            let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(parsed, value, "the escapes change the value");
        }
    }

    #[test]
    fn json_escapes_every_unprintable_char() {
        let text: String = (0..=0x3000)
            .chain([0xfeff, 0x1_f512, 0x10_ffff])
            .filter_map(char::from_u32)
            .collect();
        let mut map = serde_json::Map::new();
        map.insert(text.clone(), serde_json::json!([text]));
        let value = serde_json::Value::Object(map);
        let line = json_line(&value).unwrap();
        assert!(!line.contains('\n'), "json_line wrote a line break");
        for json in [json_pretty(&value).unwrap(), line] {
            let raw: Vec<char> = json
                .chars()
                .filter(|&c| c != '\n' && is_unprintable(c))
                .collect();
            assert_eq!(raw, Vec::<char>::new());
            let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(parsed, value, "the escapes change the value");
        }
    }

    #[test]
    fn json_keeps_ordinary_text_and_layout() {
        let value = serde_json::json!({ "name": "zoë \\ 東京", "n": 1 });
        let pretty = json_pretty(&value).unwrap();
        assert_eq!(pretty, serde_json::to_string_pretty(&value).unwrap());
        assert!(pretty.contains('\n'), "{pretty}");
        assert_eq!(json_line(&value).unwrap(), value.to_string());
    }

    #[test]
    fn printable_lines_keeps_line_breaks() {
        let text =
            "invalid configuration x.toml: 1 error\nx.toml:1:1: key \u{1b}[31m\r\n  hint: fix it\n";
        assert_eq!(
            printable_lines(text),
            "invalid configuration x.toml: 1 error\nx.toml:1:1: key \\u{1b}[31m\\u{d}\n  hint: fix it\n"
        );
        let plain = "first\nsecond\n";
        assert!(matches!(printable_lines(plain), Cow::Borrowed(_)));
    }
}
