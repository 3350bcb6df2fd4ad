//! Agent tokens: issue, list, revoke, expiry and last use.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use castellan_store::{now_ms, StoreError, TokenRecord};
use common::{create_db, fake_hash, token};
use sqlx::Connection;

#[tokio::test]
async fn list_tokens_filters_by_agent() {
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-a1", "alpha", 1))
        .await
        .unwrap();
    db.store
        .insert_token(&token("tok-b1", "beta", 2))
        .await
        .unwrap();
    db.store
        .insert_token(&token("tok-a2", "alpha", 3))
        .await
        .unwrap();

    let all = db.store.list_tokens(None).await.unwrap();
    let alpha = db.store.list_tokens(Some("alpha")).await.unwrap();

    let all_ids: Vec<_> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(all_ids, ["tok-a1", "tok-b1", "tok-a2"]);
    let alpha_ids: Vec<_> = alpha.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(alpha_ids, ["tok-a1", "tok-a2"]);
    assert_eq!(alpha[0], token("tok-a1", "alpha", 1));
}

#[tokio::test]
async fn revoke_token_reports_each_case() {
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-1", "alpha", 1))
        .await
        .unwrap();

    let first = db.store.revoke_token("tok-1").await.unwrap();
    let second = db.store.revoke_token("tok-1").await.unwrap();
    let unknown = db.store.revoke_token("tok-404").await.unwrap_err();

    assert!(first, "first revoke changes the token");
    assert!(!second, "second revoke finds it already revoked");
    assert!(
        matches!(unknown, StoreError::TokenNotFound { .. }),
        "{unknown:?}"
    );
    assert!(unknown
        .to_string()
        .contains("no agent token with id `tok-404`"));
    let listed = db.store.list_tokens(None).await.unwrap();
    assert!(listed[0].revoked_ms.is_some());
}

#[tokio::test]
async fn active_tokens_exclude_revoked_and_expired() {
    let db = create_db().await;
    let now = now_ms();
    let mut expired = token("tok-expired", "alpha", 1);
    expired.expires_ms = Some(now - 1_000);
    let mut expiring = token("tok-later", "alpha", 2);
    expiring.expires_ms = Some(now + 3_600_000);
    let revoked = token("tok-revoked", "alpha", 3);
    let plain = token("tok-plain", "beta", 4);
    for record in [&expired, &expiring, &revoked, &plain] {
        db.store.insert_token(record).await.unwrap();
    }
    db.store.revoke_token("tok-revoked").await.unwrap();

    let active = db.store.active_tokens().await.unwrap();
    let mut visited = Vec::new();
    db.store
        .visit_active_tokens(|token| visited.push(token))
        .await
        .unwrap();

    let ids: Vec<_> = active.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["tok-later", "tok-plain"]);
    visited.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(visited, [expiring, plain], "the visit sees the same tokens");
}

/// A scan of many tokens gives the other tasks of its runtime turns. The
/// gateway scans on its background thread, where the audit writer runs
/// too, and a scan that kept the thread stopped the writer, and every
/// request waiting for its record, for most of a second at 100,000
/// tokens. The visitor here is slower than SQLite, so rows are always
/// waiting and the scan never yields on its own.
#[tokio::test(flavor = "current_thread")]
async fn visiting_tokens_lets_other_tasks_run() {
    const TOKENS: usize = 1_000;
    let db = create_db().await;
    for index in 0..TOKENS {
        let mut record = token(&format!("tok-{index:04}"), "alpha", 0);
        record.hash = format!("{index:064x}");
        db.store.insert_token(&record).await.unwrap();
    }
    let turns = Arc::new(AtomicUsize::new(0));
    let other = tokio::spawn({
        let turns = Arc::clone(&turns);
        async move {
            loop {
                turns.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });

    let mut seen = Vec::with_capacity(TOKENS);
    db.store
        .visit_active_tokens(|_| {
            seen.push(turns.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_micros(20));
        })
        .await
        .unwrap();
    other.abort();

    assert_eq!(seen.len(), TOKENS);
    // Tokio gives a task 128 units of budget per turn, so the other task
    // runs at least every 128 rows. A quarter of the rows leaves slack.
    let longest = seen
        .chunk_by(|a, b| a == b)
        .map(<[usize]>::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest <= TOKENS / 4,
        "{longest} of {TOKENS} tokens were visited in a row without the other task running"
    );
}

#[tokio::test]
async fn canary_ids_include_revoked_canaries() {
    let db = create_db().await;
    let mut expired = token("tok-c-expired", "alpha", 1);
    expired.canary = true;
    expired.expires_ms = Some(now_ms() - 1_000);
    let mut revoked = token("tok-c-revoked", "alpha", 2);
    revoked.canary = true;
    let plain = token("tok-plain", "alpha", 3);
    for record in [&expired, &revoked, &plain] {
        db.store.insert_token(record).await.unwrap();
    }
    db.store.revoke_token("tok-c-revoked").await.unwrap();

    let ids = db.store.canary_token_ids().await.unwrap();

    assert_eq!(ids, ["tok-c-expired", "tok-c-revoked"]);
}

#[tokio::test]
async fn upgrade_indexes_existing_canaries() {
    // A database from before the canary index: the index and its migration
    // record removed, with tokens already in it.
    let db = create_db().await;
    let mut canary = token("tok-canary", "alpha", 1);
    canary.canary = true;
    for record in [&canary, &token("tok-plain", "alpha", 2)] {
        db.store.insert_token(record).await.unwrap();
    }
    db.store.close().await;
    let url = format!("sqlite://{}", db.path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("DROP INDEX tokens_canary")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE description = 'canary index'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let store = castellan_store::Store::open(&db.path).await.unwrap();

    assert_eq!(store.canary_token_ids().await.unwrap(), ["tok-canary"]);
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let entries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tokens INDEXED BY tokens_canary WHERE canary != 0",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(entries, 1);
}

#[tokio::test]
async fn is_active_at_checks_boundaries() {
    let cases = [
        ("no expiry", None, None, true),
        ("before expiry", Some(1_000), None, true),
        ("at expiry", Some(500), None, false),
        ("after expiry", Some(100), None, false),
        ("revoked", None, Some(10), false),
    ];
    for (name, expires_ms, revoked_ms, expected) in cases {
        let mut record = token("tok", "alpha", 1);
        record.expires_ms = expires_ms;
        record.revoked_ms = revoked_ms;
        assert_eq!(record.is_active_at(500), expected, "case {name}");
    }
}

#[tokio::test]
async fn duplicate_token_id_conflicts() {
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-1", "alpha", 1))
        .await
        .unwrap();

    let error = db
        .store
        .insert_token(&token("tok-1", "beta", 2))
        .await
        .unwrap_err();

    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");
    assert!(
        error.to_string().contains("agent token id `tok-1`"),
        "{error}"
    );
}

#[tokio::test]
async fn duplicate_token_hash_conflicts() {
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-1", "alpha", 1))
        .await
        .unwrap();

    let error = db
        .store
        .insert_token(&token("tok-2", "beta", 1))
        .await
        .unwrap_err();

    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");
    assert!(
        !error.to_string().contains(&fake_hash(1)),
        "hash must not be echoed"
    );
    assert_eq!(db.store.change_version().await.unwrap(), 1);
}

#[tokio::test]
async fn malformed_token_hash_rejected() {
    let db = create_db().await;
    let cases = [
        ("too short", "abcd".to_owned()),
        ("uppercase", "AB".repeat(32)),
        ("not hex", "zz".repeat(32)),
        ("too long", "ab".repeat(33)),
    ];
    for (name, hash) in cases {
        let record = TokenRecord {
            hash: hash.clone(),
            ..token("tok-1", "alpha", 1)
        };
        let error = db.store.insert_token(&record).await.unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidInput { .. }),
            "case {name}: {error:?}"
        );
        assert!(
            !error.to_string().contains(&hash),
            "case {name}: hash echoed"
        );
    }
    assert!(db.store.list_tokens(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn touch_tokens_used_keeps_latest_time() {
    let db = create_db().await;
    db.store
        .insert_token(&token("tok-1", "alpha", 1))
        .await
        .unwrap();
    db.store
        .insert_token(&token("tok-2", "alpha", 2))
        .await
        .unwrap();
    let version = db.store.change_version().await.unwrap();

    let uses = [
        ("tok-1".to_owned(), 5_000),
        ("tok-2".to_owned(), 7_000),
        ("tok-404".to_owned(), 9_000),
    ];
    db.store.touch_tokens_used(&uses).await.unwrap();
    db.store
        .touch_tokens_used(&[("tok-1".to_owned(), 4_000)])
        .await
        .unwrap();

    let listed = db.store.list_tokens(None).await.unwrap();
    assert_eq!(listed[0].last_used_ms, Some(5_000));
    assert_eq!(listed[1].last_used_ms, Some(7_000));
    assert_eq!(db.store.change_version().await.unwrap(), version);
}
