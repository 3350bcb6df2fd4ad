//! Rules: what a secret looks like, and the rule set compiled once for scanning.

mod builtin;
mod file;
mod keywords;
mod matcher;

use std::sync::OnceLock;

use regex::bytes::Regex;
use serde::{Deserialize, Serialize};

pub use file::{load_rule_file, parse_rule_file, RuleFile};
use keywords::KeywordSearch;
use matcher::compile_regex;
pub(crate) use matcher::Matcher;

use crate::error::ScanError;
use crate::validate::Validator;

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

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pattern: String,
    secret_group: Option<usize>,
    /// The compiled regex; empty until first use for built-in rules.
    matcher: OnceLock<Matcher>,
    pub(crate) keywords: Vec<String>,
    pub(crate) min_entropy: f64,
    pub(crate) validator: Validator,
    pub(crate) generic: bool,
    /// The regex runs only on the lines around keyword occurrences (see
    /// `Builtin::line_local`). Set for built-in rules whose regex and
    /// keywords a spec leaves unchanged.
    pub(crate) line_local: bool,
    pub(crate) allow: Vec<Regex>,
    pub(crate) stopwords: Vec<Vec<u8>>,
}

impl Rule {
    /// Compiles a spec; an invalid regex or secret group is an error.
    ///
    /// A spec with the id and regex of a built-in rule and the default
    /// secret group compiles its regex on first use instead. Compiling all
    /// built-in rules takes tens of milliseconds, a scan usually needs a few
    /// of them, and a test compiles every one of them.
    pub fn compile(spec: &RuleSpec) -> Result<Self, ScanError> {
        let matcher = OnceLock::new();
        let deferred =
            spec.secret_group.is_none() && builtin::find(&spec.id, &spec.regex).is_some();
        if !deferred {
            let compiled = Matcher::compile(&spec.id, &spec.regex, spec.secret_group)?;
            matcher.get_or_init(|| compiled);
        }
        let keywords: Vec<String> = spec
            .keywords
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect();
        // A changed keyword list could leave matches without a keyword in
        // them, which a search of keyword lines alone would miss.
        let line_local = builtin::find(&spec.id, &spec.regex).is_some_and(|builtin| {
            builtin.line_local && builtin.keywords.iter().eq(keywords.iter())
        });
        let allow = spec
            .allow
            .iter()
            .map(|pattern| compile_regex(&spec.id, pattern))
            .collect::<Result<_, _>>()?;
        Ok(Rule {
            id: spec.id.clone(),
            description: spec.description.clone(),
            pattern: spec.regex.clone(),
            secret_group: spec.secret_group,
            matcher,
            keywords,
            min_entropy: spec.entropy,
            validator: spec.validator,
            generic: spec.generic,
            line_local,
            allow,
            stopwords: spec
                .stopwords
                .iter()
                .map(|word| word.to_ascii_lowercase().into_bytes())
                .collect(),
        })
    }

    /// Returns whether the regex runs on the lines around keyword
    /// occurrences only, instead of the whole input.
    pub(crate) fn searches_keyword_lines(&self) -> bool {
        (self.generic || self.line_local) && !self.keywords.is_empty()
    }

    /// Returns the compiled regex, compiling it on first use.
    ///
    /// # Panics
    ///
    /// If a deferred built-in regex does not compile, which the test
    /// `builtin_rules_compile` rules out for every built-in rule.
    pub(crate) fn matcher(&self) -> &Matcher {
        self.matcher.get_or_init(|| {
            Matcher::compile(&self.id, &self.pattern, self.secret_group).unwrap_or_else(|error| {
                panic!("built-in rule {} does not compile: {error}", self.id)
            })
        })
    }
}

/// Every rule, compiled once, with a keyword prefilter that decides which
/// regexes run on a given input.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    prefilter: KeywordSearch,
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
        let prefilter = KeywordSearch::new(&keywords)?;
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
        self.prefilter.for_each_match(data, |pattern, start| {
            for &index in &self.keyword_rules[pattern] {
                active[index] = true;
                if self.rules[index].searches_keyword_lines() {
                    hits[index].push(start);
                }
            }
        });
        Candidates { active, hits }
    }
}

/// Rules that may match one input.
pub(crate) struct Candidates {
    pub active: Vec<bool>,
    /// Keyword offsets per rule, recorded only for rules that search
    /// keyword lines.
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
