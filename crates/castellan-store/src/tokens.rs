//! Agent tokens, stored only as SHA-256 hashes.

use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, SqliteConnection};

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

/// Rows that one statement of [`Store::visit_active_tokens`] reads.
///
/// sqlx hands each row from its SQLite thread to the caller on its own.
/// Read that way, the 100,000 tokens of `bench/scale.sh` took 1.2 s, and
/// `perf` found the SQLite thread mostly waiting on a contended lock. So
/// each statement returns a whole batch as one JSON array, the rows in the
/// order of `TOKEN_COLUMNS`: about 36 KB of JSON with the ids, agent names
/// and hashes of that benchmark. Batches of 2,048 rows were not faster.
const TOKEN_BATCH: i64 = 256;

/// The query of one batch: active tokens with a rowid of at least `$1`, at time
/// `$2`, at most `$3` of them, as a JSON array with the last rowid and the
/// count. The rowid keeps each batch a range scan of the table.
const ACTIVE_TOKEN_BATCH: &str = "\
    SELECT json_group_array(json_array(\
               id, agent, hash, created_ms, expires_ms, revoked_ms, last_used_ms, canary)), \
           max(rowid), count(*) \
    FROM (SELECT rowid, * FROM tokens \
          WHERE rowid >= $1 AND revoked_ms IS NULL \
            AND (expires_ms IS NULL OR expires_ms > $2) \
          ORDER BY rowid LIMIT $3)";

/// One row of [`ACTIVE_TOKEN_BATCH`]'s array, in the order of
/// `TOKEN_COLUMNS`.
#[derive(serde::Deserialize)]
struct TokenColumns(
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
);

impl TokenColumns {
    fn into_record(self) -> TokenRecord {
        let TokenColumns(id, agent, hash, created_ms, expires_ms, revoked_ms, last_used_ms, canary) =
            self;
        TokenRecord {
            id,
            agent,
            hash,
            created_ms,
            expires_ms,
            revoked_ms,
            last_used_ms,
            canary: canary != 0,
        }
    }
}

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
    /// now, in no particular order, reading [`TOKEN_BATCH`] rows at a time.
    ///
    /// The gateway loads every active token this way: with 100,000 tokens,
    /// reading them into one `Vec` first would add tens of MiB to the peak
    /// memory of each load.
    pub async fn visit_active_tokens(
        &self,
        visit: impl FnMut(TokenRecord),
    ) -> Result<(), StoreError> {
        self.visit_active_tokens_in_batches(TOKEN_BATCH, visit)
            .await
    }

    async fn visit_active_tokens_in_batches(
        &self,
        batch: i64,
        mut visit: impl FnMut(TokenRecord),
    ) -> Result<(), StoreError> {
        let operation = "list active agent tokens";
        let now = now_ms();
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(|error| db_error(operation, error))?;
        // One read transaction, so the batches see one snapshot of the
        // table even while tokens are issued or revoked.
        let mut tx = connection
            .begin()
            .await
            .map_err(|error| db_error(operation, error))?;
        let mut after = i64::MIN;
        loop {
            let (rows, last, count): (Option<String>, Option<i64>, i64) =
                sqlx::query_as(ACTIVE_TOKEN_BATCH)
                    .bind(after)
                    .bind(now)
                    .bind(batch)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|error| db_error(operation, error))?;
            let (Some(rows), Some(last)) = (rows, last) else {
                break;
            };
            let rows: Vec<TokenColumns> = serde_json::from_str(&rows).map_err(|error| {
                // serde_json's message quotes the value, which could be a
                // token hash, so only its kind and position are kept.
                let problem = format!(
                    "{:?} error at line {} column {} of a batch of active tokens",
                    error.classify(),
                    error.line(),
                    error.column()
                );
                StoreError::InvalidRow {
                    column: TOKEN_COLUMNS,
                    source: Some(problem.into()),
                }
            })?;
            for row in rows {
                visit(row.into_record());
                // The visitor may be slower than reading, so without this
                // the loop would hold its thread for the whole scan, which
                // takes a large part of a second for 100,000 tokens. Other
                // tasks of the caller's runtime, such as the audit writer,
                // get a turn when the task's budget runs out.
                tokio::task::coop::consume_budget().await;
            }
            // A rowid may be any i64, so the next batch starts after `last`
            // unless nothing can follow it.
            match last.checked_add(1) {
                Some(next) if count >= batch => after = next,
                _ => break,
            }
        }
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))?;
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
    async fn batches_visit_each_active_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("castellan.db"))
            .await
            .unwrap();
        let now = now_ms();
        for index in 0..23_i64 {
            let record = TokenRecord {
                id: format!("tok-{index:02}"),
                agent: format!("agent \"{index}\" \u{e9}\\"),
                hash: format!("{index:064x}"),
                created_ms: index,
                // Every fifth token has expired, every third expires later.
                expires_ms: match index % 5 {
                    0 => Some(now - 1_000),
                    _ if index % 3 == 0 => Some(now + 3_600_000),
                    _ => None,
                },
                revoked_ms: None,
                last_used_ms: (index % 2 == 0).then_some(index * 10),
                canary: index % 7 == 0,
            };
            store.insert_token(&record).await.unwrap();
        }
        for index in [1, 8, 22] {
            store
                .revoke_token(&format!("tok-{index:02}"))
                .await
                .unwrap();
        }
        // The first and the last rowid an active token can have.
        for (id, rowid) in [("tok-02", i64::MIN), ("tok-03", i64::MAX)] {
            sqlx::query("UPDATE tokens SET rowid = $1 WHERE id = $2")
                .bind(rowid)
                .bind(id)
                .execute(&store.pool)
                .await
                .unwrap();
        }
        let expected = store.active_tokens().await.unwrap();
        assert_eq!(expected.len(), 23 - 5 - 3);

        for batch in [1, 4, 15, 16, 2_048] {
            let mut visited = Vec::new();
            store
                .visit_active_tokens_in_batches(batch, |token| visited.push(token))
                .await
                .unwrap();
            visited.sort_by_key(|token| token.created_ms);
            assert_eq!(visited, expected, "batches of {batch}");
        }
    }

    #[tokio::test]
    async fn invalid_batch_error_quotes_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("castellan.db"))
            .await
            .unwrap();
        let hash = "9f".repeat(32);
        let record = TokenRecord {
            id: "tok-1".to_string(),
            agent: "alpha".to_string(),
            hash: hash.clone(),
            created_ms: 1,
            expires_ms: None,
            revoked_ms: None,
            last_used_ms: None,
            canary: false,
        };
        store.insert_token(&record).await.unwrap();
        sqlx::query("UPDATE tokens SET created_ms = hash")
            .execute(&store.pool)
            .await
            .unwrap();

        let error = store.visit_active_tokens(|_| ()).await.unwrap_err();
        let mut chain = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            chain.push_str(&format!(" | {cause}"));
            source = cause.source();
        }
        assert!(matches!(error, StoreError::InvalidRow { .. }), "{chain}");
        assert!(chain.contains("of a batch of active tokens"), "{chain}");
        assert!(!chain.contains(&hash), "{chain}");
    }

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
