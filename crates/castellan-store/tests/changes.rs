//! The change counter a running gateway polls to know when to reload.

mod common;

use castellan_store::{AuditQuery, SealedRow, Store};
use common::{audit_record, create_db, token};

fn sealed(name: &str, version: u32) -> SealedRow {
    SealedRow {
        name: name.to_owned(),
        version,
        created_ms: 1,
        wrapped_key: vec![1; 8],
        ciphertext: vec![2; 8],
    }
}

#[tokio::test]
async fn every_mutation_moves_change_version() {
    let db = create_db().await;
    let gateway = Store::open(&db.path).await.unwrap();
    let cli = &db.store;

    cli.insert_secret_version(&sealed("github", 1))
        .await
        .unwrap();
    assert_eq!(
        gateway.change_version().await.unwrap(),
        1,
        "after insert secret"
    );

    cli.insert_secret_version(&sealed("github", 2))
        .await
        .unwrap();
    assert_eq!(
        gateway.change_version().await.unwrap(),
        2,
        "after second version"
    );

    cli.delete_secret("github").await.unwrap();
    assert_eq!(
        gateway.change_version().await.unwrap(),
        3,
        "after delete secret"
    );

    cli.insert_token(&token("tok-1", "alpha", 1)).await.unwrap();
    assert_eq!(
        gateway.change_version().await.unwrap(),
        4,
        "after insert token"
    );

    cli.revoke_token("tok-1").await.unwrap();
    assert_eq!(
        gateway.change_version().await.unwrap(),
        5,
        "after revoke token"
    );

    cli.set_suspended("alpha", true, Some("probe"))
        .await
        .unwrap();
    assert_eq!(
        gateway.change_version().await.unwrap(),
        6,
        "after suspend agent"
    );

    cli.set_suspended("alpha", false, None).await.unwrap();
    assert_eq!(
        gateway.change_version().await.unwrap(),
        7,
        "after resume agent"
    );
}

#[tokio::test]
async fn reads_and_bookkeeping_keep_change_version() {
    let db = create_db().await;
    let store = &db.store;
    store
        .insert_token(&token("tok-1", "alpha", 1))
        .await
        .unwrap();
    store
        .insert_secret_version(&sealed("github", 1))
        .await
        .unwrap();
    let before = store.change_version().await.unwrap();

    store.list_tokens(None).await.unwrap();
    store.active_tokens().await.unwrap();
    store.list_secrets().await.unwrap();
    store.latest_secret("github").await.unwrap();
    store.next_secret_version("github").await.unwrap();
    store.suspended_agents().await.unwrap();
    store.get_meta("k").await.unwrap();
    store.set_meta("k", "v").await.unwrap();
    store
        .touch_tokens_used(&[("tok-1".to_owned(), 10)])
        .await
        .unwrap();
    store
        .insert_audit_batch(&[audit_record(Some("alpha"), 1)])
        .await
        .unwrap();
    store.query_audit(&AuditQuery::tail(10)).await.unwrap();
    store.revoke_token("tok-1").await.unwrap();
    let after_revoke = store.change_version().await.unwrap();
    store.revoke_token("tok-1").await.unwrap();

    assert_eq!(after_revoke, before + 1, "the one real revoke moves it");
    assert_eq!(
        store.change_version().await.unwrap(),
        after_revoke,
        "repeat revoke keeps it"
    );
}

#[tokio::test]
async fn suspension_records_reason() {
    let db = create_db().await;

    db.store
        .set_suspended("beta", true, Some("token leaked"))
        .await
        .unwrap();
    db.store.set_suspended("alpha", true, None).await.unwrap();
    db.store.set_suspended("gamma", true, None).await.unwrap();
    db.store
        .set_suspended("gamma", false, Some("cleared"))
        .await
        .unwrap();

    let suspended = db.store.suspended_agents().await.unwrap();
    let names: Vec<_> = suspended.iter().map(|s| s.agent.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(suspended[1].reason.as_deref(), Some("token leaked"));
    assert!(suspended[1].changed_ms > 0);
}
