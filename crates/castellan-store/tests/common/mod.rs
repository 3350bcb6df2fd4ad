//! Helpers shared by the store integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use castellan_store::{AuditDecision, AuditRecord, Store, TokenRecord};
use tempfile::TempDir;

/// A database created in its own temporary directory, removed on drop.
pub struct TestDb {
    pub dir: TempDir,
    pub path: PathBuf,
    pub store: Store,
}

pub async fn create_db() -> TestDb {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let path = dir.path().join("castellan.db");
    let store = Store::create(&path).await.expect("create database");
    TestDb { dir, path, store }
}

/// Returns a lowercase hex string of 64 characters derived from `seed`.
pub fn fake_hash(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

pub fn token(id: &str, agent: &str, seed: u8) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        agent: agent.to_owned(),
        hash: fake_hash(seed),
        created_ms: 1_700_000_000_000 + i64::from(seed),
        expires_ms: None,
        revoked_ms: None,
        last_used_ms: None,
        canary: false,
    }
}

pub fn audit_record(agent: Option<&str>, request: u32) -> AuditRecord {
    AuditRecord {
        seq: None,
        time_ms: 1_700_000_000_000 + i64::from(request),
        request_id: format!("req-{request}"),
        agent: agent.map(str::to_owned),
        token_id: agent.map(|a| format!("tok-{a}")),
        source: "127.0.0.1:50000".to_owned(),
        connection: Some("github".to_owned()),
        method: "GET".to_owned(),
        path: format!("/repos/acme/app/issues/{request}"),
        decision: AuditDecision::Allow,
        rule: Some("role:reader".to_owned()),
        reason: None,
        status: 200,
        bytes_in: 0,
        bytes_out: 1024,
        duration_us: 1500,
        findings: Vec::new(),
        user_agent: Some("python-httpx/0.27.0".to_owned()),
    }
}

/// Turns a fresh database back into one at schema version 2: without the
/// usage tables, the `user_agent` column and the record of migration 3.
pub async fn downgrade_to_version_2(conn: &mut sqlx::SqliteConnection) {
    for statement in [
        "DROP TABLE agent_usage",
        "DROP TABLE usage_daily",
        "DROP TABLE route_usage",
        "DROP TABLE credential_networks",
        "DROP TABLE credential_user_agents",
        "ALTER TABLE audit DROP COLUMN user_agent",
        "DELETE FROM _sqlx_migrations WHERE version = 3",
    ] {
        sqlx::query(statement).execute(&mut *conn).await.unwrap();
    }
}
