//! Helpers for command output.

use std::time::{Duration, UNIX_EPOCH};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;

/// Returns a table in the style every command uses.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(header.to_vec());
    table
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
