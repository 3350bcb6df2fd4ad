//! Envelope encryption of vault entries with AES-256-GCM.
//!
//! Each secret version gets a fresh random 256-bit data key. The value is encrypted
//! under the data key, and the data key is encrypted (wrapped) under the master key.
//! Both layers bind the entry name and version as associated data, so a blob copied to
//! another entry or version fails authentication instead of opening as the wrong
//! secret.

mod value;

use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::{self, OpenError};
use crate::master::MasterKey;
use crate::VaultError;

pub use value::SecretValue;

const DATA_KEY_LEN: usize = 32;

/// One sealed version of a vault entry, as the store keeps it.
///
/// `wrapped_key` and `ciphertext` each hold a format byte (1 for this format), a
/// 12-byte nonce, the AES-256-GCM ciphertext and the 16-byte tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub name: String,
    pub version: u32,
    /// The data key encrypted under the master key.
    #[serde(with = "crate::serde_base64")]
    pub wrapped_key: Vec<u8>,
    /// The value encrypted under the data key.
    #[serde(with = "crate::serde_base64")]
    pub ciphertext: Vec<u8>,
}

/// Encrypts `value` as version `version` of entry `name` under a new data key.
pub fn seal(
    master: &MasterKey,
    name: &str,
    version: u32,
    value: &[u8],
) -> Result<SealedSecret, VaultError> {
    let mut data_key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    OsRng.fill_bytes(data_key.as_mut_slice());

    let encryption_failed = || VaultError::Encryption {
        name: name.to_owned(),
        version,
    };
    let ciphertext = aead::seal(&data_key, &secret_aad(name, version), value)
        .map_err(|_| encryption_failed())?;
    let wrapped_key = wrap_data_key(master, name, version, &data_key)?;
    Ok(SealedSecret {
        name: name.to_owned(),
        version,
        wrapped_key,
        ciphertext,
    })
}

/// Decrypts a sealed entry. Any change to its name, version, wrapped key or ciphertext,
/// or a different master key, gives [`VaultError::Corrupted`].
pub fn open(master: &MasterKey, sealed: &SealedSecret) -> Result<SecretValue, VaultError> {
    let data_key = unwrap_data_key(master, sealed)?;
    let aad = secret_aad(&sealed.name, sealed.version);
    let plaintext = aead::open(&data_key, &aad, &sealed.ciphertext)
        .map_err(|err| open_error(sealed, "value", err))?;
    Ok(SecretValue::new(&sealed.name, &plaintext))
}

/// Re-wraps the data key of `sealed` from the `old` master key to the `new` one, for
/// master key rotation. The ciphertext is unchanged.
///
/// Both layers are authenticated first, so a damaged entry is reported during rotation
/// rather than after it. NOTE: the data key stays the same, so a backup of the old
/// wrapped key still opens the value with the old master key.
pub fn rewrap(
    old: &MasterKey,
    new: &MasterKey,
    sealed: &SealedSecret,
) -> Result<SealedSecret, VaultError> {
    let data_key = unwrap_data_key(old, sealed)?;
    let aad = secret_aad(&sealed.name, sealed.version);
    aead::open(&data_key, &aad, &sealed.ciphertext)
        .map_err(|err| open_error(sealed, "value", err))?;

    Ok(SealedSecret {
        wrapped_key: wrap_data_key(new, &sealed.name, sealed.version, &data_key)?,
        ..sealed.clone()
    })
}

fn wrap_data_key(
    master: &MasterKey,
    name: &str,
    version: u32,
    data_key: &[u8; DATA_KEY_LEN],
) -> Result<Vec<u8>, VaultError> {
    aead::seal(master.expose(), &data_key_aad(name, version), data_key).map_err(|_| {
        VaultError::Encryption {
            name: name.to_owned(),
            version,
        }
    })
}

fn unwrap_data_key(
    master: &MasterKey,
    sealed: &SealedSecret,
) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, VaultError> {
    let aad = data_key_aad(&sealed.name, sealed.version);
    let plaintext = aead::open(master.expose(), &aad, &sealed.wrapped_key)
        .map_err(|err| open_error(sealed, "wrapped data key", err))?;
    if plaintext.len() != DATA_KEY_LEN {
        return Err(corrupted(sealed));
    }
    let mut data_key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    data_key.copy_from_slice(&plaintext);
    Ok(data_key)
}

/// Associated data for the value layer. The name sits between fixed fields and the
/// version is last, so no two (name, version) pairs produce the same bytes.
fn secret_aad(name: &str, version: u32) -> Vec<u8> {
    format!("castellan-vault/v1\0secret\0{name}\0{version}").into_bytes()
}

/// Associated data for the data key layer, distinct from [`secret_aad`] so the two
/// blobs of an entry cannot be swapped.
fn data_key_aad(name: &str, version: u32) -> Vec<u8> {
    format!("castellan-vault/v1\0data-key\0{name}\0{version}").into_bytes()
}

fn open_error(sealed: &SealedSecret, layer: &str, err: OpenError) -> VaultError {
    match err {
        OpenError::UnsupportedFormat(found) => VaultError::UnsupportedFormat {
            item: format!(
                "the {layer} of vault entry {:?} version {}",
                sealed.name, sealed.version
            ),
            found,
        },
        OpenError::Truncated | OpenError::Authentication => corrupted(sealed),
    }
}

fn corrupted(sealed: &SealedSecret) -> VaultError {
    VaultError::Corrupted {
        name: sealed.name.clone(),
        version: sealed.version,
    }
}
