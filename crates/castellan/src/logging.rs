//! The log of every command: one line per event on stderr, as text or as
//! JSON, with the text of requests, upstreams and the store escaped.
//!
//! Log fields carry text that others choose: request paths, upstream
//! certificate names inside TLS errors, suspension reasons, alert
//! summaries. Escaping each field as it is written covers every log call,
//! including those added later, instead of relying on each call site.

use std::io::{self, IsTerminal as _, Write};

use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::format::{self, Writer};
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
            .fmt_fields(escaped_fields())
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

/// Formats the fields of a text line as `name=value`, the message without
/// its name, each value escaped with [`printable`]. String values keep the
/// quotes of their `Debug` form, as in tracing's default format.
fn escaped_fields() -> impl for<'writer> FormatFields<'writer> + 'static {
    format::debug_fn(|writer: &mut Writer<'_>, field, value| {
        let text = format!("{value:?}");
        let text = printable(&text);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

/// A writer of JSON lines that escapes what serde_json leaves raw inside
/// strings: DEL, C1 controls, bidirectional formatting characters and the
/// Unicode line separators. JSON's own syntax is ASCII, so each of them
/// sits inside a string, and a parser reads the same value back.
struct JsonEscaping<W>(W);

impl<W: Write> Write for JsonEscaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // tracing formats each event into one buffer and writes it whole.
        match std::str::from_utf8(buf) {
            Ok(text) if text.contains(|c: char| c != '\n' && is_unprintable(c)) => {
                let escaped = escape_json_unprintable(text.to_owned());
                self.0.write_all(escaped.as_bytes())?;
                Ok(buf.len())
            }
            _ => self.0.write(buf),
        }
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

    /// Logs a path, an error with a forged line, and a message, each with
    /// characters a terminal acts on.
    fn log_hostile_event() {
        let path = "/up/\u{202e}txt.exe\u{9b}31m\u{2028}x";
        let error = "certificate for DnsName(\"evil\u{1b}]0;owned\u{7}\nFORGED\")";
        tracing::warn!(path = %path, error = %error, status = 502, agent = "bot\u{7f}", "failed \u{1b}[2J");
    }

    fn unprintable_in(text: &str) -> Vec<char> {
        text.chars()
            .filter(|&c| c != '\n' && is_unprintable(c))
            .collect()
    }

    #[test]
    fn text_log_escapes_every_field() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log_hostile_event);

        let text = captured.text();
        assert_eq!(unprintable_in(&text), Vec::<char>::new(), "{text:?}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r"failed \u{1b}[2J path=/up/\u{202e}txt.exe\u{9b}31m\u{2028}x"),
            "{text}"
        );
        assert!(
            text.contains(r#"error=certificate for DnsName("evil\u{1b}]0;owned\u{7}\u{a}FORGED")"#),
            "{text}"
        );
        assert!(text.contains("status=502"), "{text}");
        assert!(text.contains(r#"agent="bot\u{7f}""#), "{text}");
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
            "certificate for DnsName(\"evil\u{1b}]0;owned\u{7}\nFORGED\")"
        );
        assert_eq!(fields["message"], "failed \u{1b}[2J");
    }
}
