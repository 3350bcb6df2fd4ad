//! Usage summaries kept from audit batches, and their backfill when an
//! existing database is upgraded.

mod common;

use castellan_store::{utc_day, AuditDecision, AuditRecord, Store};
use common::{audit_record, create_db, token};
use sqlx::Connection;

const DAY_MS: i64 = 86_400_000;
/// Noon of UTC day 20,000 (2024-10-04), so neighbouring hours stay in it.
const NOON: i64 = 20_000 * DAY_MS + DAY_MS / 2;

/// Builds the record of an allowed `GET path` by `agent` with its token
/// `tok-<agent>`.
fn allowed(agent: &str, time_ms: i64, path: &str) -> AuditRecord {
    let mut record = audit_record(Some(agent), 1);
    record.request_id = format!("req-{agent}-{time_ms}-{path}");
    record.time_ms = time_ms;
    record.path = path.to_owned();
    record
}

fn with_decision(mut record: AuditRecord, decision: AuditDecision) -> AuditRecord {
    record.decision = decision;
    record.status = match decision {
        AuditDecision::Allow => 200,
        AuditDecision::Deny => 403,
        AuditDecision::Error => 502,
    };
    record
}

#[tokio::test]
async fn batch_updates_agent_and_token_use() {
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-alpha", "alpha", 1))
        .await
        .unwrap();
    db.store
        .insert_token(&token("tok-beta", "beta", 2))
        .await
        .unwrap();
    let batch = [
        allowed("alpha", NOON, "/a"),
        allowed("alpha", NOON + 5_000, "/a"),
        allowed("alpha", NOON - 5_000, "/b"),
    ];

    db.store.insert_audit_batch(&batch).await.unwrap();

    let usage = db.store.agent_usage().await.unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert_eq!(usage[0].agent, "alpha");
    assert_eq!(usage[0].first_used_ms, NOON - 5_000);
    assert_eq!(usage[0].last_used_ms, NOON + 5_000);
    assert_eq!(usage[0].requests, 3);
    let tokens = db.store.list_tokens(None).await.unwrap();
    let alpha = tokens.iter().find(|t| t.id == "tok-alpha").unwrap();
    assert_eq!(alpha.last_used_ms, Some(NOON + 5_000));
    let beta = tokens.iter().find(|t| t.id == "tok-beta").unwrap();
    assert_eq!(beta.last_used_ms, None, "beta made no request");
}

#[tokio::test]
async fn later_batches_merge_into_rows() {
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-alpha", "alpha", 1))
        .await
        .unwrap();
    db.store
        .insert_audit_batch(&[allowed("alpha", NOON, "/a")])
        .await
        .unwrap();

    // A batch that arrives late with an older record must not move last use
    // backwards, but still counts.
    db.store
        .insert_audit_batch(&[allowed("alpha", NOON - 60_000, "/a")])
        .await
        .unwrap();

    let usage = db.store.agent_usage().await.unwrap();
    assert_eq!(usage[0].first_used_ms, NOON - 60_000);
    assert_eq!(usage[0].last_used_ms, NOON);
    assert_eq!(usage[0].requests, 2);
    let routes = db.store.route_usage(None, 0).await.unwrap();
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0].requests, 2);
    assert_eq!(routes[0].first_used_ms, NOON - 60_000);
    assert_eq!(routes[0].last_used_ms, NOON);
    let tokens = db.store.list_tokens(Some("alpha")).await.unwrap();
    assert_eq!(tokens[0].last_used_ms, Some(NOON));
}

#[tokio::test]
async fn daily_totals_count_decisions_and_bytes() {
    let db = create_db().await;
    let mut big = allowed("alpha", NOON, "/upload");
    big.bytes_in = 5_000;
    big.bytes_out = 7;
    let batch = [
        big,
        with_decision(allowed("alpha", NOON + 1, "/x"), AuditDecision::Deny),
        with_decision(allowed("alpha", NOON + 2, "/y"), AuditDecision::Error),
        allowed("alpha", NOON - 3 * DAY_MS, "/old"),
        allowed("beta", NOON, "/b"),
    ];

    db.store.insert_audit_batch(&batch).await.unwrap();

    let today = utc_day(NOON);
    let recent = db.store.usage_totals(today).await.unwrap();
    assert_eq!(recent.len(), 2, "{recent:?}");
    let alpha = &recent[0];
    assert_eq!(alpha.agent, "alpha");
    assert_eq!(alpha.connection.as_deref(), Some("github"));
    assert_eq!(alpha.requests, 3);
    assert_eq!(alpha.denied, 1);
    assert_eq!(alpha.errors, 1);
    assert_eq!(alpha.bytes_in, 5_000);
    assert_eq!(alpha.bytes_out, 7 + 2 * 1024);
    assert_eq!(recent[1].agent, "beta");
    assert_eq!(recent[1].requests, 1);

    let week = db.store.usage_totals(today - 6).await.unwrap();
    assert_eq!(week[0].requests, 4, "the record of three days ago counts");
    let future = db.store.usage_totals(today + 1).await.unwrap();
    assert!(future.is_empty(), "{future:?}");
}

#[tokio::test]
async fn routes_record_allowed_requests_only() {
    let db = create_db().await;
    let mut post = allowed("alpha", NOON, "/repos/acme/app/issues");
    post.method = "POST".to_owned();
    let batch = [
        allowed("alpha", NOON, "/repos/acme/app"),
        post,
        with_decision(allowed("alpha", NOON, "/admin"), AuditDecision::Deny),
        with_decision(allowed("alpha", NOON, "/flaky"), AuditDecision::Error),
        allowed("beta", NOON - 10 * DAY_MS, "/repos/acme/lib"),
    ];

    db.store.insert_audit_batch(&batch).await.unwrap();

    let all = db.store.route_usage(None, 0).await.unwrap();
    let seen: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|r| (r.agent.as_str(), r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("alpha", "GET", "/repos/acme/app"),
            ("alpha", "POST", "/repos/acme/app/issues"),
            ("beta", "GET", "/repos/acme/lib"),
        ]
    );
    let alpha = db.store.route_usage(Some("alpha"), 0).await.unwrap();
    assert_eq!(alpha.len(), 2);
    let recent = db.store.route_usage(None, NOON - DAY_MS).await.unwrap();
    assert!(
        recent.iter().all(|r| r.agent == "alpha"),
        "beta's route is older than the window: {recent:?}"
    );
}

#[tokio::test]
async fn credentials_record_networks_and_user_agents() {
    let db = create_db().await;
    let mut office = allowed("alpha", NOON, "/a");
    office.source = "10.1.2.3:5000".to_owned();
    let mut office_again = allowed("alpha", NOON + 1, "/a");
    office_again.source = "10.1.200.7:5001".to_owned();
    let mut elsewhere = allowed("alpha", NOON + 2, "/a");
    elsewhere.source = "[2001:db8:7:1::5]:443".to_owned();
    elsewhere.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64)".to_owned());
    let mut anonymous = allowed("alpha", NOON + 3, "/a");
    anonymous.user_agent = None;

    db.store
        .insert_audit_batch(&[office, office_again, elsewhere, anonymous])
        .await
        .unwrap();

    let networks = db.store.credential_networks(0).await.unwrap();
    let seen: Vec<(&str, &str, u64)> = networks
        .iter()
        .map(|n| (n.token_id.as_str(), n.value.as_str(), n.requests))
        .collect();
    assert_eq!(
        seen,
        [
            ("tok-alpha", "10.1.0.0/16", 2),
            ("tok-alpha", "127.0.0.0/16", 1),
            ("tok-alpha", "2001:db8:7::/48", 1),
        ]
    );
    let user_agents = db.store.credential_user_agents(0).await.unwrap();
    let seen: Vec<(&str, u64)> = user_agents
        .iter()
        .map(|u| (u.value.as_str(), u.requests))
        .collect();
    assert_eq!(
        seen,
        [
            ("Mozilla/5.0 (X11; Linux x86_64)", 1),
            ("python-httpx/0.27.0", 2),
        ]
    );
    assert!(user_agents.iter().all(|u| u.agent == "alpha"));
    let later = db.store.credential_user_agents(NOON + 3).await.unwrap();
    assert!(later.is_empty(), "{later:?}");
}

/// Summary rows travel to SQLite as JSON, so text that JSON escapes must
/// come back unchanged, and large counters must stay integers.
#[tokio::test]
async fn summaries_keep_text_and_numbers_exactly() {
    let db = create_db().await;
    let awkward_agent = "agent \"quoted\" \\ back/slash ünïcode 🦀";
    let awkward_path = "/v1/it\"ems/%22?q=\\u0041&x=\t";
    let awkward_user_agent = "curl/8 \"x\" \\ \u{7f} \u{1b}[31m \u{2028} 日本";
    let mut record = allowed(awkward_agent, NOON, awkward_path);
    record.user_agent = Some(awkward_user_agent.to_owned());
    record.bytes_out = u64::MAX / 4;

    db.store.insert_audit_batch(&[record]).await.unwrap();

    let agents = db.store.agent_usage().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].agent, awkward_agent);
    let routes = db.store.route_usage(None, 0).await.unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].path, awkward_path);
    let user_agents = db.store.credential_user_agents(0).await.unwrap();
    assert_eq!(user_agents.len(), 1);
    assert_eq!(user_agents[0].value, awkward_user_agent);
    assert_eq!(user_agents[0].agent, awkward_agent);
    let url = format!("sqlite://{}", db.path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let (kind, bytes_out): (String, i64) =
        sqlx::query_as("SELECT typeof(bytes_out), bytes_out FROM usage_daily")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(kind, "integer");
    assert_eq!(bytes_out, i64::try_from(u64::MAX / 4).unwrap());
}

#[tokio::test]
async fn unauthenticated_records_leave_summaries_empty() {
    let db = create_db().await;
    let mut failed = audit_record(None, 1);
    failed.decision = AuditDecision::Deny;
    failed.status = 401;

    db.store.insert_audit_batch(&[failed]).await.unwrap();

    assert_eq!(db.store.audit_count().await.unwrap(), 1);
    assert!(db.store.agent_usage().await.unwrap().is_empty());
    assert!(db.store.usage_totals(i64::MIN).await.unwrap().is_empty());
    assert!(db
        .store
        .route_usage(None, i64::MIN)
        .await
        .unwrap()
        .is_empty());
    assert!(db
        .store
        .credential_networks(i64::MIN)
        .await
        .unwrap()
        .is_empty());
}

/// Opens the database at `path` and turns it back into schema version 2.
async fn open_as_version_2(path: &std::path::Path) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    common::downgrade_to_version_2(&mut conn).await;
    conn
}

/// Inserts an audit row with the columns of schema version 2.
async fn insert_version_2_record(
    conn: &mut sqlx::SqliteConnection,
    agent: Option<&str>,
    time_ms: i64,
    decision: &str,
    source: &str,
) {
    sqlx::query(
        "INSERT INTO audit (time_ms, request_id, agent, token_id, source, connection, method, \
         path, decision, rule, reason, status, bytes_in, bytes_out, duration_us, findings) \
         VALUES ($1, $2, $3, $4, $5, 'github', 'GET', '/repos/acme/app', $6, NULL, NULL, 200, \
         1, 2, 3, NULL)",
    )
    .bind(time_ms)
    .bind(format!("req-{time_ms}"))
    .bind(agent)
    .bind(agent.map(|a| format!("tok-{a}")))
    .bind(source)
    .bind(decision)
    .execute(conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn upgrade_summarizes_existing_audit() {
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-alpha", "alpha", 1))
        .await
        .unwrap();
    db.store.close().await;
    let mut conn = open_as_version_2(&db.path).await;
    insert_version_2_record(&mut conn, Some("alpha"), NOON, "allow", "10.1.0.1:1").await;
    insert_version_2_record(&mut conn, Some("alpha"), NOON + 9, "deny", "10.2.0.1:1").await;
    insert_version_2_record(&mut conn, None, NOON + 10, "deny", "10.3.0.1:1").await;
    conn.close().await.unwrap();

    let store = Store::open(&db.path).await.unwrap();

    let usage = store.agent_usage().await.unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert_eq!(usage[0].first_used_ms, NOON);
    assert_eq!(usage[0].last_used_ms, NOON + 9);
    assert_eq!(usage[0].requests, 2);
    let totals = store.usage_totals(utc_day(NOON)).await.unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].requests, 2);
    assert_eq!(totals[0].denied, 1);
    let routes = store.route_usage(None, 0).await.unwrap();
    assert_eq!(routes.len(), 1, "only the allowed record: {routes:?}");
    let networks = store.credential_networks(0).await.unwrap();
    assert_eq!(networks.len(), 2, "{networks:?}");
    let tokens = store.list_tokens(None).await.unwrap();
    assert_eq!(tokens[0].last_used_ms, Some(NOON + 9));
    assert_eq!(
        store.get_meta("usage.backfill_pending").await.unwrap(),
        None
    );
    let records = store
        .query_audit(&castellan_store::AuditQuery::tail(10))
        .await
        .unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.user_agent.is_none()));
    store.close().await;

    // Opening again must not count the old records twice.
    let reopened = Store::open(&db.path).await.unwrap();
    assert_eq!(reopened.agent_usage().await.unwrap()[0].requests, 2);
}

#[tokio::test]
async fn upgrade_of_empty_audit_needs_no_backfill() {
    let db = create_db().await;
    db.store.close().await;
    let conn = open_as_version_2(&db.path).await;
    conn.close().await.unwrap();

    let store = Store::open(&db.path).await.unwrap();

    assert_eq!(
        store.get_meta("usage.backfill_pending").await.unwrap(),
        None
    );
    assert!(store.agent_usage().await.unwrap().is_empty());
    store
        .insert_audit_batch(&[allowed("alpha", NOON, "/a")])
        .await
        .unwrap();
    assert_eq!(store.agent_usage().await.unwrap()[0].requests, 1);
}

#[tokio::test]
async fn failed_summary_update_rolls_back_batch() {
    let db = create_db().await;
    let url = format!("sqlite://{}", db.path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER reject_routes BEFORE INSERT ON route_usage \
         BEGIN SELECT RAISE(ABORT, 'route rows rejected by test'); END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let result = db
        .store
        .insert_audit_batch(&[allowed("alpha", NOON, "/a")])
        .await;

    assert!(result.is_err(), "the trigger must fail the batch");
    assert_eq!(db.store.audit_count().await.unwrap(), 0);
    assert!(db.store.agent_usage().await.unwrap().is_empty());
}
