//! A sealed verifier that confirms a master key is the one the vault was created with.

use serde::{Deserialize, Serialize};

use super::MasterKey;
use crate::aead::{self, OpenError};
use crate::VaultError;

const CHECK_AAD: &[u8] = b"castellan-vault/v1\0key-check";
const CHECK_PLAINTEXT: &[u8] = b"castellan master key check";

/// The fixed label encrypted under the master key with a random nonce, stored with the
/// vault. `sealed` is a format byte, the nonce, the ciphertext and the tag, serialized
/// as base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCheck {
    #[serde(with = "crate::serde_base64")]
    pub sealed: Vec<u8>,
}

impl MasterKey {
    /// Seals a new [`KeyCheck`] for this key; store it next to the vault.
    pub fn key_check(&self) -> KeyCheck {
        // Encryption fails only above 64 GiB of plaintext, never for this short label.
        let sealed = aead::seal(self.expose(), CHECK_AAD, CHECK_PLAINTEXT)
            .expect("AES-GCM encrypts a 26-byte label");
        KeyCheck { sealed }
    }

    /// Checks that this key opens `check`, so a wrong key fails here with
    /// [`VaultError::WrongMasterKey`] instead of later as a damaged entry. A check
    /// altered after sealing gives the same error, because AES-GCM cannot tell the two
    /// apart.
    pub fn verify(&self, check: &KeyCheck) -> Result<(), VaultError> {
        match aead::open(self.expose(), CHECK_AAD, &check.sealed) {
            Ok(plaintext) if plaintext.as_slice() == CHECK_PLAINTEXT => Ok(()),
            Ok(_) | Err(OpenError::Authentication) => Err(VaultError::WrongMasterKey),
            Err(OpenError::UnsupportedFormat(found)) => Err(VaultError::UnsupportedFormat {
                item: "master key check".to_owned(),
                found,
            }),
            Err(OpenError::Truncated) => Err(VaultError::KeyCheckCorrupted {
                len: check.sealed.len(),
            }),
        }
    }
}
