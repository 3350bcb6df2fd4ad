//! Errors of the scanner. Messages name the rule, file or repository that
//! failed, never a matched value.

use std::path::PathBuf;

/// A failure to build a rule set, read input or write a baseline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    #[error("rule {id:?} has an invalid regex: {message}; fix the pattern in the rule file")]
    InvalidRegex { id: String, message: String },

    #[error("rule {id:?} has an invalid {field}: {message}")]
    InvalidRule {
        id: String,
        field: &'static str,
        message: String,
    },

    #[error("rule id {id:?} appears twice in {path}; give each rule its own id")]
    DuplicateRule { id: String, path: PathBuf },

    #[error("cannot build the keyword prefilter: {message}")]
    Prefilter { message: String },

    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("invalid rule file {path}: {message}")]
    RuleFile { path: PathBuf, message: String },

    #[error("invalid baseline file {path}: {message}; regenerate it with --update-baseline")]
    Baseline { path: PathBuf, message: String },

    #[error("invalid include or exclude glob {glob:?}: {message}")]
    Glob { glob: String, message: String },

    #[error("cannot read the git history of {path}: {message}")]
    Git { path: PathBuf, message: String },
}
