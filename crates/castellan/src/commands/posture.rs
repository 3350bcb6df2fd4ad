//! The data that `castellan inventory` and `castellan findings` read: the
//! configuration, tokens, secrets and the usage summaries the audit writer
//! keeps, all as of one point in time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use castellan_model::{Agent, Config};
use castellan_store::{
    now_ms, AgentUsage, CredentialSighting, RouteUsage, SecretInfo, Store, SuspendedAgent,
    TokenRecord,
};

use crate::data_dir::DataDir;

/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;

/// Days of usage that the posture checks look back over: rules, write
/// methods, networks and user agents not seen in this window count as
/// unused or absent.
pub const USAGE_WINDOW_DAYS: i64 = 30;

/// Everything the posture commands need, read once.
pub struct Posture {
    pub config: Config,
    /// The time the report is for, in unix milliseconds: now, or `--as-of`.
    pub as_of_ms: i64,
    pub tokens: Vec<TokenRecord>,
    pub secrets: Vec<SecretInfo>,
    pub suspended: Vec<SuspendedAgent>,
    pub agent_usage: Vec<AgentUsage>,
    /// Routes allowed within [`USAGE_WINDOW_DAYS`] before `as_of_ms`.
    pub routes: Vec<RouteUsage>,
    /// Source networks within [`USAGE_WINDOW_DAYS`] before `as_of_ms`.
    pub networks: Vec<CredentialSighting>,
    /// User agents within [`USAGE_WINDOW_DAYS`] before `as_of_ms`.
    pub user_agents: Vec<CredentialSighting>,
}

impl Posture {
    /// Loads the configuration and reads the store.
    pub async fn load(data_dir: &DataDir, store: &Store, as_of_ms: i64) -> Result<Posture> {
        let config = data_dir.load_config()?;
        let window_start = as_of_ms - USAGE_WINDOW_DAYS * DAY_MS;
        Ok(Posture {
            config,
            as_of_ms,
            tokens: store.list_tokens(None).await?,
            secrets: store.list_secrets().await?,
            suspended: store.suspended_agents().await?,
            agent_usage: store.agent_usage().await?,
            routes: store.route_usage(None, window_start).await?,
            networks: store.credential_networks(window_start).await?,
            user_agents: store.credential_user_agents(window_start).await?,
        })
    }

    /// Summarizes every declared agent, then every agent that only the
    /// store has (tokens or usage of an agent no longer declared),
    /// ordered by name within each group.
    pub fn agents(&self) -> Vec<AgentSummary<'_>> {
        let mut names: BTreeMap<&str, Option<&Agent>> = BTreeMap::new();
        for token in &self.tokens {
            names.insert(&token.agent, None);
        }
        for usage in &self.agent_usage {
            names.insert(&usage.agent, None);
        }
        for (name, agent) in &self.config.agents {
            names.insert(name, Some(agent));
        }
        let (declared, undeclared): (Vec<_>, Vec<_>) =
            names.into_iter().partition(|(_, agent)| agent.is_some());
        declared
            .into_iter()
            .chain(undeclared)
            .map(|(name, agent)| self.summarize(name, agent))
            .collect()
    }

    fn summarize<'a>(&'a self, name: &'a str, agent: Option<&'a Agent>) -> AgentSummary<'a> {
        // Canary tokens are decoys that authenticate nothing: they are no
        // agent's credential and get no findings.
        let tokens: Vec<&TokenRecord> = self
            .tokens
            .iter()
            .filter(|t| t.agent == name && !t.canary)
            .collect();
        let active_tokens: Vec<&TokenRecord> = tokens
            .iter()
            .copied()
            .filter(|t| t.is_active_at(self.as_of_ms))
            .collect();
        let usage = self.agent_usage.iter().find(|u| u.agent == name);
        let last_token_use = tokens.iter().filter_map(|t| t.last_used_ms).max();
        let status = match agent {
            None => AgentStatus::Undeclared,
            Some(_) if self.suspended.iter().any(|s| s.agent == name) => AgentStatus::Suspended,
            Some(agent) if agent.is_expired(system_time(self.as_of_ms)) => AgentStatus::Expired,
            Some(_) => AgentStatus::Active,
        };
        AgentSummary {
            name,
            agent,
            status,
            created_ms: tokens.iter().map(|t| t.created_ms).min(),
            last_used_ms: usage.map(|u| u.last_used_ms).max(last_token_use),
            requests: usage.map_or(0, |u| u.requests),
            total_tokens: tokens.len(),
            oldest_active_token_ms: active_tokens.iter().map(|t| t.created_ms).min(),
            active_tokens,
        }
    }
}

/// Whether an agent may make requests now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    Active,
    Suspended,
    /// Past its `expires` time.
    Expired,
    /// Known to the store (tokens or usage) but not declared in the
    /// configuration, so the gateway rejects it.
    Undeclared,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Suspended => "suspended",
            AgentStatus::Expired => "expired",
            AgentStatus::Undeclared => "undeclared",
        }
    }
}

/// One agent as the inventory shows it.
pub struct AgentSummary<'a> {
    pub name: &'a str,
    /// The declaration, or `None` for an undeclared agent.
    pub agent: Option<&'a Agent>,
    pub status: AgentStatus,
    /// Creation of its first token, revoked ones included.
    pub created_ms: Option<i64>,
    /// Its latest authenticated request.
    pub last_used_ms: Option<i64>,
    /// Authenticated requests over all time.
    pub requests: u64,
    /// Tokens neither revoked nor expired at the report time.
    pub active_tokens: Vec<&'a TokenRecord>,
    pub total_tokens: usize,
    pub oldest_active_token_ms: Option<i64>,
}

/// Parses `--as-of`: an RFC 3339 time, a date (`2027-01-31`, midnight UTC)
/// or `+DURATION` from now. Earlier than now is rejected, because usage
/// recorded after that time would still be counted.
pub fn parse_as_of(text: Option<&str>) -> Result<i64> {
    let now = now_ms();
    let Some(text) = text else {
        return Ok(now);
    };
    let as_of_ms = if let Some(offset) = text.strip_prefix('+') {
        let offset = humantime::parse_duration(offset).with_context(|| {
            format!("invalid --as-of {text:?}: write +DURATION such as +30d, or a time")
        })?;
        now.saturating_add(i64::try_from(offset.as_millis()).unwrap_or(i64::MAX))
    } else {
        let time = humantime::parse_rfc3339_weak(text)
            .or_else(|_| humantime::parse_rfc3339_weak(&format!("{text}T00:00:00")))
            .with_context(|| {
                format!(
                    "invalid --as-of {text:?}: write a UTC time such as 2027-01-31T18:00:00Z, a date such as 2027-01-31, or +30d"
                )
            })?;
        unix_ms(time)
    };
    if as_of_ms < now {
        bail!("invalid --as-of {text:?}: it is in the past; pick now or a later time");
    }
    Ok(as_of_ms)
}

/// Returns whole days from `earlier_ms` to `later_ms`, at least 0.
pub fn days_between(earlier_ms: i64, later_ms: i64) -> i64 {
    (later_ms - earlier_ms).max(0) / DAY_MS
}

fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_accepts_offsets_and_times() {
        let before = now_ms();
        let offset = parse_as_of(Some("+31d")).unwrap();
        assert!(offset >= before + 31 * DAY_MS, "{offset}");
        assert!(offset <= now_ms() + 31 * DAY_MS);
        assert_eq!(
            parse_as_of(Some("9999-01-31")).unwrap(),
            parse_as_of(Some("9999-01-31T00:00:00Z")).unwrap()
        );
        let now = parse_as_of(None).unwrap();
        assert!(now >= before);
    }

    #[test]
    fn as_of_rejects_past_and_garbage() {
        let past = parse_as_of(Some("2001-01-01")).unwrap_err().to_string();
        assert!(past.contains("in the past"), "{past}");
        let garbage = parse_as_of(Some("soon")).unwrap_err().to_string();
        assert!(garbage.contains("invalid --as-of \"soon\""), "{garbage}");
        let offset = parse_as_of(Some("+x")).unwrap_err().to_string();
        assert!(offset.contains("+30d"), "{offset}");
    }

    #[test]
    fn days_round_down() {
        assert_eq!(days_between(0, DAY_MS - 1), 0);
        assert_eq!(days_between(0, 31 * DAY_MS), 31);
        assert_eq!(days_between(DAY_MS, 0), 0);
    }
}
