//! Upstream key rotation through an operator's command.
//!
//! A connection's `[connections.NAME.rotation]` table names a program that
//! prints a new key on stdout. Castellan runs it, sends the connection's
//! `verify` request to the upstream with the new key, and stores the key as
//! the next version only when the upstream responds with a 2xx status. After the rotation
//! grace period, `revoke_command` runs once for each older version not yet
//! revoked, oldest first, with that key on stdin. Every
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let Some((newest_old, at)) = parse_pending(&pending) else {
            continue;
        };
        if now_ms() < at {
            continue;
        }
        let done_key = revoked_key(secret);
        let mut revoked: u32 = match store.get_meta(&done_key).await? {
            Some(text) => text.parse().unwrap_or(0),
            None => 0,
        };
        // Every older version gets its own revoke, oldest first; a failure
        // stops here so the next check retries from the same version.
        for version in revoked + 1..=newest_old {
            let Some(row) = store.secret_version(secret, version).await? else {
                revoked = version;
                store.set_meta(&done_key, &revoked.to_string()).await?;
                continue;
            };
            let sealed = SealedSecret {
                name: row.name,
                version: row.version,
                wrapped_key: row.wrapped_key,
                ciphertext: row.ciphertext,
            };
            let old = castellan_vault::open(master_key, &sealed)?;
            if let Err(error) = run_command(revoke, Some(old.expose()), provider.timeout).await {
                let reason = format!("{error:#}");
                let detail = format!("version {version}: {reason}");
                record(store, actor, "secret.revoke_failed", secret, detail).await?;
                alert(store, secret, &format!("revoking version {version} of {secret:?} failed; it may still work upstream: {reason}")).await?;
                break;
            }
            revoked = version;
            store.set_meta(&done_key, &revoked.to_string()).await?;
            let detail = format!(
                "version {version} revoked by the revoke command of connection {connection:?}"
            );
            record(store, actor, "secret.revoke", secret, detail).await?;
        }
    }
    Ok(())
}

/// Meta key of the newest version whose revocation is due, with its time.
fn revoke_key(secret: &str) -> String {
    format!("rotation.revoke.{secret}")
}

/// Meta key of the newest version already revoked.
fn revoked_key(secret: &str) -> String {
    format!("rotation.revoked.{secret}")
}

/// Parses `VERSION@UNIX_MS`; anything else means nothing is pending.
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
        .process_group(0)
        .kill_on_drop(true);
    for name in PASSED_ENVIRONMENT {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let mut child = command.spawn().with_context(|| {
        format!("cannot start {program:?}; check the path and that it is executable")
    })?;
    let group = child.id();
    let deadline = tokio::time::Instant::now() + timeout;
    let result = collect(&mut child, stdin, deadline).await;
    if !matches!(result, Ok(Collected::Exited { .. })) {
        kill_group(group).await;
    }
    match result? {
        Collected::TimedOut => {
            bail!("{program:?} did not finish within {timeout:?} and was killed with its child processes")
        }
        Collected::TooLong => {
            bail!("{program:?} printed more than {MAX_OUTPUT_BYTES} bytes and was killed; it must print only the key")
        }
        Collected::Exited {
            status,
            stdout,
            stderr_bytes,
        } => {
            if !status.success() {
                bail!(
                    "{program:?} exited with {status} (its stderr had {stderr_bytes} bytes, not shown because it may contain keys)"
                );
            }
            if stdout.is_empty() && stderr_bytes > 0 {
                bail!(
                    "{program:?} printed nothing on stdout and {stderr_bytes} bytes on stderr; it must print the key on stdout"
                );
            }
            Ok(stdout)
        }
    }
}

/// The outcome of running a command.
enum Collected {
    Exited {
        status: std::process::ExitStatus,
        stdout: Zeroizing<Vec<u8>>,
        stderr_bytes: usize,
    },
    TimedOut,
    TooLong,
}

/// Feeds `stdin`, reads at most [`MAX_OUTPUT_BYTES`] of stdout, counts
/// stderr and waits for the exit, all before `deadline`.
async fn collect(
    child: &mut tokio::process::Child,
    stdin: Option<&[u8]>,
    deadline: tokio::time::Instant,
) -> Result<Collected> {
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = Zeroizing::new(input.to_vec());
        // A command that exits without reading its stdin is not an error.
        let _ = tokio::time::timeout_at(deadline, pipe.write_all(&input)).await;
        drop(pipe);
    }
    let stdout = child
        .stdout
        .take()
        .context("the command's stdout is not piped")?;
    let stderr = child
        .stderr
        .take()
        .context("the command's stderr is not piped")?;
    let stderr_bytes = tokio::spawn(count_bytes(stderr));
    let mut output = Zeroizing::new(Vec::new());
    let limit = u64::try_from(MAX_OUTPUT_BYTES + 1).unwrap_or(u64::MAX);
    let mut limited = stdout.take(limit);
    let read = limited.read_to_end(&mut output);
    match tokio::time::timeout_at(deadline, read).await {
        Err(_) => return Ok(Collected::TimedOut),
        Ok(result) => {
            result.context("cannot read the command's stdout")?;
        }
    }
    if output.len() > MAX_OUTPUT_BYTES {
        return Ok(Collected::TooLong);
    }
    let Ok(status) = tokio::time::timeout_at(deadline, child.wait()).await else {
        return Ok(Collected::TimedOut);
    };
    let status = status.context("cannot wait for the command")?;
    // A child process that keeps stderr open must not hold the caller.
    let stderr_bytes = match tokio::time::timeout_at(deadline, stderr_bytes).await {
        Ok(Ok(count)) => count,
        _ => 0,
    };
    Ok(Collected::Exited {
        status,
        stdout: output,
        stderr_bytes,
    })
}

/// Reads `stream` to its end and returns only how many bytes it had.
async fn count_bytes(mut stream: tokio::process::ChildStderr) -> usize {
    let mut chunk = [0_u8; 4096];
    let mut total = 0;
    while let Ok(read) = stream.read(&mut chunk).await {
        if read == 0 {
            break;
        }
        total += read;
    }
    total
}

/// Kills the process group the command leads, so programs it started die
/// with it.
async fn kill_group(group: Option<u32>) {
    let Some(group) = group else { return };
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if !killed.is_ok_and(|status| status.success()) {
        tracing::warn!(
            group,
            "cannot kill the rotation command's process group; its children may still run"
        );
    }
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
        assert_eq!(parse_pending("none"), None);
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

        let flood = run_command(&argv("exec yes sk-flood"), None, timeout)
            .await
            .unwrap_err();
        assert!(flood.to_string().contains("printed more than"), "{flood}");

        let quiet = run_command(&argv("echo sk-only-on-stderr >&2"), None, timeout)
            .await
            .unwrap_err();
        assert!(quiet.to_string().contains("on stderr"), "{quiet}");
        assert!(!quiet.to_string().contains("sk-only"), "{quiet}");

        let missing = run_command(&["/nonexistent/key-tool".to_owned()], None, timeout)
            .await
            .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/key-tool"),
            "{missing}"
        );
    }

    #[tokio::test]
    async fn timed_out_command_takes_its_children_along() {
        let marker = tempfile::tempdir().expect("temporary directory");
        let pid_file = marker.path().join("child.pid");
        let script = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), script];
        let error = run_command(&argv, None, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("did not finish"), "{error}");
        let child = std::fs::read_to_string(&pid_file).expect("the script wrote its child's pid");
        let stat_path = format!("/proc/{}/stat", child.trim());
        // SIGKILL lands asynchronously, and a killed child may stay a zombie
        // for a moment, so wait up to two seconds for it to stop running.
        let mut stat = String::new();
        for _ in 0..200 {
            stat = std::fs::read_to_string(&stat_path).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the command's child still runs: {stat}");
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
