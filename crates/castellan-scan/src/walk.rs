//! Scanning files and directory trees, respecting `.gitignore`.

use std::fs::File;
use std::io::Read;
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
    // Read buffers are reused from file to file, so that reading a file
    // costs no allocation and no fresh pages once a buffer has grown to the
    // largest file it has held. There is about one buffer per thread, and
    // all of them are freed when the walk ends.
    let buffers: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    files.par_iter().for_each(|path| {
        let mut buffer = lock(&buffers).pop().unwrap_or_default();
        let outcome = scan_file(scanner, path, options.max_file_size, &mut buffer);
        lock(&buffers).push(buffer);
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

/// Locks `mutex`, also after a thread panicked while holding it: the data
/// under it (reports and buffers) stays valid whatever a scan did.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
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

fn scan_file(
    scanner: &Scanner,
    path: &Path,
    max_file_size: u64,
    buffer: &mut Vec<u8>,
) -> FileOutcome {
    let display = path.display().to_string();
    let mut outcome = FileOutcome {
        path: display.clone(),
        bytes: 0,
        findings: Vec::new(),
        skipped: None,
        error: None,
    };
    let data = match read_file(path, max_file_size, buffer) {
        Ok(FileRead::Data(data)) => data,
        Ok(FileRead::TooLarge) => {
            outcome.skipped = Some(SkipReason::TooLarge);
            return outcome;
        }
        Err(error) => {
            outcome.error = Some(format!("cannot read {display}: {error}"));
            return outcome;
        }
    };
    if is_binary(data) {
        outcome.skipped = Some(SkipReason::Binary);
        return outcome;
    }
    outcome.bytes = data.len() as u64;
    outcome.findings = scanner
        .scan_bytes(data)
        .into_iter()
        .map(|finding| Located {
            path: display.clone(),
            commit: None,
            finding,
        })
        .collect();
    outcome
}

/// The contents of a file, or the note that it is over the size limit.
enum FileRead<'a> {
    Data(&'a [u8]),
    TooLarge,
}

/// Reads the file at `path` into `buffer` unless it is larger than
/// `max_file_size` bytes.
fn read_file<'a>(
    path: &Path,
    max_file_size: u64,
    buffer: &'a mut Vec<u8>,
) -> std::io::Result<FileRead<'a>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        // A file too large to scan is skipped even when it cannot be
        // opened, because its size alone decides that.
        Err(error) => {
            return match std::fs::metadata(path) {
                Ok(metadata) if metadata.len() > max_file_size => Ok(FileRead::TooLarge),
                _ => Err(error),
            }
        }
    };
    let len = file.metadata()?.len();
    if len > max_file_size {
        return Ok(FileRead::TooLarge);
    }
    let expected = usize::try_from(len).map_err(|_| {
        std::io::Error::other(format!(
            "the file has {len} bytes, more than memory can hold on this platform; \
             lower --max-file-size to skip it"
        ))
    })?;
    read_to_end_into(&mut file, expected, buffer).map(FileRead::Data)
}

/// Reads `file` to its end into `buffer` and returns the bytes read.
///
/// `buffer` is scratch space that keeps its length between files: it only
/// grows, so each byte of it is zeroed once instead of once per file, and
/// bytes past the returned slice are left over from earlier files.
///
/// Each `read` requests more than the `expected` bytes. A file of that size
/// takes one `read` call, which returns fewer bytes than requested and
/// exactly `expected` in total, and that ends the read without a second
/// call that returns 0. A file that grew since its size was taken fills the
/// request and is read on to its end, and so is a file that reports a size
/// of 0 but has contents, as files in `/proc` do.
fn read_to_end_into<'a>(
    file: &mut File,
    expected: usize,
    buffer: &'a mut Vec<u8>,
) -> std::io::Result<&'a [u8]> {
    let needed = expected.saturating_add(1);
    if buffer.len() < needed {
        buffer.resize(needed, 0);
    }
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            let grown = buffer.len().saturating_mul(2);
            buffer.resize(grown, 0);
        }
        let requested = buffer.len() - filled;
        match file.read(&mut buffer[filled..]) {
            Ok(0) => return Ok(&buffer[..filled]),
            Ok(count) => {
                filled += count;
                // NOTE: a short read that ends at the size from `fstat` is
                // taken as the end of the file. Local Linux file systems
                // return short reads of regular files only at the end. A
                // network or FUSE file system that returned one earlier, at
                // exactly that offset, would leave the rest unscanned.
                if count < requested && filled == expected {
                    return Ok(&buffer[..filled]);
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write test file");
        path
    }

    #[test]
    fn reused_buffer_returns_only_current_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let large = write(dir.path(), "large.txt", &[b'x'; 70_000]);
        let small = write(dir.path(), "small.txt", b"token = abc\n");
        let empty = write(dir.path(), "empty.txt", b"");
        let mut buffer = Vec::new();
        for (path, expected) in [
            (&large, vec![b'x'; 70_000]),
            (&small, b"token = abc\n".to_vec()),
            (&empty, Vec::new()),
        ] {
            match read_file(path, DEFAULT_MAX_FILE_SIZE, &mut buffer) {
                Ok(FileRead::Data(data)) => assert_eq!(data, &expected[..], "{}", path.display()),
                Ok(FileRead::TooLarge) => panic!("{} reported as too large", path.display()),
                Err(error) => panic!("{}: {error}", path.display()),
            }
        }
    }

    #[test]
    fn file_longer_than_expected_is_read_to_end() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let contents: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let path = write(dir.path(), "grown.bin", &contents);
        let mut file = File::open(&path).expect("open test file");
        let mut buffer = Vec::new();
        let data = read_to_end_into(&mut file, 10, &mut buffer).expect("read test file");
        assert_eq!(data, &contents[..]);
    }

    #[test]
    fn file_of_expected_size_is_read_whole() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let contents: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
        let path = write(dir.path(), "exact.bin", &contents);
        // A buffer left larger by an earlier file, with stale bytes in it.
        let mut buffer = vec![7u8; 20_000];
        let mut file = File::open(&path).expect("open test file");
        let data = read_to_end_into(&mut file, contents.len(), &mut buffer).expect("read");
        assert_eq!(data, &contents[..]);
    }

    #[test]
    fn file_shorter_than_expected_is_read_to_end() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = write(dir.path(), "shrunk.txt", b"token = abc\n");
        let mut file = File::open(&path).expect("open test file");
        let mut buffer = Vec::new();
        let data = read_to_end_into(&mut file, 100, &mut buffer).expect("read test file");
        assert_eq!(data, b"token = abc\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn file_reporting_size_zero_is_read_to_end() {
        let path = Path::new("/proc/self/status");
        let reported = std::fs::metadata(path)
            .expect("stat /proc/self/status")
            .len();
        assert_eq!(reported, 0, "procfs reports a size of 0");
        let mut buffer = Vec::new();
        match read_file(path, DEFAULT_MAX_FILE_SIZE, &mut buffer) {
            Ok(FileRead::Data(data)) => assert!(data.starts_with(b"Name:"), "{data:?}"),
            Ok(FileRead::TooLarge) => panic!("/proc/self/status reported as too large"),
            Err(error) => panic!("/proc/self/status: {error}"),
        }
    }

    #[test]
    fn file_over_size_limit_is_not_read() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = write(dir.path(), "big.txt", &[b'a'; 101]);
        let mut buffer = Vec::new();
        let outcome = read_file(&path, 100, &mut buffer).expect("read test file");
        assert!(matches!(outcome, FileRead::TooLarge));
        assert!(
            buffer.is_empty(),
            "the buffer was filled for a skipped file"
        );
    }

    #[test]
    fn missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut buffer = Vec::new();
        let outcome = read_file(&dir.path().join("absent.txt"), 100, &mut buffer);
        let error = outcome.err().expect("a missing file cannot be read");
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    }
}
