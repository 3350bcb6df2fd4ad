//! Prints latency percentiles of token verification and policy decisions,
//! the two request-path stages with per-call targets (token verification
//! p99 <= 2 µs, policy decision p99 <= 10 µs).
//!
//! Criterion reports means over batches, which hide the tail, so this times
//! each call on its own. Run in release mode:
//! `cargo run --release -p castellan-bench --bin percentiles [ITERATIONS]`.

use std::process::ExitCode;

use castellan_bench::paths::REQUEST_PATHS;
use castellan_bench::policy::{self, check_case, decision_cases, LOAD_TEST_SIZE};
use castellan_bench::tokens::TokenTable;
use castellan_bench::{percentile, time_each};
use castellan_policy::AccessRequest;

/// The allocator `castellan serve` uses, so that allocation in the timed
/// calls costs what it costs in the gateway.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_ITERATIONS: usize = 100_000;

/// Untimed calls before each measurement, to fill caches and the allocator.
const WARMUP: usize = 10_000;

fn main() -> ExitCode {
    let iterations = match std::env::args().nth(1) {
        None => DEFAULT_ITERATIONS,
        Some(text) => match text.parse::<usize>() {
            Ok(count) if count > 0 => count,
            _ => {
                eprintln!("invalid iteration count {text:?}: expected a positive integer");
                return ExitCode::FAILURE;
            }
        },
    };
    let config = policy::parse_config(&policy::config_text(LOAD_TEST_SIZE));
    let compiled = match castellan_policy::Policy::compile(&config) {
        Ok(compiled) => compiled,
        Err(error) => {
            eprintln!("the generated configuration does not compile: {error}");
            return ExitCode::FAILURE;
        }
    };
    let table = TokenTable::issue(config.clone());
    let token = table.token(0).to_string();
    let connection = config.connections["conn-00"].clone();

    println!("{iterations} timed calls each, after {WARMUP} untimed ones; nanoseconds");
    println!("| operation | p50 | p99 | p99.9 | max |");
    println!("| --- | --- | --- | --- | --- |");
    let mut samples = vec![0u64; iterations];
    let mut warmup = vec![0u64; WARMUP];

    if table.verify(&token).is_err() {
        eprintln!("the issued token did not verify");
        return ExitCode::FAILURE;
    }
    time_each(&mut warmup, || table.verify(&token).is_ok());
    time_each(&mut samples, || table.verify(&token).is_ok());
    print_row("token verification, valid of 1,000", &mut samples);

    for case in decision_cases() {
        check_case(&compiled, &case);
        let request = case.request();
        time_each(&mut warmup, || compiled.authorize(&request));
        time_each(&mut samples, || compiled.authorize(&request));
        print_row(&format!("policy decision, {}", case.label), &mut samples);
        if case.cached {
            // Every call gets a path the decision cache has not seen, built
            // before the clock starts, so these rows time Cedar itself.
            let paths: Vec<_> = (0..iterations as u64)
                .map(|id| case.path_variant(1_000_000 + id))
                .collect();
            let mut next = paths.iter();
            time_each(&mut samples, || {
                let path = next.next().expect("one path per sample");
                compiled.authorize(&AccessRequest { path, ..request })
            });
            print_row(
                &format!("policy decision, {}, cache miss", case.label),
                &mut samples,
            );
        }
    }

    let mut index = 0;
    let mut next_path = || {
        index = (index + 1) % REQUEST_PATHS.len();
        connection.normalize_path(REQUEST_PATHS[index]).is_ok()
    };
    time_each(&mut warmup, &mut next_path);
    time_each(&mut samples, &mut next_path);
    print_row("path normalization, mixed set", &mut samples);
    ExitCode::SUCCESS
}

fn print_row(operation: &str, samples: &mut [u64]) {
    let p50 = percentile(samples, 0.50);
    let p99 = percentile(samples, 0.99);
    let p999 = percentile(samples, 0.999);
    let max = percentile(samples, 1.0);
    println!("| {operation} | {p50} | {p99} | {p999} | {max} |");
}
