//! Versioned sealed secrets.

mod common;

use castellan_store::{SealedRow, Store, StoreError};
use common::create_db;

fn sealed(name: &str, version: u32, created_ms: i64) -> SealedRow {
    SealedRow {
        name: name.to_owned(),
        version,
        created_ms,
        wrapped_key: vec![0xAA; 40],
        ciphertext: vec![version as u8; 28],
    }
}

async fn store_next(store: &Store, name: &str, created_ms: i64) -> SealedRow {
    let version = store.next_secret_version(name).await.unwrap();
    let row = sealed(name, version, created_ms);
    store.insert_secret_version(&row).await.unwrap();
    row
}

#[tokio::test]
async fn secret_versions_increase_from_one() {
    let db = create_db().await;

    assert_eq!(db.store.next_secret_version("github").await.unwrap(), 1);
    let first = store_next(&db.store, "github", 100).await;
    let second = store_next(&db.store, "github", 200).await;
    let other = store_next(&db.store, "openai", 300).await;

    assert_eq!(first.version, 1);
    assert_eq!(second.version, 2);
    assert_eq!(other.version, 1);
    assert_eq!(db.store.next_secret_version("github").await.unwrap(), 3);
    let latest = db.store.latest_secret("github").await.unwrap();
    assert_eq!(latest, Some(second));
}

#[tokio::test]
async fn stale_secret_version_conflicts() {
    let db = create_db().await;
    let cli = Store::open(&db.path).await.unwrap();
    // Both writers read the same next version before either inserts.
    let version_a = db.store.next_secret_version("github").await.unwrap();
    let version_b = cli.next_secret_version("github").await.unwrap();
    db.store
        .insert_secret_version(&sealed("github", version_a, 100))
        .await
        .unwrap();

    let error = cli
        .insert_secret_version(&sealed("github", version_b, 200))
        .await
        .unwrap_err();

    assert!(matches!(error, StoreError::Conflict { .. }), "{error:?}");
    assert!(
        error.to_string().contains("secret `github` version 1"),
        "{error}"
    );
    assert_eq!(
        db.store
            .latest_secret("github")
            .await
            .unwrap()
            .unwrap()
            .created_ms,
        100
    );
    assert_eq!(db.store.change_version().await.unwrap(), 1);
}

#[tokio::test]
async fn skipped_secret_version_rejected() {
    let db = create_db().await;

    let error = db
        .store
        .insert_secret_version(&sealed("github", 3, 100))
        .await
        .unwrap_err();

    assert!(
        matches!(error, StoreError::InvalidInput { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("next version is 1"), "{error}");
    assert_eq!(db.store.latest_secret("github").await.unwrap(), None);
}

#[tokio::test]
async fn list_secrets_summarizes_versions() {
    let db = create_db().await;
    store_next(&db.store, "openai", 50).await;
    store_next(&db.store, "github", 100).await;
    store_next(&db.store, "github", 200).await;
    store_next(&db.store, "github", 300).await;

    let list = db.store.list_secrets().await.unwrap();

    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name, "github");
    assert_eq!(list[0].latest_version, 3);
    assert_eq!(list[0].created_ms, 300);
    assert_eq!(list[0].first_created_ms, 100);
    assert_eq!(list[0].versions, 3);
    assert_eq!(list[1].name, "openai");
    assert_eq!(list[1].versions, 1);
}

#[tokio::test]
async fn latest_secrets_returns_one_per_name() {
    let db = create_db().await;
    store_next(&db.store, "github", 100).await;
    let github = store_next(&db.store, "github", 200).await;
    let openai = store_next(&db.store, "openai", 300).await;

    let latest = db.store.latest_secrets().await.unwrap();

    assert_eq!(latest, vec![github, openai]);
}

#[tokio::test]
async fn delete_secret_removes_all_versions() {
    let db = create_db().await;
    store_next(&db.store, "github", 100).await;
    store_next(&db.store, "github", 200).await;

    let deleted = db.store.delete_secret("github").await.unwrap();

    assert_eq!(deleted, 2);
    assert_eq!(db.store.latest_secret("github").await.unwrap(), None);
    assert!(db.store.list_secrets().await.unwrap().is_empty());
    assert_eq!(db.store.next_secret_version("github").await.unwrap(), 1);
}

#[tokio::test]
async fn delete_unknown_secret_not_found() {
    let db = create_db().await;

    let error = db.store.delete_secret("absent").await.unwrap_err();

    assert!(
        matches!(error, StoreError::SecretNotFound { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("no secret named `absent`"),
        "{error}"
    );
    assert_eq!(db.store.change_version().await.unwrap(), 0);
}

#[tokio::test]
async fn sealed_row_debug_omits_bytes() {
    let row = sealed("github", 1, 100);

    let debug = format!("{row:?}");

    assert!(debug.contains("wrapped_key_len: 40"), "{debug}");
    assert!(!debug.contains("170"), "{debug}");
}
