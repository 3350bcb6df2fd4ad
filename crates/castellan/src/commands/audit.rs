//! `castellan audit tail` reads the audit log; `castellan audit events`
//! lists administrative changes.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use castellan_store::{AuditQuery, AuditRecord, Event};
use serde::Serialize;

use crate::cli::{AuditCommand, EventsArgs, TailArgs};
use crate::data_dir::DataDir;
use crate::output::{self, printable};

/// How often `--follow` looks for new records.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

pub async fn run(data_dir: &DataDir, command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Tail(args) => tail(data_dir, &args).await,
        AuditCommand::Events(args) => list_events(data_dir, &args).await,
    }
}

async fn tail(data_dir: &DataDir, args: &TailArgs) -> Result<ExitCode> {
    let store = data_dir.open_store().await?;
    let mut query = AuditQuery::tail(args.lines);
    if let Some(agent) = &args.agent {
        query = query.for_agent(agent.clone());
    }
    let mut last_seq = print(&store.query_audit(&query).await?, args)?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let mut query = AuditQuery::after(last_seq.unwrap_or(0), 1000);
        if let Some(agent) = &args.agent {
            query = query.for_agent(agent.clone());
        }
        if let Some(seq) = print(&store.query_audit(&query).await?, args)? {
            last_seq = Some(seq);
        }
    }
}

/// Prints records; returns the highest sequence number printed.
fn print(records: &[AuditRecord], args: &TailArgs) -> Result<Option<i64>> {
    let mut stdout = std::io::stdout().lock();
    for record in records {
        if args.json {
            writeln!(stdout, "{}", crate::output::json_line(record)?)?;
        } else {
            writeln!(stdout, "{}", castellan_audit::format_line(record))?;
        }
    }
    stdout.flush()?;
    Ok(records.iter().filter_map(|record| record.seq).max())
}

/// Prints the newest events, oldest first.
async fn list_events(data_dir: &DataDir, args: &EventsArgs) -> Result<ExitCode> {
    let store = data_dir.open_store().await?;
    let events = store.events(None, args.limit).await?;
    if args.json {
        let entries: Vec<EventJson<'_>> = events.iter().map(EventJson::from).collect();
        println!("{}", crate::output::json_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        eprintln!("No events recorded.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = output::table(&["seq", "time", "actor", "action", "target", "detail"]);
    for event in &events {
        table.add_row(vec![
            event.seq.map_or_else(String::new, |seq| seq.to_string()),
            output::time(event.time_ms),
            printable(&event.actor).into_owned(),
            printable(&event.action).into_owned(),
            printable(&event.target).into_owned(),
            event
                .detail
                .as_deref()
                .map(|detail| printable(detail).into_owned())
                .unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// One event in `--json` output, with its time both as RFC 3339 and as unix
/// milliseconds.
#[derive(Serialize)]
struct EventJson<'a> {
    seq: Option<i64>,
    time: String,
    time_ms: i64,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    detail: Option<&'a str>,
}

impl<'a> From<&'a Event> for EventJson<'a> {
    fn from(event: &'a Event) -> Self {
        EventJson {
            seq: event.seq,
            time: output::time(event.time_ms),
            time_ms: event.time_ms,
            actor: &event.actor,
            action: &event.action,
            target: &event.target,
            detail: event.detail.as_deref(),
        }
    }
}
