//! A decrypted secret value.

use std::fmt;

use secrecy::{ExposeSecret, SecretSlice};

use crate::VaultError;

/// The plaintext of one vault entry. The bytes are wiped on drop, and the type has no
/// `Display` and a redacted `Debug`, so it cannot end up in a log by accident.
pub struct SecretValue {
    name: String,
    bytes: SecretSlice<u8>,
}

impl SecretValue {
    /// Copies `plaintext` into an exactly sized buffer, so no spare capacity outside
    /// the wiped allocation ever contains the value.
    pub(crate) fn new(name: &str, plaintext: &[u8]) -> Self {
        let bytes: Box<[u8]> = plaintext.into();
        Self {
            name: name.to_owned(),
            bytes: SecretSlice::from(bytes),
        }
    }

    /// Returns the secret bytes; keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8] {
        self.bytes.expose_secret()
    }

    /// Returns the secret as text, or [`VaultError::NotUtf8`] naming the entry.
    pub fn expose_str(&self) -> Result<&str, VaultError> {
        std::str::from_utf8(self.expose()).map_err(|_| VaultError::NotUtf8 {
            name: self.name.clone(),
        })
    }

    /// Returns the name of the vault entry this value was opened from.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([redacted])")
    }
}
