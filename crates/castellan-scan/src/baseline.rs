//! Baselines: findings accepted once, so only new findings fail a check.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ScanError;
use crate::report::Located;

const BASELINE_VERSION: u32 = 1;

/// One accepted finding. The line is informational: matching uses the path
/// and the fingerprint, so a finding that moves within its file stays accepted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BaselineEntry {
    pub path: String,
    pub rule_id: String,
    pub fingerprint: String,
    pub line: usize,
}

/// A baseline file: a version number and the accepted findings.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Baseline {
    version: u32,
    findings: Vec<BaselineEntry>,
}

impl Baseline {
    /// Builds a baseline that accepts every given finding.
    pub fn from_findings(findings: &[Located]) -> Self {
        let mut entries: Vec<BaselineEntry> = findings
            .iter()
            .map(|located| BaselineEntry {
                path: located.path.clone(),
                rule_id: located.finding.rule_id.clone(),
                fingerprint: located.finding.fingerprint.clone(),
                line: located.finding.line,
            })
            .collect();
        entries.sort_by(|a, b| {
            (&a.path, a.line, &a.fingerprint).cmp(&(&b.path, b.line, &b.fingerprint))
        });
        entries.dedup_by(|a, b| a.path == b.path && a.fingerprint == b.fingerprint);
        Baseline {
            version: BASELINE_VERSION,
            findings: entries,
        }
    }

    pub fn load(path: &Path) -> Result<Self, ScanError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let baseline: Baseline =
            serde_json::from_str(&text).map_err(|error| ScanError::Baseline {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?;
        if baseline.version != BASELINE_VERSION {
            return Err(ScanError::Baseline {
                path: path.to_path_buf(),
                message: format!(
                    "version {} is not supported (expected {BASELINE_VERSION})",
                    baseline.version
                ),
            });
        }
        Ok(baseline)
    }

    /// Writes the baseline as pretty JSON, replacing the file.
    pub fn save(&self, path: &Path) -> Result<(), ScanError> {
        let mut text = serde_json::to_string_pretty(self).map_err(|error| ScanError::Baseline {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        text.push('\n');
        std::fs::write(path, text).map_err(|source| ScanError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn entries(&self) -> &[BaselineEntry] {
        &self.findings
    }

    /// Removes the findings this baseline accepts and returns how many it removed.
    pub fn filter(&self, findings: &mut Vec<Located>) -> usize {
        let accepted: HashSet<(&str, &str)> = self
            .findings
            .iter()
            .map(|entry| (entry.path.as_str(), entry.fingerprint.as_str()))
            .collect();
        let before = findings.len();
        findings.retain(|located| {
            !accepted.contains(&(located.path.as_str(), located.finding.fingerprint.as_str()))
        });
        before - findings.len()
    }
}
