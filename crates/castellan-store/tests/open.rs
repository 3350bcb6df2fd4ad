//! Opening, creating and sharing database files.

mod common;

use castellan_store::{Store, StoreError};
use common::{create_db, token};
use sqlx::Connection;

async fn raw_connection(path: &std::path::Path) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", path.display());
    sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open raw connection")
}

#[tokio::test]
async fn open_missing_file_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");

    let error = Store::open(&path).await.unwrap_err();

    assert!(matches!(error, StoreError::Missing { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("castellan init"), "{message}");
    assert!(message.contains("--data-dir"), "{message}");
    assert!(!path.exists(), "open must not create the file");
}

#[tokio::test]
async fn create_rejects_existing_file() {
    let db = create_db().await;

    let error = Store::create(&db.path).await.unwrap_err();

    assert!(
        matches!(error, StoreError::AlreadyExists { .. }),
        "{error:?}"
    );
    assert_eq!(db.store.change_version().await.unwrap(), 0);
}

#[tokio::test]
async fn create_runs_migrations_in_wal_mode() {
    let db = create_db().await;

    assert_eq!(db.store.change_version().await.unwrap(), 0);
    assert!(db.store.list_secrets().await.unwrap().is_empty());
    let mut conn = raw_connection(&db.path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[cfg(unix)]
#[tokio::test]
async fn create_makes_file_private() {
    use std::os::unix::fs::PermissionsExt;
    let db = create_db().await;

    let mode = std::fs::metadata(&db.path).unwrap().permissions().mode();

    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn create_in_missing_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("castellan.db");

    let error = Store::create(&path).await.unwrap_err();

    assert!(matches!(error, StoreError::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("no-such-dir"), "{error}");
}

#[tokio::test]
async fn open_rejects_non_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "this is a plain text file, not SQLite\n".repeat(200)).unwrap();

    let error = Store::open(&path).await.unwrap_err();

    assert!(
        matches!(error, StoreError::NotCastellan { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not a castellan database"),
        "{error}"
    );
}

#[tokio::test]
async fn open_rejects_directory() {
    let dir = tempfile::tempdir().unwrap();

    let error = Store::open(dir.path()).await.unwrap_err();

    assert!(
        matches!(error, StoreError::NotCastellan { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn open_rejects_foreign_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE notes (body TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let error = Store::open(&path).await.unwrap_err();

    assert!(
        matches!(error, StoreError::NotCastellan { .. }),
        "{error:?}"
    );
    let mut conn = raw_connection(&path).await;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        tables,
        vec!["notes".to_owned()],
        "open must not migrate a foreign database"
    );
}

#[tokio::test]
async fn open_rejects_newer_schema() {
    let db = create_db().await;
    db.store.close().await;
    let mut conn = raw_connection(&db.path).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99999999999999, 'from a newer castellan', TRUE, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let error = Store::open(&db.path).await.unwrap_err();

    match &error {
        StoreError::NewerSchema { found, .. } => assert_eq!(*found, 99_999_999_999_999),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert!(error.to_string().contains("upgrade castellan"), "{error}");
}

#[tokio::test]
async fn two_handles_share_writes() {
    let db = create_db().await;
    let cli = Store::open(&db.path).await.unwrap();
    let gateway = &db.store;

    cli.insert_token(&token("tok-1", "bot", 1)).await.unwrap();
    gateway
        .set_suspended("bot", true, Some("test"))
        .await
        .unwrap();

    let tokens = gateway.active_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].id, "tok-1");
    let suspended = cli.suspended_agents().await.unwrap();
    assert_eq!(suspended.len(), 1);
    assert_eq!(suspended[0].agent, "bot");
    assert_eq!(cli.change_version().await.unwrap(), 2);
    assert_eq!(gateway.change_version().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_migrate_once() {
    // An upgraded castellan finds pending migrations; make all of them pending
    // so that four processes race to apply the same migration.
    let db = create_db().await;
    db.store.close().await;
    let mut conn = raw_connection(&db.path).await;
    for table in [
        "meta",
        "secrets",
        "tokens",
        "agent_state",
        "changes",
        "audit",
        "agent_usage",
        "usage_daily",
        "route_usage",
        "credential_networks",
        "credential_user_agents",
        "alerts",
        "events",
        "_sqlx_migrations",
    ] {
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();

    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let path = db.path.clone();
        opens.spawn(async move { Store::open(&path).await });
    }

    while let Some(result) = opens.join_next().await {
        let store = result.unwrap().expect("concurrent open");
        assert_eq!(store.change_version().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn reopen_keeps_meta_values() {
    let db = create_db().await;
    db.store.set_meta("vault.check", "v1").await.unwrap();
    db.store.set_meta("vault.check", "v2").await.unwrap();
    db.store.close().await;

    let store = Store::open(&db.path).await.unwrap();

    assert_eq!(
        store.get_meta("vault.check").await.unwrap().as_deref(),
        Some("v2")
    );
    assert_eq!(store.get_meta("absent").await.unwrap(), None);
}
