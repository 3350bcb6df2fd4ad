//! `castellan audit tail`: read the audit log.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use castellan_store::{AuditQuery, AuditRecord};

use crate::cli::{AuditCommand, TailArgs};
use crate::data_dir::DataDir;

/// How often `--follow` looks for new records.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

pub async fn run(data_dir: &DataDir, command: AuditCommand) -> Result<ExitCode> {
    let AuditCommand::Tail(args) = command;
    let store = data_dir.open_store().await?;
    let mut query = AuditQuery::tail(args.lines);
    if let Some(agent) = &args.agent {
        query = query.for_agent(agent.clone());
    }
    let mut last_seq = print(&store.query_audit(&query).await?, &args)?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let mut query = AuditQuery::after(last_seq.unwrap_or(0), 1000);
        if let Some(agent) = &args.agent {
            query = query.for_agent(agent.clone());
        }
        if let Some(seq) = print(&store.query_audit(&query).await?, &args)? {
            last_seq = Some(seq);
        }
    }
}

/// Prints records; returns the highest sequence number printed.
fn print(records: &[AuditRecord], args: &TailArgs) -> Result<Option<i64>> {
    let mut stdout = std::io::stdout().lock();
    for record in records {
        if args.json {
            castellan_audit::write_json_line(&mut stdout, record)?;
        } else {
            writeln!(stdout, "{}", castellan_audit::format_line(record))?;
        }
    }
    stdout.flush()?;
    Ok(records.iter().filter_map(|record| record.seq).max())
}
