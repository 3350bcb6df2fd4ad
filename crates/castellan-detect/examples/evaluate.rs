//! Scores every detector on generated traffic with labelled attacks and
//! prints precision, recall and detection delay per detector, then the
//! engine's single-thread throughput.
//!
//! ```text
//! cargo run --release -p castellan-detect --example evaluate
//! cargo run --release -p castellan-detect --example evaluate -- --seed 7 --days 40
//! ```
//!
//! Without options it runs the default scenario set. Options:
//!
//! - `--seed N` runs one scenario with that seed instead.
//! - `--days N` sets the length of every scenario.
//! - `--teams N` sets the number of agent teams of a `--seed` scenario.
//! - `--benign` leaves the attacks out, so every signal is a false positive.
//! - `--false-positives` lists every false positive.

use std::process::ExitCode;
use std::time::Duration;

use castellan_detect::evaluation::{evaluate, Evaluation};
use castellan_detect::generator::{Scenario, MIN_DAYS};
use castellan_detect::DetectorSettings;

const USAGE: &str =
    "usage: evaluate [--seed N] [--days N] [--teams N] [--benign] [--false-positives]";

struct Options {
    seed: Option<u64>,
    days: Option<u32>,
    teams: u32,
    benign: bool,
    show_false_positives: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        seed: None,
        days: None,
        teams: 1,
        benign: false,
        show_false_positives: false,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        let mut value = |name: &str| {
            arguments
                .next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match argument.as_str() {
            "--seed" => options.seed = Some(parse_number("--seed", &value("--seed")?)?),
            "--days" => {
                let days: u32 = parse_number("--days", &value("--days")?)?;
                if days < MIN_DAYS {
                    return Err(format!(
                        "--days {days} is too short: use at least {MIN_DAYS}"
                    ));
                }
                options.days = Some(days);
            }
            "--teams" => options.teams = parse_number("--teams", &value("--teams")?)?,
            "--benign" => options.benign = true,
            "--false-positives" => options.show_false_positives = true,
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(options)
}

fn parse_number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{name} expects a non-negative integer, got {text:?}"))
}

fn scenarios(options: &Options) -> Vec<Scenario> {
    let mut scenarios = match options.seed {
        Some(seed) => vec![Scenario {
            teams: options.teams,
            ..Scenario::new(&format!("seed-{seed}"), seed, 35)
        }],
        None => Scenario::default_set(),
    };
    if let Some(days) = options.days {
        for scenario in &mut scenarios {
            scenario.days = days;
        }
    }
    if options.benign {
        scenarios = scenarios.iter().map(Scenario::benign).collect();
    }
    scenarios
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mut total: Option<Evaluation> = None;
    for scenario in scenarios(&options) {
        let traffic = scenario.generate();
        let evaluation = evaluate(&traffic, DetectorSettings::default());
        println!(
            "scenario {} (seed {}, {} days, {} teams): {} observations, {} episodes, {} signals",
            scenario.name,
            scenario.seed,
            scenario.days,
            scenario.teams,
            traffic.observations.len(),
            traffic.episodes.len(),
            evaluation.signals()
        );
        match &mut total {
            Some(total) => total.merge(evaluation),
            None => total = Some(evaluation),
        }
    }
    let Some(total) = total else {
        return ExitCode::SUCCESS;
    };
    println!();
    print_table(&total);
    println!();
    println!(
        "throughput: {:.0} observations/s on one thread ({} observations in {:.2} s of engine time)",
        total.throughput(),
        total.observations,
        total.engine_time.as_secs_f64()
    );
    if options.show_false_positives {
        print_false_positives(&total);
    }
    ExitCode::SUCCESS
}

fn print_table(evaluation: &Evaluation) {
    println!(
        "{:<20} {:>8} {:>8} {:>7} {:>8} {:>5} {:>9} {:>12} {:>12}",
        "detector",
        "episodes",
        "detected",
        "recall",
        "signals",
        "FP",
        "precision",
        "median delay",
        "max delay"
    );
    for score in &evaluation.scores {
        println!(
            "{:<20} {:>8} {:>8} {:>7} {:>8} {:>5} {:>9} {:>12} {:>12}",
            score.kind.as_str(),
            score.episodes,
            score.detected,
            ratio(score.recall()),
            score.signals(),
            score.false_positives.len(),
            ratio(score.precision()),
            delay(score.median_delay()),
            delay(score.max_delay()),
        );
    }
}

fn print_false_positives(evaluation: &Evaluation) {
    for score in &evaluation.scores {
        for signal in &score.false_positives {
            println!(
                "false positive {} {} at {} (seq {}): {}",
                signal.kind, signal.subject, signal.time_ms, signal.seq, signal.summary
            );
        }
    }
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.3}"))
}

fn delay(value: Option<Duration>) -> String {
    let Some(value) = value else {
        return "-".to_owned();
    };
    let seconds = value.as_secs_f64();
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{:.1} min", seconds / 60.0)
    }
}
