//! Audit records as the gateway writes them, and a store in a temporary
//! directory to commit them to.

use castellan_store::{now_ms, AuditDecision, AuditRecord, Store};
use tempfile::TempDir;

/// Records per batch, the gateway audit writer's maximum batch size.
pub const BATCH_SIZE: usize = 512;

/// Records written before the measurement, so every measured batch goes
/// into a log with indexes of a steady shape rather than an empty one.
pub const PREFILL_RECORDS: usize = 100 * BATCH_SIZE;

/// Returns `count` records of allowed and denied requests with the field
/// sizes of the `bench/run` load test: a 1 KiB response, a request id, a
/// token id and a user agent.
pub fn records(count: usize) -> Vec<AuditRecord> {
    records_from(0, count, now_ms())
}

/// Returns records `first .. first + count` of a stream that starts at
/// `start_ms` with one request per millisecond, like [`records`] but
/// continuing it: times and request ids keep increasing from batch to batch
/// as in the gateway's log. Agent, connection and path depend only on the
/// position in a batch of [`BATCH_SIZE`], so the same summary rows are
/// updated batch after batch.
pub fn records_from(first: usize, count: usize, start_ms: i64) -> Vec<AuditRecord> {
    (first..first + count)
        .map(|n| {
            let i = n % BATCH_SIZE;
            let denied = i % 10 == 9;
            AuditRecord {
                seq: None,
                time_ms: start_ms + i64::try_from(n).unwrap_or(i64::MAX),
                request_id: format!("req_{n:016x}"),
                agent: Some(format!("agent-{:04}", i % 1_000)),
                token_id: Some("tok_4fQx81LmZt0B".to_string()),
                source: format!("127.0.0.1:{}", 40_000 + i % 20_000),
                connection: Some(format!("conn-{:02}", i % 50)),
                method: if denied { "DELETE" } else { "GET" }.to_string(),
                path: format!("/v1/items/{i}/details"),
                decision: if denied {
                    AuditDecision::Deny
                } else {
                    AuditDecision::Allow
                },
                rule: Some(if denied {
                    "roles.role-000.deny[0]".to_string()
                } else {
                    "roles.role-000.allow[0]".to_string()
                }),
                reason: denied.then(|| "denied by roles.role-000.deny[0]".to_string()),
                status: if denied { 403 } else { 200 },
                bytes_in: 0,
                bytes_out: if denied { 0 } else { 1_024 },
                duration_us: 850 + (i as u64 % 300),
                findings: Vec::new(),
                user_agent: Some("castellan-sdk-python/0.4.1".to_string()),
            }
        })
        .collect()
}

/// A castellan database in a temporary directory, removed on drop.
pub struct TempStore {
    pub store: Store,
    _directory: TempDir,
}

impl TempStore {
    /// Creates a new database file in a new temporary directory.
    ///
    /// # Panics
    ///
    /// Panics if the directory or the database cannot be created.
    pub async fn create() -> TempStore {
        let directory = tempfile::tempdir()
            .unwrap_or_else(|error| panic!("creating a temporary directory failed: {error}"));
        let path = directory.path().join("castellan.db");
        let store = Store::create(&path).await.unwrap_or_else(|error| {
            panic!("creating the database {} failed: {error}", path.display())
        });
        TempStore {
            store,
            _directory: directory,
        }
    }
}

#[cfg(test)]
mod tests {
    use castellan_store::AuditQuery;

    use super::*;

    #[tokio::test]
    async fn batch_commits_every_record() {
        let temp = TempStore::create().await;
        let batch = records(BATCH_SIZE);
        temp.store
            .insert_audit_batch(&batch)
            .await
            .expect("batch commits");
        let stored = temp
            .store
            .query_audit(&AuditQuery::tail(1_000))
            .await
            .expect("records read back");
        assert_eq!(stored.len(), BATCH_SIZE);
        assert_eq!(stored[9].decision, AuditDecision::Deny);
        assert_eq!(stored[0].path, "/v1/items/0/details");
    }

    #[test]
    fn stream_continues_across_batches() {
        let first = records_from(0, BATCH_SIZE, 1_000);
        let second = records_from(BATCH_SIZE, BATCH_SIZE, 1_000);

        assert_eq!(first[BATCH_SIZE - 1].time_ms + 1, second[0].time_ms);
        assert_ne!(first[0].request_id, second[0].request_id);
        assert_eq!(first[3].agent, second[3].agent);
        assert_eq!(first[3].path, second[3].path);
    }
}
