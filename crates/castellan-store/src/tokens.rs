//! Agent tokens, stored only as SHA-256 hashes.

use futures_util::TryStreamExt;
use sqlx::sqlite::SqliteRow;
use sqlx::SqliteConnection;

use crate::error::{db_error, is_unique_violation, require_non_empty, StoreError};
use crate::meta::bump_change_version;
use crate::open::{now_ms, Store};
use crate::rows::column;

/// One agent token. The token itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public identifier, shown in listings and audit records.
    pub id: String,
    pub agent: String,
    /// Lowercase hex SHA-256 of the token (64 characters).
    pub hash: String,
    pub created_ms: i64,
    /// Time from which the token is rejected, or `None` if it never expires.
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
    /// Marks a decoy token whose every use raises an alert.
    pub canary: bool,
}

impl TokenRecord {
    /// Returns true if the token is neither revoked nor expired at `now_ms`.
    ///
    /// The gateway checks this on every request, because a token loaded by
    /// [`Store::active_tokens`] may expire while it stays cached.
    pub fn is_active_at(&self, now_ms: i64) -> bool {
        let expired = self.expires_ms.is_some_and(|expires| expires <= now_ms);
        self.revoked_ms.is_none() && !expired
    }
}

const TOKEN_COLUMNS: &str =
    "id, agent, hash, created_ms, expires_ms, revoked_ms, last_used_ms, canary";

/// The query of [`Store::canary_token_ids`]. The partial index
/// `tokens_canary` serves it, so it reads canary tokens only.
const CANARY_TOKEN_IDS: &str = "SELECT id FROM tokens WHERE canary != 0 ORDER BY id";

impl Store {
    /// Stores a new agent token and moves the change counter.
    ///
    /// Fails with [`StoreError::Conflict`] if the id or the hash already exists.
    pub async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        validate_token(token)?;
        let operation = "store agent token";
        let mut tx = self.begin_write(operation).await?;
        if token_exists(&mut tx, &token.id).await? {
            return Err(StoreError::Conflict {
                item: format!("agent token id `{}`", token.id),
            });
        }
        insert_token_row(&mut tx, token).await?;
        bump_change_version(&mut tx, operation).await?;
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))
    }

    /// Lists agent tokens, including revoked and expired ones, oldest first.
    pub async fn list_tokens(&self, agent: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = match agent {
            Some(agent) => {
                let sql = format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE agent = $1 ORDER BY created_ms, id"
                );
                sqlx::query(&sql).bind(agent).fetch_all(&self.pool).await
            }
            None => {
                let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_ms, id");
                sqlx::query(&sql).fetch_all(&self.pool).await
            }
        };
        let rows = rows.map_err(|error| db_error("list agent tokens", error))?;
        rows.iter().map(token_from_row).collect()
    }

    /// Lists the tokens that are neither revoked nor expired now.
    pub async fn active_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE revoked_ms IS NULL \
             AND (expires_ms IS NULL OR expires_ms > $1) ORDER BY created_ms, id"
        );
        let rows = sqlx::query(&sql)
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await
            .map_err(|error| db_error("list active agent tokens", error))?;
        rows.iter().map(token_from_row).collect()
    }

    /// Calls `visit` with each token that is neither revoked nor expired
    /// now, in no particular order, reading rows one at a time.
    ///
    /// The gateway loads every active token this way: with 100,000 tokens,
    /// reading them into one `Vec` first would add tens of MiB to the peak
    /// memory of each load.
    pub async fn visit_active_tokens(
        &self,
        mut visit: impl FnMut(TokenRecord),
    ) -> Result<(), StoreError> {
        let operation = "list active agent tokens";
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE revoked_ms IS NULL \
             AND (expires_ms IS NULL OR expires_ms > $1)"
        );
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(|error| db_error(operation, error))?;
        let mut rows = sqlx::query(&sql).bind(now_ms()).fetch(&mut *connection);
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(|error| db_error(operation, error))?
        {
            visit(token_from_row(&row)?);
            // Rows arrive faster than this loop handles them, so without
            // this it would hold its thread for the whole scan, which
            // takes most of a second for 100,000 tokens. Other tasks of
            // the caller's runtime, such as the audit writer, get a turn
            // when the task's budget runs out.
            tokio::task::coop::consume_budget().await;
        }
        drop(rows);
        // The scan filled this connection's page cache (2,000 KiB by default) with
        // token pages that the gateway keeps in memory anyway. Freeing it
        // only costs the next scan a read from the OS cache.
        sqlx::query("PRAGMA shrink_memory")
            .execute(&mut *connection)
            .await
            .map_err(|error| db_error(operation, error))?;
        Ok(())
    }

    /// Lists the ids of every canary token, revoked and expired ones
    /// included, since presenting any of them is still a signal.
    pub async fn canary_token_ids(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(CANARY_TOKEN_IDS)
            .fetch_all(&self.pool)
            .await
            .map_err(|error| db_error("list canary token ids", error))
    }

    /// Revokes the token `id` and moves the change counter.
    ///
    /// Returns `false` if it was already revoked, and
    /// [`StoreError::TokenNotFound`] if no token has this id.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let operation = "revoke agent token";
        let mut tx = self.begin_write(operation).await?;
        let updated =
            sqlx::query("UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL")
                .bind(id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(|error| db_error(operation, error))?
                .rows_affected();
        if updated == 0 {
            if token_exists(&mut tx, id).await? {
                return Ok(false);
            }
            return Err(StoreError::TokenNotFound { id: id.to_owned() });
        }
        bump_change_version(&mut tx, operation).await?;
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))?;
        Ok(true)
    }

    /// Records last-use times `(token id, unix ms)` in one transaction.
    ///
    /// [`Store::insert_audit_batch`] already does this for every audited
    /// request. A time older than the stored one is ignored, and unknown ids
    /// are skipped.
    /// The change counter does not move, because last use does not affect
    /// authorization.
    pub async fn touch_tokens_used(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let operation = "record agent token use";
        let mut tx = self.begin_write(operation).await?;
        for (id, used_ms) in uses {
            touch_token_used(&mut tx, id, *used_ms, operation).await?;
        }
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))
    }
}

/// Moves the last-use time of token `id` forward to `used_ms`, inside the
/// caller's transaction. An older time and an unknown id change nothing.
pub(crate) async fn touch_token_used(
    conn: &mut SqliteConnection,
    id: &str,
    used_ms: i64,
    operation: &'static str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE tokens SET last_used_ms = $2 \
         WHERE id = $1 AND (last_used_ms IS NULL OR last_used_ms < $2)",
    )
    .bind(id)
    .bind(used_ms)
    .execute(conn)
    .await
    .map_err(|error| db_error(operation, error))?;
    Ok(())
}

fn validate_token(token: &TokenRecord) -> Result<(), StoreError> {
    require_non_empty("agent token id", &token.id)?;
    require_non_empty("agent name", &token.agent)?;
    let is_sha256_hex = token.hash.len() == 64
        && token
            .hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !is_sha256_hex {
        return Err(StoreError::InvalidInput {
            field: "agent token hash",
            problem: format!(
                "hash of token `{}` must be 64 lowercase hex characters (SHA-256)",
                token.id
            ),
        });
    }
    Ok(())
}

async fn token_exists(conn: &mut SqliteConnection, id: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tokens WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(|error| db_error("read agent token", error))?;
    Ok(found.is_some())
}

async fn insert_token_row(
    conn: &mut SqliteConnection,
    token: &TokenRecord,
) -> Result<(), StoreError> {
    let sql =
        format!("INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
    let result = sqlx::query(&sql)
        .bind(&token.id)
        .bind(&token.agent)
        .bind(&token.hash)
        .bind(token.created_ms)
        .bind(token.expires_ms)
        .bind(token.revoked_ms)
        .bind(token.last_used_ms)
        .bind(token.canary)
        .execute(conn)
        .await;
    match result {
        Ok(_) => Ok(()),
        // The id was checked inside this transaction, so the hash collided.
        Err(error) if is_unique_violation(&error) => Err(StoreError::Conflict {
            item: format!("an agent token with the hash given for `{}`", token.id),
        }),
        Err(error) => Err(db_error("store agent token", error)),
    }
}

fn token_from_row(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: column(row, "id")?,
        agent: column(row, "agent")?,
        hash: column(row, "hash")?,
        created_ms: column(row, "created_ms")?,
        expires_ms: column(row, "expires_ms")?,
        revoked_ms: column(row, "revoked_ms")?,
        last_used_ms: column(row, "last_used_ms")?,
        canary: column(row, "canary")?,
    })
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    #[tokio::test]
    async fn canary_ids_read_only_the_canary_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("castellan.db"))
            .await
            .unwrap();
        let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {CANARY_TOKEN_IDS}"))
            .fetch_all(&store.pool)
            .await
            .unwrap();
        let plan: Vec<String> = rows.iter().map(|row| row.get("detail")).collect();
        assert_eq!(plan, ["SCAN tokens USING INDEX tokens_canary"]);
    }
}
