//! `castellan scan`: find hard-coded secrets so they can move into the vault.
//!
//! Exit status: 1 when there are findings (after the baseline), 0 when the
//! scan is clean, 2 on error, including files that could not be read.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use castellan_scan::{
    output, rules, Baseline, Located, Progress, RuleSet, ScanReport, Scanner, WalkOptions,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{ScanArgs, ScanFormat};
use crate::commands::secret::store_secret;
use crate::data_dir::DataDir;
use crate::output::printable;

/// Largest standard input accepted, so a runaway pipe cannot exhaust memory.
const MAX_STDIN_BYTES: u64 = 256 * 1024 * 1024;

pub async fn run(data_dir: &DataDir, args: &ScanArgs) -> Result<ExitCode> {
    let scanner = Scanner::new(rule_set(args)?);
    let mut report = scan(&scanner, args)?;
    if let Some(path) = args.baseline.as_ref().filter(|_| args.update_baseline) {
        Baseline::from_findings(&report.findings).save(path)?;
        eprintln!(
            "Wrote {} findings to the baseline {}.",
            report.findings.len(),
            printable(&path.display().to_string())
        );
        return Ok(exit_code(&report, 0));
    }
    let accepted = match &args.baseline {
        Some(path) => Baseline::load(path)?.filter(&mut report.findings),
        None => 0,
    };
    print_findings(&report, scanner.rules(), args.format)?;
    print_summary(&report, accepted);
    if args.import && !report.findings.is_empty() {
        import(data_dir, &report.findings).await?;
    }
    Ok(exit_code(&report, report.findings.len()))
}

fn exit_code(report: &ScanReport, findings: usize) -> ExitCode {
    for error in &report.errors {
        eprintln!("error: {}", printable(error));
    }
    match (findings, report.errors.is_empty()) {
        (0, true) => ExitCode::SUCCESS,
        (0, false) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

fn rule_set(args: &ScanArgs) -> Result<RuleSet> {
    let mut specs = rules::builtin_specs();
    if let Some(path) = &args.rules {
        let file = rules::load_rule_file(path)?;
        for note in &file.skipped {
            eprintln!(
                "warning: {}: {}",
                printable(&path.display().to_string()),
                printable(note)
            );
        }
        specs.extend(file.rules);
    }
    Ok(RuleSet::from_specs(specs)?)
}

fn scan(scanner: &Scanner, args: &ScanArgs) -> Result<ScanReport> {
    let options = WalkOptions {
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        max_file_size: args.max_file_size,
    };
    let stdin = PathBuf::from("-");
    let paths: Vec<PathBuf> = match args.paths.is_empty() {
        true => vec![PathBuf::from(".")],
        false => args.paths.clone(),
    };
    if args.import && paths.contains(&stdin) {
        bail!("--import prompts on standard input, so it cannot scan `-`; scan a file instead");
    }
    let progress = TerminalProgress::new();
    let mut report = ScanReport::default();
    let files: Vec<PathBuf> = paths.iter().filter(|p| **p != stdin).cloned().collect();
    if paths.contains(&stdin) {
        merge(
            &mut report,
            castellan_scan::scan_input(scanner, "-", &read_stdin()?),
        );
    }
    if args.git {
        for path in &files {
            merge(
                &mut report,
                castellan_scan::scan_history(scanner, path, &options, &progress)?,
            );
        }
    } else if !files.is_empty() {
        merge(
            &mut report,
            castellan_scan::scan_paths(scanner, &files, &options, &progress)?,
        );
    }
    progress.finish();
    report.sort();
    Ok(report)
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut data = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut data)
        .context("cannot read standard input")?;
    if data.len() as u64 > MAX_STDIN_BYTES {
        bail!("standard input is larger than {MAX_STDIN_BYTES} bytes; scan the data as a file");
    }
    Ok(data)
}

fn merge(into: &mut ScanReport, from: ScanReport) {
    into.findings.extend(from.findings);
    into.files_scanned += from.files_scanned;
    into.bytes_scanned += from.bytes_scanned;
    into.skipped.extend(from.skipped);
    into.errors.extend(from.errors);
}

fn print_findings(report: &ScanReport, rules: &RuleSet, format: ScanFormat) -> Result<()> {
    let text = match format {
        ScanFormat::Json => crate::output::json_pretty(&output::to_json(&report.findings))?,
        ScanFormat::Sarif => {
            crate::output::json_pretty(&output::to_sarif(&report.findings, rules))?
        }
        ScanFormat::Table if report.findings.is_empty() => return Ok(()),
        ScanFormat::Table => table(&report.findings).to_string(),
    };
    println!("{text}");
    Ok(())
}

fn table(findings: &[Located]) -> comfy_table::Table {
    let mut table = crate::output::table(&["rule", "location", "commit", "preview", "fingerprint"]);
    for located in findings {
        let finding = &located.finding;
        let commit = located.commit.as_ref().map_or_else(String::new, |commit| {
            let time = crate::output::time(commit.author_time.saturating_mul(1000));
            format!("{} {time}", &commit.id[..commit.id.len().min(10)])
        });
        let encoding = finding
            .encoding
            .map_or_else(String::new, |e| format!(" ({e})"));
        table.add_row(vec![
            printable(&finding.rule_id).into_owned(),
            format!(
                "{}:{}:{}",
                printable(&located.path),
                finding.line,
                finding.column
            ),
            printable(&commit).into_owned(),
            format!("{}{encoding}", printable(&finding.preview)),
            printable(&finding.fingerprint).into_owned(),
        ]);
    }
    table
}

fn print_summary(report: &ScanReport, accepted: usize) {
    let megabytes = report.bytes_scanned as f64 / 1_000_000.0;
    eprintln!(
        "{} findings in {} files ({megabytes:.1} MB); {} skipped (binary or too large); {accepted} accepted by the baseline.",
        report.findings.len(),
        report.files_scanned,
        report.skipped.len(),
    );
}

/// Offers each finding for the vault. The value goes from the scanned file
/// to the vault without being printed; only the chosen name is typed.
async fn import(data_dir: &DataDir, findings: &[Located]) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("--import needs a terminal to prompt for secret names");
    }
    let store = data_dir.open_store().await?;
    let master_key = data_dir.master_key(&store).await?;
    for located in findings {
        let finding = &located.finding;
        eprint!(
            "{} at {}:{} ({}). Vault secret name (empty to skip): ",
            printable(&finding.rule_id),
            printable(&located.path),
            finding.line,
            printable(&finding.preview)
        );
        std::io::stderr().flush().ok();
        let mut name = String::new();
        std::io::stdin()
            .read_line(&mut name)
            .context("cannot read the secret name from the terminal")?;
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        if let Err(problem) = castellan_model::check_name(name) {
            eprintln!("Skipped: invalid secret name {name:?}: {problem}");
            continue;
        }
        let version = store_secret(&store, &master_key, name, finding.secret.expose()).await?;
        eprintln!("Stored secret {name:?} version {version}.");
    }
    Ok(())
}

/// A progress bar on standard error when it is a terminal; silent otherwise.
struct TerminalProgress(Option<ProgressBar>);

impl TerminalProgress {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return TerminalProgress(None);
        }
        let bar = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} files [{elapsed}, about {eta} left]")
        {
            bar.set_style(style);
        }
        TerminalProgress(Some(bar))
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Progress for TerminalProgress {
    fn start(&self, total: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(total);
        }
    }

    fn advance(&self, _bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }
}
