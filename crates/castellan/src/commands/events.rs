//! Records administrative changes made from the CLI in the store's event
//! log, which `castellan audit events` lists.

use std::process::Command;

use anyhow::{Context, Result};
use castellan_store::{now_ms, Event, Store};

/// Actor recorded when no user name can be found.
const UNKNOWN_OPERATOR: &str = "operator";

/// Returns the name of the OS user running the command: `$USER`, else
/// `$LOGNAME`, else the output of `id -un`, else `operator`.
pub fn operator() -> String {
    for variable in ["USER", "LOGNAME"] {
        if let Some(name) = std::env::var(variable).ok().and_then(clean_name) {
            return name;
        }
    }
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(clean_name)
        .unwrap_or_else(|| UNKNOWN_OPERATOR.to_owned())
}

/// Trims a user name and rejects empty names and names with control
/// characters, which would corrupt the event table's output.
fn clean_name(name: String) -> Option<String> {
    let name = name.trim();
    let valid = !name.is_empty() && !name.chars().any(char::is_control);
    valid.then(|| name.to_owned())
}

/// Records that the current operator performed `action` on `target`.
/// `detail` must never contain a secret value.
pub async fn record(
    store: &Store,
    action: &str,
    target: &str,
    detail: Option<String>,
) -> Result<()> {
    let event = Event {
        seq: None,
        time_ms: now_ms(),
        actor: operator(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail,
    };
    store
        .record_event(&event)
        .await
        .with_context(|| format!("the change was made but recording the {action} event failed"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(clean_name(" alice\n".into()).as_deref(), Some("alice"));
        assert_eq!(clean_name("  ".into()), None);
        assert_eq!(clean_name("al\u{1b}[31mice".into()), None);
    }
}
