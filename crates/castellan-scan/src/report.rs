//! Results of scanning many inputs: findings with their location, plus
//! what was skipped and what could not be read.

use serde::Serialize;

use crate::finding::Finding;

/// The commit that introduced a finding, for history scans.
#[derive(Debug, Clone, Serialize)]
pub struct CommitInfo {
    pub id: String,
    /// Author time, seconds since the Unix epoch.
    pub author_time: i64,
}

/// A finding and the file (and commit) it is in.
#[derive(Debug, Clone, Serialize)]
pub struct Located {
    /// Path as given on the command line or relative to the repository root;
    /// `-` for standard input.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitInfo>,
    #[serde(flatten)]
    pub finding: Finding,
}

/// Reason a file was not scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    Binary,
    TooLarge,
}

/// The outcome of one scan over files or history.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub findings: Vec<Located>,
    pub files_scanned: u64,
    pub bytes_scanned: u64,
    pub skipped: Vec<(String, SkipReason)>,
    /// Files or objects that could not be read, each with the reason. A scan
    /// with errors is incomplete.
    pub errors: Vec<String>,
}

impl ScanReport {
    /// Sorts findings by path, commit time, line and column, for stable output.
    pub fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            let time = |l: &Located| l.commit.as_ref().map(|c| c.author_time);
            (&a.path, time(a), a.finding.line, a.finding.column).cmp(&(
                &b.path,
                time(b),
                b.finding.line,
                b.finding.column,
            ))
        });
    }
}

/// Receives progress of a scan, for a progress bar.
pub trait Progress: Sync {
    /// Sets the number of files (or blobs) about to be scanned.
    fn start(&self, total: u64);
    /// Records one more scanned input of `bytes` bytes.
    fn advance(&self, bytes: u64);
}

/// Progress sink that ignores every event.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _total: u64) {}
    fn advance(&self, _bytes: u64) {}
}

/// Share of the first bytes in which a NUL marks a file as binary, as git does.
const BINARY_PROBE: usize = 8000;

/// Returns whether `data` looks binary (a NUL byte near its start).
pub fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(BINARY_PROBE)].contains(&0)
}
