//! The checkpoint: listeners, agent authentication, request normalization,
//! authorization, credential injection, proxying and response redaction.
#![forbid(unsafe_code)]

mod address;
mod admin;
mod audit;
mod authenticate;
mod body;
mod credential;
mod dial;
pub mod echo;
mod error;
mod forward;
mod framing;
mod head_guard;
mod http1_pool;
mod inspect;
mod limits;
mod probe;
mod proxy;
mod redact;
mod reload;
mod server;
mod state;
mod tls;
mod upstream;

pub use admin::serve_admin;
pub use credential::{InjectError, Injector};
pub use probe::{probe, ProbeError};
pub use proxy::{Gateway, Peer, REQUEST_ID_HEADER};
pub use redact::Redactor;
pub use reload::{ConfigSource, Reloader};
pub use server::serve;
pub use state::{
    ActivateError, ActiveToken, ActiveTokens, ConfigState, CredentialState, LoadError, Loader,
    Snapshot, TokenId,
};
pub use tls::{TlsError, TlsSettings, TlsTerminator};
