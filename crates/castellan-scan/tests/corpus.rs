//! The labelled corpus: every labelled secret is found with its rule, no
//! look-alike fires, and precision and recall meet their targets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use castellan_scan::{RuleSet, Scanner};

const RECALL_TARGET: f64 = 0.95;
const PRECISION_TARGET: f64 = 0.9;

type Label = (String, usize, String);

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn labels() -> BTreeSet<Label> {
    let text = std::fs::read_to_string(corpus_dir().join("labels.json")).expect("labels.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("labels.json is JSON");
    json["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .map(|label| {
            (
                label["file"].as_str().expect("file").to_string(),
                label["line"].as_u64().expect("line") as usize,
                label["rule"].as_str().expect("rule").to_string(),
            )
        })
        .collect()
}

/// Scans every corpus file and returns (file, line, rule) of each finding.
fn scan_corpus() -> BTreeSet<Label> {
    let scanner = Scanner::builtin().expect("built-in rules");
    let mut found = BTreeSet::new();
    for directory in ["positive", "negative"] {
        let mut entries: Vec<_> = std::fs::read_dir(corpus_dir().join(directory))
            .expect("corpus directory")
            .map(|entry| entry.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let data = std::fs::read(&path).expect("corpus file");
            let name = format!(
                "{directory}/{}",
                path.file_name().unwrap().to_string_lossy()
            );
            for finding in scanner.scan_bytes(&data) {
                found.insert((name.clone(), finding.line, finding.rule_id));
            }
        }
    }
    found
}

#[test]
fn every_labelled_secret_is_found() {
    let found = scan_corpus();
    let missing: Vec<_> = labels().difference(&found).cloned().collect();
    assert!(missing.is_empty(), "missed: {missing:#?}");
}

#[test]
fn no_finding_without_label() {
    let found = scan_corpus();
    let extra: Vec<_> = found.difference(&labels()).cloned().collect();
    assert!(extra.is_empty(), "unlabelled findings: {extra:#?}");
}

#[test]
fn precision_and_recall_meet_targets() {
    let found = scan_corpus();
    let labels = labels();
    let true_positives = found.intersection(&labels).count() as f64;
    let recall = true_positives / labels.len() as f64;
    let precision = true_positives / found.len().max(1) as f64;
    println!("corpus: recall {recall:.3}, precision {precision:.3}");
    assert!(recall >= RECALL_TARGET, "recall {recall:.3}");
    assert!(precision >= PRECISION_TARGET, "precision {precision:.3}");
}

#[test]
fn every_builtin_rule_has_a_labelled_example() {
    let labelled: BTreeSet<String> = labels().into_iter().map(|(_, _, rule)| rule).collect();
    let rules = RuleSet::builtin().expect("built-in rules");
    let untested: Vec<_> = rules
        .rules()
        .iter()
        .map(|rule| rule.id.clone())
        .filter(|id| !labelled.contains(id))
        .collect();
    assert!(
        untested.is_empty(),
        "rules without a corpus example: {untested:?}"
    );
}
