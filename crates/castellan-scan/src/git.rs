//! Scanning every commit of a git repository's history.
//!
//! Each commit is compared with its first parent tree by tree, and each blob
//! is scanned once, at the oldest commit that contains it. A secret is
//! reported once per path: at the commit that introduced it.

use std::collections::HashSet;
use std::path::Path;

use gix::hash::ObjectId;
use gix::prelude::*;
use rayon::prelude::*;

use crate::error::ScanError;
use crate::report::{is_binary, CommitInfo, Located, Progress, ScanReport, SkipReason};
use crate::scanner::Scanner;
use crate::walk::WalkOptions;

/// Bytes of blob data read before a batch is scanned in parallel.
const BATCH_BYTES: usize = 32 * 1024 * 1024;

/// One blob to scan and where it first appeared.
struct Change {
    blob: ObjectId,
    path: String,
    commit: usize,
}

/// Scans the history reachable from every reference of the repository at `path`.
pub fn scan_history(
    scanner: &Scanner,
    path: &Path,
    options: &WalkOptions,
    progress: &dyn Progress,
) -> Result<ScanReport, ScanError> {
    let git_error = |message: String| ScanError::Git {
        path: path.to_path_buf(),
        message,
    };
    let repo = gix::discover(path).map_err(|error| git_error(error.to_string()))?;
    let commits = commits_oldest_first(&repo).map_err(git_error)?;
    let overrides = options.overrides(path)?;
    let changes = collect_changes(&repo, &commits, &overrides).map_err(git_error)?;

    progress.start(changes.len() as u64);
    let mut report = ScanReport::default();
    let mut reported = HashSet::new();
    // Blobs are read on this thread, because a gix repository handle is not
    // shared between threads without gix's `parallel` feature, and scanned
    // in parallel in batches that bound memory use.
    let mut batch: Vec<(&Change, Result<Vec<u8>, String>)> = Vec::new();
    let mut batch_bytes = 0;
    for (position, change) in changes.iter().enumerate() {
        let data = read_blob(&repo, change);
        batch_bytes += data.as_ref().map_or(0, Vec::len);
        batch.push((change, data));
        if batch_bytes >= BATCH_BYTES || position + 1 == changes.len() {
            let outcomes: Vec<_> = batch
                .par_iter()
                .map(|(_, data)| {
                    let outcome = scan_blob(scanner, data, options.max_file_size);
                    progress.advance(outcome.bytes);
                    outcome
                })
                .collect();
            for ((change, _), outcome) in batch.drain(..).zip(outcomes) {
                let commit = &commits[change.commit].0;
                merge(&mut report, &mut reported, commit, change, outcome);
            }
            batch_bytes = 0;
        }
    }
    report.sort();
    Ok(report)
}

/// Lists the blobs each commit adds or changes, skipping blobs seen in an
/// older commit and paths the globs exclude.
fn collect_changes(
    repo: &gix::Repository,
    commits: &[CommitTrees],
    overrides: &ignore::overrides::Override,
) -> Result<Vec<Change>, String> {
    let mut changes = Vec::new();
    let mut seen = HashSet::new();
    for (index, (_, tree, parent_tree)) in commits.iter().enumerate() {
        let mut added = Vec::new();
        diff_trees(repo, *parent_tree, Some(*tree), "", &mut added)?;
        for (path, blob) in added {
            if overrides.matched(&path, false).is_ignore() || !seen.insert(blob) {
                continue;
            }
            changes.push(Change {
                blob,
                path,
                commit: index,
            });
        }
    }
    Ok(changes)
}

type CommitTrees = (CommitInfo, ObjectId, Option<ObjectId>);

/// Returns every commit reachable from any reference, oldest first, with its
/// tree and its first parent's tree.
fn commits_oldest_first(repo: &gix::Repository) -> Result<Vec<CommitTrees>, String> {
    let mut tips: Vec<ObjectId> = Vec::new();
    if let Ok(head) = repo.head_id() {
        tips.push(head.detach());
    }
    let references = repo.references().map_err(|e| e.to_string())?;
    for reference in references.all().map_err(|e| e.to_string())? {
        let Ok(mut reference) = reference else {
            continue;
        };
        if let Ok(commit) = reference.peel_to_commit() {
            tips.push(commit.id);
        }
    }
    if tips.is_empty() {
        return Ok(Vec::new());
    }
    let walk = repo.rev_walk(tips).all().map_err(|e| e.to_string())?;
    let mut commits = Vec::new();
    for info in walk {
        let info = info.map_err(|e| e.to_string())?;
        let commit = info.object().map_err(|e| e.to_string())?;
        let tree = commit.tree_id().map_err(|e| e.to_string())?.detach();
        let author_time = commit
            .author()
            .ok()
            .and_then(|author| author.time().ok())
            .map_or(0, |time| time.seconds);
        let parent_tree = match commit.parent_ids().next() {
            Some(parent) => Some(
                repo.find_commit(parent)
                    .and_then(|parent| Ok(parent.tree_id()?.detach()))
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let info = CommitInfo {
            id: commit.id.to_string(),
            author_time,
        };
        commits.push((info, tree, parent_tree));
    }
    commits.sort_by_key(|(info, _, _)| info.author_time);
    Ok(commits)
}

/// Collects the blobs in `new` that differ from `old` at the same path.
fn diff_trees(
    repo: &gix::Repository,
    old: Option<ObjectId>,
    new: Option<ObjectId>,
    prefix: &str,
    out: &mut Vec<(String, ObjectId)>,
) -> Result<(), String> {
    let Some(new) = new else { return Ok(()) };
    if old == Some(new) {
        return Ok(());
    }
    let old_entries = match old {
        Some(old) => tree_entries(repo, old)?,
        None => Vec::new(),
    };
    for (name, mode, oid) in tree_entries(repo, new)? {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let previous = old_entries
            .iter()
            .find(|(old_name, old_mode, _)| {
                *old_name == name && old_mode.is_tree() == mode.is_tree()
            })
            .map(|(_, _, oid)| *oid);
        if previous == Some(oid) {
            continue;
        }
        if mode.is_tree() {
            diff_trees(repo, previous, Some(oid), &path, out)?;
        } else if mode.is_blob() {
            out.push((path, oid));
        }
    }
    Ok(())
}

fn tree_entries(
    repo: &gix::Repository,
    id: ObjectId,
) -> Result<Vec<(String, gix::object::tree::EntryMode, ObjectId)>, String> {
    let tree = repo.find_tree(id).map_err(|e| e.to_string())?;
    let decoded = tree.decode().map_err(|e| e.to_string())?;
    Ok(decoded
        .entries
        .iter()
        .map(|entry| (entry.filename.to_string(), entry.mode, entry.oid.to_owned()))
        .collect())
}

struct BlobOutcome {
    bytes: u64,
    findings: Vec<crate::Finding>,
    skipped: Option<SkipReason>,
    error: Option<String>,
}

fn read_blob(repo: &gix::Repository, change: &Change) -> Result<Vec<u8>, String> {
    repo.objects
        .find_blob(&change.blob, &mut Vec::new())
        .map(|blob| blob.data.to_vec())
        .map_err(|error| {
            format!(
                "cannot read blob {} ({}): {error}",
                change.blob, change.path
            )
        })
}

fn scan_blob(scanner: &Scanner, data: &Result<Vec<u8>, String>, max_size: u64) -> BlobOutcome {
    let mut outcome = BlobOutcome {
        bytes: 0,
        findings: Vec::new(),
        skipped: None,
        error: None,
    };
    match data {
        Err(error) => outcome.error = Some(error.clone()),
        Ok(data) if data.len() as u64 > max_size => outcome.skipped = Some(SkipReason::TooLarge),
        Ok(data) if is_binary(data) => outcome.skipped = Some(SkipReason::Binary),
        Ok(data) => {
            outcome.bytes = data.len() as u64;
            outcome.findings = scanner.scan_bytes(data);
        }
    }
    outcome
}

fn merge(
    report: &mut ScanReport,
    reported: &mut HashSet<(String, String)>,
    commit: &CommitInfo,
    change: &Change,
    outcome: BlobOutcome,
) {
    if let Some(reason) = outcome.skipped {
        report.skipped.push((change.path.clone(), reason));
        return;
    }
    if let Some(error) = outcome.error {
        report.errors.push(error);
        return;
    }
    report.files_scanned += 1;
    report.bytes_scanned += outcome.bytes;
    for finding in outcome.findings {
        if reported.insert((change.path.clone(), finding.fingerprint.clone())) {
            report.findings.push(Located {
                path: change.path.clone(),
                commit: Some(commit.clone()),
                finding,
            });
        }
    }
}
