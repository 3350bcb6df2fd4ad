mod common;

use castellan_model::RuleEffect;
use castellan_policy::RuleMatch;
use common::{policy, Call};

const ROLES: &str = r#"
[roles.marketing]
allow = [
  { connection = "blog", methods = ["GET"], paths = ["/posts/**"] },
  { connection = "blog", methods = ["POST"], paths = ["/posts/*"] },
  { connection = "crm", methods = ["GET"], paths = ["/**"] },
]
deny = [
  { connection = "blog", paths = ["/posts/*/admin"] },
  { connection = "blog", methods = ["DELETE"] },
]

[agents.writer]
owner = "jay@example.com"
roles = ["marketing"]
networks = ["10.0.0.0/8"]
"#;

fn call<'a>(method: &'a str, path: &'a str, source: &'a str) -> Call<'a> {
    Call {
        agent: "writer",
        connection: "blog",
        method,
        path,
        source,
    }
}

fn matched(rules: &[RuleMatch]) -> Vec<(String, bool)> {
    rules
        .iter()
        .map(|rule| (rule.id.to_string(), rule.matched))
        .collect()
}

fn expected(pairs: &[(&str, bool)]) -> Vec<(String, bool)> {
    pairs
        .iter()
        .map(|(id, matched)| (id.to_string(), *matched))
        .collect()
}

#[test]
fn explain_lists_every_rule() {
    let policy = policy(ROLES);
    let explanation = call("DELETE", "/posts/1/admin", "10.0.0.1").explain(&policy);
    assert!(!explanation.decision.allowed);
    assert_eq!(
        explanation.decision.rule.as_deref(),
        Some("roles.marketing.deny[0]")
    );
    assert_eq!(
        matched(&explanation.rules),
        expected(&[
            ("roles.marketing.deny[0]", true),
            ("roles.marketing.deny[1]", true),
            ("roles.marketing.allow[0]", false),
            ("roles.marketing.allow[1]", false),
            ("roles.marketing.allow[2]", false),
        ])
    );
    let effects: Vec<RuleEffect> = explanation.rules.iter().map(|rule| rule.effect).collect();
    assert_eq!(
        effects,
        [
            RuleEffect::Deny,
            RuleEffect::Deny,
            RuleEffect::Allow,
            RuleEffect::Allow,
            RuleEffect::Allow
        ]
    );
}

#[test]
fn explain_shows_allowing_rule_text() {
    let policy = policy(ROLES);
    let explanation = call("GET", "/posts/1/admin", "10.0.0.1").explain(&policy);
    assert!(!explanation.decision.allowed);
    let allow = &explanation.rules[2];
    assert_eq!(allow.id.to_string(), "roles.marketing.allow[0]");
    assert!(
        allow.matched,
        "allow[0] covers the path even though deny[0] wins"
    );
    assert!(allow.location.line > 0, "rule location is recorded");

    let explanation = call("GET", "/posts/1", "10.0.0.1").explain(&policy);
    assert!(explanation.decision.allowed);
    let text = explanation.deciding_policy.expect("an allow rule decided");
    assert!(
        text.starts_with("@id(\"roles.marketing.allow[0]\")\npermit ("),
        "{text}"
    );
}

#[test]
fn explain_shows_network_policy() {
    let policy = policy(ROLES);
    let explanation = call("GET", "/posts/1", "192.0.2.1").explain(&policy);
    assert!(!explanation.decision.allowed);
    assert_eq!(
        explanation.decision.rule.as_deref(),
        Some("agents.writer.networks")
    );
    let text = explanation
        .deciding_policy
        .expect("the network policy decided");
    assert!(
        text.contains("context.source.isInRange(ip(\"10.0.0.0/8\"))"),
        "{text}"
    );
    assert!(
        explanation.rules[2].matched,
        "allow[0] still covers the request"
    );
}

#[test]
fn explain_unknown_agent_lists_nothing() {
    let policy = policy(ROLES);
    let explanation = Call {
        agent: "ghost",
        connection: "blog",
        method: "GET",
        path: "/posts/1",
        source: "10.0.0.1",
    }
    .explain(&policy);
    assert!(!explanation.decision.allowed);
    assert!(explanation.rules.is_empty());
    assert_eq!(explanation.deciding_policy, None);
}

#[test]
fn explain_default_deny_has_no_policy() {
    let policy = policy(ROLES);
    let explanation = call("PATCH", "/posts/1", "10.0.0.1").explain(&policy);
    assert!(!explanation.decision.allowed);
    assert_eq!(explanation.decision.rule, None);
    assert_eq!(explanation.deciding_policy, None);
    assert!(explanation.rules.iter().all(|rule| !rule.matched));
}
