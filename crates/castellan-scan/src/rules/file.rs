//! User rule files: Castellan's own TOML format and the gitleaks format.
//!
//! Both are TOML with a `[[rules]]` array. Castellan's fields are those of
//! [`RuleSpec`]; a gitleaks file is recognized by its camel-case fields
//! (`secretGroup`) or its `[rules.allowlist]` tables, and converted.

use std::path::Path;

use serde::Deserialize;

use super::RuleSpec;
use crate::error::ScanError;

/// The rules of one file, plus notes on gitleaks features that were skipped.
#[derive(Debug, Clone)]
pub struct RuleFile {
    pub rules: Vec<RuleSpec>,
    /// One line per rule or setting that could not be used, saying why.
    pub skipped: Vec<String>,
}

/// Reads a rule file in either format.
pub fn load_rule_file(path: &Path) -> Result<RuleFile, ScanError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScanError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_rule_file(&text).map_err(|message| ScanError::RuleFile {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses rule-file text; the error is a message for [`ScanError::RuleFile`].
pub fn parse_rule_file(text: &str) -> Result<RuleFile, String> {
    let raw: toml::Table = toml::from_str(text).map_err(|error| error.to_string())?;
    if is_gitleaks(&raw) {
        let file: GitleaksFile = toml::from_str(text).map_err(|error| error.to_string())?;
        return Ok(file.convert());
    }
    let file: CastellanFile = toml::from_str(text).map_err(|error| error.to_string())?;
    reject_duplicates(&file.rules)?;
    Ok(RuleFile {
        rules: file.rules,
        skipped: Vec::new(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CastellanFile {
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

fn is_gitleaks(raw: &toml::Table) -> bool {
    const GITLEAKS_TOP: [&str; 3] = ["title", "extend", "allowlist"];
    const GITLEAKS_RULE: [&str; 4] = ["secretGroup", "allowlist", "allowlists", "path"];
    let top = GITLEAKS_TOP.iter().any(|key| raw.contains_key(*key));
    let rule_fields = raw
        .get("rules")
        .and_then(toml::Value::as_array)
        .is_some_and(|rules| {
            rules.iter().any(|rule| {
                rule.as_table()
                    .is_some_and(|table| GITLEAKS_RULE.iter().any(|key| table.contains_key(*key)))
            })
        });
    top || rule_fields
}

fn reject_duplicates(rules: &[RuleSpec]) -> Result<(), String> {
    for (index, rule) in rules.iter().enumerate() {
        if rules[..index].iter().any(|earlier| earlier.id == rule.id) {
            return Err(format!(
                "rule id {:?} appears twice; give each rule its own id",
                rule.id
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize, Default)]
struct GitleaksAllowlist {
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    commits: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitleaksRule {
    id: String,
    #[serde(default)]
    description: String,
    regex: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    entropy: f64,
    secret_group: Option<usize>,
    path: Option<String>,
    allowlist: Option<GitleaksAllowlist>,
    #[serde(default)]
    allowlists: Vec<GitleaksAllowlist>,
}

#[derive(Deserialize)]
struct GitleaksFile {
    #[serde(default)]
    rules: Vec<GitleaksRule>,
    allowlist: Option<GitleaksAllowlist>,
}

impl GitleaksFile {
    fn convert(self) -> RuleFile {
        let mut skipped = Vec::new();
        let global = self.allowlist.unwrap_or_default();
        if !global.paths.is_empty() || !global.commits.is_empty() {
            skipped.push(
                "global allowlist paths and commits are ignored; use --exclude for paths"
                    .to_string(),
            );
        }
        let mut rules = Vec::new();
        for rule in self.rules {
            if let Some(spec) = convert_rule(rule, &global, &mut skipped) {
                rules.push(spec);
            }
        }
        RuleFile { rules, skipped }
    }
}

fn convert_rule(
    rule: GitleaksRule,
    global: &GitleaksAllowlist,
    skipped: &mut Vec<String>,
) -> Option<RuleSpec> {
    let Some(regex) = rule.regex else {
        skipped.push(format!(
            "rule {:?} matches file paths only, which is not supported; it was skipped",
            rule.id
        ));
        return None;
    };
    if rule.path.is_some() {
        skipped.push(format!(
            "rule {:?}: its path condition is ignored, so it applies to every file",
            rule.id
        ));
    }
    let mut allow = global.regexes.clone();
    let mut stopwords = global.stopwords.clone();
    for list in rule.allowlist.iter().chain(&rule.allowlists) {
        allow.extend(list.regexes.iter().cloned());
        stopwords.extend(list.stopwords.iter().cloned());
    }
    Some(RuleSpec {
        id: rule.id,
        description: rule.description,
        regex,
        keywords: rule.keywords,
        entropy: rule.entropy,
        secret_group: rule.secret_group,
        validator: Default::default(),
        generic: false,
        allow,
        stopwords,
    })
}
