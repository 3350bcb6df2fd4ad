//! Scanning files and directory trees, respecting `.gitignore`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ignore::overrides::{Override, OverrideBuilder};
use ignore::WalkBuilder;
use rayon::prelude::*;

use crate::error::ScanError;
use crate::report::{is_binary, Located, Progress, ScanReport, SkipReason};
use crate::scanner::Scanner;

/// Default size above which files are skipped: 10 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// File selection for a scan: include and exclude globs and a size limit.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Globs a file must match (any of them) to be scanned; empty means all.
    pub include: Vec<String>,
    /// Globs of files and directories to leave out.
    pub exclude: Vec<String>,
    /// Files larger than this many bytes are skipped.
    pub max_file_size: u64,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            include: Vec::new(),
            exclude: Vec::new(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        }
    }
}

impl WalkOptions {
    /// Builds the include and exclude globs relative to `root`.
    pub(crate) fn overrides(&self, root: &Path) -> Result<Override, ScanError> {
        let mut builder = OverrideBuilder::new(root);
        let globs = self
            .include
            .iter()
            .cloned()
            .chain(self.exclude.iter().map(|glob| format!("!{glob}")));
        for glob in globs {
            builder.add(&glob).map_err(|error| ScanError::Glob {
                glob: glob.clone(),
                message: error.to_string(),
            })?;
        }
        builder.build().map_err(|error| ScanError::Glob {
            glob: self.include.join(","),
            message: error.to_string(),
        })
    }
}

/// Scans every file under `roots` (files or directories), skipping what
/// `.gitignore`, `.ignore` and the globs exclude, binaries and large files.
/// Hidden files such as `.env` are scanned; `.git` directories are not.
pub fn scan_paths(
    scanner: &Scanner,
    roots: &[PathBuf],
    options: &WalkOptions,
    progress: &dyn Progress,
) -> Result<ScanReport, ScanError> {
    let mut report = ScanReport::default();
    let mut files = Vec::new();
    for root in roots {
        collect_files(root, options, &mut files, &mut report)?;
    }
    progress.start(files.len() as u64);
    let shared = Mutex::new(report);
    files.par_iter().for_each(|path| {
        let outcome = scan_file(scanner, path, options.max_file_size);
        let bytes = outcome.bytes;
        if let Ok(mut report) = shared.lock() {
            outcome.merge_into(&mut report);
        }
        progress.advance(bytes);
    });
    let mut report = shared
        .into_inner()
        .unwrap_or_else(|poison| poison.into_inner());
    report.sort();
    Ok(report)
}

fn collect_files(
    root: &Path,
    options: &WalkOptions,
    files: &mut Vec<PathBuf>,
    report: &mut ScanReport,
) -> Result<(), ScanError> {
    if !root.exists() {
        return Err(ScanError::Read {
            path: root.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        });
    }
    let glob_root = match root.parent() {
        _ if root.is_dir() => root,
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let overrides = options.overrides(glob_root)?;
    let walker = WalkBuilder::new(root)
        .hidden(false)
        .require_git(false)
        .overrides(overrides)
        .filter_entry(|entry| entry.file_name() != ".git")
        .build();
    for entry in walker {
        match entry {
            Ok(entry) if entry.file_type().is_some_and(|kind| kind.is_file()) => {
                files.push(entry.into_path());
            }
            Ok(_) => {}
            Err(error) => report.errors.push(error.to_string()),
        }
    }
    Ok(())
}

/// The result of scanning one file, merged into the report under a lock.
struct FileOutcome {
    path: String,
    bytes: u64,
    findings: Vec<Located>,
    skipped: Option<SkipReason>,
    error: Option<String>,
}

impl FileOutcome {
    fn merge_into(self, report: &mut ScanReport) {
        match (self.skipped, self.error) {
            (Some(reason), _) => report.skipped.push((self.path, reason)),
            (None, Some(error)) => report.errors.push(error),
            (None, None) => {
                report.files_scanned += 1;
                report.bytes_scanned += self.bytes;
                report.findings.extend(self.findings);
            }
        }
    }
}

fn scan_file(scanner: &Scanner, path: &Path, max_file_size: u64) -> FileOutcome {
    let display = path.display().to_string();
    let mut outcome = FileOutcome {
        path: display.clone(),
        bytes: 0,
        findings: Vec::new(),
        skipped: None,
        error: None,
    };
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.len() > max_file_size => {
            outcome.skipped = Some(SkipReason::TooLarge);
            return outcome;
        }
        Ok(_) => {}
        Err(error) => {
            outcome.error = Some(format!("cannot read {display}: {error}"));
            return outcome;
        }
    }
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(error) => {
            outcome.error = Some(format!("cannot read {display}: {error}"));
            return outcome;
        }
    };
    if is_binary(&data) {
        outcome.skipped = Some(SkipReason::Binary);
        return outcome;
    }
    outcome.bytes = data.len() as u64;
    outcome.findings = scanner
        .scan_bytes(&data)
        .into_iter()
        .map(|finding| Located {
            path: display.clone(),
            commit: None,
            finding,
        })
        .collect();
    outcome
}

/// Scans one in-memory input, such as standard input, under the name `path`.
pub fn scan_input(scanner: &Scanner, path: &str, data: &[u8]) -> ScanReport {
    let mut report = ScanReport::default();
    if is_binary(data) {
        report.skipped.push((path.to_string(), SkipReason::Binary));
        return report;
    }
    report.files_scanned = 1;
    report.bytes_scanned = data.len() as u64;
    report.findings = scanner
        .scan_bytes(data)
        .into_iter()
        .map(|finding| Located {
            path: path.to_string(),
            commit: None,
            finding,
        })
        .collect();
    report
}
