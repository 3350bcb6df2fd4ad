//! Persistence for castellan: secrets, agent tokens, agent state, audit records,
//! usage summaries kept from the audit stream, alerts, the log of
//! administrative changes, and the change counter a running gateway polls to
//! know when to reload.
//!
//! The backend is an embedded SQLite file shared by the gateway and CLI
//! commands; see [`Store`] for its concurrency and durability guarantees. The
//! public API uses no driver types, so a PostgreSQL backend can implement it.
#![forbid(unsafe_code)]

mod agents;
mod alerts;
mod audit;
mod audit_record;
mod error;
mod events;
mod meta;
mod open;
mod rows;
mod secrets;
mod tokens;
mod usage;
mod usage_query;

pub use agents::SuspendedAgent;
pub use alerts::{
    Alert, AlertStatus, NewSignal, RaisedAlert, UnknownAlertStatus, EVIDENCE_FIRST,
    EVIDENCE_LATEST, MAX_SOURCES,
};
pub use audit_record::{
    AuditDecision, AuditQuery, AuditRecord, AuditWindow, InvalidDecision, MAX_AUDIT_QUERY_LIMIT,
};
pub use error::{BoxError, StoreError};
pub use events::Event;
pub use open::{now_ms, Store, BUSY_TIMEOUT};
pub use secrets::{SealedRow, SecretInfo};
pub use tokens::TokenRecord;
pub use usage::{source_network, utc_day};
pub use usage_query::{AgentUsage, CredentialSighting, RouteUsage, UsageTotals};
