//! Master keys derived from a passphrase with Argon2id.

use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{MasterKey, MASTER_KEY_LEN};
use crate::VaultError;

/// Salt length written by [`KdfParams::recommended`] and the minimum
/// [`MasterKey::derive`] accepts (the length RFC 9106 recommends).
pub const SALT_LEN: usize = 16;

/// Argon2id parameters for a passphrase-derived master key, stored by the caller as
/// JSON next to the vault. The salt is not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    #[serde(with = "crate::serde_base64")]
    pub salt: Vec<u8>,
    /// Memory cost in KiB.
    pub m_cost: u32,
    /// Number of passes over the memory.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl KdfParams {
    /// Memory cost, 19 MiB, from the OWASP Password Storage Cheat Sheet (Argon2id:
    /// "19 MiB of memory, an iteration count of 2, and 1 degree of parallelism").
    pub const RECOMMENDED_M_COST: u32 = 19 * 1024;
    /// Iterations, from the same OWASP recommendation.
    pub const RECOMMENDED_T_COST: u32 = 2;
    /// Parallelism, from the same OWASP recommendation.
    pub const RECOMMENDED_P_COST: u32 = 1;

    /// Returns the OWASP-recommended costs with a new random 16-byte salt.
    ///
    /// NOTE: these are OWASP's minimums for interactive logins. Deriving a vault key is
    /// rare, so operators may raise `m_cost` and `t_cost`.
    pub fn recommended() -> Self {
        let mut salt = vec![0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        Self {
            salt,
            m_cost: Self::RECOMMENDED_M_COST,
            t_cost: Self::RECOMMENDED_T_COST,
            p_cost: Self::RECOMMENDED_P_COST,
        }
    }

    fn argon2(&self) -> Result<Argon2<'static>, VaultError> {
        if self.salt.len() < SALT_LEN {
            return Err(VaultError::Kdf {
                reason: format!(
                    "the salt is {} bytes long, expected at least {SALT_LEN}; \
                     restore the stored key derivation parameters from a backup",
                    self.salt.len()
                ),
            });
        }
        let params = Params::new(self.m_cost, self.t_cost, self.p_cost, Some(MASTER_KEY_LEN))
            .map_err(|err| VaultError::Kdf {
                reason: format!(
                    "invalid Argon2id parameters ({err}); \
                     restore the stored key derivation parameters from a backup"
                ),
            })?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl MasterKey {
    /// Derives the master key from `passphrase` with Argon2id. The same passphrase and
    /// parameters always give the same key. The costs are taken as given, so callers
    /// should only store parameters made by [`KdfParams::recommended`].
    pub fn derive(passphrase: &SecretString, params: &KdfParams) -> Result<Self, VaultError> {
        let passphrase = passphrase.expose_secret().as_bytes();
        if passphrase.is_empty() {
            return Err(VaultError::Kdf {
                reason: "the passphrase is empty; enter the vault passphrase".to_owned(),
            });
        }

        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        params
            .argon2()?
            .hash_password_into(passphrase, &params.salt, key.as_mut_slice())
            .map_err(|err| VaultError::Kdf {
                reason: format!("Argon2id failed: {err}"),
            })?;
        Ok(Self::from_bytes(&key))
    }
}
