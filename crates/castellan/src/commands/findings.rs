//! `castellan findings`: posture problems of agents, tokens, secrets,
//! connections and rules, each with the OWASP Non-Human Identities Top 10
//! (2025) category it belongs to. The checks are in `finding_checks.rs`.
//!
//! Exit status: 1 when a finding is of high severity or above, 0 otherwise,
//! 2 when the report could not be made.

use std::fmt;
use std::process::ExitCode;

use anyhow::Result;
use castellan_store::now_ms;
use serde::Serialize;

use crate::cli::FindingsArgs;
use crate::commands::finding_checks::check_all;
use crate::commands::posture::{parse_as_of, Posture};
use crate::data_dir::DataDir;
use crate::output::printable;

/// Version of the `--json` document. It moves when a key is renamed,
/// removed or changes meaning; new keys and new finding kinds may be added
/// without it.
pub const SCHEMA_VERSION: u32 = 1;

pub async fn run(data_dir: &DataDir, args: &FindingsArgs) -> Result<ExitCode> {
    let as_of_ms = parse_as_of(args.as_of.as_deref())?;
    let store = data_dir.open_store().await?;
    let posture = Posture::load(data_dir, &store, as_of_ms).await?;
    let findings = check_all(&posture);
    if args.json {
        let report = Report {
            schema_version: SCHEMA_VERSION,
            generated_ms: now_ms(),
            as_of_ms,
            counts: Counts::of(&findings),
            findings: &findings,
        };
        println!("{}", crate::output::json_pretty(&report)?);
    } else {
        print_text(&findings);
    }
    // High findings make the command fail, so CI jobs and cron mails can
    // act on the exit status alone.
    let failing = findings.iter().any(|f| f.severity >= Severity::High);
    Ok(if failing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Urgency of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The OWASP Non-Human Identities Top 10 (2025) risks that the checks
/// report. NHI2 (Secret Leakage) is `castellan scan`'s job; NHI3, NHI6 and
/// NHI8 concern systems outside castellan's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// NHI1: identities left active after their purpose or owner is gone.
    ImproperOffboarding,
    /// NHI4: weak or missing authentication, such as plain-text transport.
    InsecureAuthentication,
    /// NHI5: more permissions than the identity uses.
    Overprivileged,
    /// NHI7: secrets that are not rotated or never expire.
    LongLivedSecrets,
    /// NHI9: one identity or secret shared by several workloads.
    Reuse,
    /// NHI10: people using a non-human identity.
    HumanUse,
}

impl Category {
    pub fn id(self) -> &'static str {
        match self {
            Category::ImproperOffboarding => "NHI1",
            Category::InsecureAuthentication => "NHI4",
            Category::Overprivileged => "NHI5",
            Category::LongLivedSecrets => "NHI7",
            Category::Reuse => "NHI9",
            Category::HumanUse => "NHI10",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Category::ImproperOffboarding => "Improper Offboarding",
            Category::InsecureAuthentication => "Insecure Authentication",
            Category::Overprivileged => "Overprivileged NHI",
            Category::LongLivedSecrets => "Long-Lived Secrets",
            Category::Reuse => "NHI Reuse",
            Category::HumanUse => "Human Use of NHI",
        }
    }
}

impl Serialize for Category {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.id())
    }
}

/// The thing a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// `agent`, `token`, `credential`, `secret`, `connection` or `rule`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Agent name, token id, credential id, secret name, connection name or
    /// rule id (`roles.<role>.allow[<index>]`).
    pub name: String,
    /// The agent it belongs to, when there is one.
    pub agent: Option<String>,
    /// The connection it concerns, when there is one.
    pub connection: Option<String>,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)?;
        match (&self.agent, &self.connection) {
            (Some(agent), Some(connection)) if *agent != self.name => {
                write!(f, " (agent {agent}, connection {connection})")
            }
            (Some(agent), _) if *agent != self.name => write!(f, " (agent {agent})"),
            (_, Some(connection)) if *connection != self.name => {
                write!(f, " (connection {connection})")
            }
            _ => Ok(()),
        }
    }
}

/// One posture problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable name of the check, such as `token-without-expiry`.
    pub kind: &'static str,
    pub severity: Severity,
    pub category: Category,
    pub category_name: &'static str,
    pub object: Subject,
    /// Description of what was found, with the facts behind it.
    pub summary: String,
    /// Why it matters.
    pub why: &'static str,
    /// How to fix it.
    pub fix: String,
}

#[derive(Serialize)]
struct Report<'a> {
    schema_version: u32,
    generated_ms: i64,
    as_of_ms: i64,
    counts: Counts,
    findings: &'a [Finding],
}

#[derive(Debug, Default, Serialize)]
struct Counts {
    critical: usize,
    high: usize,
    medium: usize,
    low: usize,
}

impl Counts {
    fn of(findings: &[Finding]) -> Counts {
        let mut counts = Counts::default();
        for finding in findings {
            match finding.severity {
                Severity::Critical => counts.critical += 1,
                Severity::High => counts.high += 1,
                Severity::Medium => counts.medium += 1,
                Severity::Low => counts.low += 1,
            }
        }
        counts
    }
}

fn print_text(findings: &[Finding]) {
    if findings.is_empty() {
        println!("No findings.");
        return;
    }
    for finding in findings {
        println!(
            "{:<8} {:<5} {}  {}",
            finding.severity.as_str().to_uppercase(),
            finding.category.id(),
            finding.kind,
            printable(&finding.object.to_string())
        );
        println!("         {}", printable(&finding.summary));
        println!(
            "         Why ({} {}): {}",
            finding.category.id(),
            finding.category.name(),
            finding.why
        );
        println!("         Fix: {}", printable(&finding.fix));
        println!();
    }
    let counts = Counts::of(findings);
    println!(
        "{}: {} critical, {} high, {} medium, {} low.",
        counted(findings.len(), "finding", "findings"),
        counts.critical,
        counts.high,
        counts.medium,
        counts.low
    );
}

/// Returns `count` with the noun in the singular or the plural form.
pub fn counted(count: impl TryInto<u64>, singular: &str, plural: &str) -> String {
    let count: u64 = count.try_into().unwrap_or(u64::MAX);
    let noun = if count == 1 { singular } else { plural };
    format!("{count} {noun}")
}
