//! Errors of the store, mapped from the database driver so that callers never
//! depend on driver types and messages never contain bound values.

use std::error::Error as StdError;
use std::path::PathBuf;

use crate::open::BUSY_TIMEOUT;

/// Boxed driver error kept as the `source` of a [`StoreError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "database file {} does not exist; run `castellan init` to create it, \
         or pass --data-dir to point at an existing data directory",
        path.display()
    )]
    Missing { path: PathBuf },

    #[error(
        "database file {} already exists; `castellan init` does not overwrite a database, \
         so remove it or choose another --data-dir",
        path.display()
    )]
    AlreadyExists { path: PathBuf },

    #[error("{} is not a castellan database ({detail}); check --data-dir", path.display())]
    NotCastellan { path: PathBuf, detail: String },

    #[error(
        "database {} has schema version {found}, newer than the latest this castellan \
         build knows ({supported}); upgrade castellan",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error("migrating database {} failed: {detail}", path.display())]
    Migration {
        path: PathBuf,
        detail: String,
        #[source]
        source: BoxError,
    },

    #[error(
        "database busy during {operation}: another process held a lock for longer than \
         the {}s busy timeout; retry, and check for a stuck castellan process",
        BUSY_TIMEOUT.as_secs()
    )]
    Busy {
        operation: &'static str,
        #[source]
        source: Option<BoxError>,
    },

    #[error("{item} already exists because another writer stored it first; reload and retry")]
    Conflict { item: String },

    #[error("no agent token with id `{id}`; list tokens with `castellan agent token list`")]
    TokenNotFound { id: String },

    #[error("no secret named `{name}`; list secrets with `castellan secret list`")]
    SecretNotFound { name: String },

    #[error("no alert with id {id}; list alerts with `castellan alerts`")]
    AlertNotFound { id: i64 },

    #[error(
        "alert {id} is already resolved; the next signal of its kind and subject \
         opens a new alert"
    )]
    AlertResolved { id: i64 },

    #[error("invalid {field}: {problem}")]
    InvalidInput {
        field: &'static str,
        problem: String,
    },

    #[error("invalid value stored in column `{column}`; the database may be damaged")]
    InvalidRow {
        column: &'static str,
        #[source]
        source: Option<BoxError>,
    },

    #[error("I/O on database file {} failed during {operation}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("database {operation} failed")]
    Database {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
}

/// SQLite primary result codes that mean another connection holds a lock.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
/// SQLite result code for a file that is not a database.
pub(crate) const SQLITE_NOTADB: i32 = 26;

/// Returns the primary SQLite result code of a database error, if any.
///
/// Extended result codes keep the primary code in their low byte.
pub(crate) fn sqlite_code(error: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    let code: i32 = db.code()?.parse().ok()?;
    Some(code & 0xff)
}

/// Returns true if `error` is a unique or primary-key constraint violation.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Maps a driver error raised during `operation` to a [`StoreError`].
pub(crate) fn db_error(operation: &'static str, error: sqlx::Error) -> StoreError {
    if matches!(sqlite_code(&error), Some(SQLITE_BUSY | SQLITE_LOCKED)) {
        return StoreError::Busy {
            operation,
            source: Some(Box::new(error)),
        };
    }
    match error {
        sqlx::Error::PoolTimedOut => StoreError::Busy {
            operation,
            source: None,
        },
        error => StoreError::Database {
            operation,
            source: Box::new(error),
        },
    }
}

/// Maps a driver error raised while decoding `column` of a row.
pub(crate) fn row_error(column: &'static str, error: sqlx::Error) -> StoreError {
    StoreError::InvalidRow {
        column,
        source: Some(Box::new(error)),
    }
}

/// Rejects an empty identifier before it reaches the database.
pub(crate) fn require_non_empty(field: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::InvalidInput {
            field,
            problem: "must not be empty".to_owned(),
        });
    }
    Ok(())
}
