//! Checks that decide whether one regex match becomes a finding.

use regex::bytes::Captures;

use crate::entropy::shannon;
use crate::filter::{is_placeholder, is_uuid};
use crate::rules::Rule;

/// Name endings that mark a value as an id, a setting or a reference to a
/// secret rather than the secret (`token_type`, `key_id`, `password_file`).
const NAME_SUFFIXES: &[&str] = &[
    "id",
    "ids",
    "uuid",
    "guid",
    "name",
    "names",
    "type",
    "kind",
    "path",
    "file",
    "dir",
    "url",
    "uri",
    "endpoint",
    "length",
    "len",
    "size",
    "count",
    "format",
    "version",
    "header",
    "field",
    "prefix",
    "suffix",
    "env",
    "var",
    "ttl",
    "expiry",
    "expires",
    "timeout",
    "hint",
    "label",
    "mode",
    "algorithm",
    "alg",
    "ref",
    "location",
    "policy",
    "provider",
    "source",
    "store",
];

/// Name parts that look like secret names but are not (`public_key`, `keyword`).
const NAME_LOOKALIKES: &[&str] = &[
    "public",
    "publishable",
    "keyword",
    "keyboard",
    "keyframe",
    "keypress",
    "keystroke",
    "keycode",
    "monkey",
    "donkey",
    "turkey",
    "hockey",
    "tokenizer",
    "tokenize",
    "primary_key",
    "foreign_key",
    "sort_key",
    "partition_key",
    "cache_key",
    "hotkey",
];

/// Returns whether the secret of one match passes every check of its rule.
pub(crate) fn accept(rule: &Rule, captures: &Captures<'_>, secret: &[u8]) -> bool {
    if secret.is_empty() || is_placeholder(secret) {
        return false;
    }
    let lower = secret.to_ascii_lowercase();
    if rule
        .stopwords
        .iter()
        .any(|word| lower.windows(word.len()).any(|window| window == &word[..]))
    {
        return false;
    }
    if rule.allow.iter().any(|allow| allow.is_match(secret)) {
        return false;
    }
    if captures
        .name("user")
        .is_some_and(|user| user.as_bytes() == secret)
    {
        return false;
    }
    if captures
        .name("host")
        .is_some_and(|host| is_documentation_host(host.as_bytes()))
    {
        return false;
    }
    if shannon(secret) < rule.min_entropy || !rule.validator.accepts(secret) {
        return false;
    }
    !rule.generic || accept_generic(captures, secret)
}

/// Extra checks of generic rules, which match many assignments in ordinary code.
fn accept_generic(captures: &Captures<'_>, secret: &[u8]) -> bool {
    let has_digit = secret.iter().any(u8::is_ascii_digit);
    let has_letter = secret.iter().any(u8::is_ascii_alphabetic);
    if !has_digit || !has_letter {
        return false;
    }

    // Unquoted values count only in config-style lines (`NAME=value` at the
    // start of a line), because in code they are identifiers, types and
    // expressions such as `token = parse_token_v2(input)`.
    let quoted = captures.name("quote").is_some_and(|q| !q.is_empty());
    let at_line_start = captures.name("lead").is_some();
    let after = captures.name("after").map(|m| m.as_bytes()).unwrap_or(b"");
    if !quoted
        && (!at_line_start || matches!(after.first(), Some(b'(' | b'[' | b'{' | b'<' | b':')))
    {
        return false;
    }
    if is_snake_case(secret) {
        return false;
    }

    let Some(name) = captures.name("name") else {
        return true;
    };
    let name = name.as_bytes().to_ascii_lowercase();
    if NAME_LOOKALIKES.iter().any(|part| {
        name.windows(part.len())
            .any(|window| window == part.as_bytes())
    }) {
        return false;
    }
    let last_word = name
        .rsplit(|&byte| matches!(byte, b'_' | b'-' | b'.'))
        .next()
        .unwrap_or(&name);
    let id_like = NAME_SUFFIXES.iter().any(|suffix| {
        last_word == suffix.as_bytes() || name.ends_with(suffix.as_bytes()) && suffix.len() > 3
    });
    !(id_like || is_uuid(secret) && name.windows(2).any(|w| w == b"id"))
}

/// Returns whether `value` is a `snake_case` or `SCREAMING_SNAKE_CASE`
/// identifier, the shape of constants and enum names rather than keys.
fn is_snake_case(value: &[u8]) -> bool {
    let words = value.split(|&byte| byte == b'_');
    let all_words = |case: fn(&u8) -> bool| {
        value.contains(&b'_')
            && words
                .clone()
                .all(|word| !word.is_empty() && word.iter().all(|b| case(b) || b.is_ascii_digit()))
    };
    all_words(u8::is_ascii_lowercase) || all_words(u8::is_ascii_uppercase)
}

/// Returns whether `host` is reserved for documentation by RFC 2606
/// (`example.com`, `example.net`, `example.org` and names under `.example`).
fn is_documentation_host(host: &[u8]) -> bool {
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix(b".").unwrap_or(&host);
    let under =
        |domain: &str| host == domain.as_bytes() || host.ends_with(format!(".{domain}").as_bytes());
    ["example.com", "example.net", "example.org", "example"]
        .iter()
        .any(|domain| under(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_identifiers_are_recognized() {
        let cases = [
            ("caching_sha2_password", true),
            ("DOT11EXT_SET_DEFAULT_KEY", true),
            ("q8Vd2LmX0pRt7WzK", false),
            ("Mixed_Case_Value1", false),
            ("trailing_", false),
        ];
        for (value, expected) in cases {
            assert_eq!(is_snake_case(value.as_bytes()), expected, "{value}");
        }
    }

    #[test]
    fn documentation_hosts_are_recognized() {
        let cases = [
            ("example.com", true),
            ("api.example.org", true),
            ("db.example", true),
            ("example.com.evil.test", false),
            ("notexample.com", false),
            ("db.corpus.test", false),
        ];
        for (host, expected) in cases {
            assert_eq!(is_documentation_host(host.as_bytes()), expected, "{host}");
        }
    }
}
