//! A batch of audit records must leave the audit log and every usage
//! summary exactly as inserting the same records one at a time does.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use castellan_store::{AuditDecision, AuditRecord};
use common::{audit_record, create_db, token, TestDb};
use sqlx::{Connection, SqliteConnection};

const DAY_MS: i64 = 86_400_000;
/// Midnight starting UTC day 20,000, so the records fall on three days.
const MIDNIGHT: i64 = 20_000 * DAY_MS;

/// Records in the batch: more than three multi-row statements' worth, so the
/// batch is split into whole chunks and a remainder of several sizes.
const RECORDS: u32 = 203;

/// Tables whose every column the comparison reads, with the audit log and
/// the token table first.
const TABLES: [&str; 7] = [
    "audit",
    "tokens",
    "agent_usage",
    "usage_daily",
    "route_usage",
    "credential_networks",
    "credential_user_agents",
];

const SOURCES: [&str; 6] = [
    "10.1.2.3:40000",
    "10.1.200.9:51000",
    "10.2.0.1:1",
    "[2001:db8:1:2::9]:443",
    "[::ffff:192.168.7.1]:80",
    "not an address",
];

const USER_AGENTS: [&str; 3] = [
    "python-httpx/0.27.0",
    "castellan-sdk-python/0.4.1",
    "curl/8.5.0",
];

/// Builds record `i` of the batch. Agents, tokens, routes, networks, user
/// agents and days repeat, times are out of order, and some records are
/// denied, failed, unauthenticated, or lack a connection, token or user
/// agent.
fn mixed_record(i: u32) -> AuditRecord {
    let mut record = audit_record(None, i);
    let index = i as usize;
    let agent = ["alpha", "beta", "gamma"][index % 3];
    record.time_ms = MIDNIGHT + i64::from((i * 7_919) % 401) * 60_000 - 200 * 60_000;
    if i.is_multiple_of(17) {
        record.time_ms -= DAY_MS;
    }
    record.agent = Some(agent.to_owned());
    record.token_id = match agent {
        "gamma" => Some("certificate:gamma".to_owned()),
        _ if i.is_multiple_of(19) => None,
        _ => Some(format!("tok-{agent}")),
    };
    record.source = SOURCES[index % SOURCES.len()].to_owned();
    record.connection = match i % 23 {
        0 => None,
        _ if i.is_multiple_of(2) => Some("github".to_owned()),
        _ => Some("slack".to_owned()),
    };
    record.method = if i.is_multiple_of(3) { "POST" } else { "GET" }.to_owned();
    record.path = format!("/v1/items/{}", i % 40);
    record.user_agent = if i.is_multiple_of(5) {
        None
    } else {
        Some(USER_AGENTS[index % USER_AGENTS.len()].to_owned())
    };
    record.bytes_in = u64::from(i) * 3;
    record.bytes_out = 1_000 + u64::from(i);
    if i.is_multiple_of(9) {
        record.findings = vec!["aws-access-key".to_owned()];
    }
    if i % 7 == 3 {
        record.decision = AuditDecision::Deny;
        record.status = 403;
        record.rule = Some("roles.reader.deny[0]".to_owned());
        record.reason = Some("denied by roles.reader.deny[0]".to_owned());
    } else if i % 13 == 5 {
        record.decision = AuditDecision::Error;
        record.status = 502;
    }
    if i.is_multiple_of(11) {
        record.agent = None;
        record.token_id = None;
        record.decision = AuditDecision::Deny;
        record.status = 401;
        record.rule = None;
        record.reason = Some("invalid token".to_owned());
    }
    record
}

/// Creates a database holding the agent tokens of alpha and beta (gamma
/// uses a client certificate, which has no token row) and one earlier
/// batch, so the compared inserts also merge into existing summary rows.
async fn prepared_db() -> TestDb {
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-alpha", "alpha", 1))
        .await
        .expect("insert token tok-alpha");
    db.store
        .insert_token(&token("tok-beta", "beta", 2))
        .await
        .expect("insert token tok-beta");
    let earlier: Vec<AuditRecord> = (1_000..1_030)
        .map(|i| {
            let mut record = mixed_record(i);
            record.time_ms -= 2 * DAY_MS;
            record
        })
        .collect();
    db.store
        .insert_audit_batch(&earlier)
        .await
        .expect("insert the earlier batch");
    db
}

/// Reads every row of `table` as the SQL literals of its columns
/// (`quote()`), which tell an integer from a real or a text, sorted.
async fn dump_table(conn: &mut SqliteConnection, table: &str) -> Vec<String> {
    let columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
            .bind(table)
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|error| panic!("reading the columns of {table} failed: {error}"));
    assert!(!columns.is_empty(), "table {table} not found");
    let row_text = columns
        .iter()
        .map(|column| format!("quote({column})"))
        .collect::<Vec<_>>()
        .join(" || ',' || ");
    let sql = format!("SELECT {row_text} FROM {table} ORDER BY 1");
    sqlx::query_scalar(&sql)
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|error| panic!("reading table {table} failed: {error}"))
}

async fn dump_tables(path: &Path) -> BTreeMap<&'static str, Vec<String>> {
    let url = format!("sqlite://{}", path.display());
    let mut conn = SqliteConnection::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("opening {} failed: {error}", path.display()));
    let mut tables = BTreeMap::new();
    for table in TABLES {
        tables.insert(table, dump_table(&mut conn, table).await);
    }
    conn.close().await.expect("close the comparing connection");
    tables
}

#[tokio::test]
async fn batch_matches_one_at_a_time() {
    let records: Vec<AuditRecord> = (0..RECORDS).map(mixed_record).collect();
    let batched = prepared_db().await;
    let single = prepared_db().await;

    batched
        .store
        .insert_audit_batch(&records)
        .await
        .expect("insert the batch");
    for record in &records {
        single
            .store
            .insert_audit_batch(std::slice::from_ref(record))
            .await
            .unwrap_or_else(|error| panic!("insert {} failed: {error}", record.request_id));
    }

    batched.store.close().await;
    single.store.close().await;
    let from_batch = dump_tables(&batched.path).await;
    let from_single = dump_tables(&single.path).await;
    for table in TABLES {
        assert_eq!(
            from_batch[table], from_single[table],
            "table {table} differs between the batch and single inserts"
        );
    }
}

/// Checks the batch's summaries against totals computed here from the
/// records, so a fault shared by both insert orders still fails.
#[tokio::test]
async fn batch_counts_only_authenticated_records() {
    let records: Vec<AuditRecord> = (0..RECORDS).map(mixed_record).collect();
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-alpha", "alpha", 1))
        .await
        .expect("insert token tok-alpha");

    db.store
        .insert_audit_batch(&records)
        .await
        .expect("insert the batch");

    let authenticated = records.iter().filter(|r| r.agent.is_some()).count();
    let routed = records
        .iter()
        .filter(|r| r.agent.is_some() && r.connection.is_some())
        .filter(|r| r.decision == AuditDecision::Allow)
        .count();
    let alpha_last = records
        .iter()
        .filter(|r| r.token_id.as_deref() == Some("tok-alpha"))
        .map(|r| r.time_ms)
        .max();
    assert!(
        authenticated < records.len(),
        "the batch must hold failures"
    );
    assert!(routed < authenticated, "the batch must hold denials");

    assert_eq!(db.store.audit_count().await.unwrap(), u64::from(RECORDS));
    let agents = db.store.agent_usage().await.unwrap();
    let names: Vec<&str> = agents.iter().map(|usage| usage.agent.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    let requests: u64 = agents.iter().map(|usage| usage.requests).sum();
    assert_eq!(requests, authenticated as u64);
    let routes = db.store.route_usage(None, 0).await.unwrap();
    let route_requests: u64 = routes.iter().map(|route| route.requests).sum();
    assert_eq!(route_requests, routed as u64);
    let tokens = db.store.list_tokens(None).await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].last_used_ms, alpha_last);
    let stored = db
        .store
        .query_audit(&castellan_store::AuditQuery::tail(1_000))
        .await
        .unwrap();
    let stored_ids: Vec<&str> = stored.iter().map(|r| r.request_id.as_str()).collect();
    let sent_ids: Vec<&str> = records.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(stored_ids, sent_ids, "records must keep the batch order");
}

/// The seqs a batch returns are the ones stored with its records, in batch
/// order, for every statement size the batch is cut into and after the
/// newest records were deleted (AUTOINCREMENT never reuses their seqs).
#[tokio::test]
async fn batch_returns_stored_seqs() {
    let db = create_db().await;
    let first: Vec<AuditRecord> = (0..5).map(mixed_record).collect();
    let first_seqs = db
        .store
        .insert_audit_batch(&first)
        .await
        .expect("insert the first batch");
    let path = db.path.clone();
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open a second connection");
    sqlx::query("DELETE FROM audit WHERE seq >= ?")
        .bind(first_seqs[3])
        .execute(&mut conn)
        .await
        .expect("delete the newest records");
    conn.close().await.expect("close the second connection");

    let records: Vec<AuditRecord> = (0..RECORDS).map(mixed_record).collect();
    let seqs = db
        .store
        .insert_audit_batch(&records)
        .await
        .expect("insert the batch");
    assert_eq!(seqs.len(), records.len());
    assert!(
        seqs[0] > first_seqs[4],
        "seq {} reused a deleted record's seq",
        seqs[0]
    );
    let stored = db
        .store
        .query_audit(&castellan_store::AuditQuery::after(first_seqs[2], 1_000))
        .await
        .expect("read the batch back");
    assert_eq!(stored.len(), records.len());
    for ((record, seq), stored) in records.iter().zip(&seqs).zip(&stored) {
        assert_eq!(stored.seq, Some(*seq), "seq of {}", record.request_id);
        assert_eq!(stored.request_id, record.request_id);
    }
    assert!(db.store.insert_audit_batch(&[]).await.unwrap().is_empty());
}

/// Request id that the trigger of `failed_batch_leaves_nothing` rejects.
const REJECTED_ID: &str = "rejected-by-trigger";

/// A batch that fails halfway, here on a trigger that rejects its last
/// record after the usage summaries and the other records were written,
/// leaves no record and no summary change behind. The next batch commits,
/// so the failed transaction did not stay open on a pooled connection.
/// Sizes cover a batch written as one text and one split into chunks.
#[tokio::test]
async fn failed_batch_leaves_nothing() {
    let db = prepared_db().await;
    let url = format!("sqlite://{}", db.path.display());
    let mut conn = SqliteConnection::connect(&url)
        .await
        .expect("open a second connection");
    let trigger = format!(
        "CREATE TRIGGER reject_marked BEFORE INSERT ON audit \
         WHEN NEW.request_id = '{REJECTED_ID}' \
         BEGIN SELECT RAISE(ABORT, 'rejected by the test trigger'); END"
    );
    sqlx::query(&trigger)
        .execute(&mut conn)
        .await
        .expect("create the rejecting trigger");
    conn.close().await.expect("close the second connection");
    let before = dump_tables(&db.path).await;

    for size in [1, 5, 64, 65, 130, 1, 1, 1] {
        let mut records: Vec<AuditRecord> = (0..size).map(mixed_record).collect();
        if let Some(last) = records.last_mut() {
            last.request_id = REJECTED_ID.to_owned();
        }
        let error = db
            .store
            .insert_audit_batch(&records)
            .await
            .expect_err("the trigger rejects the batch");
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        assert!(
            message.contains("write audit records") && message.contains("test trigger"),
            "batch of {size}: {message}"
        );
        assert_eq!(
            dump_tables(&db.path).await,
            before,
            "a failed batch of {size} left changes"
        );
    }

    let records: Vec<AuditRecord> = (0..3).map(mixed_record).collect();
    let seqs = db
        .store
        .insert_audit_batch(&records)
        .await
        .expect("a batch after the failures commits");
    let stored = db
        .store
        .query_audit(&castellan_store::AuditQuery::after(seqs[0] - 1, 10))
        .await
        .expect("read the batch back");
    let stored: Vec<_> = stored
        .iter()
        .map(|record| (record.seq, record.request_id.as_str()))
        .collect();
    let expected: Vec<_> = seqs
        .iter()
        .zip(&records)
        .map(|(seq, record)| (Some(*seq), record.request_id.as_str()))
        .collect();
    assert_eq!(stored, expected);
}
