//! Edge cases of `Store::insert_audit_batch`: the seqs it returns, text
//! that JSON escapes on its way into the usage summaries, integer limits,
//! and rollback of the whole batch when one statement fails.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use castellan_store::{utc_day, AuditRecord, Store};
use common::{audit_record, create_db, downgrade_to_version_2, fake_hash, token};
use sqlx::{Connection, SqliteConnection};

const DAY_MS: i64 = 86_400_000;
/// Noon of UTC day 20,000, so neighbouring hours stay in it.
const NOON: i64 = 20_000 * DAY_MS + DAY_MS / 2;

async fn connect_raw(path: &Path) -> SqliteConnection {
    let url = format!("sqlite://{}", path.display());
    SqliteConnection::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("opening {} failed: {error}", path.display()))
}

/// Builds `count` records of agent `alpha` whose request ids start with
/// `prefix`.
fn batch(prefix: &str, count: usize) -> Vec<AuditRecord> {
    (0..count)
        .map(|i| {
            let mut record = audit_record(Some("alpha"), 1);
            record.request_id = format!("{prefix}-{i}");
            record.time_ms = NOON + i64::try_from(i).unwrap();
            record
        })
        .collect()
}

async fn request_id_at(conn: &mut SqliteConnection, seq: i64) -> Option<String> {
    sqlx::query_scalar("SELECT request_id FROM audit WHERE seq = ?")
        .bind(seq)
        .fetch_optional(conn)
        .await
        .unwrap()
}

async fn count_rows(conn: &mut SqliteConnection, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Checks that `seqs` has one seq per record of `records`, in order, and
/// that each stored row carries that record's request id.
async fn assert_seqs_match(conn: &mut SqliteConnection, records: &[AuditRecord], seqs: &[i64]) {
    assert_eq!(seqs.len(), records.len(), "one seq per record");
    for (record, seq) in records.iter().zip(seqs) {
        let stored = request_id_at(conn, *seq).await;
        assert_eq!(
            stored.as_deref(),
            Some(record.request_id.as_str()),
            "row at seq {seq}"
        );
    }
}

/// Inserts a row outside the store, as another process writing to the
/// same file would.
async fn insert_foreign_row(conn: &mut SqliteConnection, request_id: &str) {
    sqlx::query(
        "INSERT INTO audit (time_ms, request_id, source, method, path, decision, status, \
         bytes_in, bytes_out, duration_us) VALUES (1, ?, 'x', 'GET', '/', 'deny', 403, 0, 0, 0)",
    )
    .bind(request_id)
    .execute(conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn seqs_match_rows_across_chunk_sizes() {
    let db = create_db().await;
    let mut raw = connect_raw(&db.path).await;
    // Large batches before small ones, so a reused statement would keep
    // rows bound by the previous batch if the driver did not clear them.
    let sizes = [1, 63, 64, 65, 127, 128, 129, 500, 3, 1, 64, 2];
    let mut expected_rows = 0;

    for (round, size) in sizes.into_iter().enumerate() {
        if round > 0 {
            // Deleting the newest row must not make AUTOINCREMENT reuse its
            // seq, and a row written by another connection must not shift
            // the seqs of the next batch.
            sqlx::query("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)")
                .execute(&mut raw)
                .await
                .unwrap();
            insert_foreign_row(&mut raw, &format!("foreign-{round}")).await;
        }
        let records = batch(&format!("round{round}"), size);

        let seqs = db.store.insert_audit_batch(&records).await.unwrap();

        assert_seqs_match(&mut raw, &records, &seqs).await;
        assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1));
        expected_rows += i64::try_from(size).unwrap();
        let stored = count_rows(&mut raw, "audit").await;
        assert_eq!(stored, expected_rows, "audit rows after batch of {size}");
    }
}

#[tokio::test]
async fn concurrent_stores_get_their_own_seqs() {
    let db = create_db().await;
    let other = Store::open(&db.path).await.unwrap();
    let first: Vec<Vec<AuditRecord>> = (0..8).map(|i| batch(&format!("a{i}"), 65)).collect();
    let second: Vec<Vec<AuditRecord>> = (0..8).map(|i| batch(&format!("b{i}"), 130)).collect();

    let write = |store: &Store, batches: &[Vec<AuditRecord>]| {
        let store = store.clone();
        let batches = batches.to_vec();
        async move {
            let mut seqs = Vec::new();
            for records in &batches {
                seqs.push(store.insert_audit_batch(records).await.unwrap());
            }
            seqs
        }
    };
    let (first_seqs, second_seqs) = tokio::join!(write(&db.store, &first), write(&other, &second));

    let mut raw = connect_raw(&db.path).await;
    for (records, seqs) in first.iter().zip(&first_seqs) {
        assert_seqs_match(&mut raw, records, seqs).await;
    }
    for (records, seqs) in second.iter().zip(&second_seqs) {
        assert_seqs_match(&mut raw, records, seqs).await;
    }
    assert_eq!(count_rows(&mut raw, "audit").await, 8 * 65 + 8 * 130);
}

/// Text that JSON escapes or that looks like JSON itself.
fn awkward_texts() -> Vec<String> {
    vec![
        "\"quoted\"".to_owned(),
        "back\\slash\\".to_owned(),
        "\u{1}\u{8}\n\r\t\u{1f}".to_owned(),
        "line\u{2028}para\u{2029}".to_owned(),
        "emoji 😀 and é".to_owned(),
        "[1,2]".to_owned(),
        "{\"a\":1}".to_owned(),
        "null".to_owned(),
        "123".to_owned(),
        "-0.5e3".to_owned(),
        "'; DROP TABLE audit; --".to_owned(),
        "\u{7f}\u{fffd}".to_owned(),
        String::new(),
        "u".repeat(100 * 1024),
    ]
}

/// Builds one allowed record per text, which appears in the agent,
/// token id, connection, path and user agent of that record.
fn records_with_texts(texts: &[String]) -> Vec<AuditRecord> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut record = audit_record(Some("alpha"), 1);
            record.request_id = format!("req-{i}");
            record.time_ms = NOON + i64::try_from(i).unwrap();
            record.agent = Some(format!("agent-{i}-{text}"));
            record.token_id = Some(format!("tok-{i}-{text}"));
            record.connection = Some(format!("conn-{text}"));
            record.path = format!("/p/{text}");
            record.user_agent = Some(text.clone());
            record
        })
        .collect()
}

/// Inserts `texts` as records and checks that every summary table contains
/// each text exactly as given.
/// Returns the rows of `sql`, a query of two text columns, as a set.
async fn text_pairs(conn: &mut SqliteConnection, sql: &str) -> BTreeSet<(String, String)> {
    sqlx::query_as(sql)
        .fetch_all(conn)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn assert_texts_survive(texts: &[String]) {
    let db = create_db().await;
    let records = records_with_texts(texts);
    for (i, record) in records.iter().enumerate() {
        let id = record.token_id.clone().unwrap();
        let agent = record.agent.clone().unwrap();
        let mut stored = token(&id, &agent, 0);
        stored.hash = fake_hash(u8::try_from(i).unwrap());
        db.store.insert_token(&stored).await.unwrap();
    }

    db.store.insert_audit_batch(&records).await.unwrap();

    let mut raw = connect_raw(&db.path).await;
    let user_agents: BTreeSet<(String, String, String)> =
        sqlx::query_as("SELECT token_id, agent, user_agent FROM credential_user_agents")
            .fetch_all(&mut raw)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let expected: BTreeSet<(String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r.token_id.clone().unwrap(),
                r.agent.clone().unwrap(),
                r.user_agent.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(user_agents, expected, "credential_user_agents");

    let routes: BTreeSet<(String, String, String)> =
        sqlx::query_as("SELECT agent, connection, path FROM route_usage")
            .fetch_all(&mut raw)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let expected: BTreeSet<(String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r.agent.clone().unwrap(),
                r.connection.clone().unwrap(),
                r.path.clone(),
            )
        })
        .collect();
    assert_eq!(routes, expected, "route_usage");

    let daily = text_pairs(&mut raw, "SELECT agent, connection FROM usage_daily").await;
    let expected: BTreeSet<(String, String)> = records
        .iter()
        .map(|r| (r.agent.clone().unwrap(), r.connection.clone().unwrap()))
        .collect();
    assert_eq!(daily, expected, "usage_daily");

    let networks = text_pairs(&mut raw, "SELECT token_id, agent FROM credential_networks").await;
    let expected: BTreeSet<(String, String)> = records
        .iter()
        .map(|r| (r.token_id.clone().unwrap(), r.agent.clone().unwrap()))
        .collect();
    assert_eq!(networks, expected, "credential_networks");

    let agents: BTreeSet<String> = sqlx::query_scalar("SELECT agent FROM agent_usage")
        .fetch_all(&mut raw)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = records.iter().map(|r| r.agent.clone().unwrap()).collect();
    assert_eq!(agents, expected, "agent_usage");

    for record in &records {
        let id = record.token_id.as_deref().unwrap();
        let last_used: Option<i64> =
            sqlx::query_scalar("SELECT last_used_ms FROM tokens WHERE id = ?")
                .bind(id)
                .fetch_one(&mut raw)
                .await
                .unwrap();
        assert_eq!(last_used, Some(record.time_ms), "last use of token {id:?}");
    }
}

#[tokio::test]
async fn escaped_text_survives_in_summaries() {
    assert_texts_survive(&awkward_texts()).await;
}

/// Rust strings may contain NUL, and the audit row stores it, so the
/// summaries must keep it too.
#[tokio::test]
async fn nul_character_survives_in_summaries() {
    assert_texts_survive(&["a\0b".to_owned(), "a\0c".to_owned(), "\0".to_owned()]).await;
}

#[tokio::test]
async fn byte_counts_saturate_in_one_batch() {
    let db = create_db().await;
    let mut records = batch("big", 3);
    records[0].bytes_in = u64::MAX;
    records[1].bytes_in = u64::MAX;
    records[0].bytes_out = i64::MAX as u64;
    records[1].bytes_out = 1;
    records[2].bytes_out = 0;

    db.store.insert_audit_batch(&records).await.unwrap();

    let totals = db.store.usage_totals(0).await.unwrap();
    assert_eq!(totals.len(), 1, "{totals:?}");
    assert_eq!(totals[0].bytes_in, i64::MAX as u64);
    assert_eq!(totals[0].bytes_out, i64::MAX as u64);
    assert_eq!(totals[0].requests, 3);
}

#[tokio::test]
async fn extreme_times_keep_their_days() {
    let db = create_db().await;
    let times = [i64::MIN, -DAY_MS - 1, -1, 0, 1, i64::MAX];
    let records: Vec<AuditRecord> = times
        .iter()
        .enumerate()
        .map(|(i, time_ms)| {
            let mut record = audit_record(Some("alpha"), 1);
            record.request_id = format!("time-{i}");
            record.time_ms = *time_ms;
            record
        })
        .collect();

    db.store.insert_audit_batch(&records).await.unwrap();

    let mut raw = connect_raw(&db.path).await;
    let days: Vec<(i64, i64)> =
        sqlx::query_as("SELECT day, requests FROM usage_daily ORDER BY day")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    let expected: Vec<(i64, i64)> = vec![
        (utc_day(i64::MIN), 1),
        (-2, 1),
        (-1, 1),
        (0, 2),
        (utc_day(i64::MAX), 1),
    ];
    assert_eq!(days, expected, "usage_daily days");
    let span: (i64, i64, i64) = sqlx::query_as(
        "SELECT first_used_ms, last_used_ms, requests FROM agent_usage WHERE agent = 'alpha'",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!(span, (i64::MIN, i64::MAX, 6), "agent_usage span");
    let route: (i64, i64) = sqlx::query_as("SELECT first_used_ms, last_used_ms FROM route_usage")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(route, (i64::MIN, i64::MAX), "route_usage span");
}

const SUMMARY_TABLES: [&str; 5] = [
    "agent_usage",
    "usage_daily",
    "route_usage",
    "credential_networks",
    "credential_user_agents",
];

/// Checks that nothing of a failed batch was stored: no audit row, no
/// summary row, and no last use of the token.
async fn assert_nothing_stored(raw: &mut SqliteConnection) {
    assert_eq!(count_rows(raw, "audit").await, 0, "audit rows");
    for table in SUMMARY_TABLES {
        assert_eq!(count_rows(raw, table).await, 0, "rows of {table}");
    }
    let last_used: Option<i64> =
        sqlx::query_scalar("SELECT last_used_ms FROM tokens WHERE id = 'tok-alpha'")
            .fetch_one(raw)
            .await
            .unwrap();
    assert_eq!(last_used, None, "last use of tok-alpha");
}

#[tokio::test]
async fn failing_summary_rolls_back_batch() {
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-alpha", "alpha", 1))
        .await
        .unwrap();
    let mut raw = connect_raw(&db.path).await;
    sqlx::query(
        "CREATE TRIGGER reject_user_agent BEFORE INSERT ON credential_user_agents \
         BEGIN SELECT RAISE(ABORT, 'user agent rejected'); END",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    let records = batch("sum", 130);

    let result = db.store.insert_audit_batch(&records).await;

    assert!(result.is_err(), "the trigger must fail the batch");
    assert_nothing_stored(&mut raw).await;

    sqlx::query("DROP TRIGGER reject_user_agent")
        .execute(&mut raw)
        .await
        .unwrap();
    let seqs = db.store.insert_audit_batch(&records).await.unwrap();
    assert_seqs_match(&mut raw, &records, &seqs).await;
    assert_eq!(count_rows(&mut raw, "audit").await, 130);
}

#[tokio::test]
async fn failing_audit_insert_rolls_back_summaries() {
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-alpha", "alpha", 1))
        .await
        .unwrap();
    let mut raw = connect_raw(&db.path).await;
    sqlx::query(
        "CREATE TRIGGER reject_bad BEFORE INSERT ON audit WHEN NEW.request_id LIKE 'bad%' \
         BEGIN SELECT RAISE(ABORT, 'audit row rejected'); END",
    )
    .execute(&mut raw)
    .await
    .unwrap();

    // The rejected record sits in a whole chunk of 64, then in the last
    // chunk, which shares its statement text with the summaries.
    for bad_index in [3, 129] {
        let mut records = batch("ok", 130);
        records[bad_index].request_id = format!("bad-{bad_index}");

        let result = db.store.insert_audit_batch(&records).await;

        assert!(result.is_err(), "record {bad_index} must fail the batch");
        assert_nothing_stored(&mut raw).await;
    }

    let records = batch("ok", 65);
    let seqs = db.store.insert_audit_batch(&records).await.unwrap();
    assert_seqs_match(&mut raw, &records, &seqs).await;
}

/// Reads every row of `table` as text, sorted, so two databases can be
/// compared.
async fn dump_table(conn: &mut SqliteConnection, table: &str) -> Vec<String> {
    let columns: Vec<String> =
        sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let quoted: Vec<String> = columns.iter().map(|c| format!("quote({c})")).collect();
    let mut rows: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT {} FROM {table}",
        quoted.join(" || '|' || ")
    ))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    rows.sort();
    rows
}

/// Agents of the backfill comparison, two of them with text that JSON
/// escapes.
const BACKFILL_AGENTS: [&str; 3] = ["alpha", "beta \"b\"\\", "gamma 😀\u{2028}"];

/// Builds record `i` of the backfill comparison: three agents with their
/// tokens, awkward paths, several days and networks, and every decision.
/// Schema version 2 stores no user agent.
fn backfill_record(i: u32) -> AuditRecord {
    let texts = awkward_texts();
    let index = i as usize;
    let mut record = audit_record(None, i);

    // Every 29th record failed authentication, so it has no agent.
    if !i.is_multiple_of(29) {
        let agent = BACKFILL_AGENTS[index % BACKFILL_AGENTS.len()];
        record.agent = Some(agent.to_owned());
        record.token_id = Some(format!("tok-{agent}"));
    }
    record.time_ms = NOON + i64::from(i % 97) * 3_600_000 - i64::from(i % 13) * 1_000;
    record.source = format!("10.{}.1.1:{}", i % 5, 40_000 + i % 7);

    // Every 11th record named no declared connection.
    if i.is_multiple_of(11) {
        record.connection = None;
    }
    let text: String = texts[index % texts.len()].chars().take(64).collect();
    record.path = format!("/p/{text}");

    record.decision = match i % 5 {
        0..=2 => castellan_store::AuditDecision::Allow,
        3 => castellan_store::AuditDecision::Deny,
        _ => castellan_store::AuditDecision::Error,
    };
    record.bytes_in = u64::from(i % 1_000);
    record.bytes_out = u64::from(i) * 7;
    record.user_agent = None;
    record
}

#[tokio::test]
async fn backfill_matches_batched_summaries() {
    // More records than one backfill chunk of 10,000.
    let records: Vec<AuditRecord> = (0..10_050).map(backfill_record).collect();
    let batched = create_db().await;
    let upgraded = create_db().await;
    for db in [&batched, &upgraded] {
        for (seed, agent) in BACKFILL_AGENTS.iter().enumerate() {
            let id = format!("tok-{agent}");
            db.store
                .insert_token(&token(&id, agent, u8::try_from(seed).unwrap()))
                .await
                .unwrap();
        }
        for chunk in records.chunks(500) {
            db.store.insert_audit_batch(chunk).await.unwrap();
        }
    }
    upgraded.store.close().await;
    let mut raw = connect_raw(&upgraded.path).await;
    downgrade_to_version_2(&mut raw).await;
    sqlx::query("UPDATE tokens SET last_used_ms = NULL")
        .execute(&mut raw)
        .await
        .unwrap();
    raw.close().await.unwrap();

    let reopened = Store::open(&upgraded.path).await.unwrap();
    reopened.close().await;

    let mut expected = connect_raw(&batched.path).await;
    let mut actual = connect_raw(&upgraded.path).await;
    for table in SUMMARY_TABLES.into_iter().chain(["tokens"]) {
        let want = dump_table(&mut expected, table).await;
        let got = dump_table(&mut actual, table).await;
        // Schema version 2 stores no user agent, so that table stays empty.
        let has_rows = table != "credential_user_agents";
        assert_eq!(!want.is_empty(), has_rows, "{table} has rows");
        assert_eq!(got, want, "{table} after backfill");
    }
}
