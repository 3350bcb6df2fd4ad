//! Vault errors. Messages name the entry or file involved and never contain key or
//! secret bytes.

use std::io;
use std::path::{Path, PathBuf};

/// Errors from the master key, key files and envelope encryption.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error(
        "wrong master key: it does not match the key check stored with the vault; \
         use the master key file or passphrase this vault was created with"
    )]
    WrongMasterKey,

    #[error(
        "vault entry {name:?} version {version} failed authentication: it was altered, \
         moved from another entry or version, or sealed under another master key; \
         check that the right master key is loaded, then restore the entry from a \
         backup or set the secret again"
    )]
    Corrupted { name: String, version: u32 },

    #[error(
        "{item} uses unsupported format version {found}; \
         upgrade castellan to a release that reads this format"
    )]
    UnsupportedFormat { item: String, found: u8 },

    #[error(
        "master key check is damaged ({len} bytes, too short to be sealed data); \
         restore it from a backup of the data directory"
    )]
    KeyCheckCorrupted { len: usize },

    #[error("{}", .reason.describe(.path))]
    KeyFile {
        path: PathBuf,
        reason: KeyFileReason,
    },

    #[error("failed to derive the master key from the passphrase: {reason}")]
    Kdf { reason: String },

    #[error("vault entry {name:?} is not valid UTF-8; read it as bytes instead")]
    NotUtf8 { name: String },

    #[error(
        "failed to encrypt vault entry {name:?} version {version}: the value exceeds \
         the AES-256-GCM limit of about 64 GiB"
    )]
    Encryption { name: String, version: u32 },
}

/// Problem with a master key file. [`VaultError::KeyFile`] pairs it with the path.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyFileReason {
    NotFound,
    AlreadyExists,
    NotRegularFile,
    NoFileName,
    /// Group or other users have some access; `mode` contains the permission bits.
    InsecurePermissions {
        mode: u32,
    },
    /// The content is not 64 hex digits; `detail` describes the problem without
    /// quoting the content.
    InvalidContent {
        detail: String,
    },
    Io {
        action: &'static str,
        source: io::Error,
    },
}

impl KeyFileReason {
    fn describe(&self, path: &Path) -> String {
        let path = path.display();
        match self {
            Self::NotFound => format!(
                "master key file {path} not found; run `castellan init` to create it, \
                 or pass --data-dir to point at the data directory that contains it"
            ),
            Self::AlreadyExists => format!(
                "master key file {path} already exists and castellan never overwrites a \
                 master key; remove the file or choose another data directory"
            ),
            Self::NotRegularFile => format!(
                "master key file {path} is not a regular file; point castellan at the key \
                 file itself"
            ),
            Self::NoFileName => {
                format!("master key path {path} does not name a file; add a file name")
            }
            Self::InsecurePermissions { mode } => format!(
                "master key file {path} has mode {mode:04o}, which gives group or other \
                 users access to it; run `chmod 600 {path}`"
            ),
            Self::InvalidContent { detail } => format!(
                "master key file {path} is not a valid master key ({detail}); it must \
                 contain exactly 64 hexadecimal characters followed by a newline"
            ),
            Self::Io { action, source } => {
                format!("failed to {action} master key file {path}: {source}")
            }
        }
    }
}
