//! The log of every command: one line per event on stderr, as text or as
//! JSON, with the text of requests, upstreams and the store escaped.
//!
//! Log fields carry text that others choose: request paths, upstream
//! certificate names inside TLS errors, suspension reasons, alert
//! summaries. Escaping each field as it is written covers every log call,
//! including those added later, instead of relying on each call site.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, IsTerminal as _, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::EnvFilter;

use crate::output::{escape_json_unprintable, is_unprintable, printable};

/// Installs the global subscriber: text, colored only on a terminal
/// without `NO_COLOR`, or JSON lines.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_env("CASTELLAN_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder
            .json()
            .with_writer(|| JsonEscaping(io::stderr()))
            .init();
    } else {
        builder
            .with_ansi(use_colors())
            .fmt_fields(EscapedFields)
            .with_writer(io::stderr)
            .init();
    }
}

/// Tells whether stderr is a terminal and `NO_COLOR` is unset or empty. A
/// file or a log collector would keep color codes as text.
fn use_colors() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    io::stderr().is_terminal() && !no_color
}

/// Formats the fields of text log lines: the message as it is, numbers and
/// booleans bare, and every other value as a quoted string in Rust's
/// `Debug` form. Quoting escapes `"`, `\` and control characters, so text
/// from outside cannot forge `name=value` pairs, and [`printable`] then
/// escapes what `Debug` leaves (a message's controls, the bidirectional
/// characters). Unlike tracing's default, it drops the `log.*` fields of
/// events from the `log` crate, which name the library's source file.
struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first_field: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes the fields of one event or span; see [`EscapedFields`].
struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    first_field: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    /// Writes `name=value`, or the value alone for the message, after a
    /// space unless it is the first field.
    fn write_field(&mut self, field: &Field, value: &str) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let separator = if self.first_field { "" } else { " " };
        self.first_field = false;
        let value = printable(value);
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}{value}")
        } else {
            write!(self.writer, "{separator}{}={value}", field.name())
        };
    }

    /// Writes `value` as a quoted, escaped string.
    fn write_quoted(&mut self, field: &Field, value: &str) {
        self.write_field(field, &format!("{value:?}"));
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write_field(field, &value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write_field(field, &value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.write_field(field, &value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write_field(field, &value.to_string());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write_field(field, value);
        } else {
            self.write_quoted(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write_quoted(field, &value.to_string());
        let sources: Vec<String> = std::iter::successors(value.source(), |error| error.source())
            .map(|source| format!("{:?}", source.to_string()))
            .collect();
        if !sources.is_empty() && self.result.is_ok() {
            let sources = printable(&sources.join(", ")).into_owned();
            self.result = write!(self.writer, " {}.sources=[{sources}]", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.write_field(field, &text);
        } else {
            self.write_quoted(field, &text);
        }
    }
}

/// A writer of JSON lines that escapes what serde_json leaves raw inside
/// strings: DEL, C1 controls, bidirectional formatting characters and the
/// Unicode line separators. JSON's own syntax is ASCII, so each of them
/// sits inside a string, and a parser reads the same value back.
struct JsonEscaping<W>(W);

impl<W: Write> Write for JsonEscaping<W> {
    /// Writes `buf` whole when it needs escaping. tracing formats each event
    /// into one string and writes it with one `write_all`, so a buffer never
    /// ends inside a character. Should one, its broken bytes become U+FFFD
    /// rather than pass through unescaped.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let valid = matches!(text, Cow::Borrowed(_));
        if valid && !text.contains(|c: char| c != '\n' && is_unprintable(c)) {
            return self.0.write(buf);
        }
        let escaped = escape_json_unprintable(text.into_owned());
        self.0.write_all(escaped.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log output collected in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// An error with a cause, both with text that others chose.
    #[derive(Debug)]
    struct Failure(Option<Box<Failure>>, &'static str);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.1)
        }
    }

    impl std::error::Error for Failure {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.0.as_deref().map(|cause| cause as _)
        }
    }

    /// Logs a path, an error with a forged line and forged fields, and a
    /// message, each with characters a terminal acts on.
    fn log_hostile_event() {
        let path = "/up/\u{202e}txt.exe\u{9b}31m\u{2028}x";
        let error = "DnsName(\"evil\u{1b}]0;owned\u{7}\nFORGED\") decision=allow";
        tracing::warn!(path = %path, error = %error, status = 502, agent = "bot\u{7f}", "failed \u{1b}[2J");
    }

    fn unprintable_in(text: &str) -> Vec<char> {
        text.chars()
            .filter(|&c| c != '\n' && is_unprintable(c))
            .collect()
    }

    /// Returns what `log` writes through the text format.
    fn text_log(log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        captured.text()
    }

    #[test]
    fn text_log_escapes_every_field() {
        let text = text_log(log_hostile_event);

        assert_eq!(unprintable_in(&text), Vec::<char>::new(), "{text:?}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r#"failed \u{1b}[2J path="/up/\u{202e}txt.exe\u{9b}31m\u{2028}x""#),
            "{text}"
        );
        assert!(
            text.contains(r#"error="DnsName(\"evil\u{1b}]0;owned\u{7}\nFORGED\") decision=allow""#),
            "{text}"
        );
        assert!(text.contains(" status=502"), "{text}");
        assert!(text.contains(r#" agent="bot\u{7f}""#), "{text}");
    }

    #[test]
    fn text_log_drops_log_crate_fields() {
        let text = text_log(|| {
            tracing::warn!(
                log.target = "rustls::msgs",
                log.file = "/root/src/handshake.rs",
                "illegal name"
            )
        });

        assert!(text.contains("illegal name"), "{text}");
        assert!(!text.contains("log."), "{text}");
        assert!(!text.contains("handshake.rs"), "{text}");
    }

    #[test]
    fn text_log_lists_error_sources() {
        let cause = Failure(None, "inner \u{1b}[31m");
        let failure = Failure(Some(Box::new(cause)), "outer failed");
        let text = text_log(|| {
            tracing::warn!(error = &failure as &dyn std::error::Error, "request failed")
        });

        assert!(
            text.contains(
                r#"request failed error="outer failed" error.sources=["inner \u{1b}[31m"]"#
            ),
            "{text}"
        );
    }

    #[test]
    fn json_log_escapes_every_field() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || JsonEscaping(writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, log_hostile_event);

        let text = captured.text();
        assert_eq!(unprintable_in(&text), Vec::<char>::new(), "{text:?}");
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let fields = &line["fields"];
        assert_eq!(fields["path"], "/up/\u{202e}txt.exe\u{9b}31m\u{2028}x");
        assert_eq!(
            fields["error"],
            "DnsName(\"evil\u{1b}]0;owned\u{7}\nFORGED\") decision=allow"
        );
        assert_eq!(fields["message"], "failed \u{1b}[2J");
    }

    #[test]
    fn json_writer_never_passes_split_characters() {
        let captured = Captured::default();
        let mut writer = JsonEscaping(captured.clone());
        let line = "{\"a\":\"x\u{9b}y\"}\n".as_bytes();
        // Split inside the two bytes of U+009B.
        let split = line.iter().position(|&byte| byte == 0xc2).unwrap() + 1;
        writer.write_all(&line[..split]).unwrap();
        writer.write_all(&line[split..]).unwrap();

        let text = captured.text();
        assert_eq!(unprintable_in(&text), Vec::<char>::new(), "{text:?}");
    }
}
