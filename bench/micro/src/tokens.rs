//! Agent token verification as the gateway's authenticate stage does it:
//! check the token's form and checksum, hash it with SHA-256, look the hash
//! up in the in-memory token table, then admit the agent.

use std::collections::HashMap;
use std::time::SystemTime;

use castellan_gateway::ActiveTokens;
use castellan_model::{Agent, Config};
use castellan_store::{now_ms, TokenRecord};
use castellan_vault::AgentToken;

/// An agent admitted by its token, with the token's public id.
#[derive(Debug)]
pub struct Admitted<'a> {
    pub agent: &'a Agent,
    pub token_id: String,
}

/// Reason a token was not admitted. The reasons stay apart so a bench can
/// check which path it timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// Malformed, unknown, canary or expired token.
    InvalidToken,
    /// The token's agent is not in the configuration.
    UnknownAgent,
    /// The agent is suspended.
    Suspended,
    /// The agent's `expires` has passed.
    Expired,
}

/// The in-memory state token verification reads: one token per agent of
/// the configuration, hashed as the store keeps them.
pub struct TokenTable {
    pub config: Config,
    /// The gateway's own token table.
    pub tokens: ActiveTokens,
    /// Suspended agents and the reason given.
    pub suspended: HashMap<String, Option<String>>,
    /// The issued tokens, in the order of `config.agents`.
    issued: Vec<AgentToken>,
}

impl TokenTable {
    /// Issues one token for each agent of `config`.
    pub fn issue(config: Config) -> TokenTable {
        let mut records = Vec::with_capacity(config.agents.len());
        let mut issued = Vec::with_capacity(config.agents.len());
        for name in config.agents.keys() {
            let token = AgentToken::generate();
            records.push(TokenRecord {
                id: castellan_vault::new_token_id(),
                agent: name.clone(),
                hash: token.hash().to_hex(),
                created_ms: now_ms(),
                expires_ms: None,
                revoked_ms: None,
                last_used_ms: None,
                canary: false,
            });
            issued.push(token);
        }
        TokenTable {
            config,
            tokens: ActiveTokens::from_records(records),
            suspended: HashMap::new(),
            issued,
        }
    }

    /// Returns the token issued to the agent at `index` in name order.
    ///
    /// # Panics
    ///
    /// Panics if `index` is not below the number of agents.
    pub fn token(&self, index: usize) -> &str {
        self.issued[index].expose()
    }

    /// Resolves `token` to an agent that may act now, with the same checks
    /// and in the same order as the gateway's authenticate stage.
    pub fn verify(&self, token: &str) -> Result<Admitted<'_>, TokenRejection> {
        if !castellan_vault::looks_like_token(token) {
            return Err(TokenRejection::InvalidToken);
        }
        let hash = castellan_vault::parse_token(token).map_err(|_| TokenRejection::InvalidToken)?;
        let entry = self.tokens.get(&hash).ok_or(TokenRejection::InvalidToken)?;
        if entry.canary || entry.expires_ms.is_some_and(|expires| expires <= now_ms()) {
            return Err(TokenRejection::InvalidToken);
        }
        let agent = self
            .config
            .agents
            .get(entry.agent)
            .ok_or(TokenRejection::UnknownAgent)?;
        if self.suspended.contains_key(&agent.name) {
            return Err(TokenRejection::Suspended);
        }
        if agent.is_expired(SystemTime::now()) {
            return Err(TokenRejection::Expired);
        }
        Ok(Admitted {
            agent,
            token_id: entry.id.to_string(),
        })
    }
}

/// Returns a well-formed token issued to no agent: a fresh one, never
/// entered in any table.
pub fn unknown_token() -> AgentToken {
    AgentToken::generate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{config_text, parse_config, ConfigSize};

    fn table() -> TokenTable {
        let size = ConfigSize {
            connections: 2,
            roles: 3,
            agents: 5,
        };
        TokenTable::issue(parse_config(&config_text(size)))
    }

    #[test]
    fn issued_token_admits_its_agent() {
        let table = table();
        let admitted = table.verify(table.token(3)).expect("issued token verifies");
        assert_eq!(admitted.agent.name, "agent-0003");
        assert!(admitted.token_id.starts_with("tok_"));
    }

    #[test]
    fn unknown_and_damaged_tokens_rejected() {
        let table = table();
        let unknown = unknown_token();
        assert_eq!(
            table.verify(unknown.expose()).err(),
            Some(TokenRejection::InvalidToken)
        );
        let mut damaged = table.token(0).to_string();
        damaged.replace_range(10..11, if &damaged[10..11] == "A" { "B" } else { "A" });
        assert_eq!(
            table.verify(&damaged).err(),
            Some(TokenRejection::InvalidToken)
        );
    }

    #[test]
    fn suspended_agent_rejected() {
        let mut table = table();
        table.suspended.insert("agent-0001".to_string(), None);
        assert_eq!(
            table.verify(table.token(1)).err(),
            Some(TokenRejection::Suspended)
        );
    }
}
