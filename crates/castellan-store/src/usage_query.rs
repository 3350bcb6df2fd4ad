//! Reading the usage summaries that audit batches keep up to date.

use sqlx::sqlite::SqliteRow;

use crate::error::{db_error, StoreError};
use crate::open::Store;
use crate::rows::{column, unsigned};

/// First and last authenticated request of one agent, over all time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUsage {
    pub agent: String,
    pub first_used_ms: i64,
    pub last_used_ms: i64,
    pub requests: u64,
}

/// Request counters of one agent and connection, summed over a range of
/// UTC days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTotals {
    pub agent: String,
    /// `None` for requests that named no declared connection.
    pub connection: Option<String>,
    pub requests: u64,
    pub denied: u64,
    pub errors: u64,
    /// Request body bytes received from the agent.
    pub bytes_in: u64,
    /// Response body bytes sent to the agent.
    pub bytes_out: u64,
}

/// Allowed requests of one agent to one method and normalized path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUsage {
    pub agent: String,
    pub connection: String,
    pub method: String,
    pub path: String,
    pub first_used_ms: i64,
    pub last_used_ms: i64,
    pub requests: u64,
}

/// One value (a source network or a user agent) seen with a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSighting {
    /// The audit record's `token_id`: a token id, or
    /// `certificate:<identity>` for a client certificate.
    pub token_id: String,
    pub agent: String,
    /// The network (`10.1.0.0/16`, `2001:db8:1::/48`) or the user agent.
    pub value: String,
    pub first_used_ms: i64,
    pub last_used_ms: i64,
    pub requests: u64,
}

impl Store {
    /// Lists the first and last use of every agent that made an
    /// authenticated request, ordered by agent.
    pub async fn agent_usage(&self) -> Result<Vec<AgentUsage>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent, first_used_ms, last_used_ms, requests FROM agent_usage ORDER BY agent",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|error| db_error("read agent usage", error))?;
        rows.iter()
            .map(|row| {
                Ok(AgentUsage {
                    agent: column(row, "agent")?,
                    first_used_ms: column(row, "first_used_ms")?,
                    last_used_ms: column(row, "last_used_ms")?,
                    requests: unsigned(row, "requests")?,
                })
            })
            .collect()
    }

    /// Sums the daily counters of each agent and connection from UTC day
    /// `first_day` (see [`crate::utc_day`]) on, ordered by agent and
    /// connection.
    pub async fn usage_totals(&self, first_day: i64) -> Result<Vec<UsageTotals>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent, connection, SUM(requests) AS requests, SUM(denied) AS denied, \
             SUM(errors) AS errors, SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out \
             FROM usage_daily WHERE day >= $1 GROUP BY agent, connection \
             ORDER BY agent, connection",
        )
        .bind(first_day)
        .fetch_all(&self.pool)
        .await
        .map_err(|error| db_error("read usage totals", error))?;
        rows.iter().map(totals_from_row).collect()
    }

    /// Lists the routes allowed for `agent` (every agent when `None`) whose
    /// last use is at or after `since_ms`, ordered by agent, connection,
    /// path and method.
    pub async fn route_usage(
        &self,
        agent: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<RouteUsage>, StoreError> {
        let sql = "SELECT agent, connection, method, path, first_used_ms, last_used_ms, requests \
             FROM route_usage WHERE last_used_ms >= $1 AND ($2 IS NULL OR agent = $2) \
             ORDER BY agent, connection, path, method";
        let rows = sqlx::query(sql)
            .bind(since_ms)
            .bind(agent)
            .fetch_all(&self.pool)
            .await
            .map_err(|error| db_error("read route usage", error))?;
        rows.iter()
            .map(|row| {
                Ok(RouteUsage {
                    agent: column(row, "agent")?,
                    connection: column(row, "connection")?,
                    method: column(row, "method")?,
                    path: column(row, "path")?,
                    first_used_ms: column(row, "first_used_ms")?,
                    last_used_ms: column(row, "last_used_ms")?,
                    requests: unsigned(row, "requests")?,
                })
            })
            .collect()
    }

    /// Lists the source networks of each credential last seen at or after
    /// `since_ms`, ordered by credential and network.
    pub async fn credential_networks(
        &self,
        since_ms: i64,
    ) -> Result<Vec<CredentialSighting>, StoreError> {
        let sql = "SELECT token_id, agent, network AS value, first_used_ms, last_used_ms, \
             requests FROM credential_networks WHERE last_used_ms >= $1 \
             ORDER BY token_id, network";
        self.sightings(sql, since_ms, "read credential networks")
            .await
    }

    /// Lists the user agents of each credential last seen at or after
    /// `since_ms`, ordered by credential and user agent.
    pub async fn credential_user_agents(
        &self,
        since_ms: i64,
    ) -> Result<Vec<CredentialSighting>, StoreError> {
        let sql = "SELECT token_id, agent, user_agent AS value, first_used_ms, last_used_ms, \
             requests FROM credential_user_agents WHERE last_used_ms >= $1 \
             ORDER BY token_id, user_agent";
        self.sightings(sql, since_ms, "read credential user agents")
            .await
    }

    async fn sightings(
        &self,
        sql: &'static str,
        since_ms: i64,
        operation: &'static str,
    ) -> Result<Vec<CredentialSighting>, StoreError> {
        let rows = sqlx::query(sql)
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(|error| db_error(operation, error))?;
        rows.iter()
            .map(|row| {
                Ok(CredentialSighting {
                    token_id: column(row, "token_id")?,
                    agent: column(row, "agent")?,
                    value: column(row, "value")?,
                    first_used_ms: column(row, "first_used_ms")?,
                    last_used_ms: column(row, "last_used_ms")?,
                    requests: unsigned(row, "requests")?,
                })
            })
            .collect()
    }
}

fn totals_from_row(row: &SqliteRow) -> Result<UsageTotals, StoreError> {
    let connection: String = column(row, "connection")?;
    Ok(UsageTotals {
        agent: column(row, "agent")?,
        connection: (!connection.is_empty()).then_some(connection),
        requests: unsigned(row, "requests")?,
        denied: unsigned(row, "denied")?,
        errors: unsigned(row, "errors")?,
        bytes_in: unsigned(row, "bytes_in")?,
        bytes_out: unsigned(row, "bytes_out")?,
    })
}
