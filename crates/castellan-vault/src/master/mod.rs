//! The master key that wraps every data key in the vault.
//!
//! It comes either from a key file (`castellan init` writes one with mode 0600) or
//! from a passphrase through Argon2id. A [`KeyCheck`] stored with the vault
//! distinguishes a wrong master key from a damaged entry.

mod check;
mod file;
mod kdf;

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

pub use check::KeyCheck;
pub use kdf::{KdfParams, SALT_LEN};

/// Length of the master key in bytes (AES-256).
pub const MASTER_KEY_LEN: usize = 32;

/// A 256-bit master key. The bytes live on the heap, are wiped on drop and never
/// appear in `Debug` output.
pub struct MasterKey {
    bytes: SecretBox<[u8; MASTER_KEY_LEN]>,
}

impl MasterKey {
    /// Generates a new random key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Self {
            bytes: SecretBox::init_with_mut(|bytes: &mut [u8; MASTER_KEY_LEN]| {
                OsRng.fill_bytes(bytes)
            }),
        }
    }

    /// Copies key material into a new key; the caller keeps wiping its own copy.
    pub(crate) fn from_bytes(source: &Zeroizing<[u8; MASTER_KEY_LEN]>) -> Self {
        Self {
            bytes: SecretBox::init_with_mut(|bytes: &mut [u8; MASTER_KEY_LEN]| {
                bytes.copy_from_slice(source.as_slice())
            }),
        }
    }

    pub(crate) fn expose(&self) -> &[u8; MASTER_KEY_LEN] {
        self.bytes.expose_secret()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}
