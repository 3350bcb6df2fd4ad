//! `castellan agent`: tokens and suspension.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use castellan_store::{now_ms, Store, StoreError, TokenRecord};
use castellan_vault::AgentToken;

use crate::cli::{AgentCommand, TokenCommand};
use crate::commands::events;
use crate::data_dir::DataDir;
use crate::output::{self, printable};

pub async fn run(data_dir: &DataDir, command: AgentCommand) -> Result<ExitCode> {
    let store = data_dir.open_store().await?;
    match command {
        AgentCommand::Token(TokenCommand::Issue { agent, ttl, canary }) => {
            if canary {
                castellan_model::check_name(&agent)
                    .map_err(|reason| anyhow::anyhow!("invalid agent name {agent:?}: {reason}"))?;
            } else {
                require_declared(data_dir, &agent)?;
            }
            let default_ttl = if canary { "never" } else { "30d" };
            let ttl = parse_ttl(ttl.as_deref().unwrap_or(default_ttl))?;
            if canary && data_dir.load_config()?.agents.contains_key(&agent) {
                eprintln!(
                    "warning: {agent:?} is a declared agent. When this canary is used, a response rule with suspend = true suspends {agent:?} itself; give the canary a decoy name if that is not what you want."
                );
            }
            let (token, record) = insert_token(&store, &agent, ttl, canary).await?;
            let action = if canary {
                "token.issue_canary"
            } else {
                "token.issue"
            };
            events::record(&store, action, &agent, Some(format!("token {}", record.id))).await?;
            if canary {
                println!("{}", token.expose());
                eprintln!(
                    "Issued canary token {} for {agent:?}, expires {}. It grants nothing: plant it where an attacker would look; any use raises a critical canary_token alert.",
                    record.id,
                    record.expires_ms.map_or_else(|| "never".to_string(), output::time)
                );
                return Ok(ExitCode::SUCCESS);
            }
            // The token goes alone to stdout so scripts can capture it; the
            // rest goes to stderr.
            println!("{}", token.expose());
            eprintln!(
                "Issued token {} for agent {agent:?}, expires {}. It is shown only this once; Castellan keeps only its hash.",
                record.id,
                record.expires_ms.map_or_else(|| "never".to_string(), output::time)
            );
        }
        AgentCommand::Token(TokenCommand::List { agent, json }) => {
            list_tokens(&store, agent.as_deref(), json).await?;
        }
        AgentCommand::Token(TokenCommand::Revoke { id }) => match store.revoke_token(&id).await {
            Ok(true) => {
                events::record(&store, "token.revoke", &id, None).await?;
                eprintln!(
                    "Revoked token {}; running gateways reject it within a second.",
                    printable(&id)
                )
            }
            Ok(false) => eprintln!("Token {} was already revoked.", printable(&id)),
            Err(StoreError::TokenNotFound { .. }) => {
                bail!("no agent token with id {id:?}; list them with `castellan agent token list`")
            }
            Err(error) => return Err(error.into()),
        },
        AgentCommand::Suspend { agent, reason } => {
            require_declared(data_dir, &agent)?;
            let reason = reason.unwrap_or_else(|| "suspended by an operator".to_string());
            store.set_suspended(&agent, true, Some(&reason)).await?;
            events::record(&store, "agent.suspend", &agent, Some(reason)).await?;
            eprintln!(
                "Suspended agent {agent:?}; running gateways deny its requests within a second."
            );
        }
        AgentCommand::Resume { agent } => {
            require_declared(data_dir, &agent)?;
            store.set_suspended(&agent, false, None).await?;
            events::record(&store, "agent.resume", &agent, None).await?;
            eprintln!("Resumed agent {agent:?}.");
        }
        AgentCommand::List { json } => list_agents(data_dir, &store, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails unless the configuration declares `agent`.
fn require_declared(data_dir: &DataDir, agent: &str) -> Result<()> {
    let config = data_dir.load_config()?;
    if !config.agents.contains_key(agent) {
        bail!(
            "agent {agent:?} is not declared in {}; add [agents.{agent}] first",
            data_dir.config.display()
        );
    }
    Ok(())
}

/// Parses a token lifetime such as `30d`; `never` means no expiry.
fn parse_ttl(text: &str) -> Result<Option<Duration>> {
    if text == "never" {
        return Ok(None);
    }
    let ttl = humantime::parse_duration(text).with_context(|| {
        format!("invalid --ttl {text:?}; write a duration such as 30d or 12h, or never")
    })?;
    if ttl.is_zero() {
        bail!("invalid --ttl {text:?}: a token must live longer than zero");
    }
    Ok(Some(ttl))
}

/// Creates a token for `agent` and stores its hash.
pub async fn issue_token(
    store: &Store,
    agent: &str,
    ttl: Option<Duration>,
) -> Result<(AgentToken, TokenRecord)> {
    insert_token(store, agent, ttl, false).await
}

/// Creates a token, or a canary token, for `agent` and stores its hash.
async fn insert_token(
    store: &Store,
    agent: &str,
    ttl: Option<Duration>,
    canary: bool,
) -> Result<(AgentToken, TokenRecord)> {
    let token = AgentToken::generate();
    let created_ms = now_ms();
    let expires_ms = ttl
        .map(|ttl| created_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)));
    let record = TokenRecord {
        id: castellan_vault::new_token_id(),
        agent: agent.to_string(),
        hash: token.hash().to_hex(),
        created_ms,
        expires_ms,
        revoked_ms: None,
        last_used_ms: None,
        canary,
    };
    store.insert_token(&record).await?;
    Ok((token, record))
}

async fn list_tokens(store: &Store, agent: Option<&str>, json: bool) -> Result<()> {
    let tokens = store.list_tokens(agent).await?;
    let now = now_ms();
    if json {
        for token in &tokens {
            let line = serde_json::json!({
                "id": token.id,
                "agent": token.agent,
                "created_ms": token.created_ms,
                "expires_ms": token.expires_ms,
                "revoked_ms": token.revoked_ms,
                "last_used_ms": token.last_used_ms,
                "active": token.is_active_at(now),
                "canary": token.canary,
            });
            println!("{}", crate::output::json_line(&line)?);
        }
        return Ok(());
    }
    let mut table = output::table(&["id", "agent", "status", "created", "age", "expires"]);
    for token in &tokens {
        let status = if token.canary && token.is_active_at(now) {
            "canary"
        } else if token.revoked_ms.is_some() {
            "revoked"
        } else if token.is_active_at(now) {
            "active"
        } else {
            "expired"
        };
        table.add_row(vec![
            printable(&token.id).into_owned(),
            printable(&token.agent).into_owned(),
            status.to_string(),
            output::time(token.created_ms),
            output::age(token.created_ms, now),
            token
                .expires_ms
                .map_or_else(|| "never".to_string(), output::time),
        ]);
    }
    println!("{table}");
    Ok(())
}

async fn list_agents(data_dir: &DataDir, store: &Store, json: bool) -> Result<()> {
    let config = data_dir.load_config()?;
    let suspended = store.suspended_agents().await?;
    let tokens = store.active_tokens().await?;
    let mut table = output::table(&["agent", "owner", "roles", "status", "active tokens"]);
    for agent in config.agents.values() {
        let status = if suspended.iter().any(|s| s.agent == agent.name) {
            "suspended"
        } else if agent.is_expired(std::time::SystemTime::now()) {
            "expired"
        } else {
            "active"
        };
        let count = tokens
            .iter()
            .filter(|t| t.agent == agent.name && !t.canary)
            .count();
        if json {
            let line = serde_json::json!({
                "agent": agent.name,
                "owner": agent.owner,
                "roles": agent.roles,
                "status": status,
                "active_tokens": count,
            });
            println!("{}", crate::output::json_line(&line)?);
        } else {
            table.add_row(vec![
                printable(&agent.name).into_owned(),
                printable(&agent.owner).into_owned(),
                printable(&agent.roles.join(", ")).into_owned(),
                status.to_string(),
                count.to_string(),
            ]);
        }
    }
    if !json {
        println!("{table}");
    }
    Ok(())
}
