//! The checkpoint: listeners, agent authentication, request normalization,
//! authorization, credential injection, proxying and response redaction.
#![forbid(unsafe_code)]

mod admin;
mod audit;
mod authenticate;
mod body;
mod credential;
pub mod echo;
mod error;
mod forward;
mod proxy;
mod redact;
mod reload;
mod server;
mod state;
mod upstream;

pub use admin::serve_admin;
pub use credential::{InjectError, Injector};
pub use proxy::{Gateway, REQUEST_ID_HEADER};
pub use redact::Redactor;
pub use reload::{ConfigSource, Reloader};
pub use server::serve;
pub use state::{ActivateError, ConfigState, CredentialState, LoadError, Loader, Snapshot};
