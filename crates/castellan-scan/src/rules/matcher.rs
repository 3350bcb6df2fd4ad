//! The compiled regexes of one rule and where its secret sits in a match.

use regex::bytes::{Captures, Regex, RegexBuilder};

use super::builtin;
use crate::error::ScanError;

/// Upper bound on the compiled size of one rule's regex, in bytes.
const REGEX_SIZE_LIMIT: usize = 8 * 1024 * 1024;

/// Flag prefix of the ASCII-only mode that [`compile_regex`] tries first.
const ASCII_MODE: &str = "(?-u)";

/// Location of the secret within a match.
#[derive(Debug, Clone, Copy)]
enum SecretGroup {
    Index(usize),
    Named,
    Whole,
}

/// A rule's regex, compiled, with its secret group and line filter.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    pub(crate) regex: Regex,
    secret_group: SecretGroup,
    /// For generic rules: lines where this does not match cannot match
    /// `regex`, so they are skipped (see `Builtin::line_filter`).
    pub(crate) line_filter: Option<Regex>,
}

impl Matcher {
    /// Compiles `pattern` for the rule `id`, checking that `secret_group`
    /// (default: the `secret` group, else group 1, else the whole match)
    /// exists.
    pub(crate) fn compile(
        id: &str,
        pattern: &str,
        secret_group: Option<usize>,
    ) -> Result<Self, ScanError> {
        let regex = compile_regex(id, pattern)?;
        let secret_group = match secret_group {
            Some(index) if index >= regex.captures_len() => {
                return Err(ScanError::InvalidRule {
                    id: id.to_string(),
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
        let line_filter = compile_line_filter(id, pattern, &regex);
        Ok(Matcher {
            regex,
            secret_group,
            line_filter,
        })
    }

    /// Returns the span of the secret within one match.
    pub(crate) fn secret_span(&self, captures: &Captures<'_>) -> Option<(usize, usize)> {
        let group = match self.secret_group {
            SecretGroup::Index(index) => captures.get(index),
            SecretGroup::Named => captures.name("secret"),
            SecretGroup::Whole => captures.get(0),
        }?;
        Some((group.start(), group.end()))
    }
}

/// Compiles a pattern, trying ASCII-only mode first because it is faster on
/// arbitrary bytes, and Unicode mode for patterns that need it.
pub(crate) fn compile_regex(id: &str, pattern: &str) -> Result<Regex, ScanError> {
    build_regex(&format!("{ASCII_MODE}{pattern}"))
        .or_else(|_| build_regex(pattern))
        .map_err(|error| ScanError::InvalidRegex {
            id: id.to_string(),
            message: error.to_string(),
        })
}

fn build_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Compiles the line filter of a built-in rule in the mode its regex was
/// compiled in, so both read `\s` and case folding alike. A filter that
/// does not compile in that mode is left out: the rule then runs its full
/// regex on every keyword line, as it would without a filter.
fn compile_line_filter(id: &str, pattern: &str, regex: &Regex) -> Option<Regex> {
    let filter = builtin::find(id, pattern)?.line_filter?;
    // `compile_regex` keeps the pattern as written only when the ASCII
    // mode failed.
    let filter = match regex.as_str() == pattern {
        true => filter.to_string(),
        false => format!("{ASCII_MODE}{filter}"),
    };
    build_regex(&filter).ok()
}
