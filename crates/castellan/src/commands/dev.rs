//! `castellan serve --dev`: a complete gateway in a throwaway data
//! directory, in front of a built-in echo upstream, for a first run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use super::init::{create, write_new};
use super::secret::store_secret;
use super::serve::run_gateway;
use crate::cli::ServeArgs;
use crate::data_dir::DataDir;
use crate::output::printable;

const DEV_CONFIG: &str = r#"# Development configuration written by `castellan serve --dev`.
[connections.echo]
# Castellan's built-in echo upstream on loopback: it answers with what it received.
upstream = "http://ECHO_ADDRESS"
allow_private = true
auth = { kind = "bearer" }
secret = "echo-api-key"
# Request bodies that carry a private key or a provider key get 403.
dlp = "block"

[roles.echo-user]
allow = [{ connection = "echo", methods = ["GET", "POST"], paths = ["/**"] }]
deny = [{ connection = "echo", methods = ["DELETE"] }]

[agents.dev-agent]
owner = "you@example.com"
description = "Example agent of development mode"
roles = ["echo-user"]
networks = ["127.0.0.0/8", "::1"]
"#;

pub async fn run(args: &ServeArgs) -> Result<ExitCode> {
    let temp = tempfile::Builder::new()
        .prefix("castellan-dev-")
        .tempdir()
        .context("cannot create a temporary data directory")?;
    let data_dir = DataDir {
        root: temp.path().to_path_buf(),
        config: temp.path().join(crate::data_dir::CONFIG_FILE),
        passphrase_file: None,
    };
    let echo = castellan_gateway::echo::spawn_echo_upstream()
        .await
        .context("cannot start the built-in echo upstream")?;
    write_new(
        &data_dir.config,
        &DEV_CONFIG.replace("ECHO_ADDRESS", &echo.to_string()),
    )?;
    create(&data_dir, false).await?;

    let store = data_dir.open_store().await?;
    let master_key = data_dir.master_key(&store).await?;
    // A random upstream key that no output ever shows: the echo upstream
    // receives it, and the gateway masks it in the echoed response.
    let upstream_key = format!("dev-upstream-key-{:032x}", rand::random::<u128>());
    store_secret(&store, &master_key, "echo-api-key", upstream_key.as_bytes()).await?;
    let (token, _) =
        super::agent::issue_token(&store, "dev-agent", Some(Duration::from_secs(86_400))).await?;
    store.close().await;

    let token = token.expose().to_string();
    let result = run_gateway(&data_dir, args, |agents, _admin| {
        print_welcome(&data_dir, echo, agents, &token);
    })
    .await;
    remove_data_dir(temp.keep()).await;
    result
}

/// Deletes the throwaway data directory. A removal that races with SQLite
/// deleting its `-wal` and `-shm` files as the store closes can fail on a
/// directory that is not empty yet, so it is tried a few times.
async fn remove_data_dir(path: PathBuf) {
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir_all(&path) {
            Ok(()) => return,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
            Err(error) if attempts >= 20 => {
                tracing::warn!(path = %path.display(), %error, "cannot delete the development data directory; delete it by hand");
                return;
            }
            Err(_) => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn print_welcome(data_dir: &DataDir, echo: SocketAddr, agents: SocketAddr, token: &str) {
    println!();
    println!("Castellan development mode");
    println!(
        "  data directory  {} (throwaway, deleted on exit)",
        printable(&data_dir.root.display().to_string())
    );
    println!(
        "  configuration   {}",
        printable(&data_dir.config.display().to_string())
    );
    println!("  echo upstream   http://{echo} (built in, development only: it answers with what it received)");
    println!("  agent           dev-agent, role echo-user: GET and POST allowed, DELETE denied");
    println!("  agent token     {token}");
    println!();
    println!("An allowed call; the echo shows the injected upstream key, masked on its way back:");
    println!("  curl -s -H 'Authorization: Bearer {token}' http://{agents}/echo/hello");
    println!("A denied call (the role denies DELETE):");
    println!("  curl -s -X DELETE -H 'Authorization: Bearer {token}' http://{agents}/echo/hello");
    println!("A call without a token:");
    println!("  curl -s http://{agents}/echo/hello");
    println!();
    println!("Stop with Ctrl-C.");
}
