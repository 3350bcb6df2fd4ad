//! The built-in rule table, one module per provider group.

mod cloud;
mod code_chat;
mod generic;
mod keys_db;
mod payment_ai;
mod registry_ops;

use crate::validate::Validator;

/// One built-in rule as static data; compiled by [`super::RuleSet::builtin`].
pub(crate) struct Builtin {
    pub id: &'static str,
    pub description: &'static str,
    pub keywords: &'static [&'static str],
    pub regex: &'static str,
    pub min_entropy: f64,
    pub validator: Validator,
    pub generic: bool,
    /// For generic rules: a regex that matches within every line where
    /// `regex` matches, cheap enough to skip most keyword lines before the
    /// full regex runs. It must match a contiguous part of every match of
    /// `regex`, with the same flags, so that skipping loses no finding.
    pub line_filter: Option<&'static str>,
    /// Every match of `regex` contains one of `keywords` and lies within one
    /// line, except for a boundary character after the secret that may be
    /// a newline. The regex then runs only on the lines around keyword
    /// occurrences instead of the whole input, with the same matches.
    pub line_local: bool,
}

/// Declares a provider rule whose secret is capture group 1 (or the
/// `secret` group, or the whole match when the pattern has no group).
pub(crate) const fn rule(
    id: &'static str,
    description: &'static str,
    keywords: &'static [&'static str],
    regex: &'static str,
) -> Builtin {
    Builtin {
        id,
        description,
        keywords,
        regex,
        min_entropy: 0.0,
        validator: Validator::None,
        generic: false,
        line_filter: None,
        line_local: false,
    }
}

impl Builtin {
    pub(crate) const fn entropy(mut self, bits_per_byte: f64) -> Self {
        self.min_entropy = bits_per_byte;
        self
    }

    pub(crate) const fn validator(mut self, validator: Validator) -> Self {
        self.validator = validator;
        self
    }

    pub(crate) const fn generic(mut self) -> Self {
        self.generic = true;
        self
    }

    pub(crate) const fn line_local(mut self) -> Self {
        self.line_local = true;
        self
    }

    pub(crate) const fn line_filter(mut self, pattern: &'static str) -> Self {
        self.line_filter = Some(pattern);
        self
    }
}

/// Trailing boundary: a character that cannot continue a token, or the end.
macro_rules! end {
    () => {
        r"(?:[^A-Za-z0-9_\-]|$)"
    };
}

/// Pattern for a value assigned to a name containing `$name`, for providers
/// whose keys have no distinctive prefix.
macro_rules! assigned {
    ($name:literal, $value:literal) => {
        concat!(
            r"(?i:",
            $name,
            r")[A-Za-z0-9_.\-]{0,24}[\x22'\]]?\s{0,3}(?:=|:=|:|=>|,)\s{0,3}[\x22'`]?(",
            $value,
            r")",
            end!()
        )
    };
}

pub(crate) use {assigned, end};

/// Returns the built-in rule with this id and regex, if any. A rule file
/// that keeps the id but replaces the regex gets `None`.
pub(crate) fn find(id: &str, regex: &str) -> Option<&'static Builtin> {
    all().find(|rule| rule.id == id && rule.regex == regex)
}

/// Returns every built-in rule.
pub(crate) fn all() -> impl Iterator<Item = &'static Builtin> {
    cloud::RULES
        .iter()
        .chain(code_chat::RULES)
        .chain(payment_ai::RULES)
        .chain(registry_ops::RULES)
        .chain(keys_db::RULES)
        .chain(generic::RULES)
}
