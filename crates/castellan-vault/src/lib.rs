//! Castellan's vault: the master key, envelope encryption of upstream credentials and
//! agent tokens.
//!
//! This crate does cryptography and key files only. Callers persist the sealed values
//! it returns ([`SealedSecret`], [`KeyCheck`], [`KdfParams`]) and the token hashes.
#![forbid(unsafe_code)]

mod aead;
mod error;
mod hex;
mod serde_base64;

pub mod envelope;
pub mod master;
pub mod token;

pub use envelope::{open, rewrap, seal, SealedSecret, SecretValue};
pub use error::{KeyFileReason, VaultError};
pub use master::{KdfParams, KeyCheck, MasterKey};
pub use token::{
    looks_like_token, new_token_id, parse_token, AgentToken, PackedTokenId, TokenError, TokenHash,
    GENERATED_ID_LEN,
};
