//! The log of administrative changes: who suspended an agent, rotated a
//! secret or handled an alert, and when.

use sqlx::sqlite::SqliteRow;

use crate::error::{db_error, require_non_empty, StoreError};
use crate::open::Store;
use crate::rows::column;

/// Meta key under which the detector stores the last audit seq it read.
const DETECT_CURSOR_KEY: &str = "detect.cursor";

/// One administrative change. `detail` never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the event log; `None` before the event is recorded.
    pub seq: Option<i64>,
    pub time_ms: i64,
    /// The operator's user name, or `castellan` for automatic responses.
    pub actor: String,
    /// Dotted action name such as `agent.suspend` or `alert.resolve`.
    pub action: String,
    /// Name of the changed object: an agent, a secret or an alert id.
    pub target: String,
    /// Free text such as a suspension reason or `version 3`.
    pub detail: Option<String>,
}

impl Store {
    /// Records an administrative change (suspend, resume, secret rotate or
    /// rollback, alert acknowledge or resolve, automatic responses) and
    /// returns its seq. The event's own `seq` is ignored.
    pub async fn record_event(&self, event: &Event) -> Result<i64, StoreError> {
        require_non_empty("event actor", &event.actor)?;
        require_non_empty("event action", &event.action)?;
        sqlx::query_scalar(
            "INSERT INTO events (time_ms, actor, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5) RETURNING seq",
        )
        .bind(event.time_ms)
        .bind(&event.actor)
        .bind(&event.action)
        .bind(&event.target)
        .bind(&event.detail)
        .fetch_one(&self.pool)
        .await
        .map_err(|error| db_error("record event", error))
    }

    /// Lists events in ascending seq order: with `after_seq`, the first
    /// `limit` events after it; without, the newest `limit` events.
    pub async fn events(
        &self,
        after_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let query = match after_seq {
            Some(after) => sqlx::query(
                "SELECT seq, time_ms, actor, action, target, detail FROM events \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after),
            None => sqlx::query(
                "SELECT * FROM (SELECT seq, time_ms, actor, action, target, detail \
                 FROM events ORDER BY seq DESC LIMIT $1) AS newest ORDER BY seq",
            ),
        };
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|error| db_error("list events", error))?;
        rows.iter().map(event_from_row).collect()
    }

    /// Returns the last audit seq the detector processed, if it ever ran.
    pub async fn detect_cursor(&self) -> Result<Option<i64>, StoreError> {
        let Some(text) = self.get_meta(DETECT_CURSOR_KEY).await? else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|_| StoreError::InvalidRow {
            column: "value",
            source: None,
        })
    }

    /// Stores the last audit seq the detector processed.
    pub async fn set_detect_cursor(&self, seq: i64) -> Result<(), StoreError> {
        self.set_meta(DETECT_CURSOR_KEY, &seq.to_string()).await
    }
}

fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    Ok(Event {
        seq: Some(column(row, "seq")?),
        time_ms: column(row, "time_ms")?,
        actor: column(row, "actor")?,
        action: column(row, "action")?,
        target: column(row, "target")?,
        detail: column(row, "detail")?,
    })
}
