//! Key-value settings (vault key check, KDF parameters) and the change counter
//! that tells a running gateway to reload.

use sqlx::SqliteConnection;

use crate::error::{db_error, require_non_empty, StoreError};
use crate::open::Store;

impl Store {
    /// Returns the value stored under `key`, if any.
    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| db_error("read meta", error))
    }

    /// Stores `value` under `key`, replacing any previous value.
    ///
    /// This does not move the change counter: meta values are read at startup.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        require_non_empty("meta key", key)?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(|error| db_error("write meta", error))?;
        Ok(())
    }

    /// Returns the change counter, which moves on every change to secrets,
    /// agent tokens or agent suspensions. One indexed read, cheap to poll.
    pub async fn change_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT version FROM changes WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(|error| db_error("read change version", error))
    }
}

/// Moves the change counter inside the caller's transaction, so the counter
/// and the change it announces commit together.
pub(crate) async fn bump_change_version(
    conn: &mut SqliteConnection,
    operation: &'static str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE changes SET version = version + 1 WHERE id = 1")
        .execute(conn)
        .await
        .map_err(|error| db_error(operation, error))?;
    Ok(())
}
