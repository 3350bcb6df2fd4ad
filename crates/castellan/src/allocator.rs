//! The global allocator, the one setting castellan changes in it, and the
//! release of glibc malloc's free memory.
//!
//! Its calls into mimalloc's C API, which read or set the purge delay
//! option, the call to it at the top of `main`, and the call to glibc's
//! `malloc_trim` are the crate's only `unsafe` code.

use libmimalloc_sys::{mi_option_set_default, mi_option_t};

/// mimalloc instead of glibc malloc. Each reload frees a whole snapshot,
/// which glibc kept, so the resident size grew with every reload. mimalloc
/// gives that memory back and takes fewer instructions per request; both
/// are measured in `bench/README.md`. It is built without transparent huge
/// pages (the `no_thp` feature): it asked the kernel for them on all of its
/// memory, and a 2 MiB page that is mostly free still counts as resident,
/// which made idle RSS larger and less predictable.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mi_option_e` enum of the mimalloc 3 that
/// `libmimalloc-sys` 0.1.49 bundles, which has no Rust constant for it.
/// The test `purge_delay_index_follows_its_variable` shows that this index
/// reads `MIMALLOC_PURGE_DELAY`, so an upgrade that moves it fails there.
const PURGE_DELAY: mi_option_t = 15;

/// Makes mimalloc return memory to the system as soon as freeing leaves a
/// page of it empty, instead of after its purge delay of one second,
/// unless `MIMALLOC_PURGE_DELAY` sets the delay.
///
/// A delayed purge happens only during a later call into the allocator.
/// Loading a large configuration frees about as much as it keeps, and an
/// idle gateway makes few calls. With the configuration of
/// `bench/scale.sh`, idle RSS varied from 81 to 101 MiB between runs, and
/// was 77 to 80 MiB without the delay. Throughput did not change
/// measurably; both are recorded in `bench/README.md`.
///
/// # Safety
///
/// mimalloc's option functions are not thread safe: call this before the
/// process starts a second thread.
#[allow(unsafe_code)]
pub unsafe fn purge_freed_memory_at_once() {
    // SAFETY: the caller guarantees that no other thread runs, so nothing
    // reads the option table while this writes it. The call stores the
    // value unless the environment set the option; an unparsable value
    // there counts as not set.
    unsafe { mi_option_set_default(PURGE_DELAY, 0) }
}

/// Releases the free memory of glibc malloc's heaps to the system, and
/// does nothing on targets without glibc.
///
/// mimalloc serves Rust's allocations, but SQLite calls glibc malloc, which
/// keeps freed memory for reuse. Trimming after each load, when SQLite
/// has freed most, lowered the idle RssAnon of `castellan serve` with the
/// 100,000 tokens of `bench/scale.sh` by 1.1 to 2.2 MiB (`bench/README.md`).
/// A call made while another runs returns at once, so bursts of store
/// changes do not queue trims on glibc's locks.
pub fn release_c_heap() {
    use std::sync::atomic::{AtomicBool, Ordering};

    static TRIMMING: AtomicBool = AtomicBool::new(false);
    if TRIMMING.swap(true, Ordering::Acquire) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    trim_glibc_heap();
    TRIMMING.store(false, Ordering::Release);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_glibc_heap() {
    unsafe extern "C" {
        /// glibc's `int malloc_trim(size_t pad)`.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: the declaration matches glibc's prototype (`size_t` is
    // `usize`). malloc_trim takes no pointers and is thread-safe: it locks
    // each arena while it trims it. It is not async-signal-safe, and no
    // caller runs in a signal handler.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::c_long;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use libmimalloc_sys::mi_option_get;

    use super::*;

    /// Default of `mi_option_purge_delay` in mimalloc 3 (`options.c`), in
    /// milliseconds.
    const DEFAULT_PURGE_DELAY: c_long = 1000;

    /// Environment variable that marks the child process, which runs
    /// [`check_purge_delay`].
    const CHILD: &str = "CASTELLAN_ALLOCATOR_TEST_CHILD";

    const TEST_NAME: &str = "allocator::tests::purge_delay_index_follows_its_variable";

    /// Returns the delay that `MIMALLOC_PURGE_DELAY` sets in this process,
    /// if it is set.
    fn delay_from_environment() -> Option<c_long> {
        let value = std::env::var("MIMALLOC_PURGE_DELAY").ok()?;
        Some(value.parse().expect("the parent sets an integer"))
    }

    /// Checks the option at [`PURGE_DELAY`] before and after
    /// [`purge_freed_memory_at_once`], in a process with one test thread.
    #[allow(unsafe_code)]
    fn check_purge_delay() {
        let from_environment = delay_from_environment();
        // SAFETY here and below: this child process runs this one test on
        // one thread, so no other thread uses the allocator meanwhile.
        let before = unsafe { mi_option_get(PURGE_DELAY) };
        assert_eq!(before, from_environment.unwrap_or(DEFAULT_PURGE_DELAY));

        unsafe { purge_freed_memory_at_once() };
        let after = unsafe { mi_option_get(PURGE_DELAY) };
        assert_eq!(after, from_environment.unwrap_or(0));
    }

    /// Runs this test again in a child process with `MIMALLOC_PURGE_DELAY`
    /// set to `delay`, or unset, and returns its output if it passed.
    fn run_child(delay: Option<&str>) -> String {
        let test_binary = std::env::current_exe().expect("path of the test binary");
        let mut command = Command::new(test_binary);
        command
            .args(["--exact", TEST_NAME, "--test-threads", "1"])
            .env(CHILD, "1")
            .env_remove("MIMALLOC_PURGE_DELAY")
            .env_remove("MIMALLOC_RESET_DELAY");
        if let Some(delay) = delay {
            command.env("MIMALLOC_PURGE_DELAY", delay);
        }
        let output = command.output().expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "child with MIMALLOC_PURGE_DELAY={delay:?} failed:\n{stdout}\n{stderr}"
        );
        stdout
    }

    /// Collects the `.rs` files under `dir` into `files`.
    fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).expect("source directory is readable");
        for entry in entries {
            let path = entry.expect("directory entry is readable").path();
            if path.is_dir() {
                rust_files(&path, files);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }

    /// The crate denies `unsafe` code instead of forbidding it, so that
    /// this module can call mimalloc. This keeps any other module from
    /// lifting the denial.
    #[test]
    fn unsafe_code_allowed_only_here_and_in_main() {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&source, &mut files);
        assert!(files.len() > 2, "found only {files:?}");

        for file in files {
            let name = file.strip_prefix(&source).expect("file is under src");
            if name == Path::new("allocator.rs") || name == Path::new("main.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("source file is readable");
            assert!(
                !text.contains("unsafe_code"),
                "{} changes the `unsafe_code` lint; keep unsafe calls in allocator.rs",
                name.display()
            );
        }
    }

    /// The index reads mimalloc's default when no variable is set and the
    /// variable's value when it is, so it names the option that
    /// `MIMALLOC_PURGE_DELAY` sets. Setting the default leaves an
    /// operator's value in place.
    #[test]
    fn purge_delay_index_follows_its_variable() {
        if std::env::var_os(CHILD).is_some() {
            check_purge_delay();
            return;
        }
        for delay in [None, Some("4321")] {
            let stdout = run_child(delay);
            assert!(
                stdout.contains("1 passed"),
                "child with MIMALLOC_PURGE_DELAY={delay:?} ran no test:\n{stdout}"
            );
        }
    }
}
