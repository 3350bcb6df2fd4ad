//! Secret scanner: finds hard-coded keys in files, git history and request
//! bodies, with a rule set compiled once and shared.
#![forbid(unsafe_code)]

mod checks;
mod decode;
pub mod entropy;
mod error;
mod filter;
mod finding;
mod lines;
pub mod rules;
mod scanner;
mod secret;
pub mod validate;

pub use error::ScanError;
pub use finding::{fingerprint, Finding};
pub use rules::{RuleSet, RuleSpec};
pub use scanner::Scanner;
pub use secret::SecretValue;
mod git;
mod report;
mod walk;

pub use git::scan_history;
pub use report::{is_binary, CommitInfo, Located, NoProgress, Progress, ScanReport, SkipReason};
pub use walk::{scan_input, scan_paths, WalkOptions, DEFAULT_MAX_FILE_SIZE};
mod baseline;
pub mod output;

pub use baseline::{Baseline, BaselineEntry};
