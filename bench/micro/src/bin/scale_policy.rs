//! Measures the policy at the size of `bench/scale.sh`: the time and the
//! heap that parsing and compiling a `castellan.toml` take, the heap the
//! compiled policy keeps, and per-call percentiles of policy decisions.
//!
//! Writes the configuration with `bench/scale_data.py config`, then run in
//! release mode:
//! `cargo run --release -p castellan-bench --bin scale_policy -- FILE [ITERATIONS]`.
//! The decisions are those of agent `agent-00000`, whose only role
//! `role-000` allows `GET` and `POST` on `/v1/items/**` of `conn-0000` and
//! denies `DELETE` there.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use castellan_bench::{percentile, time_each};
use castellan_model::{Config, NormalizedPath};
use castellan_policy::{AccessRequest, Policy};

/// The system allocator, counting the bytes currently allocated and the
/// peak since the last [`CountingAllocator::reset_peak`].
struct CountingAllocator {
    current: AtomicUsize,
    peak: AtomicUsize,
    calls: AtomicUsize,
}

impl CountingAllocator {
    fn add(&self, size: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let now = self.current.fetch_add(size, Ordering::Relaxed) + size;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    fn reset_peak(&self) -> usize {
        let now = self.current();
        self.peak.store(now, Ordering::Relaxed);
        now
    }
}

// SAFETY: every call forwards to `System` with the caller's arguments, so
// the layout contract of `GlobalAlloc` is met as it is for `System`. The
// counters only observe sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.add(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.current.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.current.fetch_sub(layout.size(), Ordering::Relaxed);
        self.add(new_size);
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator {
    current: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
    calls: AtomicUsize::new(0),
};

const DEFAULT_ITERATIONS: usize = 100_000;
const WARMUP: usize = 10_000;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        eprintln!("missing argument: the castellan.toml that `bench/scale_data.py config` wrote");
        return ExitCode::FAILURE;
    };
    let iterations = match args.next() {
        None => DEFAULT_ITERATIONS,
        Some(text) => match text.parse::<usize>() {
            Ok(count) if count > 0 => count,
            _ => {
                eprintln!("invalid iteration count {text:?}: expected a positive integer");
                return ExitCode::FAILURE;
            }
        },
    };

    let before = ALLOCATOR.reset_peak();
    let calls_before = ALLOCATOR.calls.load(Ordering::Relaxed);
    let started = Instant::now();
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("cannot load {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let parsed = started.elapsed();
    let config_bytes = ALLOCATOR.current() - before;
    let policy = match Policy::compile(&config) {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("{} does not compile: {error}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let compiled = started.elapsed() - parsed;
    let peak = ALLOCATOR.peak.load(Ordering::Relaxed) - before;
    let policy_bytes = ALLOCATOR.current() - before - config_bytes;
    let calls = ALLOCATOR.calls.load(Ordering::Relaxed) - calls_before;

    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{}: {} connections, {} roles, {} agents",
        path.display(),
        config.connections.len(),
        config.roles.len(),
        config.agents.len()
    );
    println!("| stage | time ms | heap kept MiB |");
    println!("| --- | --- | --- |");
    println!(
        "| Config::load | {:.1} | {:.1} |",
        parsed.as_secs_f64() * 1e3,
        mib(config_bytes)
    );
    println!(
        "| Policy::compile | {:.1} | {:.1} |",
        compiled.as_secs_f64() * 1e3,
        mib(policy_bytes)
    );
    println!(
        "peak heap during both: {:.1} MiB; allocations: {calls}",
        mib(peak)
    );

    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let cases = [
        (
            "allowed",
            "conn-0000",
            "GET",
            "/v1/items/42/details",
            loopback,
            true,
        ),
        (
            "denied_by_rule",
            "conn-0000",
            "DELETE",
            "/v1/items/42",
            loopback,
            false,
        ),
        (
            "denied_no_rule",
            "conn-0500",
            "GET",
            "/v1/items/42",
            loopback,
            false,
        ),
        (
            "denied_network",
            "conn-0000",
            "GET",
            "/v1/items/42",
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
            false,
        ),
    ];
    println!();
    println!("{iterations} timed calls each, after {WARMUP} untimed ones; nanoseconds");
    println!("| decision | p50 | p99 | p99.9 |");
    println!("| --- | --- | --- | --- |");
    let mut samples = vec![0u64; iterations];
    let mut warmup = vec![0u64; WARMUP];
    for (label, connection, method, path, source, allowed) in cases {
        let path = match NormalizedPath::parse(path) {
            Ok(path) => path,
            Err(error) => {
                eprintln!("fixed path {path:?} is invalid: {error}");
                return ExitCode::FAILURE;
            }
        };
        let request = AccessRequest {
            agent: "agent-00000",
            connection,
            method,
            path: &path,
            source,
        };
        let decision = policy.authorize(&request);
        if decision.allowed != allowed {
            eprintln!("case {label} was decided differently than expected: {decision:?}");
            return ExitCode::FAILURE;
        }
        time_each(&mut warmup, || policy.authorize(&request));
        time_each(&mut samples, || policy.authorize(&request));
        println!(
            "| {label} | {} | {} | {} |",
            percentile(&mut samples, 0.50),
            percentile(&mut samples, 0.99),
            percentile(&mut samples, 0.999)
        );
    }
    ExitCode::SUCCESS
}
