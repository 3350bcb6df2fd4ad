//! Generation of Cedar policy text from roles, rules and agent networks.
//!
//! Cedar's `like` lets `*` match across `/`, so one path string cannot
//! express "exactly one segment". Each pattern is therefore compiled to
//! conditions on the request context: `depth` (the number of segments),
//! `s0, s1, ...` (segments counted from the start) and `r0, r1, ...`
//! (segments counted from the end). Every attribute access sits behind a
//! `depth` test, and `&&` short-circuits, so no condition can raise an
//! evaluation error.

use std::net::IpAddr;

use castellan_model::{MethodSet, PathPattern, Rule, RuleEffect, RuleId, Segment};
use ipnet::IpNet;

use crate::error::PolicyError;

/// The largest `s` and `r` attribute counts that any generated policy reads,
/// so requests carry only the segments some policy can look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ContextShape {
    pub(crate) from_start: usize,
    pub(crate) from_end: usize,
}

impl ContextShape {
    fn include(&mut self, from_start: usize, from_end: usize) {
        self.from_start = self.from_start.max(from_start);
        self.from_end = self.from_end.max(from_end);
    }
}

/// Writes the policy that Cedar evaluates for one rule: its conditions
/// under an unconstrained scope, without the `@id` annotation.
///
/// Cedar evaluates a rule's policy only for the rules of the agent's roles
/// whose scope covers the request's connection and method (`RuleSets`, and
/// `RuleScope::covers` in explanations), so the scope is always true there.
/// Leaving it out saves building and testing the scope expressions on every
/// evaluation, among them the set of `action in [...]`, and lets rules with
/// the same effect and conditions share one policy.
/// [`displayed_rule_policy`] puts the scope back for display. `shape` grows
/// to cover the segment attributes the policy reads.
pub(crate) fn rule_policy(rule: &Rule, shape: &mut ContextShape) -> Result<String, PolicyError> {
    let id = rule.id.to_string();
    if rule.paths.is_empty() {
        return Err(PolicyError::NoPaths { rule: id });
    }
    if action_scope(&rule.methods).is_none() {
        return Err(PolicyError::NoMethods { rule: id });
    }
    let mut conditions = Vec::with_capacity(rule.paths.len());
    for pattern in &rule.paths {
        let condition = pattern_condition(pattern, shape)
            .ok_or_else(|| PolicyError::RepeatedAnyDepth { rule: id.clone() })?;
        conditions.push(format!("({condition})"));
    }
    let scope = UNCONSTRAINED.map(str::to_string);
    Ok(policy_text(
        effect_keyword(rule.id.effect),
        &scope,
        "when",
        &conditions,
    ))
}

/// Writes the policy of a rule as displayed: the text that [`rule_policy`]
/// wrote for it (`evaluated`), with the rule's role, methods and connection
/// in the scope, and without the `@id` annotation.
///
/// Each displayed policy, evaluated by itself with an agent of the role as the
/// principal, decides as the evaluated one does after selection.
pub(crate) fn displayed_rule_policy(
    id: &RuleId,
    connection: &str,
    methods: &MethodSet,
    evaluated: &str,
) -> String {
    let effect = effect_keyword(id.effect);
    let unconstrained = scope_text(effect, &UNCONSTRAINED.map(str::to_string));
    // Cedar displays a policy parsed from text as that text, so the prefix
    // is always there. Without it, the evaluated text is at least valid.
    let Some(conditions) = evaluated.strip_prefix(&unconstrained) else {
        debug_assert!(false, "unexpected evaluated policy {evaluated}");
        return evaluated.to_string();
    };
    // `rule_policy` rejects an empty method list, which no method matches.
    let action = action_scope(methods).unwrap_or_else(|| "action in []".to_string());
    let scope = [
        format!("principal in Role::{}", string_literal(&id.role)),
        action,
        format!("resource == Connection::{}", string_literal(connection)),
    ];
    let mut text = scope_text(effect, &scope);
    text.push_str(conditions);
    text
}

/// The scope of an evaluated rule policy.
const UNCONSTRAINED: [&str; 3] = ["principal", "action", "resource"];

fn effect_keyword(effect: RuleEffect) -> &'static str {
    match effect {
        RuleEffect::Allow => "permit",
        RuleEffect::Deny => "forbid",
    }
}

/// Writes the `forbid` policy that rejects sources outside the `networks`
/// of agent `name`, with its `@id` annotation. The networks must have their
/// host bits cleared.
///
/// `Policy::authorize` checks the same ranges in Rust before Cedar runs and
/// names this policy when it denies, so Cedar never parses the source
/// address. The text is what `Policy::cedar_text` and explanations show.
pub(crate) fn network_policy_text(name: &str, networks: &[IpNet]) -> String {
    // Cedar masks host bits itself, so clearing them only makes the
    // generated text show the range (`10.1.2.3/8` as `10.0.0.0/8`).
    let ranges: Vec<String> = networks
        .iter()
        .map(|network| {
            let range = network_literal(network.addr(), network.prefix_len());
            format!("context.source.isInRange(ip({}))", string_literal(&range))
        })
        .collect();
    let scope = [
        format!("principal == Agent::{}", string_literal(name)),
        "action".to_string(),
        "resource".to_string(),
    ];
    let text = policy_text("forbid", &scope, "unless", &ranges);
    annotated(&network_policy_id(name), &text)
}

/// Lays out one policy: the effect, the three scope constraints and a
/// `when` or `unless` clause that ORs `conditions`.
fn policy_text(effect: &str, scope: &[String; 3], clause: &str, conditions: &[String]) -> String {
    let mut text = scope_text(effect, scope);
    text.push_str(&format!(
        "{clause} {{\n  {}\n}};\n",
        conditions.join(" ||\n  ")
    ));
    text
}

/// Writes the effect and the scope of a policy, up to and including the
/// line with the closing parenthesis.
fn scope_text(effect: &str, scope: &[String; 3]) -> String {
    format!(
        "{effect} (\n  {},\n  {},\n  {}\n)\n",
        scope[0], scope[1], scope[2]
    )
}

/// Puts the `@id` annotation that names the policy `id` on a line before
/// `policy`, the form in which `Policy::cedar_text` and `castellan policy
/// explain --cedar` show a generated policy.
pub(crate) fn annotated(id: &str, policy: &str) -> String {
    format!("@id({})\n{policy}", string_literal(id))
}

/// Returns the id of the network policy of agent `name`.
pub(crate) fn network_policy_id(name: &str) -> String {
    format!("agents.{name}.networks")
}

/// Returns the agent name in a network policy id, the inverse of
/// [`network_policy_id`].
pub(crate) fn network_policy_agent(id: &str) -> Option<&str> {
    id.strip_prefix("agents.")?.strip_suffix(".networks")
}

/// Formats an address the way Cedar's `ip()` accepts it.
///
/// IPv6 is written as eight hexadecimal groups because Cedar (checked in
/// cedar-policy-core 4.14) rejects the dotted IPv4 tail (`::ffff:1.2.3.4`)
/// that Rust's `Display` produces for IPv4-mapped addresses.
pub(crate) fn address_literal(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let groups: Vec<String> = v6
                .segments()
                .iter()
                .map(|group| format!("{group:x}"))
                .collect();
            groups.join(":")
        }
    }
}

fn network_literal(address: IpAddr, prefix_len: u8) -> String {
    format!("{}/{prefix_len}", address_literal(address))
}

fn action_scope(methods: &MethodSet) -> Option<String> {
    match methods {
        MethodSet::Any => Some("action".to_string()),
        MethodSet::Only(list) if list.is_empty() => None,
        MethodSet::Only(list) => {
            let actions: Vec<String> = list
                .iter()
                .map(|method| format!("Action::{}", string_literal(method)))
                .collect();
            Some(format!("action in [{}]", actions.join(", ")))
        }
    }
}

/// Compiles one pattern, or returns `None` for a pattern with a `**` that
/// is not the single split point (which `PathPattern::parse` rejects).
fn pattern_condition(pattern: &PathPattern, shape: &mut ContextShape) -> Option<String> {
    let (prefix, suffix) = match pattern.split_any_depth() {
        Some((prefix, suffix)) => (prefix, Some(suffix)),
        None => (pattern.segments(), None),
    };
    let mut terms = Vec::new();
    match suffix {
        None => terms.push(format!("context.depth == {}", prefix.len())),
        Some(suffix) => terms.push(format!("context.depth >= {}", prefix.len() + suffix.len())),
    }
    for (index, segment) in prefix.iter().enumerate() {
        terms.push(segment_condition(&format!("s{index}"), segment)?);
    }
    let suffix = suffix.unwrap_or_default();
    for (index, segment) in suffix.iter().rev().enumerate() {
        terms.push(segment_condition(&format!("r{index}"), segment)?);
    }
    shape.include(prefix.len(), suffix.len());
    Some(terms.join(" && "))
}

fn segment_condition(attribute: &str, segment: &Segment) -> Option<String> {
    match segment {
        Segment::Literal(text) => Some(format!("context.{attribute} == {}", string_literal(text))),
        Segment::Any => Some(format!("context.{attribute} != \"\"")),
        Segment::Glob(parts) => Some(format!("context.{attribute} like {}", like_literal(parts))),
        Segment::AnyDepth => None,
    }
}

/// Quotes `text` as a Cedar string literal.
pub(crate) fn string_literal(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        push_escaped(&mut quoted, c);
    }
    quoted.push('"');
    quoted
}

/// Quotes glob `parts` as a Cedar `like` pattern: the parts joined by `*`,
/// with any `*` inside a part escaped so it matches only itself.
fn like_literal(parts: &[String]) -> String {
    let mut quoted = String::from("\"");
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            quoted.push('*');
        }
        for c in part.chars() {
            if c == '*' {
                quoted.push_str("\\*");
            } else {
                push_escaped(&mut quoted, c);
            }
        }
    }
    quoted.push('"');
    quoted
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        ' '..='~' => out.push(c),
        other => out.push_str(&format!("\\u{{{:x}}}", u32::from(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literal_escapes_quotes_and_controls() {
        let cases = [
            ("posts", "\"posts\""),
            ("a\"b", "\"a\\\"b\""),
            ("a\\b", "\"a\\\\b\""),
            ("it's", "\"it's\""),
            ("%7E:@~", "\"%7E:@~\""),
            ("a*b", "\"a*b\""),
            ("\n", "\"\\u{a}\""),
            ("é", "\"\\u{e9}\""),
        ];
        for (text, expected) in cases {
            assert_eq!(string_literal(text), expected, "{text:?}");
            let policy =
                format!("permit (principal, action, resource) when {{ context.x == {expected} }};");
            let parsed = cedar_policy::Policy::parse(None, &policy);
            assert!(parsed.is_ok(), "Cedar rejects {expected}: {parsed:?}");
        }
    }

    #[test]
    fn like_literal_escapes_stars_in_parts() {
        let parts = ["a*".to_string(), "\"x\\".to_string()];
        assert_eq!(like_literal(&parts), "\"a\\**\\\"x\\\\\"");
    }

    #[test]
    fn mapped_ipv6_written_without_dots() {
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("valid address");
        assert_eq!(address_literal(mapped), "0:0:0:0:0:ffff:a01:203");
        assert_eq!(network_literal(mapped, 104), "0:0:0:0:0:ffff:a01:203/104");
    }

    /// `Policy::compile` keeps network policies as text without parsing
    /// them, so this checks that Cedar accepts what the generator writes.
    #[test]
    fn network_policies_parse_in_cedar() {
        let text = r#"
[agents.bot_v2-x]
owner = "jay@example.com"
networks = ["10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1", "::ffff:192.0.2.0/120", "0.0.0.0/0"]
"#;
        let config = castellan_model::Config::parse(text, std::path::Path::new("castellan.toml"))
            .expect("valid configuration");
        let agent = &config.agents["bot_v2-x"];
        let networks: Vec<IpNet> = agent.networks.iter().map(IpNet::trunc).collect();
        let policy = network_policy_text(&agent.name, &networks);
        let id = cedar_policy::PolicyId::new(network_policy_id(&agent.name));
        let parsed = cedar_policy::Policy::parse(Some(id), &policy);
        assert!(parsed.is_ok(), "Cedar rejects {policy}: {parsed:?}");
    }

    #[test]
    fn evaluated_rule_leaves_scope_to_selection() {
        let text = r#"
[connections.blog]
upstream = "https://blog.example.com"
auth = { kind = "bearer" }
secret = "blog-token"

[roles.editor]
deny = [{ connection = "blog", paths = ["/a\")/**"] }]
allow = [{ connection = "blog", methods = ["GET", "HEAD"], paths = ["/posts/*"] }]
"#;
        let config = castellan_model::Config::parse(text, std::path::Path::new("castellan.toml"))
            .expect("valid configuration");
        let role = &config.roles["editor"];
        let mut shape = ContextShape::default();

        let allow = &role.allow[0];
        let evaluated = rule_policy(allow, &mut shape).expect("rule compiles");
        assert_eq!(
            evaluated,
            "permit (\n  principal,\n  action,\n  resource\n)\n\
             when {\n  (context.depth == 2 && context.s0 == \"posts\" && context.s1 != \"\")\n};\n"
        );
        let displayed =
            displayed_rule_policy(&allow.id, &allow.connection, &allow.methods, &evaluated);
        assert_eq!(
            displayed,
            "permit (\n  principal in Role::\"editor\",\n  \
             action in [Action::\"GET\", Action::\"HEAD\"],\n  \
             resource == Connection::\"blog\"\n)\n\
             when {\n  (context.depth == 2 && context.s0 == \"posts\" && context.s1 != \"\")\n};\n"
        );

        // A literal with a closing parenthesis stays in the conditions.
        let deny = &role.deny[0];
        let evaluated = rule_policy(deny, &mut shape).expect("rule compiles");
        let displayed =
            displayed_rule_policy(&deny.id, &deny.connection, &deny.methods, &evaluated);
        assert!(
            displayed.starts_with(
                "forbid (\n  principal in Role::\"editor\",\n  action,\n  \
                 resource == Connection::\"blog\"\n)\nwhen {\n  (context.depth >= 1 && context.s0 == \"a\\\")\")"
            ),
            "{displayed}"
        );
        for text in [&evaluated, &displayed] {
            let parsed = cedar_policy::Policy::parse(None, text);
            assert!(parsed.is_ok(), "Cedar rejects {text}: {parsed:?}");
        }
    }

    #[test]
    fn network_policy_id_names_agent() {
        for name in ["bot", "bot.networks", "agents.x", "a.b.c", ""] {
            let id = network_policy_id(name);
            assert_eq!(network_policy_agent(&id), Some(name));
        }
        assert_eq!(network_policy_agent("roles.bot.allow[0]"), None);
    }

    #[test]
    fn pattern_conditions_guard_on_depth() {
        let cases = [
            ("/", "context.depth == 1 && context.s0 == \"\""),
            ("/posts/*", "context.depth == 2 && context.s0 == \"posts\" && context.s1 != \"\""),
            (
                "/*/x/**",
                "context.depth >= 2 && context.s0 != \"\" && context.s1 == \"x\"",
            ),
            (
                "/a/**/b/*.json",
                "context.depth >= 3 && context.s0 == \"a\" && context.r0 like \"*.json\" && context.r1 == \"b\"",
            ),
            ("/**", "context.depth >= 0"),
        ];
        for (source, expected) in cases {
            let pattern = PathPattern::parse(source).expect("valid pattern");
            let mut shape = ContextShape::default();
            let condition = pattern_condition(&pattern, &mut shape).expect("single '**'");
            assert_eq!(condition, expected, "{source}");
        }
    }

    #[test]
    fn context_shape_covers_deepest_pattern() {
        let mut shape = ContextShape::default();
        for source in ["/a/b/c", "/x/**/y/z", "/**"] {
            let pattern = PathPattern::parse(source).expect("valid pattern");
            pattern_condition(&pattern, &mut shape).expect("single '**'");
        }
        assert_eq!(
            shape,
            ContextShape {
                from_start: 3,
                from_end: 2
            }
        );
    }
}
