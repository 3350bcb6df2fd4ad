//! `castellan init`: create a data directory.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use castellan_store::Store;
use castellan_vault::{KdfParams, MasterKey};

use crate::cli::InitArgs;
use crate::data_dir::{exists, DataDir, META_KDF, META_KEY_CHECK};
use crate::output::printable;

/// The configuration written by `castellan init`.
pub const EXAMPLE_CONFIG: &str = include_str!("../../castellan.example.toml");

pub async fn run(data_dir: &DataDir, args: &InitArgs) -> Result<ExitCode> {
    let created_dir = prepare_dir(data_dir)?;
    match create(data_dir, args.passphrase).await {
        Ok(()) => {
            println!("Created {}", shown(&data_dir.root));
            if args.passphrase {
                println!("  vault: master key derived from your passphrase (Argon2id)");
            } else {
                println!(
                    "  vault: master key in {} (mode 0600; back it up, it cannot be recovered)",
                    shown(&data_dir.key_path())
                );
            }
            println!("  configuration: {}", shown(&data_dir.config));
            let flag = data_dir_flag(data_dir);
            println!("Next: edit the configuration, then run `castellan{flag} secret set NAME` and `castellan{flag} serve`.");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            cleanup(data_dir, created_dir);
            Err(error.context("initialization failed; nothing was left behind"))
        }
    }
}

/// Returns `path` as text that is safe to print.
fn shown(path: &std::path::Path) -> String {
    printable(&path.display().to_string()).into_owned()
}

/// Returns ` --data-dir DIR` unless `DIR` is the default, for the commands
/// printed as next steps.
fn data_dir_flag(data_dir: &DataDir) -> String {
    if data_dir.root == std::path::Path::new(crate::cli::DEFAULT_DATA_DIR) {
        String::new()
    } else {
        format!(" --data-dir {}", shown(&data_dir.root))
    }
}

/// Creates the directory (mode 0700) unless it exists empty; returns whether
/// this call created it.
fn prepare_dir(data_dir: &DataDir) -> Result<bool> {
    let root = &data_dir.root;
    if exists(root) {
        let empty = std::fs::read_dir(root)
            .with_context(|| format!("cannot read {}", root.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "data directory {} already exists and is not empty; nothing was changed. Choose another --data-dir or remove it",
                root.display()
            );
        }
        return Ok(false);
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("cannot create data directory {}", root.display()))?;
    Ok(true)
}

/// Creates the store, the master key and, unless a configuration already
/// exists, the example configuration.
pub async fn create(data_dir: &DataDir, passphrase: bool) -> Result<()> {
    let store = Store::create(&data_dir.store_path()).await?;
    let key = if passphrase {
        let secret = data_dir.read_passphrase(true)?;
        let params = KdfParams::recommended();
        let key = MasterKey::derive(&secret, &params)?;
        store
            .set_meta(META_KDF, &serde_json::to_string(&params)?)
            .await?;
        key
    } else {
        MasterKey::create_file(&data_dir.key_path())?
    };
    store
        .set_meta(META_KEY_CHECK, &serde_json::to_string(&key.key_check())?)
        .await?;
    store.close().await;
    if !exists(&data_dir.config) {
        write_new(&data_dir.config, EXAMPLE_CONFIG)?;
    }
    Ok(())
}

/// Writes a file that must not exist yet.
pub fn write_new(path: &std::path::Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn cleanup(data_dir: &DataDir, created_dir: bool) {
    if created_dir {
        let _ = std::fs::remove_dir_all(&data_dir.root);
        return;
    }
    for path in [
        data_dir.store_path(),
        data_dir.key_path(),
        data_dir.config.clone(),
    ] {
        if path.starts_with(&data_dir.root) {
            let _ = std::fs::remove_file(&path);
        }
    }
    for suffix in ["-wal", "-shm"] {
        let mut name = data_dir.store_path().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}
