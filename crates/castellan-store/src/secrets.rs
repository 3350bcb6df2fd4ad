//! Sealed secret versions. The store keeps only what the vault sealed, so it
//! never receives a plaintext secret.

use sqlx::sqlite::SqliteRow;
use sqlx::SqliteConnection;

use crate::error::{db_error, is_unique_violation, require_non_empty, StoreError};
use crate::meta::bump_change_version;
use crate::open::Store;
use crate::rows::column;

/// One sealed version of a secret, as the vault wrote it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub name: String,
    /// Starts at 1 and increases by one per stored version of `name`.
    pub version: u32,
    pub created_ms: i64,
    /// Data key encrypted under the master key.
    pub wrapped_key: Vec<u8>,
    /// Secret value encrypted under the data key.
    pub ciphertext: Vec<u8>,
}

/// Prints lengths instead of the sealed bytes, which are noise in logs.
impl std::fmt::Debug for SealedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRow")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("created_ms", &self.created_ms)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Summary of one secret for listings: no sealed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub latest_version: u32,
    /// Creation time of the latest version.
    pub created_ms: i64,
    /// Creation time of the oldest stored version.
    pub first_created_ms: i64,
    /// Number of stored versions.
    pub versions: u32,
}

const SEALED_COLUMNS: &str = "name, version, created_ms, wrapped_key, ciphertext";

impl Store {
    /// Returns the version number the next stored version of `name` gets.
    ///
    /// The vault seals with this number before calling
    /// [`insert_secret_version`](Store::insert_secret_version). If two writers
    /// get the same number, the second insert fails with
    /// [`StoreError::Conflict`], and that writer seals again with a fresh number.
    pub async fn next_secret_version(&self, name: &str) -> Result<u32, StoreError> {
        let mut conn = self.acquire("read secret version").await?;
        let latest = latest_version(&mut conn, name).await?;
        next_version(name, latest)
    }

    /// Stores a sealed version and moves the change counter, in one transaction.
    ///
    /// Fails with [`StoreError::Conflict`] unless `row.version` is exactly one
    /// more than the latest stored version, so versions never repeat or skip.
    pub async fn insert_secret_version(&self, row: &SealedRow) -> Result<(), StoreError> {
        require_non_empty("secret name", &row.name)?;
        let operation = "store secret version";
        let mut tx = self.begin_write(operation).await?;
        let expected = next_version(&row.name, latest_version(&mut tx, &row.name).await?)?;
        if row.version != expected {
            return Err(version_conflict(row, expected));
        }
        insert_sealed(&mut tx, row).await?;
        bump_change_version(&mut tx, operation).await?;
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))
    }

    /// Returns the latest version of `name`, or `None` if no version exists.
    pub async fn latest_secret(&self, name: &str) -> Result<Option<SealedRow>, StoreError> {
        let sql = format!(
            "SELECT {SEALED_COLUMNS} FROM secrets WHERE name = $1 ORDER BY version DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| db_error("read secret", error))?;
        row.as_ref().map(sealed_from_row).transpose()
    }

    /// Returns version `version` of `name`, or `None` if it is not stored.
    pub async fn secret_version(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<SealedRow>, StoreError> {
        let sql = format!("SELECT {SEALED_COLUMNS} FROM secrets WHERE name = $1 AND version = $2");
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| db_error("read secret version", error))?;
        row.as_ref().map(sealed_from_row).transpose()
    }

    /// Returns the latest version of every secret, ordered by name. The gateway
    /// reloads its credentials with this when the change counter moves.
    pub async fn latest_secrets(&self) -> Result<Vec<SealedRow>, StoreError> {
        let sql = format!(
            "SELECT {SEALED_COLUMNS} FROM secrets s WHERE version = \
             (SELECT MAX(version) FROM secrets l WHERE l.name = s.name) ORDER BY name"
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|error| db_error("read secrets", error))?;
        rows.iter().map(sealed_from_row).collect()
    }

    /// Lists every secret with its version summary, ordered by name.
    pub async fn list_secrets(&self) -> Result<Vec<SecretInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.name, s.version, s.created_ms, agg.first_created_ms, agg.versions \
             FROM secrets s JOIN ( \
                 SELECT name, MAX(version) AS latest, MIN(created_ms) AS first_created_ms, \
                        COUNT(*) AS versions \
                 FROM secrets GROUP BY name \
             ) agg ON s.name = agg.name AND s.version = agg.latest \
             ORDER BY s.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|error| db_error("list secrets", error))?;
        rows.iter().map(info_from_row).collect()
    }

    /// Deletes every version of `name` and moves the change counter.
    ///
    /// Returns the number of versions deleted, or [`StoreError::SecretNotFound`].
    pub async fn delete_secret(&self, name: &str) -> Result<u32, StoreError> {
        let operation = "delete secret";
        let mut tx = self.begin_write(operation).await?;
        let deleted = sqlx::query("DELETE FROM secrets WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|error| db_error(operation, error))?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::SecretNotFound {
                name: name.to_owned(),
            });
        }
        bump_change_version(&mut tx, operation).await?;
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))?;
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }
}

async fn latest_version(conn: &mut SqliteConnection, name: &str) -> Result<u32, StoreError> {
    let latest: Option<u32> =
        sqlx::query_scalar("SELECT MAX(version) FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_one(conn)
            .await
            .map_err(|error| db_error("read secret version", error))?;
    Ok(latest.unwrap_or(0))
}

fn next_version(name: &str, latest: u32) -> Result<u32, StoreError> {
    latest
        .checked_add(1)
        .ok_or_else(|| StoreError::InvalidInput {
            field: "secret version",
            problem: format!("secret `{name}` has reached the maximum version {latest}"),
        })
}

fn version_conflict(row: &SealedRow, expected: u32) -> StoreError {
    if row.version < expected {
        return StoreError::Conflict {
            item: format!("secret `{}` version {}", row.name, row.version),
        };
    }
    StoreError::InvalidInput {
        field: "secret version",
        problem: format!(
            "secret `{}` version {} skips versions; the next version is {expected}",
            row.name, row.version
        ),
    }
}

async fn insert_sealed(conn: &mut SqliteConnection, row: &SealedRow) -> Result<(), StoreError> {
    let result = sqlx::query(
        "INSERT INTO secrets (name, version, created_ms, wrapped_key, ciphertext) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&row.name)
    .bind(row.version)
    .bind(row.created_ms)
    .bind(&row.wrapped_key)
    .bind(&row.ciphertext)
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(error) if is_unique_violation(&error) => Err(StoreError::Conflict {
            item: format!("secret `{}` version {}", row.name, row.version),
        }),
        Err(error) => Err(db_error("store secret version", error)),
    }
}

fn sealed_from_row(row: &SqliteRow) -> Result<SealedRow, StoreError> {
    Ok(SealedRow {
        name: column(row, "name")?,
        version: column(row, "version")?,
        created_ms: column(row, "created_ms")?,
        wrapped_key: column(row, "wrapped_key")?,
        ciphertext: column(row, "ciphertext")?,
    })
}

fn info_from_row(row: &SqliteRow) -> Result<SecretInfo, StoreError> {
    Ok(SecretInfo {
        name: column(row, "name")?,
        latest_version: column(row, "version")?,
        created_ms: column(row, "created_ms")?,
        first_created_ms: column(row, "first_created_ms")?,
        versions: column(row, "versions")?,
    })
}
