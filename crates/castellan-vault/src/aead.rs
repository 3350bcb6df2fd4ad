//! AES-256-GCM blobs laid out as `format (1 byte) || nonce (12 bytes) || ciphertext || tag
//! (16 bytes)`.
//!
//! Nonces are random. That is safe here because every data key encrypts exactly one
//! value, and the master key wraps one data key per secret version, far below the 2^32
//! random-nonce limit that NIST SP 800-38D sets for one key.

use aes_gcm::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use zeroize::Zeroizing;

/// The first byte of every blob this crate writes; readers reject other values, so a
/// future format can be distinguished.
pub(crate) const FORMAT_V1: u8 = 1;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Reason a blob could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    UnsupportedFormat(u8),
    Truncated,
    Authentication,
}

/// Encrypts `plaintext` under `key` with a fresh random nonce, binding `aad`.
///
/// Fails only when the plaintext exceeds the AES-GCM limit of about 64 GiB.
pub(crate) fn seal(
    key: &[u8; 32],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, aes_gcm::Error> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);

    let mut blob = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
    blob.push(FORMAT_V1);
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(plaintext);

    let tag = cipher.encrypt_in_place_detached(&nonce, aad, &mut blob[1 + NONCE_LEN..])?;
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// Decrypts a blob made by [`seal`] with the same `key` and `aad`.
///
/// The plaintext buffer is wiped on drop, including its spare capacity.
pub(crate) fn open(
    key: &[u8; 32],
    aad: &[u8],
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let (&format, rest) = blob.split_first().ok_or(OpenError::Truncated)?;
    if format != FORMAT_V1 {
        return Err(OpenError::UnsupportedFormat(format));
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(OpenError::Truncated);
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);

    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut buffer = Zeroizing::new(sealed.to_vec());
    cipher
        .decrypt_in_place(Nonce::from_slice(nonce), aad, &mut *buffer)
        .map_err(|_| OpenError::Authentication)?;
    Ok(buffer)
}
