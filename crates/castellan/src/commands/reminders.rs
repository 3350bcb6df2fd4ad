//! Rotation jobs of `castellan serve`: reminders, and automatic rotation
//! of upstream keys that have a rotation command.
//!
//! Every hour, and once at start, the scheduler compares each secret's due
//! date with the configuration and posts to `[gateway] reminder_webhooks`.
//! It posts once when the secret enters the `remind_before` window, then
//! once a day from the day it falls due until it is rotated. What was sent is kept
//! in the store, so a restart neither repeats nor skips a reminder. A new
//! version starts the sequence again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use castellan_detect::monitor::{resolve_webhooks, MONITOR_ACTOR};
use castellan_detect::webhook::{Dispatcher, Notification};
use castellan_gateway::{ConfigState, Gateway};
use castellan_model::{Config, Severity};
use castellan_store::{now_ms, utc_day, Event, Store, StoreError};
use castellan_vault::MasterKey;

use super::provider::{provider_for, revoke_due, rotate};
use super::rotation::{rotation_report, RotationState, SecretRotation};
use crate::output;

/// Time between two checks of the due dates.
const CHECK_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// The reminder a secret calls for now.
#[derive(Debug, Clone)]
pub struct Reminder {
    pub secret: String,
    /// Distinguishes reminders: `v3:upcoming`, `v3:overdue:20611` (UTC day).
    /// A stage already sent for this secret is not sent again.
    pub stage: String,
    pub overdue: bool,
    pub row: SecretRotation,
}

/// Lists the reminders due at `now_ms`: secrets in use whose due date is
/// within `remind_before`, or past.
pub fn reminders(config: &Config, rows: Vec<SecretRotation>, now_ms: i64) -> Vec<Reminder> {
    let window = i64::try_from(config.gateway.remind_before.as_millis()).unwrap_or(i64::MAX);
    rows.into_iter()
        .filter_map(|row| {
            let (Some(version), Some(due_ms)) = (row.version, row.due_ms) else {
                return None;
            };
            if row.state == RotationState::Unused {
                return None;
            }
            let (stage, overdue) = if now_ms > due_ms {
                (format!("v{version}:overdue:{}", utc_day(now_ms)), true)
            } else if due_ms - now_ms <= window {
                (format!("v{version}:upcoming"), false)
            } else {
                return None;
            };
            Some(Reminder {
                secret: row.name.clone(),
                stage,
                overdue,
                row,
            })
        })
        .collect()
}

/// Builds the webhook body of a reminder.
pub fn notification(reminder: &Reminder, now_ms: i64) -> Notification {
    let row = &reminder.row;
    let due_ms = row.due_ms.unwrap_or(now_ms);
    let text = if reminder.overdue {
        format!(
            "castellan: secret {:?} was due for rotation on {} ({} ago); rotate it with `castellan secret rotate {}`.",
            row.name,
            output::time(due_ms),
            output::age(due_ms, now_ms),
            row.name
        )
    } else {
        format!(
            "castellan: secret {:?} is due for rotation on {}; rotate it with `castellan secret rotate {}`.",
            row.name,
            output::time(due_ms),
            row.name
        )
    };
    let json = serde_json::json!({
        "type": "rotation_reminder",
        "secret": row.name,
        "connections": row.connections,
        "version": row.version,
        "due_ms": row.due_ms,
        "due": output::time(due_ms),
        "overdue": reminder.overdue,
        "text": text,
    });
    let severity = if reminder.overdue {
        Severity::High
    } else {
        Severity::Medium
    };
    Notification {
        severity,
        json,
        text,
    }
}

/// Checks due dates every hour until `shutdown` resolves.
pub async fn run(
    store: Store,
    master_key: Arc<MasterKey>,
    gateway: Arc<Gateway>,
    dispatcher: Dispatcher,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let state = Arc::clone(&gateway.snapshot.load().config);
        rotate_due(&store, &master_key, &state).await;
        if let Err(error) = check(&store, &master_key, &state.config, &dispatcher).await {
            tracing::error!(%error, "rotation reminder check failed; retrying in an hour");
        }
    }
}

/// Runs the revoke commands whose grace period ended, then rotates the
/// overdue secrets that have a rotation command. Failures are recorded and
/// alerted by the provider and retried at the next check.
async fn rotate_due(store: &Store, master_key: &MasterKey, state: &ConfigState) {
    let config = &state.config;
    let secrets = match store.list_secrets().await {
        Ok(secrets) => secrets,
        Err(error) => {
            tracing::error!(%error, "cannot list secrets for automatic rotation");
            return;
        }
    };
    // Revocations first: a rotation below moves the pending revocation on,
    // and versions already due must not wait for its grace period.
    if let Err(error) = revoke_due(store, master_key, config, MONITOR_ACTOR).await {
        tracing::error!(
            error = format!("{error:#}"),
            "revoking old upstream keys failed; retrying in an hour"
        );
    }
    for row in rotation_report(config, &secrets, now_ms()) {
        if row.state != RotationState::Overdue || provider_for(config, &row.name).is_none() {
            continue;
        }
        // The provider records, logs and alerts every failure itself.
        let _ = rotate(store, master_key, state, &row.name, MONITOR_ACTOR).await;
    }
}

/// Sends the reminders not sent yet and records each one.
async fn check(
    store: &Store,
    master_key: &MasterKey,
    config: &Config,
    dispatcher: &Dispatcher,
) -> Result<(), StoreError> {
    let now = now_ms();
    let rows = rotation_report(config, &store.list_secrets().await?, now);
    let due = reminders(config, rows, now);
    if due.is_empty() {
        return Ok(());
    }
    let webhooks: HashMap<_, _> = if config.gateway.reminder_webhooks.is_empty() {
        HashMap::new()
    } else {
        resolve_webhooks(config, store, master_key).await?
    };
    for reminder in due {
        let key = format!("rotation.reminder.{}", reminder.secret);
        if store.get_meta(&key).await?.as_deref() == Some(reminder.stage.as_str()) {
            continue;
        }
        let notification = notification(&reminder, now);
        tracing::warn!(secret = %reminder.secret, overdue = reminder.overdue, "{}", notification.text);
        for name in &config.gateway.reminder_webhooks {
            match webhooks.get(name) {
                Some(target) => dispatcher.send(target, notification.clone()),
                None => {
                    tracing::error!(webhook = %name, secret = %reminder.secret, "webhook is not usable (see the earlier error); the reminder is not sent to it")
                }
            }
        }
        store
            .record_event(&Event {
                seq: None,
                time_ms: now,
                actor: MONITOR_ACTOR.to_owned(),
                action: "secret.reminder".to_owned(),
                target: reminder.secret.clone(),
                detail: Some(reminder.stage.clone()),
            })
            .await?;
        store.set_meta(&key, &reminder.stage).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 24 * 60 * 60 * 1000;

    fn row(version: u32, due_ms: i64, state: RotationState) -> SecretRotation {
        SecretRotation {
            name: "api-key".to_owned(),
            connections: vec!["api".to_owned()],
            version: Some(version),
            created_ms: Some(due_ms - 30 * DAY_MS),
            rotate_every_secs: Some(30 * 24 * 60 * 60),
            due_ms: Some(due_ms),
            state,
        }
    }

    #[test]
    fn stages_follow_the_due_date() {
        let config = Config::default();
        let due = 100 * DAY_MS;
        let far = reminders(
            &config,
            vec![row(2, due, RotationState::Ok)],
            due - 8 * DAY_MS,
        );
        assert!(far.is_empty());

        let soon = reminders(
            &config,
            vec![row(2, due, RotationState::DueSoon)],
            due - DAY_MS,
        );
        assert_eq!(soon[0].stage, "v2:upcoming");
        assert!(!soon[0].overdue);

        let first = reminders(&config, vec![row(2, due, RotationState::Overdue)], due + 1);
        let next = reminders(
            &config,
            vec![row(2, due, RotationState::Overdue)],
            due + DAY_MS,
        );
        assert!(first[0].overdue);
        assert_ne!(
            first[0].stage, next[0].stage,
            "one reminder per overdue day"
        );
    }

    #[test]
    fn new_version_starts_over() {
        let config = Config::default();
        let due = 100 * DAY_MS;
        let old = reminders(
            &config,
            vec![row(2, due, RotationState::DueSoon)],
            due - DAY_MS,
        );
        let new = reminders(
            &config,
            vec![row(3, due, RotationState::DueSoon)],
            due - DAY_MS,
        );
        assert_ne!(old[0].stage, new[0].stage);
    }

    #[test]
    fn unused_and_missing_secrets_get_none() {
        let config = Config::default();
        let mut missing = row(1, 0, RotationState::Missing);
        missing.version = None;
        missing.due_ms = None;
        let unused = row(1, 0, RotationState::Unused);
        assert!(reminders(&config, vec![missing, unused], 10 * DAY_MS).is_empty());
    }

    #[test]
    fn reminder_text_names_the_command() {
        let config = Config::default();
        let due = 100 * DAY_MS;
        let overdue = reminders(
            &config,
            vec![row(2, due, RotationState::Overdue)],
            due + 3 * DAY_MS,
        );
        let notification = notification(&overdue[0], due + 3 * DAY_MS);
        assert!(
            notification
                .text
                .contains("castellan secret rotate api-key"),
            "{}",
            notification.text
        );
        assert_eq!(notification.json["type"], "rotation_reminder");
        assert_eq!(notification.json["overdue"], true);
    }
}
