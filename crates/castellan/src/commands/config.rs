//! `castellan config check`.

use std::process::ExitCode;

use anyhow::Result;
use castellan_model::Config;

use crate::cli::ConfigCommand;
use crate::data_dir::DataDir;
use crate::output::{printable, printable_lines};

pub async fn run(data_dir: &DataDir, command: ConfigCommand) -> Result<ExitCode> {
    let ConfigCommand::Check = command;
    if data_dir.config.starts_with(&data_dir.root) {
        data_dir.require_root()?;
    }
    let config = match Config::load(&data_dir.config) {
        Ok(config) => config,
        Err(error) => {
            eprint!("{}", printable_lines(&error.to_string()));
            return Ok(ExitCode::from(1));
        }
    };
    if let Err(error) = castellan_policy::Policy::compile(&config) {
        eprintln!(
            "error: the roles do not compile to a policy: {}",
            printable_lines(&error.to_string())
        );
        return Ok(ExitCode::from(1));
    }
    println!(
        "{}: valid ({}, {}, {})",
        printable(&data_dir.config.display().to_string()),
        count(config.connections.len(), "connection"),
        count(config.roles.len(), "role"),
        count(config.agents.len(), "agent")
    );
    warn_missing_secrets(data_dir, &config).await;
    Ok(ExitCode::SUCCESS)
}

/// Writes `n` and `noun`, with a plural `s` unless `n` is one.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Warns about secrets the configuration names but the vault lacks. Calls
/// to those connections get 503 until the secret is set, which is allowed
/// so that configuration and secrets can be rolled out in either order.
async fn warn_missing_secrets(data_dir: &DataDir, config: &Config) {
    let Ok(store) = data_dir.open_store().await else {
        eprintln!(
            "note: no store in {}, so secrets were not checked",
            printable(&data_dir.root.display().to_string())
        );
        return;
    };
    let Ok(stored) = store.list_secrets().await else {
        eprintln!("note: cannot list the vault's secrets, so they were not checked");
        return;
    };
    for (name, connection) in &config.connections {
        if !stored.iter().any(|secret| secret.name == connection.secret) {
            eprintln!(
                "warning: connection {name:?} uses secret {:?}, which is not in the vault; calls to it get 503 until `castellan secret set {}`",
                connection.secret,
                printable(&connection.secret)
            );
        }
    }
    store.close().await;
}
