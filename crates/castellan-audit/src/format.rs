//! Text and JSON lines for `castellan audit tail`.

use std::fmt::Write as _;
use std::io;
use std::time::{Duration, UNIX_EPOCH};

use castellan_store::AuditRecord;

/// First millisecond of year 10000, beyond which RFC 3339 has no four-digit year.
const MAX_RFC3339_MS: i64 = 253_402_300_800_000;

/// Formats a record as one human-readable line:
/// time, decision, status, agent, source, method, connection, path, rule,
/// reason, data-loss findings, duration, bytes in and out, request id.
/// Absent values print as `-`. The user agent is left out to keep lines
/// short, and `--json` shows it.
///
/// Agent-controlled text (path, reason) has control and bidirectional
/// characters escaped, so a record cannot rewrite the terminal.
pub fn format_line(record: &AuditRecord) -> String {
    let mut line = String::with_capacity(160);
    let _ = write!(
        line,
        "{} {:<5} {} agent={} source={} {} {} {} rule={}",
        format_time(record.time_ms),
        record.decision.as_str(),
        record.status,
        escape(record.agent.as_deref().unwrap_or("-")),
        escape(&record.source),
        escape(&record.method),
        escape(record.connection.as_deref().unwrap_or("-")),
        escape(&record.path),
        escape(record.rule.as_deref().unwrap_or("-")),
    );
    if let Some(reason) = &record.reason {
        let _ = write!(line, " reason=\"{}\"", escape(reason).replace('"', "\\\""));
    }
    if !record.findings.is_empty() {
        let _ = write!(line, " findings={}", escape(&record.findings.join(",")));
    }
    let _ = write!(
        line,
        " {} in={}B out={}B id={}",
        format_duration(record.duration_us),
        record.bytes_in,
        record.bytes_out,
        escape(&record.request_id),
    );
    line
}

/// Writes a record as one JSON object followed by a newline (JSON Lines).
///
/// serde_json leaves DEL, C1 controls and the bidirectional formatting
/// characters raw, so this output is for files and pipes, not a terminal:
/// `castellan audit tail --json` escapes them as well.
pub fn write_json_line<W: io::Write>(out: &mut W, record: &AuditRecord) -> io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}

/// Formats unix milliseconds as RFC 3339 UTC with milliseconds, or as
/// `time_ms=N` when the value is outside years 1970 to 9999.
pub fn format_time(time_ms: i64) -> String {
    match u64::try_from(time_ms) {
        Ok(ms) if time_ms < MAX_RFC3339_MS => {
            let time = UNIX_EPOCH + Duration::from_millis(ms);
            humantime::format_rfc3339_millis(time).to_string()
        }
        _ => format!("time_ms={time_ms}"),
    }
}

fn format_duration(duration_us: u64) -> String {
    if duration_us < 1_000 {
        format!("{duration_us}us")
    } else if duration_us < 1_000_000 {
        format!("{:.1}ms", duration_us as f64 / 1e3)
    } else {
        format!("{:.2}s", duration_us as f64 / 1e6)
    }
}

/// Escapes backslashes, control characters and bidirectional formatting
/// characters as `\u{..}`, keeping other text as it is.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\\' {
            escaped.push_str("\\\\");
        } else if c.is_control() || is_bidi_control(c) {
            let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Characters that reorder the display of surrounding text (Unicode bidi
/// embeddings, overrides, isolates and marks).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use castellan_store::AuditDecision;

    fn record() -> AuditRecord {
        AuditRecord {
            seq: Some(7),
            time_ms: 1_700_000_000_123,
            request_id: "req-1".to_owned(),
            agent: Some("linkedin-bot".to_owned()),
            token_id: Some("tok-1".to_owned()),
            source: "127.0.0.1:50000".to_owned(),
            connection: Some("github".to_owned()),
            method: "GET".to_owned(),
            path: "/repos/acme/app".to_owned(),
            decision: AuditDecision::Allow,
            rule: Some("role:reader".to_owned()),
            reason: None,
            status: 200,
            bytes_in: 12,
            bytes_out: 3400,
            duration_us: 1_500,
            findings: Vec::new(),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".to_owned()),
        }
    }

    #[test]
    fn line_shows_every_field() {
        let line = format_line(&record());

        assert_eq!(
            line,
            "2023-11-14T22:13:20.123Z allow 200 agent=linkedin-bot source=127.0.0.1:50000 \
             GET github /repos/acme/app rule=role:reader 1.5ms in=12B out=3400B id=req-1"
        );
    }

    #[test]
    fn user_agent_only_in_json() {
        let line = format_line(&record());
        assert!(!line.contains("Mozilla"), "{line}");

        let mut out = Vec::new();
        write_json_line(&mut out, &record()).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["user_agent"], "Mozilla/5.0 (X11; Linux x86_64)");
    }

    #[test]
    fn line_marks_absent_values() {
        let mut denied = record();
        denied.decision = AuditDecision::Deny;
        denied.status = 401;
        denied.agent = None;
        denied.connection = None;
        denied.rule = None;
        denied.reason = Some("unknown \"agent\" token".to_owned());

        let line = format_line(&denied);

        assert!(line.contains(" deny  401 agent=- "), "{line}");
        assert!(line.contains(" GET - /repos/acme/app rule=- "), "{line}");
        assert!(
            line.contains(r#"reason="unknown \"agent\" token""#),
            "{line}"
        );
    }

    #[test]
    fn line_lists_findings() {
        let mut blocked = record();
        assert!(!format_line(&blocked).contains("findings="));
        blocked.findings = vec!["aws-access-key-id".to_owned(), "private-key-ec".to_owned()];
        let line = format_line(&blocked);
        assert!(
            line.contains(" findings=aws-access-key-id,private-key-ec "),
            "{line}"
        );
    }

    #[test]
    fn line_escapes_terminal_controls() {
        let mut hostile = record();
        hostile.path = "/x\u{1b}[2J\n\u{202E}gpj.exe\\".to_owned();

        let line = format_line(&hostile);

        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(!line.contains('\u{202E}'), "{line:?}");
        assert!(
            line.contains(r"/x\u{1b}[2J\u{a}\u{202e}gpj.exe\\"),
            "{line}"
        );
    }

    #[test]
    fn durations_pick_readable_units() {
        let cases = [
            (0, "0us"),
            (999, "999us"),
            (1_000, "1.0ms"),
            (2_500_000, "2.50s"),
        ];
        for (micros, expected) in cases {
            assert_eq!(format_duration(micros), expected, "for {micros}us");
        }
    }

    #[test]
    fn time_outside_rfc3339_range_prints_raw() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (-1, "time_ms=-1"),
            (MAX_RFC3339_MS, "time_ms=253402300800000"),
            (MAX_RFC3339_MS - 1, "9999-12-31T23:59:59.999Z"),
        ];
        for (time_ms, expected) in cases {
            assert_eq!(format_time(time_ms), expected, "for {time_ms}");
        }
    }

    #[test]
    fn json_line_ends_with_newline() {
        let mut out = Vec::new();

        write_json_line(&mut out, &record()).unwrap();

        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("}\n"), "{text}");
        assert_eq!(text.lines().count(), 1);
        let back: AuditRecord = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(back, record());
    }
}
