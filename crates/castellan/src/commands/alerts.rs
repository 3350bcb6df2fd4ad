//! `castellan alerts`: list the alerts raised by the behaviour detectors,
//! show one, acknowledge or resolve it.

use std::process::ExitCode;

use anyhow::Result;
use castellan_store::{now_ms, Alert, Store, StoreError};
use serde::Serialize;

use crate::cli::{AlertsArgs, AlertsCommand};
use crate::commands::events;
use crate::data_dir::DataDir;
use crate::output::{self, printable};

pub async fn run(data_dir: &DataDir, args: AlertsArgs) -> Result<ExitCode> {
    let store = data_dir.open_store().await?;
    match args.command {
        None => list(&store, args.open, args.json, args.limit).await?,
        Some(AlertsCommand::Show { id, json }) => show(&store, id, json).await?,
        Some(AlertsCommand::Ack { id }) => {
            let alert = store.acknowledge_alert(id, &events::operator()).await?;
            events::record(
                &store,
                "alert.acknowledge",
                &id.to_string(),
                Some(about(&alert)),
            )
            .await?;
            eprintln!("Acknowledged alert {id} ({}).", about(&alert));
        }
        Some(AlertsCommand::Resolve { id }) => {
            let alert = store.resolve_alert(id, &events::operator()).await?;
            events::record(
                &store,
                "alert.resolve",
                &id.to_string(),
                Some(about(&alert)),
            )
            .await?;
            eprintln!(
                "Resolved alert {id} ({}); the next signal of this kind opens a new alert.",
                about(&alert)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Returns `kind subject`, the short description used in messages and
/// event details.
fn about(alert: &Alert) -> String {
    format!("{} {}", alert.kind, printable(&alert.subject))
}

async fn list(store: &Store, open_only: bool, json: bool, limit: u32) -> Result<()> {
    let alerts = store.alerts(open_only, limit).await?;
    if json {
        let entries: Vec<AlertJson<'_>> = alerts.iter().map(AlertJson::from).collect();
        println!("{}", crate::output::json_pretty(&entries)?);
        return Ok(());
    }
    if alerts.is_empty() {
        let which = if open_only { "open alerts" } else { "alerts" };
        eprintln!("No {which}.");
        return Ok(());
    }
    let now = now_ms();
    let mut table = output::table(&[
        "id",
        "severity",
        "kind",
        "agent/subject",
        "count",
        "first seen",
        "last seen",
        "status",
        "summary",
    ]);
    for alert in &alerts {
        table.add_row(vec![
            alert.id.to_string(),
            alert.severity.to_string(),
            alert.kind.to_string(),
            who(alert),
            alert.count.to_string(),
            output::time(alert.first_seen_ms),
            format!("{} ago", output::age(alert.last_seen_ms, now)),
            alert.status.to_string(),
            printable(&alert.summary).into_owned(),
        ]);
    }
    println!("{table}");
    Ok(())
}

async fn show(store: &Store, id: i64, json: bool) -> Result<()> {
    let Some(alert) = store.alert(id).await? else {
        return Err(anyhow::anyhow!(StoreError::AlertNotFound { id }));
    };
    if json {
        println!("{}", crate::output::json_pretty(&AlertJson::from(&alert))?);
        return Ok(());
    }
    let optional = |value: &Option<String>| {
        value
            .as_deref()
            .map_or_else(|| "-".to_owned(), |text| printable(text).into_owned())
    };
    let seqs: Vec<String> = alert.evidence.iter().map(i64::to_string).collect();
    let sources: Vec<String> = alert
        .sources
        .iter()
        .map(|s| printable(s).into_owned())
        .collect();
    let lines = [
        ("id", alert.id.to_string()),
        ("kind", alert.kind.to_string()),
        ("severity", alert.severity.to_string()),
        ("status", alert.status.to_string()),
        ("agent", optional(&alert.agent)),
        ("subject", printable(&alert.subject).into_owned()),
        ("count", alert.count.to_string()),
        ("first seen", output::time(alert.first_seen_ms)),
        ("last seen", output::time(alert.last_seen_ms)),
        ("updated", output::time(alert.updated_ms)),
        ("acknowledged by", optional(&alert.acknowledged_by)),
        ("resolved by", optional(&alert.resolved_by)),
        ("summary", printable(&alert.summary).into_owned()),
        ("sources", list_or_dash(&sources)),
        ("evidence", format!("audit seq {}", seqs.join(", "))),
    ];
    for (label, value) in lines {
        println!("{label:<16} {value}");
    }
    Ok(())
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// Shows the agent, and the subject when it is something else (a source
/// address or a token).
fn who(alert: &Alert) -> String {
    match alert.agent.as_deref() {
        Some(agent) if agent == alert.subject => printable(agent).into_owned(),
        Some(agent) => format!("{} ({})", printable(agent), printable(&alert.subject)),
        None => printable(&alert.subject).into_owned(),
    }
}

/// One alert in `--json` output: every field of [`Alert`], with kinds,
/// severities and statuses as their names and times both as RFC 3339 and
/// as unix milliseconds.
#[derive(Serialize)]
struct AlertJson<'a> {
    id: i64,
    kind: &'static str,
    severity: &'static str,
    agent: Option<&'a str>,
    subject: &'a str,
    status: &'static str,
    first_seen: String,
    first_seen_ms: i64,
    last_seen: String,
    last_seen_ms: i64,
    count: i64,
    evidence: &'a [i64],
    summary: &'a str,
    sources: &'a [String],
    acknowledged_by: Option<&'a str>,
    resolved_by: Option<&'a str>,
    updated: String,
    updated_ms: i64,
}

impl<'a> From<&'a Alert> for AlertJson<'a> {
    fn from(alert: &'a Alert) -> Self {
        AlertJson {
            id: alert.id,
            kind: alert.kind.as_str(),
            severity: alert.severity.as_str(),
            agent: alert.agent.as_deref(),
            subject: &alert.subject,
            status: alert.status.as_str(),
            first_seen: output::time(alert.first_seen_ms),
            first_seen_ms: alert.first_seen_ms,
            last_seen: output::time(alert.last_seen_ms),
            last_seen_ms: alert.last_seen_ms,
            count: alert.count,
            evidence: &alert.evidence,
            summary: &alert.summary,
            sources: &alert.sources,
            acknowledged_by: alert.acknowledged_by.as_deref(),
            resolved_by: alert.resolved_by.as_deref(),
            updated: output::time(alert.updated_ms),
            updated_ms: alert.updated_ms,
        }
    }
}
