//! Measures single-thread scanning throughput on files already in memory,
//! excluding disk reads: `cargo run --release -p castellan-scan --example
//! throughput -- DIR [MAX_MB]`. Used by bench/scanner.sh.

use std::time::Instant;

use castellan_scan::{is_binary, Scanner};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = args.next().ok_or("usage: throughput DIR [MAX_MB]")?;
    let max_bytes: usize = args.next().map_or(Ok(usize::MAX / 2), |mb| {
        mb.parse::<usize>().map(|mb| mb << 20)
    })?;
    let mut inputs = Vec::new();
    let mut total = 0;
    for entry in ignore::WalkBuilder::new(&root).hidden(false).build() {
        let entry = entry?;
        if !entry.file_type().is_some_and(|kind| kind.is_file()) {
            continue;
        }
        let data = std::fs::read(entry.path())?;
        if data.len() > 10 << 20 || is_binary(&data) {
            continue;
        }
        total += data.len();
        inputs.push(data);
        if total >= max_bytes {
            break;
        }
    }
    let scanner = Scanner::builtin()?;
    let started = Instant::now();
    let findings: usize = inputs
        .iter()
        .map(|data| scanner.scan_bytes(data).len())
        .sum();
    let seconds = started.elapsed().as_secs_f64();
    let megabytes = total as f64 / 1e6;
    println!(
        "files={} bytes={total} findings={findings} seconds={seconds:.3} mb_per_s_one_thread={:.1}",
        inputs.len(),
        megabytes / seconds
    );
    Ok(())
}
