//! Library behaviour beyond the corpus: rule files, baselines, overlaps and
//! what a finding reveals.

use castellan_scan::rules::{builtin_specs, RuleFile};
use castellan_scan::{Baseline, Located, RuleSet, Scanner};

const GITHUB_TOKEN: &str = concat!("ghp_", "Rk3LmN8pQ2sT5vW7xZ9aB1cD4eF6gH0jK2lM");

fn parse(text: &str) -> RuleFile {
    castellan_scan::rules::parse_rule_file(text).expect("valid rule file")
}

#[test]
fn castellan_rule_file_parses() {
    let file = parse(
        r#"
[[rules]]
id = "acme"
regex = 'acme_[a-z]{8}'
keywords = ["acme_"]
entropy = 2.5
stopwords = ["acme_test"]
"#,
    );
    assert_eq!(file.rules.len(), 1);
    assert_eq!(file.rules[0].entropy, 2.5);
    assert!(file.skipped.is_empty());
}

#[test]
fn duplicate_rule_ids_are_rejected() {
    let text = "[[rules]]\nid = \"a\"\nregex = \"x\"\n[[rules]]\nid = \"a\"\nregex = \"y\"\n";
    let error = castellan_scan::rules::parse_rule_file(text).expect_err("duplicate");
    assert!(error.contains("appears twice"), "{error}");
}

#[test]
fn gitleaks_file_is_converted() {
    let file = parse(
        r#"
title = "custom"
[allowlist]
regexes = ['''example''']
paths = ['''vendor/''']

[[rules]]
id = "acme"
regex = '''acme_([a-z]{8})'''
secretGroup = 1
entropy = 2.0
keywords = ["acme_"]
[[rules.allowlists]]
stopwords = ["dummy"]

[[rules]]
id = "pkcs12-file"
path = '''\.p12$'''
"#,
    );
    assert_eq!(file.rules.len(), 1);
    let rule = &file.rules[0];
    assert_eq!(rule.secret_group, Some(1));
    assert_eq!(rule.allow, vec!["example".to_string()]);
    assert_eq!(rule.stopwords, vec!["dummy".to_string()]);
    assert_eq!(file.skipped.len(), 2, "{:?}", file.skipped);
}

#[test]
fn user_rule_secret_group_is_reported() {
    let mut specs = builtin_specs();
    specs.extend(
        parse(
            "[[rules]]\nid = \"acme\"\nregex = 'key=(acme_[a-z0-9]{12})'\nkeywords = [\"acme_\"]\n",
        )
        .rules,
    );
    let scanner = Scanner::new(RuleSet::from_specs(specs).expect("rules compile"));
    let findings = scanner.scan_bytes(b"key=acme_q8vd2lmx0prt");
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].rule_id, "acme");
    assert_eq!(findings[0].column, 5);
    assert_eq!(findings[0].secret.expose(), b"acme_q8vd2lmx0prt");
}

#[test]
fn provider_rule_wins_over_generic() {
    let scanner = Scanner::builtin().expect("built-in rules");
    let line = format!("github_token = \"{GITHUB_TOKEN}\"");
    let findings = scanner.scan_bytes(line.as_bytes());
    let rules: Vec<_> = findings.iter().map(|f| f.rule_id.as_str()).collect();
    assert_eq!(rules, vec!["github-pat"]);
}

#[test]
fn finding_output_never_contains_secret() {
    let scanner = Scanner::builtin().expect("built-in rules");
    let findings = scanner.scan_bytes(format!("T={GITHUB_TOKEN}").as_bytes());
    assert_eq!(findings.len(), 1);
    let debug = format!("{findings:?}");
    let json = serde_json::to_string(&findings).expect("serializes");
    assert!(!debug.contains(GITHUB_TOKEN), "{debug}");
    assert!(!json.contains(GITHUB_TOKEN), "{json}");
    assert!(!json.contains(&GITHUB_TOKEN[4..20]), "{json}");
}

#[test]
fn baseline_round_trip_filters_findings() {
    let scanner = Scanner::builtin().expect("built-in rules");
    let located = |path: &str, text: &str| -> Vec<Located> {
        scanner
            .scan_bytes(text.as_bytes())
            .into_iter()
            .map(|finding| Located {
                path: path.to_string(),
                commit: None,
                finding,
            })
            .collect()
    };
    let old = located("a.env", &format!("T={GITHUB_TOKEN}"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("baseline.json");
    Baseline::from_findings(&old).save(&file).expect("save");
    let baseline = Baseline::load(&file).expect("load");
    assert_eq!(baseline.entries().len(), 1);

    let mut moved = located("a.env", &format!("\n\nT={GITHUB_TOKEN}"));
    assert_eq!(
        baseline.filter(&mut moved),
        1,
        "a moved finding stays accepted"
    );
    assert!(moved.is_empty());

    let mut elsewhere = located("b.env", &format!("T={GITHUB_TOKEN}"));
    assert_eq!(
        baseline.filter(&mut elsewhere),
        0,
        "another file is a new finding"
    );
}

#[test]
fn baseline_with_wrong_version_is_rejected() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("baseline.json");
    std::fs::write(&file, r#"{"version": 7, "findings": []}"#).expect("write");
    let error = Baseline::load(&file).expect_err("version 7");
    assert!(error.to_string().contains("--update-baseline"), "{error}");
}
