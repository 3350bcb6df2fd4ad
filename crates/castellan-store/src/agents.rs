//! Runtime agent state: suspensions set by operators or automatic responses.

use sqlx::sqlite::SqliteRow;

use crate::error::{db_error, require_non_empty, StoreError};
use crate::meta::bump_change_version;
use crate::open::{now_ms, Store};
use crate::rows::column;

/// An agent whose requests the gateway denies until it is resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspendedAgent {
    pub agent: String,
    pub reason: Option<String>,
    /// When the agent was suspended.
    pub changed_ms: i64,
}

impl Store {
    /// Suspends (`suspended = true`) or resumes an agent, recording the reason,
    /// and moves the change counter.
    pub async fn set_suspended(
        &self,
        agent: &str,
        suspended: bool,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        require_non_empty("agent name", agent)?;
        let operation = if suspended {
            "suspend agent"
        } else {
            "resume agent"
        };
        let mut tx = self.begin_write(operation).await?;
        sqlx::query(
            "INSERT INTO agent_state (agent, suspended, reason, changed_ms) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (agent) DO UPDATE SET suspended = excluded.suspended, \
             reason = excluded.reason, changed_ms = excluded.changed_ms",
        )
        .bind(agent)
        .bind(suspended)
        .bind(reason)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|error| db_error(operation, error))?;
        bump_change_version(&mut tx, operation).await?;
        tx.commit()
            .await
            .map_err(|error| db_error(operation, error))
    }

    /// Returns the agent's suspension, or `None` when it is not suspended.
    pub async fn suspension(&self, agent: &str) -> Result<Option<SuspendedAgent>, StoreError> {
        let row = sqlx::query(
            "SELECT agent, reason, changed_ms FROM agent_state \
             WHERE agent = $1 AND suspended = $2",
        )
        .bind(agent)
        .bind(true)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| db_error("read suspension", error))?;
        row.as_ref().map(suspended_from_row).transpose()
    }

    /// Lists the suspended agents, ordered by name.
    pub async fn suspended_agents(&self) -> Result<Vec<SuspendedAgent>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent, reason, changed_ms FROM agent_state \
             WHERE suspended = $1 ORDER BY agent",
        )
        .bind(true)
        .fetch_all(&self.pool)
        .await
        .map_err(|error| db_error("list suspended agents", error))?;
        rows.iter().map(suspended_from_row).collect()
    }
}

fn suspended_from_row(row: &SqliteRow) -> Result<SuspendedAgent, StoreError> {
    Ok(SuspendedAgent {
        agent: column(row, "agent")?,
        reason: column(row, "reason")?,
        changed_ms: column(row, "changed_ms")?,
    })
}
