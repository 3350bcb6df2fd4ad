//! `castellan policy suggest AGENT`: a tightened role derived from the
//! requests the agent was allowed to make, printed as `castellan.toml` text
//! with the changes against its current rules as comments. The whole output
//! is valid TOML. The configuration is never written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Result};
use castellan_model::{Agent, Config, MethodSet, NormalizedPath, PathPattern, Rule};
use castellan_store::{now_ms, RouteUsage};

use crate::cli::SuggestArgs;
use crate::data_dir::DataDir;
use crate::output::{is_unprintable, printable_lines};

use crate::commands::posture::DAY_MS;

/// Maximum length of a role name, the limit castellan-model sets for every
/// declared name.
const MAX_ROLE_NAME_LEN: usize = 64;

/// Minimum length of a segment without a prefix that counts as a base62
/// identifier.
const MIN_BARE_ID_LEN: usize = 16;

/// Minimum length of an identifier after a prefix such as `cus_`.
const MIN_PREFIXED_ID_LEN: usize = 8;

/// Maximum length of the prefix before `_` in a prefixed identifier
/// (`cus_`, `org_`).
const MAX_ID_PREFIX_LEN: usize = 10;

pub async fn run(data_dir: &DataDir, args: &SuggestArgs) -> Result<ExitCode> {
    let config = data_dir.load_config()?;
    let Some(agent) = config.agents.get(&args.agent) else {
        bail!(
            "agent {:?} is not declared in {}; list agents with `castellan agent list`",
            args.agent,
            data_dir.config.display()
        );
    };
    let store = data_dir.open_store().await?;
    let since_ms = now_ms() - i64::from(args.days) * DAY_MS;
    let routes = store.route_usage(Some(&agent.name), since_ms).await?;
    // The comments quote paths from the audit log, which agents choose.
    // Strings are escaped by `toml_string` already, so this changes only
    // comments and keeps the output valid TOML.
    print!(
        "{}",
        printable_lines(&render(&config, agent, &routes, args.days))
    );
    Ok(ExitCode::SUCCESS)
}

/// Returns whether a path segment looks like an identifier rather than a
/// name: digits only, a UUID, 16 or more letters and digits with at least one
/// of each (long hex and base62 ids), or such an id of 8 or more characters
/// after a lowercase prefix and `_` (`cus_NffrFeUfNV2Hib`).
pub fn is_identifier(segment: &str) -> bool {
    if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    if is_uuid(segment) {
        return true;
    }
    if let Some((prefix, body)) = segment.split_once('_') {
        let short_word = !prefix.is_empty()
            && prefix.len() <= MAX_ID_PREFIX_LEN
            && prefix.bytes().all(|b| b.is_ascii_lowercase());
        if short_word && is_mixed_alphanumeric(body, MIN_PREFIXED_ID_LEN) {
            return true;
        }
    }
    is_mixed_alphanumeric(segment, MIN_BARE_ID_LEN)
}

fn is_mixed_alphanumeric(text: &str, min_len: usize) -> bool {
    text.len() >= min_len
        && text.bytes().all(|b| b.is_ascii_alphanumeric())
        && text.bytes().any(|b| b.is_ascii_digit())
        && text.bytes().any(|b| b.is_ascii_alphabetic())
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Replaces identifier segments of a normalized path with `*`.
pub fn path_template(path: &str) -> String {
    let segments: Vec<&str> = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(|segment| if is_identifier(segment) { "*" } else { segment })
        .collect();
    format!("/{}", segments.join("/"))
}

/// One route of the suggestion: a method and a path pattern on a connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    connection: String,
    method: String,
    pattern: String,
}

/// Returns the pattern for `route`: its template when that parses and
/// matches the path, else the path itself. `None` when neither parses.
fn grant_for(route: &RouteUsage) -> Option<Grant> {
    let path = NormalizedPath::parse(&route.path).ok()?;
    let template = path_template(&route.path);
    let pattern = [template, route.path.clone()]
        .into_iter()
        .find(|candidate| PathPattern::parse(candidate).is_ok_and(|p| p.matches(&path)))?;
    Some(Grant {
        connection: route.connection.clone(),
        method: route.method.clone(),
        pattern,
    })
}

/// Returns the current rules of `agent`'s roles with their effect.
fn agent_rules<'a>(config: &'a Config, agent: &Agent) -> (Vec<&'a Rule>, Vec<&'a Rule>) {
    let roles: Vec<_> = agent
        .roles
        .iter()
        .filter_map(|name| config.roles.get(name))
        .collect();
    let allow = roles.iter().flat_map(|role| role.allow.iter()).collect();
    let deny = roles.iter().flat_map(|role| role.deny.iter()).collect();
    (allow, deny)
}

fn rule_matches(rule: &Rule, route: &RouteUsage) -> bool {
    rule.connection == route.connection
        && rule.methods.contains(&route.method)
        && NormalizedPath::parse(&route.path)
            .is_ok_and(|path| rule.paths.iter().any(|pattern| pattern.matches(&path)))
}

fn render(config: &Config, agent: &Agent, routes: &[RouteUsage], days: u32) -> String {
    let (allow, deny) = agent_rules(config, agent);
    // Only routes the current rules still allow: the suggestion must never
    // grant more than the agent has now, even if the configuration changed
    // since the requests were made.
    let (current, outdated): (Vec<&RouteUsage>, Vec<&RouteUsage>) =
        routes.iter().partition(|route| {
            allow.iter().any(|rule| rule_matches(rule, route))
                && !deny.iter().any(|rule| rule_matches(rule, route))
        });
    let grants: BTreeSet<Grant> = current
        .iter()
        .filter_map(|route| grant_for(route))
        .collect();
    let role_name = suggested_role_name(config, &agent.name);
    let requests: u64 = current.iter().map(|route| route.requests).sum();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Tightened role for agent {:?}, from {requests} allowed requests in the last {days} days.",
        agent.name
    );
    let _ = writeln!(
        out,
        "# Identifier segments (numbers, UUIDs, long hex or base62 ids) became `*`. Review it, then set\n# roles = [{}] in [agents.{}]. castellan did not change the configuration.",
        toml_string(&role_name),
        agent.name
    );
    let _ = writeln!(out, "[roles.{role_name}]");
    write_allow(&mut out, &grants);
    write_deny(&mut out, &deny, &grants);
    out.push('\n');
    write_changes(&mut out, agent, &allow, &current, days);
    for route in outdated {
        let _ = writeln!(
            out,
            "# note: {} /{}{} was allowed earlier, but the current rules do not allow it; it is left out.",
            route.method, route.connection, route.path
        );
    }
    out
}

/// Writes `allow = [...]`, one rule per connection and set of methods.
fn write_allow(out: &mut String, grants: &BTreeSet<Grant>) {
    // (connection, pattern) -> methods, then (connection, methods) -> patterns.
    let mut methods_by_pattern: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for grant in grants {
        methods_by_pattern
            .entry((&grant.connection, &grant.pattern))
            .or_default()
            .insert(&grant.method);
    }
    let mut patterns_by_methods: BTreeMap<(&str, Vec<&str>), Vec<&str>> = BTreeMap::new();
    for ((connection, pattern), methods) in methods_by_pattern {
        patterns_by_methods
            .entry((connection, methods.into_iter().collect()))
            .or_default()
            .push(pattern);
    }
    if patterns_by_methods.is_empty() {
        out.push_str("allow = []\n");
        return;
    }
    out.push_str("allow = [\n");
    for ((connection, methods), patterns) in patterns_by_methods {
        let _ = writeln!(
            out,
            "  {{ connection = {}, methods = [{}], paths = [{}] }},",
            toml_string(connection),
            toml_list(&methods),
            toml_list(&patterns)
        );
    }
    out.push_str("]\n");
}

/// Copies the agent's deny rules on the connections the suggestion allows,
/// so a deny inside a broadened `*` still holds.
fn write_deny(out: &mut String, deny: &[&Rule], grants: &BTreeSet<Grant>) {
    let connections: BTreeSet<&str> = grants.iter().map(|g| g.connection.as_str()).collect();
    let copied: Vec<&&Rule> = deny
        .iter()
        .filter(|rule| connections.contains(rule.connection.as_str()))
        .collect();
    if copied.is_empty() {
        return;
    }
    out.push_str("deny = [\n");
    for rule in copied {
        let methods: Vec<&str> = match &rule.methods {
            MethodSet::Any => vec!["*"],
            MethodSet::Only(methods) => methods.iter().map(String::as_str).collect(),
        };
        let patterns: Vec<&str> = rule.paths.iter().map(PathPattern::as_str).collect();
        let _ = writeln!(
            out,
            "  {{ connection = {}, methods = [{}], paths = [{}] }},  # copied from {}",
            toml_string(&rule.connection),
            toml_list(&methods),
            toml_list(&patterns),
            rule.id
        );
    }
    out.push_str("]\n");
}

/// Writes, as comments, each method and pattern of the current allow rules
/// with `-` when no allowed request used it (the suggestion drops it) or
/// with what the suggestion narrows it to.
fn write_changes(
    out: &mut String,
    agent: &Agent,
    allow: &[&Rule],
    routes: &[&RouteUsage],
    days: u32,
) {
    let _ = writeln!(
        out,
        "# Changes against the allow rules of agent {:?} (roles: {}):",
        agent.name,
        agent.roles.join(", ")
    );
    if allow.is_empty() {
        out.push_str("#   (its roles have no allow rules)\n");
    }
    for rule in allow {
        let methods: Vec<&str> = match &rule.methods {
            MethodSet::Any => vec!["*"],
            MethodSet::Only(methods) => methods.iter().map(String::as_str).collect(),
        };
        for method in methods {
            for pattern in &rule.paths {
                let narrowed: BTreeSet<String> = routes
                    .iter()
                    .filter(|route| {
                        route.connection == rule.connection
                            && (method == "*" || route.method == method)
                            && NormalizedPath::parse(&route.path)
                                .is_ok_and(|path| pattern.matches(&path))
                    })
                    .filter_map(|route| grant_for(route))
                    .map(|grant| format!("{} {}", grant.method, grant.pattern))
                    .collect();
                let line = format!(
                    "{} {} {method} {}",
                    rule.id,
                    rule.connection,
                    pattern.as_str()
                );
                if narrowed.is_empty() {
                    let _ = writeln!(
                        out,
                        "# - {line}  (removed: no allowed request in the last {days} days)"
                    );
                } else if narrowed.len() == 1
                    && narrowed.contains(&format!("{method} {}", pattern.as_str()))
                {
                    let _ = writeln!(out, "#   {line}  (kept)");
                } else {
                    let listed: Vec<&str> = narrowed.iter().map(String::as_str).collect();
                    let _ = writeln!(out, "#   {line}  (narrowed to: {})", listed.join(", "));
                }
            }
        }
    }
}

/// Returns `<agent>-suggested`, shortened to the name limit and numbered
/// when the configuration already has a role of that name.
fn suggested_role_name(config: &Config, agent: &str) -> String {
    const SUFFIX: &str = "-suggested";
    let mut base: String = agent
        .chars()
        .take(MAX_ROLE_NAME_LEN - SUFFIX.len() - 3)
        .collect();
    base.push_str(SUFFIX);
    let mut name = base.clone();
    let mut number = 2;
    while config.roles.contains_key(&name) {
        name = format!("{base}-{number}");
        number += 1;
    }
    name
}

/// Writes a TOML basic string, escaping quotes, backslashes, and the
/// control and bidirectional formatting characters that
/// [`crate::output::printable`] escapes.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if is_unprintable(c) => {
                let _ = write!(quoted, "\\u{:04X}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn toml_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| toml_string(item))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_recognized() {
        let identifiers = [
            "42",
            "0",
            "123e4567-e89b-12d3-a456-426614174000",
            "123E4567-E89B-12D3-A456-426614174000",
            "3f2a9c0d4e5b6a7f",
            "a1b2c3d4e5f6a7b8c9d0",
            "Xk29vLq8Zp3Nf7Rt",
            "cus_NffrFeUfNV2Hib",
            "org_9aZ3kd8Q",
        ];
        for segment in identifiers {
            assert!(is_identifier(segment), "{segment} is an identifier");
        }
        let names = [
            "",
            "v1",
            "users",
            "repos",
            "chat",
            "completions",
            "sha256",
            "deadbeefdeadbeef",
            "my_name",
            "Org_9aZ3kd8Q",
            "thisisaverylongname",
            "file.json",
            "12ab-34",
        ];
        for segment in names {
            assert!(!is_identifier(segment), "{segment} is a name");
        }
    }

    #[test]
    fn templates_generalize_ids_only() {
        let cases = [
            ("/repos/acme/app/issues/42", "/repos/acme/app/issues/*"),
            (
                "/v1/files/123e4567-e89b-12d3-a456-426614174000/content",
                "/v1/files/*/content",
            ),
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/", "/"),
            ("/items/7/", "/items/*/"),
        ];
        for (path, expected) in cases {
            assert_eq!(path_template(path), expected, "for {path}");
        }
    }

    #[test]
    fn toml_strings_escaped() {
        assert_eq!(toml_string("/a\"b\\c"), "\"/a\\\"b\\\\c\"");
        assert_eq!(toml_string("x\u{1b}"), "\"x\\u001B\"");
        assert_eq!(toml_string("/a\u{202e}b"), "\"/a\\u202Eb\"");
    }
}
