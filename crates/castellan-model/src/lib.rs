//! Castellan's domain model: connections, roles, agents and the
//! `castellan.toml` file that declares them.
//!
//! Parsing never trusts the file: every reference is resolved, every
//! pattern and network is checked, and each problem is reported with its
//! line and column so an operator can fix it before a gateway loads it.
#![forbid(unsafe_code)]

pub mod alert;
mod config;
mod diagnostic;
mod names;
mod parse;
pub mod path;
pub mod pattern;
mod response;
pub mod text;

pub use alert::{AlertKind, Severity};
pub use config::{
    canonical_ip, Agent, AgentLimits, AuditDurability, AuditFailure, AuthMethod, ClientIdentity,
    Config, Connection, DataLossCheck, DlpMode, GatewaySettings, HeaderTemplate, MethodSet, Role,
    RotationProvider, Rule, RuleEffect, RuleId, Timeouts, TokenLocation, Upstream,
    DEFAULT_DLP_MAX_BYTES, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_REMIND_BEFORE, DEFAULT_ROTATE_EVERY,
    DEFAULT_ROTATION_GRACE, DEFAULT_ROTATION_TIMEOUT, DEFAULT_TOKEN_LIFETIME,
    DEFAULT_TOKEN_LOCATIONS, MIN_TOKEN_LIFETIME,
};
pub use diagnostic::{ConfigError, Diagnostic, Location};
pub use names::check_name;
pub use path::{NormalizedPath, PathError};
pub use pattern::{PathPattern, PatternError, Segment};
pub use response::{DetectSettings, ResponseRule, Webhook, WebhookFormat, WebhookTarget};
