//! Authorization for Castellan: roles compiled to Cedar policies.
//!
//! [`Policy::compile`] turns the roles and agents of a configuration into
//! Cedar policies, one for each distinct rule effect and path list, and
//! [`Policy::authorize`] decides each request and
//! names the rule that decided, caching Cedar's outcome for repeated
//! requests. Everything is denied unless an allow rule covers it, and a
//! deny rule always wins over an allow rule.
#![forbid(unsafe_code)]

mod authorize;
mod cedar_text;
mod compile;
mod decision_cache;
mod error;
mod explain;
#[cfg(test)]
mod reference;
mod rule_sets;

pub use authorize::{AccessRequest, Decision};
pub use compile::Policy;
pub use error::PolicyError;
pub use explain::{Explanation, RuleMatch};
