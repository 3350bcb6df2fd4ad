//! Agent token files kept fresh by `castellan serve`.
//!
//! An agent with `token_file` gets a token that lives `token_lifetime`.
//! When a third of that lifetime is left, or the token was revoked, or the
//! file is gone, castellan issues a new token and replaces the file
//! atomically (a mode 0600 file written beside it, then renamed over it).
//! The old token stays valid until it expires, so an agent that read the
//! file a moment ago keeps working during the overlap.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use castellan_gateway::Gateway;
use castellan_model::{Agent, Config};
use castellan_store::{now_ms, Event, Store, TokenRecord};

use super::agent::issue_token;

/// Time between two looks at the store's change counter; a revoked managed
/// token is replaced within about this long.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Maximum time between two full checks when nothing changed.
const CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The actor recorded for tokens castellan issues itself.
const ACTOR: &str = "castellan";

fn meta_key(agent: &str) -> String {
    format!("token_file.{agent}")
}

/// Tells whether the managed token `current` must be replaced at `now_ms`.
pub fn needs_new_token(
    current: Option<&TokenRecord>,
    lifetime: Duration,
    file_present: bool,
    now_ms: i64,
) -> bool {
    let Some(token) = current else {
        return true;
    };
    if !file_present || !token.is_active_at(now_ms) {
        return true;
    }
    let Some(expires_ms) = token.expires_ms else {
        return true;
    };
    let renew_within = i64::try_from(lifetime.as_millis() / 3).unwrap_or(i64::MAX);
    expires_ms - now_ms <= renew_within
}

/// Keeps every configured token file fresh until `shutdown` resolves.
/// `protected` lists the data directory and the configuration file, which
/// a token file must never replace.
pub async fn run(
    store: Store,
    gateway: Arc<Gateway>,
    protected: Vec<PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut last_version = None;
    let mut last_check = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let config = Arc::clone(&gateway.snapshot.load().config.config);
        if !config
            .agents
            .values()
            .any(|agent| agent.token_file.is_some())
        {
            continue;
        }
        let version = match store.change_version().await {
            Ok(version) => Some(version),
            Err(error) => {
                tracing::error!(%error, "cannot read the store's change counter for token files");
                continue;
            }
        };
        if version == last_version && last_check.elapsed() < CHECK_INTERVAL {
            continue;
        }
        last_version = version;
        last_check = tokio::time::Instant::now();
        refresh_all(&store, &config, &protected).await;
    }
}

async fn refresh_all(store: &Store, config: &Config, protected: &[PathBuf]) {
    let tokens: HashMap<String, TokenRecord> = match store.list_tokens(None).await {
        Ok(tokens) => tokens
            .into_iter()
            .map(|token| (token.id.clone(), token))
            .collect(),
        Err(error) => {
            tracing::error!(%error, "cannot list agent tokens for token files");
            return;
        }
    };
    for agent in config.agents.values() {
        let Some(path) = &agent.token_file else {
            continue;
        };
        if let Some(kept) = overlaps(path, protected) {
            tracing::error!(agent = %agent.name, path = %path.display(), protected = %kept.display(), "token_file would replace castellan's own data; choose a path outside the data directory and the configuration file");
            continue;
        }
        if let Err(error) = refresh(store, agent, &tokens).await {
            tracing::error!(agent = %agent.name, error = format!("{error:#}"), "cannot refresh the agent's token file; retrying within a minute");
        }
    }
}

async fn refresh(
    store: &Store,
    agent: &Agent,
    tokens: &HashMap<String, TokenRecord>,
) -> Result<()> {
    let Some(path) = &agent.token_file else {
        return Ok(());
    };
    let key = meta_key(&agent.name);
    let current = store
        .get_meta(&key)
        .await?
        .and_then(|id| tokens.get(&id))
        .filter(|token| token.agent == agent.name);
    if !needs_new_token(current, agent.token_lifetime, path.exists(), now_ms()) {
        return Ok(());
    }
    let (token, record) = issue_token(store, &agent.name, Some(agent.token_lifetime)).await?;
    write_token_file(path, token.expose())?;
    store.set_meta(&key, &record.id).await?;
    store
        .record_event(&Event {
            seq: None,
            time_ms: now_ms(),
            actor: ACTOR.to_owned(),
            action: "token.issue".to_owned(),
            target: agent.name.clone(),
            detail: Some(format!("token {} written to {}", record.id, path.display())),
        })
        .await?;
    tracing::info!(agent = %agent.name, token = %record.id, path = %path.display(), "wrote a new agent token file");
    Ok(())
}

/// Returns the entry of `protected` that `path` is, or lies inside, after
/// resolving links in the directories that exist.
pub fn overlaps<'a>(path: &Path, protected: &'a [PathBuf]) -> Option<&'a PathBuf> {
    let resolved = resolve(path);
    protected
        .iter()
        .find(|kept| resolved.starts_with(resolve(kept)))
}

/// Resolves `path` as far as it exists: the longest existing ancestor is
/// canonicalized and the rest appended.
fn resolve(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut current = path.to_path_buf();
    loop {
        if let Ok(real) = fs::canonicalize(&current) {
            return missing.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        match (current.parent(), current.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                current = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Replaces `path` with `token` and a newline: a new file of mode 0600 in
/// the same directory, synced, then renamed over the old one, so readers
/// see either the old token or the new one, never a partial file.
pub fn write_token_file(path: &Path, token: &str) -> Result<()> {
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("token_file {} names no file", path.display()))?;
    let temporary = directory.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(token.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error).with_context(|| {
            format!(
                "cannot write token_file {}; check that {} exists and castellan may write there",
                path.display(),
                directory.display()
            )
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const HOUR_MS: i64 = 60 * 60 * 1000;

    fn token(expires_ms: Option<i64>, revoked_ms: Option<i64>) -> TokenRecord {
        TokenRecord {
            id: "tok_1".to_owned(),
            agent: "bot".to_owned(),
            hash: "0".repeat(64),
            created_ms: 0,
            expires_ms,
            revoked_ms,
            last_used_ms: None,
            canary: false,
        }
    }

    #[test]
    fn renewal_starts_in_the_last_third() {
        let lifetime = Duration::from_secs(24 * 60 * 60);
        let fresh = token(Some(24 * HOUR_MS), None);
        assert!(!needs_new_token(Some(&fresh), lifetime, true, 0));
        assert!(!needs_new_token(Some(&fresh), lifetime, true, 15 * HOUR_MS));
        assert!(needs_new_token(Some(&fresh), lifetime, true, 17 * HOUR_MS));
    }

    #[test]
    fn missing_revoked_or_expired_tokens_are_replaced() {
        let lifetime = Duration::from_secs(24 * 60 * 60);
        assert!(needs_new_token(None, lifetime, true, 0));
        let fresh = token(Some(24 * HOUR_MS), None);
        assert!(needs_new_token(Some(&fresh), lifetime, false, 0));
        let revoked = token(Some(24 * HOUR_MS), Some(1));
        assert!(needs_new_token(Some(&revoked), lifetime, true, 0));
        assert!(needs_new_token(Some(&fresh), lifetime, true, 25 * HOUR_MS));
    }

    #[test]
    fn file_is_replaced_whole_with_mode_0600() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("bot.token");
        write_token_file(&path, "first").expect("first write");
        write_token_file(&path, "second").expect("second write");
        assert_eq!(fs::read_to_string(&path).unwrap(), "second\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers = fs::read_dir(directory.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn data_directory_and_config_are_protected() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let data = directory.path().join("data");
        fs::create_dir(&data).unwrap();
        let config = directory.path().join("castellan.toml");
        fs::write(&config, "").unwrap();
        let protected = vec![data.clone(), config.clone()];
        assert!(overlaps(&data.join("master.key"), &protected).is_some());
        assert!(overlaps(&data.join("new/dir/x.token"), &protected).is_some());
        assert!(overlaps(&config, &protected).is_some());
        let sneaky = directory.path().join("data/../castellan.toml");
        assert!(overlaps(&sneaky, &protected).is_some());
        assert!(overlaps(&directory.path().join("bot.token"), &protected).is_none());
    }

    #[test]
    fn unwritable_directory_is_reported() {
        let path = Path::new("/nonexistent-castellan-directory/bot.token");
        let error = format!("{:#}", write_token_file(path, "cst_Zq8Wx").unwrap_err());
        assert!(
            error.contains("/nonexistent-castellan-directory"),
            "{error}"
        );
        assert!(!error.contains("cst_Zq8Wx"), "{error}");
    }
}
