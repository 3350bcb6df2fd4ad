//! Column decoding shared by the table modules.

use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Row, Sqlite, Type};

use crate::error::{row_error, StoreError};

/// Decodes `column` of `row`, naming the column if the stored value is invalid.
pub(crate) fn column<'r, T>(row: &'r SqliteRow, column: &'static str) -> Result<T, StoreError>
where
    T: Decode<'r, Sqlite> + Type<Sqlite>,
{
    row.try_get(column)
        .map_err(|error| row_error(column, error))
}

/// Decodes a non-negative integer column into a `u64`.
pub(crate) fn unsigned(row: &SqliteRow, name: &'static str) -> Result<u64, StoreError> {
    let value: i64 = column(row, name)?;
    u64::try_from(value).map_err(|_| StoreError::InvalidRow {
        column: name,
        source: None,
    })
}

/// Converts a `u64` for an INTEGER column, saturating at `i64::MAX` (about
/// 9.2e18, far beyond any byte count or duration castellan records).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
