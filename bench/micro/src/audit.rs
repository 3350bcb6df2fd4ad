//! Audit records as the gateway writes them, and a store in a temporary
//! directory to commit them to.

use castellan_store::{now_ms, AuditDecision, AuditRecord, Store};
use tempfile::TempDir;

/// Records per batch, the gateway audit writer's maximum batch size.
pub const BATCH_SIZE: usize = 512;

/// Returns `count` records of allowed and denied requests with the field
/// sizes of the `bench/run` load test: a 1 KiB response, a request id, a
/// token id and a user agent.
pub fn records(count: usize) -> Vec<AuditRecord> {
    let start = now_ms();
    (0..count)
        .map(|i| {
            let denied = i % 10 == 9;
            AuditRecord {
                seq: None,
                time_ms: start + i64::try_from(i).unwrap_or(i64::MAX),
                request_id: format!("req_{i:016x}"),
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
}
