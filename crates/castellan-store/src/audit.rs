//! Writing and reading audit records.

use std::sync::OnceLock;

use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Sqlite, SqliteConnection};

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

static INSERT_AUDIT: MultiRowSql = MultiRowSql::new(
    "INSERT INTO audit (time_ms, request_id, agent, token_id, source, connection, method, path, \
     decision, rule, reason, status, bytes_in, bytes_out, duration_us, findings, user_agent) ",
    17,
    "",
);

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
    /// Appends `records` in one transaction and returns the `seq` each got,
    /// in batch order; their own `seq` fields are ignored.
    ///
    /// The same transaction updates the usage summaries (see
    /// [`Store::agent_usage`]) and the last-use times of the agent tokens, so
    /// they never disagree with the audit log. The batch is summarized in
    /// memory first, so it costs one upsert per distinct summary row.
    ///
    /// Records and summary rows are written with multi-row statements of up
    /// to [`MAX_ROWS_PER_STATEMENT`] rows, in batch order, because each
    /// statement costs a round trip to the driver's worker thread.
    pub async fn insert_audit_batch(
        &self,
        records: &[AuditRecord],
    ) -> Result<Vec<i64>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let operation = "write audit records";
        let usage = UsageBatch::from_records(records);
        let mut tx = self.begin_write(operation).await?;
        let mut seqs = Vec::with_capacity(records.len());
        for chunk in statement_chunks(records) {
            let mut query = sqlx::query(INSERT_AUDIT.sql(chunk.len()));
            for record in chunk {
                query = bind_record(query, record);
            }
            let done = query
                .execute(&mut *tx)
                .await
                .map_err(|error| db_error(operation, error))?;
            // The transaction holds SQLite's write lock, and an AUTOINCREMENT
            // key takes the largest seq so far plus one for each row, so the
            // rows of one statement got consecutive seqs ending at the last
            // inserted one.
            let last = done.last_insert_rowid();
            let count = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
            seqs.extend(last - count + 1..=last);
        }
        usage.apply(&mut tx, operation).await?;
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))?;
        Ok(seqs)
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

fn bind_record<'q>(query: SqliteQuery<'q>, record: &'q AuditRecord) -> SqliteQuery<'q> {
    // `&str` binds borrow, while `&String` binds clone the text first.
    query
        .bind(record.time_ms)
        .bind(record.request_id.as_str())
        .bind(record.agent.as_deref())
        .bind(record.token_id.as_deref())
        .bind(record.source.as_str())
        .bind(record.connection.as_deref())
        .bind(record.method.as_str())
        .bind(record.path.as_str())
        .bind(record.decision.as_str())
        .bind(record.rule.as_deref())
        .bind(record.reason.as_deref())
        .bind(i64::from(record.status))
        .bind(to_i64(record.bytes_in))
        .bind(to_i64(record.bytes_out))
        .bind(to_i64(record.duration_us))
        .bind(findings_column(&record.findings))
        .bind(record.user_agent.as_deref())
}

/// Rows per multi-row statement, at most.
///
/// [`statement_chunks`] cuts a batch into chunks of this many rows and then
/// into descending powers of two. So each statement has at most 7 texts,
/// which stay in sqlx's per-connection statement cache (100 statements by
/// default in sqlx 0.8) and are prepared once per connection. 64 audit rows
/// bind 1,088 parameters, far below the limits of SQLite (32,766 since
/// 3.32) and PostgreSQL (65,535).
pub(crate) const MAX_ROWS_PER_STATEMENT: usize = 64;

/// Number of row counts a [`MultiRowSql`] has a text for: 1, 2, 4, ... 64.
const ROW_COUNTS: usize = MAX_ROWS_PER_STATEMENT.ilog2() as usize + 1;

pub(crate) type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

/// A statement with a `VALUES` list of one row per bound item, such as a
/// multi-row `INSERT`, in one text per row count of [`statement_chunks`].
pub(crate) struct MultiRowSql {
    /// Text before `VALUES`.
    head: &'static str,
    /// Parameters per row.
    columns: usize,
    /// Text after the `VALUES` list.
    tail: &'static str,
    /// Text for `2^i` rows at index `i`, built on first use.
    texts: OnceLock<Vec<String>>,
}

impl MultiRowSql {
    pub(crate) const fn new(head: &'static str, columns: usize, tail: &'static str) -> Self {
        MultiRowSql {
            head,
            columns,
            tail,
            texts: OnceLock::new(),
        }
    }

    /// Returns the text for `rows` rows, a length that [`statement_chunks`]
    /// yields. Another length gets a text whose parameter count does not
    /// match the bound values, so the driver rejects the statement.
    pub(crate) fn sql(&'static self, rows: usize) -> &'static str {
        let texts = self.texts.get_or_init(|| {
            (0..ROW_COUNTS)
                .map(|power| self.build(1 << power))
                .collect()
        });
        let index = (rows.max(1).ilog2() as usize).min(ROW_COUNTS - 1);
        &texts[index]
    }

    /// Builds `head VALUES (?, ?), (?, ?) tail` for `rows` rows.
    ///
    /// The parameters are anonymous `?` rather than the `$1` of the other
    /// statements. sqlx 0.8 calls `sqlite3_bind_parameter_name` for every
    /// parameter it binds, and SQLite finds a name by a linear search
    /// through the named parameters. With 1,088 `$N` parameters that search
    /// took 44% of the CPU samples in a `perf` profile of the audit bench,
    /// and `?` has no name to search for. A PostgreSQL backend would number
    /// them `$1, $2, ...` here.
    fn build(&self, rows: usize) -> String {
        let row = format!("({})", vec!["?"; self.columns].join(", "));
        let values = vec![row.as_str(); rows].join(", ");
        format!("{}VALUES {values}{}", self.head, self.tail)
    }
}

/// Cuts `rows` into the chunks of one multi-row statement each: whole
/// chunks of [`MAX_ROWS_PER_STATEMENT`], then descending powers of two,
/// keeping the order of `rows`.
pub(crate) fn statement_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let len = if rows.len() >= MAX_ROWS_PER_STATEMENT {
            MAX_ROWS_PER_STATEMENT
        } else {
            1 << rows.len().ilog2()
        };
        let (chunk, rest) = rows.split_at(len);
        rows = rest;
        Some(chunk)
    })
}

/// Runs `statement` on `conn` once per chunk of `rows`, with the parameters
/// that `bind` adds for each row.
pub(crate) async fn execute_multi_row<'q, T>(
    conn: &mut SqliteConnection,
    statement: &'static MultiRowSql,
    rows: &'q [T],
    bind: fn(SqliteQuery<'q>, &'q T) -> SqliteQuery<'q>,
    operation: &'static str,
) -> Result<(), StoreError> {
    for chunk in statement_chunks(rows) {
        let mut query = sqlx::query(statement.sql(chunk.len()));
        for row in chunk {
            query = bind(query, row);
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(|error| db_error(operation, error))?;
    }
    Ok(())
}

/// Encodes rule ids as the JSON array stored in the `findings` column, or
/// NULL when there are none.
fn findings_column(findings: &[String]) -> Option<String> {
    if findings.is_empty() {
        return None;
    }
    serde_json::to_string(findings).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_order_and_sizes() {
        let cases: [(usize, &[usize]); 6] = [
            (1, &[1]),
            (2, &[2]),
            (11, &[8, 2, 1]),
            (64, &[64]),
            (203, &[64, 64, 64, 8, 2, 1]),
            (512, &[64, 64, 64, 64, 64, 64, 64, 64]),
        ];
        for (len, expected) in cases {
            let rows: Vec<usize> = (0..len).collect();
            let chunks: Vec<&[usize]> = statement_chunks(&rows).collect();
            let sizes: Vec<usize> = chunks.iter().map(|chunk| chunk.len()).collect();
            assert_eq!(sizes, expected, "sizes for {len} rows");
            assert_eq!(chunks.concat(), rows, "order for {len} rows");
        }
        assert_eq!(statement_chunks::<u8>(&[]).count(), 0);
    }

    #[test]
    fn statement_text_repeats_rows() {
        static PAIRS: MultiRowSql = MultiRowSql::new("INSERT INTO t (a, b) ", 2, " RETURNING a");

        assert_eq!(
            PAIRS.sql(1),
            "INSERT INTO t (a, b) VALUES (?, ?) RETURNING a"
        );
        assert_eq!(
            PAIRS.sql(2),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) RETURNING a"
        );
        let largest = PAIRS.sql(MAX_ROWS_PER_STATEMENT);
        assert_eq!(largest.matches("(?, ?)").count(), MAX_ROWS_PER_STATEMENT);
        assert_eq!(largest.matches('?').count(), 2 * MAX_ROWS_PER_STATEMENT);
    }
}
