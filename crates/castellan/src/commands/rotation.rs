//! `castellan rotation`: which vault secrets are due for rotation.
//!
//! A secret's age is the age of its current version, and its period is the
//! shortest `rotate_every` of the connections that use it. `check` exits 1
//! when a secret is overdue or missing, 0 otherwise, and 2 when the report
//! could not be made, so that cron can alert on it.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use castellan_model::Config;
use castellan_store::{now_ms, SecretInfo};
use serde::Serialize;

use crate::cli::RotationCommand;
use crate::data_dir::DataDir;
use crate::output::{self, printable};

/// Rotation state of one secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationState {
    Ok,
    DueSoon,
    Overdue,
    /// A connection uses the secret but the vault has no version of it.
    Missing,
    /// The vault has the secret but no connection uses it.
    Unused,
}

impl RotationState {
    fn as_str(self) -> &'static str {
        match self {
            RotationState::Ok => "ok",
            RotationState::DueSoon => "due soon",
            RotationState::Overdue => "overdue",
            RotationState::Missing => "missing",
            RotationState::Unused => "unused",
        }
    }

    /// Tells whether `rotation check` fails on this state.
    fn fails_check(self) -> bool {
        matches!(self, RotationState::Overdue | RotationState::Missing)
    }
}

/// One row of `rotation status`.
#[derive(Debug, Clone, Serialize)]
pub struct SecretRotation {
    pub name: String,
    /// Connections that use the secret, ordered by name, then the webhooks
    /// that use it as `webhook NAME`.
    pub connections: Vec<String>,
    pub version: Option<u32>,
    /// Creation time of the current version: when it was last rotated.
    pub created_ms: Option<i64>,
    /// Rotation period in seconds; `None` for a secret no connection uses.
    pub rotate_every_secs: Option<u64>,
    pub due_ms: Option<i64>,
    pub state: RotationState,
}

pub async fn run(data_dir: &DataDir, command: RotationCommand) -> Result<ExitCode> {
    let config = data_dir.load_config()?;
    let store = data_dir.open_store().await?;
    let secrets = store.list_secrets().await?;
    let rows = rotation_report(&config, &secrets, now_ms());
    match command {
        RotationCommand::Status { json } => {
            if json {
                println!("{}", crate::output::json_pretty(&rows)?);
            } else {
                print_table(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        RotationCommand::Check => Ok(check(&rows)),
    }
}

/// Returns the rotation period of `secret`: the shortest `rotate_every` of
/// the connections that use it, or the `[gateway]` one when none does.
pub fn rotation_period(config: &Config, secret: &str) -> Duration {
    config
        .connections
        .values()
        .filter(|connection| connection.secret == secret)
        .map(|connection| connection.rotate_every)
        .min()
        .unwrap_or(config.gateway.rotate_every)
}

/// Computes the rotation state of every secret that a connection uses, then
/// of every stored secret that none uses, each group ordered by name.
pub fn rotation_report(
    config: &Config,
    secrets: &[SecretInfo],
    now_ms: i64,
) -> Vec<SecretRotation> {
    let mut users: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for connection in config.connections.values() {
        users
            .entry(connection.secret.as_str())
            .or_default()
            .push(connection.name.clone());
    }
    // Webhook URLs and signing keys are secrets in use too; they follow the
    // [gateway] period.
    for webhook in config.webhooks.values() {
        for secret in webhook.secret_names() {
            users
                .entry(secret)
                .or_default()
                .push(format!("webhook {}", webhook.name));
        }
    }
    let stored: BTreeMap<&str, &SecretInfo> = secrets
        .iter()
        .map(|secret| (secret.name.as_str(), secret))
        .collect();

    let mut rows = Vec::new();
    for (name, connections) in users.iter() {
        let period = rotation_period(config, name);
        let row = match stored.get(name) {
            None => SecretRotation {
                name: name.to_string(),
                connections: connections.clone(),
                version: None,
                created_ms: None,
                rotate_every_secs: Some(period.as_secs()),
                due_ms: None,
                state: RotationState::Missing,
            },
            Some(info) => {
                let due_ms = info.created_ms.saturating_add(duration_ms(period));
                SecretRotation {
                    name: name.to_string(),
                    connections: connections.clone(),
                    version: Some(info.latest_version),
                    created_ms: Some(info.created_ms),
                    rotate_every_secs: Some(period.as_secs()),
                    due_ms: Some(due_ms),
                    state: state_at(due_ms, now_ms, config.gateway.remind_before),
                }
            }
        };
        rows.push(row);
    }
    for info in secrets {
        if users.contains_key(info.name.as_str()) {
            continue;
        }
        rows.push(SecretRotation {
            name: info.name.clone(),
            connections: Vec::new(),
            version: Some(info.latest_version),
            created_ms: Some(info.created_ms),
            rotate_every_secs: None,
            due_ms: None,
            state: RotationState::Unused,
        });
    }
    rows
}

/// Returns the state of a used secret whose rotation is due at `due_ms`:
/// due soon within `remind_before` of it. The due time itself still counts
/// as due soon, not overdue.
fn state_at(due_ms: i64, now_ms: i64, remind_before: Duration) -> RotationState {
    if now_ms > due_ms {
        RotationState::Overdue
    } else if due_ms - now_ms <= duration_ms(remind_before) {
        RotationState::DueSoon
    } else {
        RotationState::Ok
    }
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn print_table(rows: &[SecretRotation]) {
    let mut table = output::table(&[
        "secret",
        "connections",
        "version",
        "created",
        "rotate every",
        "due",
        "state",
    ]);
    for row in rows {
        table.add_row(vec![
            printable(&row.name).into_owned(),
            dash_if_empty(printable(&row.connections.join(", ")).into_owned()),
            row.version.map_or("-".to_string(), |v| v.to_string()),
            row.created_ms.map_or("-".to_string(), output::time),
            row.rotate_every_secs.map_or("-".to_string(), |secs| {
                humantime::format_duration(Duration::from_secs(secs)).to_string()
            }),
            row.due_ms.map_or("-".to_string(), output::time),
            row.state.as_str().to_string(),
        ]);
    }
    println!("{table}");
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text
    }
}

/// Prints one line per secret that is not ok and returns the exit status.
/// Unused secrets are listed as a notice but do not fail the check.
fn check(rows: &[SecretRotation]) -> ExitCode {
    let mut failed = false;
    for row in rows {
        let line = match row.state {
            RotationState::Ok => continue,
            RotationState::Missing => format!(
                "missing: secret {} is used by {} but not in the vault; store it with `castellan secret set {}`",
                row.name,
                row.connections.join(", "),
                row.name
            ),
            RotationState::Overdue | RotationState::DueSoon => format!(
                "{}: secret {} version {} {} due for rotation at {}; store a new value with `castellan secret rotate {}`",
                row.state.as_str(),
                row.name,
                row.version.unwrap_or_default(),
                if row.state == RotationState::Overdue { "was" } else { "is" },
                row.due_ms.map_or("-".to_string(), output::time),
                row.name
            ),
            RotationState::Unused => format!(
                "unused: secret {} is in the vault but no connection uses it",
                row.name
            ),
        };
        failed |= row.state.fails_check();
        println!("{}", printable(&line));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    #[test]
    fn state_boundaries() {
        let due = 100 * DAY_MS;
        let week = Duration::from_secs(7 * 24 * 60 * 60);
        assert_eq!(state_at(due, due + 1, week), RotationState::Overdue);
        assert_eq!(state_at(due, due, week), RotationState::DueSoon);
        assert_eq!(
            state_at(due, due - 7 * DAY_MS, week),
            RotationState::DueSoon
        );
        assert_eq!(state_at(due, due - 7 * DAY_MS - 1, week), RotationState::Ok);
        let day = Duration::from_secs(24 * 60 * 60);
        assert_eq!(state_at(due, due - 2 * DAY_MS, day), RotationState::Ok);
    }
}
