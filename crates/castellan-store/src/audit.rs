//! Writing and reading audit records.

use std::sync::OnceLock;

use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::Sqlite;

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

/// Columns of `INSERT INTO audit`, all but `seq`.
macro_rules! insert_audit_head {
    () => {
        "INSERT INTO audit (time_ms, request_id, agent, token_id, source, connection, method, \
         path, decision, rule, reason, status, bytes_in, bytes_out, duration_us, findings, \
         user_agent) "
    };
}

/// Parameters of one audit row in [`insert_audit_sql`].
const AUDIT_COLUMNS: usize = 17;

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
    /// Records are inserted [`AUDIT_ROWS_PER_STATEMENT`] at a time, and the
    /// usage summaries travel with the last of them, because each statement
    /// costs a round trip to the driver's worker thread. A batch of up to
    /// that many records costs one: a text that also begins and commits the
    /// transaction. A larger batch costs `BEGIN`, one text per chunk and
    /// `COMMIT`.
    pub async fn insert_audit_batch(
        &self,
        records: &[AuditRecord],
    ) -> Result<Vec<i64>, StoreError> {
        let Some((full, last)) = split_last_chunk(records) else {
            return Ok(Vec::new());
        };
        let operation = "write audit records";
        let usage = UsageBatch::from_records(records);
        if full.is_empty() {
            let last_seq = self.insert_one_chunk(&usage, last, operation).await?;
            return Ok(seqs_ending_at(last_seq, records.len()));
        }
        let mut tx = self.begin_write(operation).await?;
        for chunk in full.chunks(AUDIT_ROWS_PER_STATEMENT) {
            let mut query = sqlx::query(insert_audit_sql());
            for record in chunk {
                query = bind_record(query, record);
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(|error| db_error(operation, error))?;
        }
        let mut query = usage.bind(sqlx::query(usage_and_insert_audit_sql()), operation)?;
        for record in last {
            query = bind_record(query, record);
        }
        let done = query
            .execute(&mut *tx)
            .await
            .map_err(|error| db_error(operation, error))?;
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))?;
        // The insert is the last statement of its text, so the result
        // reports the row id of the batch's last record.
        Ok(seqs_ending_at(done.last_insert_rowid(), records.len()))
    }

    /// Writes a batch of at most [`AUDIT_ROWS_PER_STATEMENT`] records with
    /// its usage summaries as one statement text that also begins and
    /// commits the transaction: one round trip to the driver's worker
    /// thread instead of three. Returns the seq of the last record.
    async fn insert_one_chunk(
        &self,
        usage: &UsageBatch<'_>,
        records: &[AuditRecord],
        operation: &'static str,
    ) -> Result<i64, StoreError> {
        let mut query = usage.bind(sqlx::query(one_chunk_transaction_sql()), operation)?;
        for record in records {
            query = bind_record(query, record);
        }
        let mut connection = TextTransaction::new(self.acquire(operation).await?);
        match query.execute(connection.as_mut()).await {
            Ok(done) => {
                connection.finished();
                Ok(done.last_insert_rowid())
            }
            Err(error) => {
                connection.roll_back().await;
                Err(db_error(operation, error))
            }
        }
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

/// Audit rows per insert statement, at most. 64 rows bind 1,088
/// parameters, far below SQLite's limit of 32,766 (since 3.32).
pub(crate) const AUDIT_ROWS_PER_STATEMENT: usize = 64;

pub(crate) type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

/// Splits `rows` into whole statements of [`AUDIT_ROWS_PER_STATEMENT`]
/// rows and a last statement of 1 to that many rows, or returns `None` for
/// no rows.
fn split_last_chunk<T>(rows: &[T]) -> Option<(&[T], &[T])> {
    let last_start = rows.len().checked_sub(1)?;
    Some(rows.split_at(last_start - last_start % AUDIT_ROWS_PER_STATEMENT))
}

/// Returns the insert of up to [`AUDIT_ROWS_PER_STATEMENT`] audit rows: a
/// `VALUES` list of that many rows, of which the rows left unbound stay
/// NULL and are skipped.
///
/// One text for every row count keeps one prepared statement per
/// connection. SQLite produces the rows of a `VALUES` list in order, so the
/// records get their seqs in batch order (`batch_returns_stored_seqs` in
/// `tests/audit_batch.rs` checks this).
///
/// The parameters are anonymous `?` rather than the `$1` of the other
/// statements. sqlx 0.8 calls `sqlite3_bind_parameter_name` for every
/// parameter it binds, and SQLite finds a name by a linear search through
/// the named parameters. With 1,088 `$N` parameters that search took 44% of
/// the CPU samples in a `perf` profile of the audit bench, and `?` has no
/// name to search for.
fn insert_audit_sql() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let row = format!("({})", vec!["?"; AUDIT_COLUMNS].join(", "));
        let values = vec![row.as_str(); AUDIT_ROWS_PER_STATEMENT].join(", ");
        // `time_ms` is NOT NULL, so a NULL first column marks an unbound row.
        format!(
            "{}SELECT * FROM (VALUES {values}) WHERE column1 IS NOT NULL",
            insert_audit_head!()
        )
    })
}

/// Returns the usage summaries of [`UsageBatch::bind`] followed by
/// [`insert_audit_sql`], the last statement text of every batch.
fn usage_and_insert_audit_sql() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| format!("{}; {}", crate::usage::APPLY_USAGE, insert_audit_sql()))
}

/// Returns [`usage_and_insert_audit_sql`] between `BEGIN IMMEDIATE` and
/// `COMMIT`, the whole transaction of a batch that fits one insert.
///
/// `COMMIT` leaves SQLite's last insert row id alone, so the result still
/// reports the seq of the batch's last record.
fn one_chunk_transaction_sql() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| format!("BEGIN IMMEDIATE; {}; COMMIT", usage_and_insert_audit_sql()))
}

/// Returns the seqs of `count` records inserted in one transaction, the
/// last of which got `last_seq`.
///
/// The transaction held SQLite's write lock, and an AUTOINCREMENT key
/// takes the largest seq so far plus one for each row, so the records got
/// consecutive seqs in batch order.
fn seqs_ending_at(last_seq: i64, count: usize) -> Vec<i64> {
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    (last_seq - count + 1..=last_seq).collect()
}

/// A pooled connection running a transaction that begins and ends inside
/// one statement text.
///
/// sqlx does not know about such a transaction, so it cannot roll it back.
/// If the text fails, [`TextTransaction::roll_back`] ends the transaction
/// and keeps the connection. If the caller stops waiting for the text, or
/// the rollback fails, the transaction may still be open: the connection is
/// then closed instead of going back to the pool, and SQLite rolls the
/// transaction back as it closes.
///
/// Keeping the connection matters to `castellan serve`, whose connections
/// are all opened at request priority (see `Store::open_all_connections`).
/// A write lock held by another process past the busy timeout makes the
/// text fail at its `BEGIN IMMEDIATE`, and closing the connection each time
/// replaced it with one opened at lower priority.
struct TextTransaction {
    connection: PoolConnection<Sqlite>,
    finished: bool,
}

impl TextTransaction {
    fn new(connection: PoolConnection<Sqlite>) -> Self {
        TextTransaction {
            connection,
            finished: false,
        }
    }

    fn as_mut(&mut self) -> &mut SqliteConnection {
        &mut self.connection
    }

    /// Marks the text as run to its end, so the connection can be reused.
    fn finished(mut self) {
        self.finished = true;
    }

    /// Ends whatever transaction the failed text left open, and marks the
    /// connection reusable once no transaction is open. `ROLLBACK` fails
    /// when no transaction is open, because the text failed before its
    /// `BEGIN` took effect or SQLite already rolled back, so a failed
    /// rollback is followed by a check that a new transaction can begin.
    async fn roll_back(mut self) {
        if sqlx::query("ROLLBACK").execute(self.as_mut()).await.is_ok() {
            self.finished = true;
            return;
        }
        match sqlx::query("BEGIN DEFERRED; ROLLBACK")
            .execute(self.as_mut())
            .await
        {
            Ok(_) => self.finished = true,
            Err(error) => tracing::warn!(
                %error,
                "cannot end the transaction of a failed audit insert; closing its store connection"
            ),
        }
    }
}

impl Drop for TextTransaction {
    fn drop(&mut self) {
        if !self.finished {
            self.connection.close_on_drop();
        }
    }
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
    use crate::audit_record::AuditDecision;
    use crate::open::MAX_CONNECTIONS;
    use sqlx::Connection as _;

    fn record(request: u32) -> AuditRecord {
        AuditRecord {
            seq: None,
            time_ms: 1_700_000_000_000 + i64::from(request),
            request_id: format!("req-{request}"),
            agent: Some("reader-bot".to_owned()),
            token_id: Some("tok-1".to_owned()),
            source: "127.0.0.1:50000".to_owned(),
            connection: Some("github".to_owned()),
            method: "GET".to_owned(),
            path: "/repos".to_owned(),
            decision: AuditDecision::Allow,
            rule: None,
            reason: None,
            status: 200,
            bytes_in: 0,
            bytes_out: 1024,
            duration_us: 1500,
            findings: Vec::new(),
            user_agent: None,
        }
    }

    /// Waits for the pool to take back the connections of finished calls,
    /// which it does in tasks of its own.
    async fn settled_size(store: &Store) -> u32 {
        for _ in 0..100 {
            if store.pool.num_idle() == store.pool.size() as usize {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        store.pool.size()
    }

    #[tokio::test]
    async fn busy_insert_keeps_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("castellan.db");
        let store = Store::create(&path).await.unwrap();
        store.open_all_connections().await.unwrap();
        assert_eq!(settled_size(&store).await, MAX_CONNECTIONS);

        // Another process holds the write lock past the busy timeout.
        let url = format!("sqlite://{}", path.display());
        let mut other = SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        let error = store.insert_audit_batch(&[record(1)]).await.unwrap_err();
        assert!(matches!(error, StoreError::Busy { .. }), "{error:?}");
        assert_eq!(
            settled_size(&store).await,
            MAX_CONNECTIONS,
            "the failed insert closed its connection"
        );

        sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
        // A trigger fails the insert after `BEGIN IMMEDIATE` took effect,
        // once with the transaction left open and once rolled back.
        for action in ["ABORT", "ROLLBACK"] {
            let trigger = format!(
                "CREATE TRIGGER fail_audit BEFORE INSERT ON audit \
                 BEGIN SELECT RAISE({action}, 'refused by the test'); END"
            );
            sqlx::query(&trigger).execute(&mut other).await.unwrap();
            let error = store.insert_audit_batch(&[record(2)]).await.unwrap_err();
            assert!(
                format!("{error:?}").contains("refused by the test"),
                "{error:?}"
            );
            assert_eq!(
                settled_size(&store).await,
                MAX_CONNECTIONS,
                "RAISE({action}) closed the connection"
            );
            sqlx::query("DROP TRIGGER fail_audit")
                .execute(&mut other)
                .await
                .unwrap();
            // No connection of the store holds the write lock.
            sqlx::query("PRAGMA busy_timeout = 0; BEGIN IMMEDIATE; ROLLBACK")
                .execute(&mut other)
                .await
                .unwrap();
        }
        let seqs = store
            .insert_audit_batch(&[record(2), record(3)])
            .await
            .unwrap();
        assert_eq!(seqs.len(), 2);
        assert_eq!(store.audit_count().await.unwrap(), 2);
        assert_eq!(settled_size(&store).await, MAX_CONNECTIONS);
    }

    #[test]
    fn split_keeps_last_chunk_nonempty() {
        let cases: [(usize, usize); 7] = [
            (1, 1),
            (2, 2),
            (63, 63),
            (64, 64),
            (65, 1),
            (128, 64),
            (203, 11),
        ];
        for (len, last_len) in cases {
            let rows: Vec<usize> = (0..len).collect();
            let (full, last) = split_last_chunk(&rows).unwrap();
            assert_eq!(last.len(), last_len, "last chunk of {len} rows");
            assert_eq!(full.len() % AUDIT_ROWS_PER_STATEMENT, 0, "{len} rows");
            assert_eq!([full, last].concat(), rows, "order for {len} rows");
        }
        assert!(split_last_chunk::<u8>(&[]).is_none());
    }

    #[test]
    fn statement_texts_bind_every_row() {
        let rows = AUDIT_ROWS_PER_STATEMENT * AUDIT_COLUMNS;
        assert_eq!(insert_audit_sql().matches('?').count(), rows);
        assert_eq!(
            insert_audit_sql()
                .matches(&format!("({})", vec!["?"; AUDIT_COLUMNS].join(", ")))
                .count(),
            AUDIT_ROWS_PER_STATEMENT
        );
        // The six JSON arrays of the usage summaries come first.
        let combined = usage_and_insert_audit_sql();
        assert_eq!(combined.matches('?').count(), 6 + rows);
        assert!(combined.ends_with(insert_audit_sql()));
    }
}
