//! The data directory: where the store, the vault key and the
//! configuration live, and how each is opened.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use castellan_store::Store;
use castellan_vault::{KdfParams, KeyCheck, MasterKey};
use secrecy::SecretString;

use crate::cli::Cli;

pub const STORE_FILE: &str = "castellan.db";
pub const KEY_FILE: &str = "master.key";
pub const CONFIG_FILE: &str = "castellan.toml";

/// Store metadata keys of the vault.
pub const META_KEY_CHECK: &str = "vault.key_check";
pub const META_KDF: &str = "vault.kdf";

/// Paths of one data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
    pub config: PathBuf,
    pub passphrase_file: Option<PathBuf>,
}

impl DataDir {
    pub fn from_cli(cli: &Cli) -> Self {
        DataDir {
            root: cli.data_dir.clone(),
            config: cli
                .config
                .clone()
                .unwrap_or_else(|| cli.data_dir.join(CONFIG_FILE)),
            passphrase_file: cli.passphrase_file.clone(),
        }
    }

    pub fn store_path(&self) -> PathBuf {
        self.root.join(STORE_FILE)
    }

    pub fn key_path(&self) -> PathBuf {
        self.root.join(KEY_FILE)
    }

    /// Fails with a hint when the data directory does not exist.
    pub fn require_root(&self) -> Result<()> {
        if !self.root.is_dir() {
            bail!(
                "data directory {} does not exist; run `castellan init --data-dir {}` or pass --data-dir",
                self.root.display(),
                self.root.display()
            );
        }
        Ok(())
    }

    /// Loads and validates the configuration. When it lives in the data
    /// directory and that is missing, the error reports the missing directory.
    pub fn load_config(&self) -> Result<castellan_model::Config> {
        if self.config.starts_with(&self.root) {
            self.require_root()?;
        }
        Ok(castellan_model::Config::load(&self.config)?)
    }

    /// Opens the store, with a hint when the directory is not initialized.
    pub async fn open_store(&self) -> Result<Store> {
        self.require_root()?;
        Store::open(&self.store_path())
            .await
            .with_context(|| format!("cannot open the store in {}", self.root.display()))
    }

    /// Loads the master key (from the key file, or from the passphrase when
    /// the directory uses one) and checks it against the stored key check.
    pub async fn master_key(&self, store: &Store) -> Result<Arc<MasterKey>> {
        let key = match store.get_meta(META_KDF).await? {
            Some(params) => {
                let params: KdfParams = serde_json::from_str(&params)
                    .context("the stored passphrase parameters are corrupt")?;
                let passphrase = self.read_passphrase(false)?;
                MasterKey::derive(&passphrase, &params)?
            }
            None => MasterKey::load_file(&self.key_path())?,
        };
        let check = store.get_meta(META_KEY_CHECK).await?.with_context(|| {
            format!(
                "the store in {} has no vault key check; the data directory was not fully initialized: remove it and run `castellan init` again",
                self.root.display()
            )
        })?;
        let check: KeyCheck =
            serde_json::from_str(&check).context("the stored vault key check is corrupt")?;
        key.verify(&check).with_context(|| {
            format!(
                "the master key does not open the vault in {}",
                self.root.display()
            )
        })?;
        Ok(Arc::new(key))
    }

    /// Reads the vault passphrase from `--passphrase-file` or a prompt.
    pub fn read_passphrase(&self, confirm: bool) -> Result<SecretString> {
        if let Some(path) = &self.passphrase_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read passphrase file {}", path.display()))?;
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            return Ok(SecretString::from(text));
        }
        let first = rpassword::prompt_password("Vault passphrase: ")
            .context("cannot read the passphrase from the terminal; pass --passphrase-file")?;
        if confirm {
            let second = rpassword::prompt_password("Repeat the passphrase: ")
                .context("cannot read the passphrase from the terminal")?;
            if first != second {
                bail!("the passphrases differ; nothing was created");
            }
        }
        Ok(SecretString::from(first))
    }
}

/// Returns whether `path` exists, treating permission errors as existing so
/// that nothing is ever overwritten by mistake.
pub fn exists(path: &Path) -> bool {
    path.try_exists().unwrap_or(true)
}
