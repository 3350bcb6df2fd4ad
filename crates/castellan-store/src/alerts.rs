//! Alerts raised by the behaviour detectors: signals of one kind about one
//! subject fold into a single alert until an operator resolves it.

use std::fmt;
use std::str::FromStr;

use castellan_model::{AlertKind, Severity};
use sqlx::sqlite::SqliteRow;
use sqlx::SqliteConnection;

use crate::error::{db_error, require_non_empty, StoreError};
use crate::open::{now_ms, Store};
use crate::rows::column;

/// Audit seqs kept from the first signals of an alert.
pub const EVIDENCE_FIRST: usize = 20;
/// Audit seqs kept from the latest signals of an alert.
pub const EVIDENCE_LATEST: usize = 80;
/// Distinct source networks kept per alert.
pub const MAX_SOURCES: usize = 20;

/// Handling state of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertStatus {
    /// Raised and not yet seen by an operator.
    Open,
    /// Seen by an operator; new signals still fold into it.
    Acknowledged,
    /// Closed by an operator; the next signal opens a new alert.
    Resolved,
}

impl AlertStatus {
    /// Returns the lowercase name stored in the database and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an alert status name other than open, acknowledged or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown alert status `{0}`: expected open, acknowledged or resolved")]
pub struct UnknownAlertStatus(pub String);

impl FromStr for AlertStatus {
    type Err = UnknownAlertStatus;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "open" => Ok(AlertStatus::Open),
            "acknowledged" => Ok(AlertStatus::Acknowledged),
            "resolved" => Ok(AlertStatus::Resolved),
            other => Err(UnknownAlertStatus(other.to_owned())),
        }
    }
}

/// One detector finding about one request or window, before it is folded
/// into an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSignal<'a> {
    pub kind: AlertKind,
    pub severity: Severity,
    /// The agent concerned, when the signal is about one.
    pub agent: Option<&'a str>,
    /// Thing the alert is about, such as an agent name or a source address.
    /// Signals with the same kind and subject fold into one alert.
    pub subject: &'a str,
    /// Source network of the request, when known.
    pub source: Option<&'a str>,
    /// Audit seq of the record that caused the signal.
    pub seq: i64,
    /// Time of that record.
    pub time_ms: i64,
    /// One line for operators; it becomes the alert's summary.
    pub summary: &'a str,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: i64,
    pub kind: AlertKind,
    /// Highest severity of the signals folded in.
    pub severity: Severity,
    pub agent: Option<String>,
    pub subject: String,
    pub status: AlertStatus,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Number of signals folded in.
    pub count: i64,
    /// Audit seqs of the signals, distinct and in arrival order: the first
    /// [`EVIDENCE_FIRST`] and the latest [`EVIDENCE_LATEST`].
    pub evidence: Vec<i64>,
    /// Summary of the latest signal.
    pub summary: String,
    /// Distinct source networks, at most [`MAX_SOURCES`], the first seen.
    pub sources: Vec<String>,
    pub acknowledged_by: Option<String>,
    pub resolved_by: Option<String>,
    /// Time of the latest change to the row.
    pub updated_ms: i64,
}

/// Outcome of [`Store::raise_alert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaisedAlert {
    pub id: i64,
    /// Whether a new alert was created, as opposed to a signal folded into
    /// an existing one.
    pub opened: bool,
    pub count: i64,
    /// Severity of the alert after the signal, the highest so far.
    pub severity: Severity,
}

const ALERT_COLUMNS: &str = "id, kind, severity, agent, subject, status, first_seen_ms, \
     last_seen_ms, count, evidence, summary, sources, acknowledged_by, resolved_by, updated_ms";

impl Store {
    /// Folds the signal into the open or acknowledged alert with the same
    /// kind and subject, or opens a new one, in one transaction.
    ///
    /// Folding raises the severity to the maximum seen, increments the
    /// count, replaces the summary and extends the first and last seen
    /// times. Evidence keeps the first [`EVIDENCE_FIRST`] and the latest
    /// [`EVIDENCE_LATEST`] audit seqs, so an alert that fires all day stays
    /// one small row yet shows how it started and how it goes on. Sources
    /// keep the first [`MAX_SOURCES`] distinct values.
    pub async fn raise_alert(&self, signal: &NewSignal<'_>) -> Result<RaisedAlert, StoreError> {
        require_non_empty("alert subject", signal.subject)?;
        let operation = "raise alert";
        let mut tx = self.begin_write(operation).await?;
        let current = unresolved_alert(&mut tx, signal.kind, signal.subject).await?;
        let raised = match current {
            Some(alert) => fold_signal(&mut tx, alert, signal).await?,
            None => insert_alert(&mut tx, signal).await?,
        };
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))?;
        Ok(raised)
    }

    /// Lists alerts, the most recently seen first; with `open_only`, only
    /// open and acknowledged ones.
    pub async fn alerts(&self, open_only: bool, limit: u32) -> Result<Vec<Alert>, StoreError> {
        let filter = if open_only {
            "WHERE status <> 'resolved' "
        } else {
            ""
        };
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts {filter}\
             ORDER BY last_seen_ms DESC, id DESC LIMIT $1"
        );
        let rows = sqlx::query(&sql)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|error| db_error("list alerts", error))?;
        rows.iter().map(alert_from_row).collect()
    }

    /// Returns the alert with `id`, if any.
    pub async fn alert(&self, id: i64) -> Result<Option<Alert>, StoreError> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| db_error("read alert", error))?;
        row.as_ref().map(alert_from_row).transpose()
    }

    /// Marks an open alert acknowledged by `actor`; acknowledging it again
    /// records the new actor. Fails for an unknown or resolved alert.
    pub async fn acknowledge_alert(&self, id: i64, actor: &str) -> Result<Alert, StoreError> {
        self.change_status(id, actor, AlertStatus::Acknowledged)
            .await
    }

    /// Marks an open or acknowledged alert resolved by `actor`, so the next
    /// signal of its kind and subject opens a new alert. Fails for an
    /// unknown or already resolved alert.
    pub async fn resolve_alert(&self, id: i64, actor: &str) -> Result<Alert, StoreError> {
        self.change_status(id, actor, AlertStatus::Resolved).await
    }

    async fn change_status(
        &self,
        id: i64,
        actor: &str,
        status: AlertStatus,
    ) -> Result<Alert, StoreError> {
        require_non_empty("actor", actor)?;
        let (operation, actor_column) = match status {
            AlertStatus::Resolved => ("resolve alert", "resolved_by"),
            _ => ("acknowledge alert", "acknowledged_by"),
        };
        let mut tx = self.begin_write(operation).await?;
        let current: Option<String> = sqlx::query_scalar("SELECT status FROM alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|error| db_error(operation, error))?;
        match current.as_deref() {
            None => return Err(StoreError::AlertNotFound { id }),
            Some("resolved") => return Err(StoreError::AlertResolved { id }),
            Some(_) => {}
        }
        let sql = format!(
            "UPDATE alerts SET status = $1, {actor_column} = $2, updated_ms = $3 WHERE id = $4"
        );
        sqlx::query(&sql)
            .bind(status.as_str())
            .bind(actor)
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|error| db_error(operation, error))?;
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))?;
        self.alert(id)
            .await?
            .ok_or(StoreError::AlertNotFound { id })
    }
}

async fn unresolved_alert(
    conn: &mut SqliteConnection,
    kind: AlertKind,
    subject: &str,
) -> Result<Option<Alert>, StoreError> {
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts \
         WHERE kind = $1 AND subject = $2 AND status <> 'resolved'"
    );
    let row = sqlx::query(&sql)
        .bind(kind.as_str())
        .bind(subject)
        .fetch_optional(conn)
        .await
        .map_err(|error| db_error("raise alert", error))?;
    row.as_ref().map(alert_from_row).transpose()
}

async fn insert_alert(
    conn: &mut SqliteConnection,
    signal: &NewSignal<'_>,
) -> Result<RaisedAlert, StoreError> {
    let sources: Vec<&str> = signal.source.into_iter().collect();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO alerts (kind, severity, agent, subject, status, first_seen_ms, \
         last_seen_ms, count, evidence, summary, sources, updated_ms) \
         VALUES ($1, $2, $3, $4, 'open', $5, $5, 1, $6, $7, $8, $9) RETURNING id",
    )
    .bind(signal.kind.as_str())
    .bind(signal.severity.as_str())
    .bind(signal.agent)
    .bind(signal.subject)
    .bind(signal.time_ms)
    .bind(json_column(&[signal.seq]))
    .bind(signal.summary)
    .bind(json_column(&sources))
    .bind(now_ms())
    .fetch_one(conn)
    .await
    .map_err(|error| db_error("raise alert", error))?;
    Ok(RaisedAlert {
        id,
        opened: true,
        count: 1,
        severity: signal.severity,
    })
}

async fn fold_signal(
    conn: &mut SqliteConnection,
    mut alert: Alert,
    signal: &NewSignal<'_>,
) -> Result<RaisedAlert, StoreError> {
    alert.severity = alert.severity.max(signal.severity);
    alert.count = alert.count.saturating_add(1);

    push_evidence(&mut alert.evidence, signal.seq);
    if let Some(source) = signal.source {
        push_source(&mut alert.sources, source);
    }
    if alert.agent.is_none() {
        alert.agent = signal.agent.map(str::to_owned);
    }

    sqlx::query(
        "UPDATE alerts SET severity = $1, agent = $2, first_seen_ms = MIN(first_seen_ms, $3), \
         last_seen_ms = MAX(last_seen_ms, $3), count = $4, evidence = $5, summary = $6, \
         sources = $7, updated_ms = $8 WHERE id = $9",
    )
    .bind(alert.severity.as_str())
    .bind(&alert.agent)
    .bind(signal.time_ms)
    .bind(alert.count)
    .bind(json_column(&alert.evidence))
    .bind(signal.summary)
    .bind(json_column(&alert.sources))
    .bind(now_ms())
    .bind(alert.id)
    .execute(conn)
    .await
    .map_err(|error| db_error("raise alert", error))?;
    Ok(RaisedAlert {
        id: alert.id,
        opened: false,
        count: alert.count,
        severity: alert.severity,
    })
}

/// Appends `seq` unless present; past the cap, drops the oldest seq after
/// the first [`EVIDENCE_FIRST`].
fn push_evidence(evidence: &mut Vec<i64>, seq: i64) {
    if evidence.contains(&seq) {
        return;
    }
    if evidence.len() >= EVIDENCE_FIRST + EVIDENCE_LATEST {
        evidence.remove(EVIDENCE_FIRST);
    }
    evidence.push(seq);
}

fn push_source(sources: &mut Vec<String>, source: &str) {
    if sources.len() < MAX_SOURCES && !sources.iter().any(|known| known == source) {
        sources.push(source.to_owned());
    }
}

fn json_column<T: serde::Serialize>(values: &[T]) -> String {
    // serde_json fails only for maps with non-string keys and for Serialize
    // impls that return errors, and integers and strings are neither.
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

fn parsed<T: FromStr>(row: &SqliteRow, name: &'static str) -> Result<T, StoreError> {
    let text: String = column(row, name)?;
    text.parse().map_err(|_| StoreError::InvalidRow {
        column: name,
        source: None,
    })
}

fn json_list<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    name: &'static str,
) -> Result<Vec<T>, StoreError> {
    let text: String = column(row, name)?;
    serde_json::from_str(&text).map_err(|error| StoreError::InvalidRow {
        column: name,
        source: Some(Box::new(error)),
    })
}

fn alert_from_row(row: &SqliteRow) -> Result<Alert, StoreError> {
    Ok(Alert {
        id: column(row, "id")?,
        kind: parsed(row, "kind")?,
        severity: parsed(row, "severity")?,
        agent: column(row, "agent")?,
        subject: column(row, "subject")?,
        status: parsed(row, "status")?,
        first_seen_ms: column(row, "first_seen_ms")?,
        last_seen_ms: column(row, "last_seen_ms")?,
        count: column(row, "count")?,
        evidence: json_list(row, "evidence")?,
        summary: column(row, "summary")?,
        sources: json_list(row, "sources")?,
        acknowledged_by: column(row, "acknowledged_by")?,
        resolved_by: column(row, "resolved_by")?,
        updated_ms: column(row, "updated_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_keeps_first_and_latest() {
        let mut evidence = Vec::new();
        for seq in 1..=250 {
            push_evidence(&mut evidence, seq);
        }
        assert_eq!(evidence.len(), EVIDENCE_FIRST + EVIDENCE_LATEST);
        assert_eq!(evidence[..EVIDENCE_FIRST], (1..=20).collect::<Vec<_>>()[..]);
        assert_eq!(
            evidence[EVIDENCE_FIRST..],
            (171..=250).collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn evidence_skips_repeated_seq() {
        let mut evidence = vec![5];
        push_evidence(&mut evidence, 5);
        assert_eq!(evidence, [5]);
    }

    #[test]
    fn sources_stay_distinct_and_capped() {
        let mut sources = Vec::new();
        for i in 0..30 {
            push_source(&mut sources, &format!("10.0.{i}.0/24"));
            push_source(&mut sources, &format!("10.0.{i}.0/24"));
        }
        assert_eq!(sources.len(), MAX_SOURCES);
        assert_eq!(sources[0], "10.0.0.0/24");
        assert_eq!(sources[19], "10.0.19.0/24");
    }

    #[test]
    fn status_names_round_trip() {
        for status in [
            AlertStatus::Open,
            AlertStatus::Acknowledged,
            AlertStatus::Resolved,
        ] {
            assert_eq!(status.as_str().parse::<AlertStatus>(), Ok(status));
        }
        assert!("closed".parse::<AlertStatus>().is_err());
    }
}
