//! `castellan secret`: put upstream credentials into the vault.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use castellan_store::{now_ms, SealedRow, Store};
use castellan_vault::{MasterKey, SealedSecret};
use zeroize::Zeroizing;

use crate::cli::SecretCommand;
use crate::commands::events;
use crate::data_dir::DataDir;
use crate::output::{self, printable};

/// Maximum size of a secret value.
const MAX_SECRET_BYTES: usize = 64 * 1024;

pub async fn run(data_dir: &DataDir, command: SecretCommand) -> Result<ExitCode> {
    let store = data_dir.open_store().await?;
    match command {
        SecretCommand::Set { name } => {
            check_secret_name(&name)?;
            let master_key = data_dir.master_key(&store).await?;
            let value = read_value(&name)?;
            let version = store_secret(&store, &master_key, &name, &value).await?;
            let detail = format!("version {version}");
            events::record(&store, "secret.set", &name, Some(detail)).await?;
            eprintln!("Stored secret {name:?} version {version}. Running gateways use it within a second.");
        }
        SecretCommand::List { json } => list(&store, json).await?,
        SecretCommand::Rotate {
            name,
            command: true,
        } => {
            check_secret_name(&name)?;
            let config = data_dir.load_config()?;
            let master_key = data_dir.master_key(&store).await?;
            let state = super::provider::config_state(config)?;
            let actor = events::operator();
            let version =
                super::provider::rotate(&store, &master_key, &state, &name, &actor).await?;
            eprintln!(
                "Rotated secret {name:?} to version {version} with its rotation command; the new key passed its verify request. Running gateways use it within a second."
            );
        }
        SecretCommand::Rotate { name, .. } => {
            check_secret_name(&name)?;
            let Some(current) = store.latest_secret(&name).await? else {
                bail!("secret {name:?} is not in the vault; nothing was stored. Use `castellan secret set {name}` to store a new secret");
            };
            let master_key = data_dir.master_key(&store).await?;
            let value = read_value(&name)?;
            let version = store_secret(&store, &master_key, &name, &value).await?;
            let detail = format!("version {version}");
            events::record(&store, "secret.rotate", &name, Some(detail)).await?;
            eprintln!(
                "Rotated secret {name:?} from version {} to version {version}. Running gateways use it within a second; `castellan secret rollback {name}` restores the previous value.",
                current.version
            );
        }
        SecretCommand::Rollback { name } => {
            check_secret_name(&name)?;
            let grace = data_dir.load_config()?.gateway.rotation_grace;
            let master_key = data_dir.master_key(&store).await?;
            let (restored, version) = rollback(&store, &master_key, &name, grace).await?;
            let detail = format!("version {version}, restoring version {restored}");
            events::record(&store, "secret.rollback", &name, Some(detail)).await?;
            eprintln!("Restored version {restored} of secret {name:?} as version {version}. Running gateways use it within a second.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check_secret_name(name: &str) -> Result<()> {
    if let Err(problem) = castellan_model::check_name(name) {
        bail!("invalid secret name {name:?}: {problem}");
    }
    Ok(())
}

/// Stores the value of the version before the current one as a new version.
/// The vault binds name and version into the ciphertext, so the old value is
/// opened and sealed again under the new version number.
///
/// Returns the restored and the new version numbers. Fails when the current
/// version is older than `grace`, because by then the previous credential
/// should have been revoked at the provider.
async fn rollback(
    store: &Store,
    master_key: &MasterKey,
    name: &str,
    grace: Duration,
) -> Result<(u32, u32)> {
    let Some(current) = store.latest_secret(name).await? else {
        bail!("secret {name:?} is not in the vault; nothing to roll back");
    };
    let age_ms = now_ms().saturating_sub(current.created_ms);
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    if age_ms > grace_ms {
        bail!(
            "version {} of secret {name:?} was stored {} ago, longer than rotation_grace ({}); rollback is rejected because the previous credential should already be revoked at the provider. Store a working value with `castellan secret rotate {name}`, or raise [gateway] rotation_grace",
            current.version,
            humantime::format_duration(Duration::from_secs(u64::try_from(age_ms / 1000).unwrap_or(0))),
            humantime::format_duration(grace),
        );
    }
    let previous_version = current.version.saturating_sub(1);
    let previous = match previous_version {
        0 => None,
        version => store.secret_version(name, version).await?,
    };
    let Some(previous) = previous else {
        bail!(
            "secret {name:?} has no version before version {}; nothing to roll back",
            current.version
        );
    };
    let sealed = SealedSecret {
        name: previous.name,
        version: previous.version,
        wrapped_key: previous.wrapped_key,
        ciphertext: previous.ciphertext,
    };
    let value = castellan_vault::open(master_key, &sealed)
        .with_context(|| format!("cannot open version {previous_version} of secret {name:?}"))?;
    let version = store_secret(store, master_key, name, value.expose()).await?;
    Ok((previous_version, version))
}

/// Reads a secret value from a no-echo prompt, or from stdin when it is not
/// a terminal. Never from argv or the environment, where other processes
/// could read it.
fn read_value(name: &str) -> Result<Zeroizing<Vec<u8>>> {
    let mut value = Zeroizing::new(Vec::new());
    if std::io::stdin().is_terminal() {
        let typed = Zeroizing::new(
            rpassword::prompt_password(format!("Value for {name} (input hidden): "))
                .context("cannot read the value from the terminal")?,
        );
        value.extend_from_slice(typed.as_bytes());
    } else {
        std::io::stdin()
            .take(MAX_SECRET_BYTES as u64 + 1)
            .read_to_end(&mut value)
            .context("cannot read the value from stdin")?;
        // One trailing newline comes from `echo` or a heredoc, not the secret.
        if value.ends_with(b"\n") {
            value.pop();
            if value.ends_with(b"\r") {
                value.pop();
            }
        }
    }
    if value.is_empty() {
        bail!("the value for {name:?} is empty; nothing was stored");
    }
    if value.len() > MAX_SECRET_BYTES {
        bail!("the value for {name:?} is larger than {MAX_SECRET_BYTES} bytes; nothing was stored");
    }
    Ok(value)
}

/// Seals `value` as the next version of `name` and stores it.
pub async fn store_secret(
    store: &Store,
    master_key: &MasterKey,
    name: &str,
    value: &[u8],
) -> Result<u32> {
    let version = store.next_secret_version(name).await?;
    let sealed = castellan_vault::seal(master_key, name, version, value)?;
    store
        .insert_secret_version(&SealedRow {
            name: name.to_string(),
            version,
            created_ms: now_ms(),
            wrapped_key: sealed.wrapped_key,
            ciphertext: sealed.ciphertext,
        })
        .await?;
    Ok(version)
}

async fn list(store: &Store, json: bool) -> Result<()> {
    let secrets = store.list_secrets().await?;
    let now = now_ms();
    if json {
        for secret in &secrets {
            let line = serde_json::json!({
                "name": secret.name,
                "version": secret.latest_version,
                "versions": secret.versions,
                "created_ms": secret.created_ms,
                "first_created_ms": secret.first_created_ms,
            });
            println!("{}", crate::output::json_line(&line)?);
        }
        return Ok(());
    }
    let mut table = output::table(&["name", "version", "versions", "created", "age"]);
    for secret in &secrets {
        table.add_row(vec![
            printable(&secret.name).into_owned(),
            secret.latest_version.to_string(),
            secret.versions.to_string(),
            output::time(secret.created_ms),
            output::age(secret.created_ms, now),
        ]);
    }
    println!("{table}");
    Ok(())
}
