//! Prints the single-thread scanning time of each built-in rule alone, to
//! find the rules that dominate throughput: `cargo run --release -p
//! castellan-scan --example rule_cost -- DIR MAX_MB`.

use std::time::Instant;

use castellan_scan::{is_binary, rules, RuleSet, Scanner};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = args.next().ok_or("usage: rule_cost DIR MAX_MB")?;
    let max_bytes: usize = args
        .next()
        .ok_or("usage: rule_cost DIR MAX_MB")?
        .parse::<usize>()?
        << 20;
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
    let mut costs = Vec::new();
    let empty = Scanner::new(RuleSet::from_specs(Vec::new())?);
    let started = Instant::now();
    inputs.iter().for_each(|data| drop(empty.scan_bytes(data)));
    let baseline = started.elapsed().as_secs_f64();
    println!("no rules: {baseline:.3}s");
    for spec in rules::builtin_specs() {
        let id = spec.id.clone();
        let scanner = Scanner::new(RuleSet::from_specs(vec![spec])?);
        let started = Instant::now();
        inputs
            .iter()
            .for_each(|data| drop(scanner.scan_bytes(data)));
        costs.push((started.elapsed().as_secs_f64() - baseline, id));
    }
    costs.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (seconds, id) in costs.iter().take(25) {
        println!("{seconds:.3}s {id}");
    }
    Ok(())
}
