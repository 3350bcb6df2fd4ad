//! Upstream key rotation through an operator's command.
//!
//! A connection's `[connections.NAME.rotation]` table names a program that
//! prints a new key on stdout. Castellan runs it, sends the connection's
//! `verify` request to the upstream with the new key, and stores the key as
//! the next version only when the upstream responds with a 2xx status. After the rotation
//! grace period, `revoke_command` receives the old key on stdin. Every
//! outcome is recorded as an event; a failure keeps the current version and
//! opens a `rotation_failed` alert.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use castellan_gateway::{probe, ConfigState};
use castellan_model::{AlertKind, Config, RotationProvider, Severity};
use castellan_store::{now_ms, Event, NewSignal, Store};
use castellan_vault::{MasterKey, SealedSecret};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use zeroize::Zeroizing;

use super::secret::store_secret;

/// Maximum stdout accepted from the key command.
const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Environment variables passed to the commands; everything else of
/// castellan's environment stays out of the operator's program.
const PASSED_ENVIRONMENT: [&str; 4] = ["PATH", "HOME", "LANG", "TMPDIR"];

/// Returns the connection whose rotation command provides `secret`: the
/// first by name among those that use it and have one.
pub fn provider_for<'a>(
    config: &'a Config,
    secret: &str,
) -> Option<(&'a str, &'a RotationProvider)> {
    config
        .connections
        .values()
        .filter(|connection| connection.secret == secret)
        .find_map(|connection| {
            connection
                .rotation
                .as_ref()
                .map(|provider| (connection.name.as_str(), provider))
        })
}

/// Runs the rotation command of `secret`, verifies the new key and stores
/// it. Returns the new version. A failure is recorded and alerted before
/// it is returned.
pub async fn rotate(
    store: &Store,
    master_key: &MasterKey,
    state: &ConfigState,
    secret: &str,
    actor: &str,
) -> Result<u32> {
    let outcome = try_rotate(store, master_key, state, secret).await;
    match &outcome {
        Ok((version, detail)) => {
            record(store, actor, "secret.rotate", secret, detail.clone()).await?;
            tracing::info!(secret, version, "rotated by the rotation command");
        }
        Err(error) => {
            let reason = format!("{error:#}");
            record(store, actor, "secret.rotate_failed", secret, reason.clone()).await?;
            alert(
                store,
                secret,
                &format!("rotation of {secret:?} failed and the current version stays: {reason}"),
            )
            .await?;
            tracing::error!(secret, error = %reason, "rotation by command failed; the current version stays");
        }
    }
    outcome.map(|(version, _)| version)
}

async fn try_rotate(
    store: &Store,
    master_key: &MasterKey,
    state: &ConfigState,
    secret: &str,
) -> Result<(u32, String)> {
    let config = &state.config;
    let (connection, provider) = provider_for(config, secret).ok_or_else(|| {
        anyhow!(
            "no connection that uses secret {secret:?} has a [connections.NAME.rotation] command"
        )
    })?;
    let current = current_value(store, master_key, secret).await?;
    let output = run_command(&provider.command, None, provider.timeout)
        .await
        .with_context(|| format!("the rotation command of connection {connection:?} failed"))?;
    let key = parse_key(&output, current.as_deref().map(Vec::as_slice))?;

    let status = probe(
        state,
        connection,
        key.as_bytes(),
        provider
            .verify_method
            .parse()
            .context("invalid verify method")?,
        &provider.verify_path,
        provider.timeout,
    )
    .await?;
    if !status.is_success() {
        bail!(
            "the upstream responded {status} to `{} {}` with the new key; check the key command's output and the verify request",
            provider.verify_method,
            provider.verify_path
        );
    }
    let version = store_secret(store, master_key, secret, key.as_bytes()).await?;
    if provider.revoke_command.is_some() {
        if let Some(old) = version.checked_sub(1).filter(|old| *old >= 1) {
            let grace =
                i64::try_from(config.gateway.rotation_grace.as_millis()).unwrap_or(i64::MAX);
            let at = now_ms().saturating_add(grace);
            store
                .set_meta(&revoke_key(secret), &format!("{old}@{at}"))
                .await?;
        }
    }
    let detail = format!(
        "version {version} from the rotation command of connection {connection:?}, verified with `{} {}`: {status}",
        provider.verify_method, provider.verify_path
    );
    Ok((version, detail))
}

/// Runs the revoke commands whose grace period has ended, each with the
/// old key on stdin. A failure is recorded, alerted and retried at the
/// next check.
pub async fn revoke_due(
    store: &Store,
    master_key: &MasterKey,
    config: &Config,
    actor: &str,
) -> Result<()> {
    let mut secrets: Vec<&str> = config.secret_names();
    secrets.dedup();
    for secret in secrets {
        let Some((connection, provider)) = provider_for(config, secret) else {
            continue;
        };
        let Some(revoke) = &provider.revoke_command else {
            continue;
        };
        let key = revoke_key(secret);
        let Some(pending) = store.get_meta(&key).await? else {
            continue;
        };
        let Some((version, at)) = parse_pending(&pending) else {
            continue;
        };
        if now_ms() < at {
            continue;
        }
        let Some(row) = store.secret_version(secret, version).await? else {
            store.set_meta(&key, "done").await?;
            continue;
        };
        let sealed = SealedSecret {
            name: row.name,
            version: row.version,
            wrapped_key: row.wrapped_key,
            ciphertext: row.ciphertext,
        };
        let old = castellan_vault::open(master_key, &sealed)?;
        match run_command(revoke, Some(old.expose()), provider.timeout).await {
            Ok(_) => {
                store.set_meta(&key, "done").await?;
                let detail = format!(
                    "version {version} revoked by the revoke command of connection {connection:?}"
                );
                record(store, actor, "secret.revoke", secret, detail).await?;
            }
            Err(error) => {
                let reason = format!("{error:#}");
                record(store, actor, "secret.revoke_failed", secret, reason.clone()).await?;
                alert(store, secret, &format!("revoking version {version} of {secret:?} failed; it may still work upstream: {reason}")).await?;
            }
        }
    }
    Ok(())
}

fn revoke_key(secret: &str) -> String {
    format!("rotation.revoke.{secret}")
}

/// Parses `VERSION@UNIX_MS`; `done` and anything else mean nothing is
/// pending.
fn parse_pending(text: &str) -> Option<(u32, i64)> {
    let (version, at) = text.split_once('@')?;
    Some((version.parse().ok()?, at.parse().ok()?))
}

async fn current_value(
    store: &Store,
    master_key: &MasterKey,
    secret: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let Some(row) = store.latest_secret(secret).await? else {
        return Ok(None);
    };
    let sealed = SealedSecret {
        name: row.name,
        version: row.version,
        wrapped_key: row.wrapped_key,
        ciphertext: row.ciphertext,
    };
    let value = castellan_vault::open(master_key, &sealed)?;
    Ok(Some(Zeroizing::new(value.expose().to_vec())))
}

/// Takes the key from the command's stdout: one non-empty line, different
/// from the current key.
fn parse_key(output: &[u8], current: Option<&[u8]>) -> Result<Zeroizing<String>> {
    let text = std::str::from_utf8(output).map_err(|_| {
        anyhow!("the rotation command printed bytes that are not UTF-8; print the key as text")
    })?;
    let key = text.trim();
    if key.is_empty() {
        bail!("the rotation command printed nothing; it must print the new key on stdout");
    }
    if key.lines().count() > 1 {
        bail!("the rotation command printed several lines; it must print only the new key");
    }
    if current == Some(key.as_bytes()) {
        bail!("the rotation command printed the current key; it must create a new one");
    }
    Ok(Zeroizing::new(key.to_owned()))
}

/// Runs `argv` with `stdin` and returns its stdout. Its stderr is reported
/// only by size, because an operator's program may print keys there.
async fn run_command(
    argv: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>> {
    let (program, arguments) = argv
        .split_first()
        .ok_or_else(|| anyhow!("the command is empty"))?;
    let mut command = Command::new(program);
    command
        .args(arguments)
        .env_clear()
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in PASSED_ENVIRONMENT {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let mut child = command.spawn().with_context(|| {
        format!("cannot start {program:?}; check the path and that it is executable")
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = Zeroizing::new(input.to_vec());
        // A command that exits without reading its stdin is not an error.
        let _ = pipe.write_all(&input).await;
        drop(pipe);
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("{program:?} did not finish within {timeout:?} and was killed"))?
        .with_context(|| format!("cannot wait for {program:?}"))?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        bail!(
            "{program:?} exited with {} (its stderr had {} bytes, not shown because it may contain keys)",
            output.status,
            output.stderr.len()
        );
    }
    if stdout.len() > MAX_OUTPUT_BYTES {
        bail!("{program:?} printed more than {MAX_OUTPUT_BYTES} bytes; it must print only the key");
    }
    Ok(stdout)
}

async fn record(
    store: &Store,
    actor: &str,
    action: &str,
    target: &str,
    detail: String,
) -> Result<()> {
    store
        .record_event(&Event {
            seq: None,
            time_ms: now_ms(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: Some(detail),
        })
        .await?;
    Ok(())
}

async fn alert(store: &Store, secret: &str, summary: &str) -> Result<()> {
    store
        .raise_alert(&NewSignal {
            kind: AlertKind::RotationFailed,
            severity: Severity::High,
            agent: None,
            subject: secret,
            source: None,
            seq: 0,
            time_ms: now_ms(),
            summary,
        })
        .await?;
    Ok(())
}

/// Builds the configuration state the probe needs, for the CLI, which has
/// no running gateway.
pub fn config_state(config: Config) -> Result<Arc<ConfigState>> {
    Ok(Arc::new(ConfigState::activate(config, None)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_output_rules() {
        assert_eq!(parse_key(b"sk-new\n", None).unwrap().as_str(), "sk-new");
        assert!(parse_key(b"  \n", None).is_err());
        assert!(parse_key(b"one\ntwo\n", None).is_err());
        assert!(parse_key(b"\xff\xfe", None).is_err());
        let error = parse_key(b"sk-same\n", Some(b"sk-same"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("current key"), "{error}");
        assert!(!error.contains("sk-same"), "{error}");
    }

    #[test]
    fn pending_revocations_parse() {
        assert_eq!(
            parse_pending("3@1700000000000"),
            Some((3, 1_700_000_000_000))
        );
        assert_eq!(parse_pending("done"), None);
        assert_eq!(parse_pending("x@1"), None);
    }

    #[tokio::test]
    async fn command_output_and_failures() {
        let argv = |script: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let timeout = Duration::from_secs(5);
        let output = run_command(&argv("echo sk-fresh"), None, timeout)
            .await
            .unwrap();
        assert_eq!(output.as_slice(), b"sk-fresh\n");

        let echoed = run_command(&argv("cat"), Some(b"sk-old"), timeout)
            .await
            .unwrap();
        assert_eq!(echoed.as_slice(), b"sk-old");

        let error = format!(
            "{:#}",
            run_command(&argv("echo sk-leak >&2; exit 3"), None, timeout)
                .await
                .unwrap_err()
        );
        assert!(error.contains("exit status: 3"), "{error}");
        assert!(!error.contains("sk-leak"), "{error}");

        let slow = run_command(&argv("sleep 5"), None, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(slow.to_string().contains("did not finish"), "{slow}");

        let missing = run_command(&["/nonexistent/key-tool".to_owned()], None, timeout)
            .await
            .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/key-tool"),
            "{missing}"
        );
    }

    #[tokio::test]
    async fn environment_is_not_passed() {
        std::env::set_var("CASTELLAN_PROVIDER_TEST_SECRET", "do-not-pass");
        let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), "env".to_owned()];
        let output = run_command(&argv, None, Duration::from_secs(5))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&output);
        assert!(!text.contains("do-not-pass"), "{text}");
    }
}
