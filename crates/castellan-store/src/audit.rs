//! Writing and reading audit records.

use sqlx::sqlite::SqliteRow;

use crate::audit_record::{AuditQuery, AuditRecord, AuditWindow, MAX_AUDIT_QUERY_LIMIT};
use crate::error::{db_error, StoreError};
use crate::open::Store;
use crate::rows::{column, to_i64, unsigned};
use crate::usage::UsageBatch;

macro_rules! audit_columns {
    () => {
        "seq, time_ms, request_id, agent, token_id, source, connection, method, path, \
         decision, rule, reason, status, bytes_in, bytes_out, duration_us, findings, user_agent"
    };
}

const INSERT_AUDIT: &str = "INSERT INTO audit (time_ms, request_id, agent, token_id, source, \
     connection, method, path, decision, rule, reason, status, bytes_in, bytes_out, duration_us, \
     findings, user_agent) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

pub(crate) const SELECT_OLDEST: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit WHERE seq > $1 ORDER BY seq ASC LIMIT $2"
);
const SELECT_NEWEST: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit WHERE seq > $1 ORDER BY seq DESC LIMIT $2"
);
const SELECT_AGENT_OLDEST: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit WHERE agent = $3 AND seq > $1 ORDER BY seq ASC LIMIT $2"
);
const SELECT_AGENT_NEWEST: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit WHERE agent = $3 AND seq > $1 ORDER BY seq DESC LIMIT $2"
);

impl Store {
    /// Appends `records` in one transaction; their `seq` fields are ignored.
    ///
    /// The same transaction updates the usage summaries (see
    /// [`Store::agent_usage`]) and the last-use times of the agent tokens, so
    /// they never disagree with the audit log. The batch is summarized in
    /// memory first, so it costs one upsert per distinct summary row.
    ///
    /// The insert statement is prepared once per connection and reused from
    /// the driver's statement cache for every record.
    pub async fn insert_audit_batch(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let operation = "write audit records";
        let usage = UsageBatch::from_records(records);
        let mut tx = self.begin_write(operation).await?;
        for record in records {
            sqlx::query(INSERT_AUDIT)
                .bind(record.time_ms)
                .bind(&record.request_id)
                .bind(&record.agent)
                .bind(&record.token_id)
                .bind(&record.source)
                .bind(&record.connection)
                .bind(&record.method)
                .bind(&record.path)
                .bind(record.decision.as_str())
                .bind(&record.rule)
                .bind(&record.reason)
                .bind(i64::from(record.status))
                .bind(to_i64(record.bytes_in))
                .bind(to_i64(record.bytes_out))
                .bind(to_i64(record.duration_us))
                .bind(findings_column(&record.findings))
                .bind(&record.user_agent)
                .execute(&mut *tx)
                .await
                .map_err(|error| db_error(operation, error))?;
        }
        usage.apply(&mut tx, operation).await?;
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))
    }

    /// Returns the records selected by `query`, in ascending `seq` order.
    ///
    /// `castellan audit tail` starts with [`AuditQuery::tail`] and then follows
    /// with [`AuditQuery::after`] from the last `seq` it printed.
    pub async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = match (&query.agent, query.window) {
            (None, AuditWindow::Oldest) => SELECT_OLDEST,
            (None, AuditWindow::Newest) => SELECT_NEWEST,
            (Some(_), AuditWindow::Oldest) => SELECT_AGENT_OLDEST,
            (Some(_), AuditWindow::Newest) => SELECT_AGENT_NEWEST,
        };
        let limit = query.limit.min(MAX_AUDIT_QUERY_LIMIT);
        let mut statement = sqlx::query(sql)
            .bind(query.after_seq.unwrap_or(0))
            .bind(i64::from(limit));
        if let Some(agent) = &query.agent {
            statement = statement.bind(agent);
        }
        let rows = statement
            .fetch_all(&self.pool)
            .await
            .map_err(|error| db_error("read audit records", error))?;
        let mut records = rows
            .iter()
            .map(audit_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        if query.window == AuditWindow::Newest {
            records.reverse();
        }
        Ok(records)
    }

    /// Returns the number of stored audit records.
    pub async fn audit_count(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
            .fetch_one(&self.pool)
            .await
            .map_err(|error| db_error("count audit records", error))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

pub(crate) fn audit_from_row(row: &SqliteRow) -> Result<AuditRecord, StoreError> {
    let decision: String = column(row, "decision")?;
    let decision = decision.parse().map_err(|error| StoreError::InvalidRow {
        column: "decision",
        source: Some(Box::new(error)),
    })?;
    let status: i64 = column(row, "status")?;
    let status = u16::try_from(status).map_err(|_| StoreError::InvalidRow {
        column: "status",
        source: None,
    })?;
    Ok(AuditRecord {
        seq: Some(column(row, "seq")?),
        time_ms: column(row, "time_ms")?,
        request_id: column(row, "request_id")?,
        agent: column(row, "agent")?,
        token_id: column(row, "token_id")?,
        source: column(row, "source")?,
        connection: column(row, "connection")?,
        method: column(row, "method")?,
        path: column(row, "path")?,
        decision,
        rule: column(row, "rule")?,
        reason: column(row, "reason")?,
        status,
        bytes_in: unsigned(row, "bytes_in")?,
        bytes_out: unsigned(row, "bytes_out")?,
        duration_us: unsigned(row, "duration_us")?,
        findings: match column::<Option<String>>(row, "findings")? {
            None => Vec::new(),
            Some(text) => serde_json::from_str(&text).map_err(|error| StoreError::InvalidRow {
                column: "findings",
                source: Some(Box::new(error)),
            })?,
        },
        user_agent: column(row, "user_agent")?,
    })
}

/// Encodes rule ids as the JSON array stored in the `findings` column, or
/// NULL when there are none.
fn findings_column(findings: &[String]) -> Option<String> {
    if findings.is_empty() {
        return None;
    }
    serde_json::to_string(findings).ok()
}
