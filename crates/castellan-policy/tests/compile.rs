mod common;

use castellan_model::{MethodSet, RuleEffect};
use castellan_policy::{Policy, PolicyError};
use common::{policy, single_role_config};

#[test]
fn cedar_text_matches_expected() {
    let policy = policy(
        r#"
[roles.marketing]
allow = [{ connection = "blog", methods = ["GET", "HEAD"], paths = ["/posts/*", "/v1/**/*.json"] }]
deny = [{ connection = "blog", methods = ["*"], paths = ["/admin/**"] }]

[agents.writer]
owner = "jay@example.com"
roles = ["marketing"]
networks = ["10.0.0.0/8", "::ffff:192.0.2.0/120"]
"#,
    );
    let expected = r#"@id("agents.writer.networks")
forbid (
  principal == Agent::"writer",
  action,
  resource
)
unless {
  context.source.isInRange(ip("10.0.0.0/8")) ||
  context.source.isInRange(ip("192.0.2.0/24"))
};

@id("roles.marketing.deny[0]")
forbid (
  principal in Role::"marketing",
  action,
  resource == Connection::"blog"
)
when {
  (context.depth >= 1 && context.s0 == "admin")
};

@id("roles.marketing.allow[0]")
permit (
  principal in Role::"marketing",
  action in [Action::"GET", Action::"HEAD"],
  resource == Connection::"blog"
)
when {
  (context.depth == 2 && context.s0 == "posts" && context.s1 != "") ||
  (context.depth >= 2 && context.s0 == "v1" && context.r0 like "*.json")
};
"#;
    assert_eq!(policy.cedar_text(), expected);
}

#[test]
fn invalid_rules_rejected() {
    let mut no_paths = single_role_config(&[(RuleEffect::Deny, MethodSet::Any, &["/**"])]);
    if let Some(role) = no_paths.roles.get_mut("subject") {
        role.deny[0].paths.clear();
    }
    let no_methods =
        single_role_config(&[(RuleEffect::Allow, MethodSet::Only(Vec::new()), &["/**"])]);
    let mut undefined_role = single_role_config(&[]);
    if let Some(agent) = undefined_role.agents.get_mut("tester") {
        agent.roles.push("missing".to_string());
    }
    let cases = [
        (
            no_paths,
            PolicyError::NoPaths {
                rule: "roles.subject.deny[0]".to_string(),
            },
        ),
        (
            no_methods,
            PolicyError::NoMethods {
                rule: "roles.subject.allow[0]".to_string(),
            },
        ),
        (
            undefined_role,
            PolicyError::UndefinedRole {
                agent: "tester".to_string(),
                role: "missing".to_string(),
            },
        ),
    ];
    for (config, expected) in cases {
        match Policy::compile(&config) {
            Ok(_) => panic!("configuration should be rejected with {expected}"),
            Err(error) => assert_eq!(error, expected),
        }
    }
}

#[test]
fn error_messages_name_rule_and_fix() {
    let error = PolicyError::NoPaths {
        rule: "roles.subject.deny[0]".to_string(),
    };
    assert_eq!(
        error.to_string(),
        "rule roles.subject.deny[0] has no path patterns, so it covers nothing; list at least one, such as \"/**\""
    );
}
