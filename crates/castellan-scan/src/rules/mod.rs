//! Rules: what a secret looks like, and the rule set compiled once for scanning.

mod builtin;
mod file;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::bytes::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

pub use file::{load_rule_file, parse_rule_file, RuleFile};

use crate::error::ScanError;
use crate::validate::Validator;

/// Upper bound on the compiled size of one rule's regex, in bytes.
const REGEX_SIZE_LIMIT: usize = 8 * 1024 * 1024;

/// A rule as written in a rule file, before compilation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub regex: String,
    /// Lowercase words of which at least one must occur (ASCII case-insensitively)
    /// before the regex runs; empty means the regex always runs.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Minimum Shannon entropy of the secret, in bits per byte.
    #[serde(default)]
    pub entropy: f64,
    /// Capture group holding the secret; default: the `secret` group, else
    /// group 1, else the whole match.
    #[serde(default)]
    pub secret_group: Option<usize>,
    #[serde(default)]
    pub validator: Validator,
    /// Applies the checks for assignments to secret-looking names, and lets
    /// provider rules win where both match.
    #[serde(default)]
    pub generic: bool,
    /// Regexes; a secret matching any of them is not reported.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Words; a secret containing any of them (case-insensitively) is not reported.
    #[serde(default)]
    pub stopwords: Vec<String>,
}

/// Location of the secret within a match.
#[derive(Debug, Clone, Copy)]
enum SecretGroup {
    Index(usize),
    Named,
    Whole,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub(crate) regex: Regex,
    pub(crate) keywords: Vec<String>,
    pub(crate) min_entropy: f64,
    pub(crate) validator: Validator,
    pub(crate) generic: bool,
    secret_group: SecretGroup,
    pub(crate) allow: Vec<Regex>,
    pub(crate) stopwords: Vec<Vec<u8>>,
}

impl Rule {
    /// Compiles a spec, trying ASCII-only mode first because it is faster on
    /// arbitrary bytes, and Unicode mode for patterns that need it.
    pub fn compile(spec: &RuleSpec) -> Result<Self, ScanError> {
        let regex = compile_regex(&spec.id, &spec.regex)?;
        let secret_group = match spec.secret_group {
            Some(index) if index >= regex.captures_len() => {
                return Err(ScanError::InvalidRule {
                    id: spec.id.clone(),
                    field: "secret_group",
                    message: format!(
                        "group {index} does not exist; the regex has {} groups",
                        regex.captures_len() - 1
                    ),
                });
            }
            Some(0) => SecretGroup::Whole,
            Some(index) => SecretGroup::Index(index),
            None if regex.capture_names().any(|name| name == Some("secret")) => SecretGroup::Named,
            None if regex.captures_len() > 1 => SecretGroup::Index(1),
            None => SecretGroup::Whole,
        };
        let allow = spec
            .allow
            .iter()
            .map(|pattern| compile_regex(&spec.id, pattern))
            .collect::<Result<_, _>>()?;
        Ok(Rule {
            id: spec.id.clone(),
            description: spec.description.clone(),
            regex,
            keywords: spec
                .keywords
                .iter()
                .map(|k| k.to_ascii_lowercase())
                .collect(),
            min_entropy: spec.entropy,
            validator: spec.validator,
            generic: spec.generic,
            secret_group,
            allow,
            stopwords: spec
                .stopwords
                .iter()
                .map(|word| word.to_ascii_lowercase().into_bytes())
                .collect(),
        })
    }

    /// Returns the span of the secret within one match.
    pub(crate) fn secret_span(
        &self,
        captures: &regex::bytes::Captures<'_>,
    ) -> Option<(usize, usize)> {
        let group = match self.secret_group {
            SecretGroup::Index(index) => captures.get(index),
            SecretGroup::Named => captures.name("secret"),
            SecretGroup::Whole => captures.get(0),
        }?;
        Some((group.start(), group.end()))
    }
}

fn compile_regex(id: &str, pattern: &str) -> Result<Regex, ScanError> {
    let build = |pattern: &str| {
        RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    build(&format!("(?-u){pattern}"))
        .or_else(|_| build(pattern))
        .map_err(|error| ScanError::InvalidRegex {
            id: id.to_string(),
            message: error.to_string(),
        })
}

/// Every rule, compiled once, with a keyword prefilter that decides which
/// regexes run on a given input.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    prefilter: AhoCorasick,
    /// Rule indexes per prefilter pattern.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords, which run on every input.
    unconditional: Vec<usize>,
}

impl RuleSet {
    /// Builds the built-in rule set.
    pub fn builtin() -> Result<Self, ScanError> {
        Self::from_specs(builtin_specs())
    }

    /// Builds a rule set from specs; a later spec replaces an earlier one
    /// with the same id.
    pub fn from_specs(specs: Vec<RuleSpec>) -> Result<Self, ScanError> {
        let mut rules: Vec<Rule> = Vec::with_capacity(specs.len());
        for spec in &specs {
            let rule = Rule::compile(spec)?;
            match rules.iter_mut().find(|existing| existing.id == rule.id) {
                Some(existing) => *existing = rule,
                None => rules.push(rule),
            }
        }
        Self::index(rules)
    }

    fn index(rules: Vec<Rule>) -> Result<Self, ScanError> {
        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut unconditional = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if rule.keywords.is_empty() {
                unconditional.push(index);
            }
            for keyword in &rule.keywords {
                match keywords.iter().position(|known| known == keyword) {
                    Some(pattern) => keyword_rules[pattern].push(index),
                    None => {
                        keywords.push(keyword.clone());
                        keyword_rules.push(vec![index]);
                    }
                }
            }
        }
        let prefilter = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            // A full DFA costs memory once per rule set (a few hundred
            // keywords) and is the fastest search kind.
            .kind(Some(AhoCorasickKind::DFA))
            .build(&keywords)
            .map_err(|error| ScanError::Prefilter {
                message: error.to_string(),
            })?;
        Ok(RuleSet {
            rules,
            prefilter,
            keyword_rules,
            unconditional,
        })
    }

    /// Returns the rules in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Returns which rules may match `data`, by keyword, with the keyword
    /// offsets that generic rules use to run only on the lines around them.
    pub(crate) fn candidates(&self, data: &[u8]) -> Candidates {
        let mut active = vec![false; self.rules.len()];
        let mut hits = vec![Vec::new(); self.rules.len()];
        for &index in &self.unconditional {
            active[index] = true;
        }
        for found in self.prefilter.find_overlapping_iter(data) {
            for &index in &self.keyword_rules[found.pattern().as_usize()] {
                active[index] = true;
                if self.rules[index].generic {
                    hits[index].push(found.start());
                }
            }
        }
        Candidates { active, hits }
    }
}

/// Rules that may match one input.
pub(crate) struct Candidates {
    pub active: Vec<bool>,
    /// Keyword offsets per rule, recorded for generic rules only.
    pub hits: Vec<Vec<usize>>,
}

/// Returns the built-in rules as specs, the starting point for user rule files.
pub fn builtin_specs() -> Vec<RuleSpec> {
    builtin::all()
        .map(|rule| RuleSpec {
            id: rule.id.to_string(),
            description: rule.description.to_string(),
            regex: rule.regex.to_string(),
            keywords: rule.keywords.iter().map(|k| k.to_string()).collect(),
            entropy: rule.min_entropy,
            secret_group: None,
            validator: rule.validator,
            generic: rule.generic,
            allow: Vec::new(),
            stopwords: Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
