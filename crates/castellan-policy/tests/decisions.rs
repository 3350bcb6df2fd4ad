mod common;

use castellan_policy::{Decision, Policy};
use common::{config, decide, policy, Call};

const ROLES: &str = r#"
[roles.marketing]
allow = [
  { connection = "blog", methods = ["GET"], paths = ["/posts/**"] },
  { connection = "blog", methods = ["POST", "PUT"], paths = ["/posts/*", "/drafts/*/publish"] },
  { connection = "blog", methods = ["*"], paths = ["/media/*.json"] },
  { connection = "blog", methods = ["GET"], paths = ["/", "/feeds/"] },
]
deny = [
  { connection = "blog", paths = ["/posts/*/admin"] },
  { connection = "blog", methods = ["DELETE"] },
]

[roles.reader]
allow = [{ connection = "crm", methods = ["GET", "HEAD"], paths = ["/contacts/*"] }]

[roles.auditor]
deny = [{ connection = "crm", methods = ["GET"], paths = ["/contacts/secret"] }]

[agents.writer]
owner = "jay@example.com"
roles = ["marketing"]

[agents.multi]
owner = "jay@example.com"
roles = ["marketing", "reader"]

[agents.careful]
owner = "jay@example.com"
roles = ["reader", "auditor"]

[agents.idle]
owner = "jay@example.com"
roles = []
"#;

fn roles_policy() -> Policy {
    policy(ROLES)
}

#[test]
fn decision_table() {
    let policy = roles_policy();
    // (agent, connection, method, path, allowed, deciding rule)
    let cases = [
        (
            "writer",
            "blog",
            "GET",
            "/posts",
            true,
            Some("roles.marketing.allow[0]"),
        ),
        (
            "writer",
            "blog",
            "GET",
            "/posts/1/comments",
            true,
            Some("roles.marketing.allow[0]"),
        ),
        ("writer", "blog", "GET", "/postsx", false, None),
        ("writer", "blog", "HEAD", "/posts/1", false, None),
        (
            "writer",
            "blog",
            "POST",
            "/posts/1",
            true,
            Some("roles.marketing.allow[1]"),
        ),
        (
            "writer",
            "blog",
            "PUT",
            "/posts/1",
            true,
            Some("roles.marketing.allow[1]"),
        ),
        ("writer", "blog", "PATCH", "/posts/1", false, None),
        ("writer", "blog", "POST", "/posts/1/2", false, None),
        ("writer", "blog", "POST", "/posts/", false, None),
        (
            "writer",
            "blog",
            "POST",
            "/drafts/7/publish",
            true,
            Some("roles.marketing.allow[1]"),
        ),
        ("writer", "blog", "POST", "/drafts/7/8/publish", false, None),
        (
            "writer",
            "blog",
            "PATCH",
            "/media/logo.json",
            true,
            Some("roles.marketing.allow[2]"),
        ),
        ("writer", "blog", "GET", "/media/logo.jsonl", false, None),
        ("writer", "blog", "GET", "/media/a/logo.json", false, None),
        (
            "writer",
            "blog",
            "GET",
            "/",
            true,
            Some("roles.marketing.allow[3]"),
        ),
        (
            "writer",
            "blog",
            "GET",
            "/feeds/",
            true,
            Some("roles.marketing.allow[3]"),
        ),
        ("writer", "blog", "GET", "/feeds", false, None),
        (
            "writer",
            "blog",
            "GET",
            "/posts/1/admin",
            false,
            Some("roles.marketing.deny[0]"),
        ),
        (
            "writer",
            "blog",
            "DELETE",
            "/posts/1",
            false,
            Some("roles.marketing.deny[1]"),
        ),
        (
            "writer",
            "blog",
            "DELETE",
            "/posts/1/admin",
            false,
            Some("roles.marketing.deny[0]"),
        ),
        ("writer", "crm", "GET", "/contacts/1", false, None),
        (
            "multi",
            "crm",
            "GET",
            "/contacts/1",
            true,
            Some("roles.reader.allow[0]"),
        ),
        (
            "multi",
            "blog",
            "GET",
            "/posts/1",
            true,
            Some("roles.marketing.allow[0]"),
        ),
        ("multi", "crm", "DELETE", "/contacts/1", false, None),
        (
            "careful",
            "crm",
            "GET",
            "/contacts/1",
            true,
            Some("roles.reader.allow[0]"),
        ),
        (
            "careful",
            "crm",
            "GET",
            "/contacts/secret",
            false,
            Some("roles.auditor.deny[0]"),
        ),
        (
            "careful",
            "crm",
            "HEAD",
            "/contacts/secret",
            true,
            Some("roles.reader.allow[0]"),
        ),
        ("idle", "blog", "GET", "/posts/1", false, None),
        ("ghost", "blog", "GET", "/posts/1", false, None),
        ("writer", "unknown", "GET", "/posts/1", false, None),
    ];
    for (agent, connection, method, path, allowed, rule) in cases {
        let decision = decide(&policy, agent, connection, method, path);
        let case = format!("{agent} {method} {connection}{path}: {}", decision.reason);
        assert_eq!(decision.allowed, allowed, "{case}");
        assert_eq!(decision.rule.as_deref(), rule, "{case}");
    }
}

#[test]
fn reasons_name_rule_or_roles() {
    let policy = roles_policy();
    let cases = [
        ("writer", "blog", "GET", "/posts/1", "allowed by roles.marketing.allow[0]"),
        ("writer", "blog", "DELETE", "/posts/1", "denied by roles.marketing.deny[1]"),
        (
            "writer",
            "blog",
            "PATCH",
            "/posts/1",
            "no rule of agent's roles (marketing) allows PATCH /posts/1 on connection blog",
        ),
        (
            "multi",
            "crm",
            "DELETE",
            "/contacts/1",
            "no rule of agent's roles (marketing, reader) allows DELETE /contacts/1 on connection crm",
        ),
        (
            "idle",
            "blog",
            "GET",
            "/posts/1",
            "the agent has no roles, so nothing allows GET /posts/1 on connection blog",
        ),
        ("ghost", "blog", "GET", "/", "agent \"ghost\" is not in the configuration"),
    ];
    for (agent, connection, method, path, reason) in cases {
        let decision = decide(&policy, agent, connection, method, path);
        assert_eq!(decision.reason, reason, "{agent} {method} {path}");
    }
}

#[test]
fn reason_shows_normalized_path() {
    let policy = roles_policy();
    let decision = decide(&policy, "writer", "blog", "PATCH", "//posts//%7e1");
    assert_eq!(
        decision.reason,
        "no rule of agent's roles (marketing) allows PATCH /posts/~1 on connection blog"
    );
}

const NETWORKS: &str = r#"
[roles.reader]
allow = [{ connection = "blog", methods = ["GET"], paths = ["/**"] }]
deny = [{ connection = "blog", methods = ["GET"], paths = ["/private/**"] }]

[agents.office]
owner = "jay@example.com"
roles = ["reader"]
networks = ["10.0.0.0/8", "fd00::/8", "192.168.1.7"]

[agents.roaming]
owner = "jay@example.com"
roles = ["reader"]
"#;

#[test]
fn network_restriction_table() {
    let policy = policy(NETWORKS);
    // (agent, source, path, allowed, deciding rule)
    let cases = [
        (
            "office",
            "10.1.2.3",
            "/a",
            true,
            Some("roles.reader.allow[0]"),
        ),
        (
            "office",
            "11.1.2.3",
            "/a",
            false,
            Some("agents.office.networks"),
        ),
        (
            "office",
            "192.168.1.7",
            "/a",
            true,
            Some("roles.reader.allow[0]"),
        ),
        (
            "office",
            "192.168.1.8",
            "/a",
            false,
            Some("agents.office.networks"),
        ),
        (
            "office",
            "fd12::1",
            "/a",
            true,
            Some("roles.reader.allow[0]"),
        ),
        (
            "office",
            "fe80::1",
            "/a",
            false,
            Some("agents.office.networks"),
        ),
        ("office", "::1", "/a", false, Some("agents.office.networks")),
        (
            "office",
            "::ffff:10.9.9.9",
            "/a",
            true,
            Some("roles.reader.allow[0]"),
        ),
        (
            "office",
            "::ffff:11.9.9.9",
            "/a",
            false,
            Some("agents.office.networks"),
        ),
        // The network check is reported before any deny rule.
        (
            "office",
            "11.1.2.3",
            "/private/x",
            false,
            Some("agents.office.networks"),
        ),
        (
            "office",
            "10.1.2.3",
            "/private/x",
            false,
            Some("roles.reader.deny[0]"),
        ),
        (
            "roaming",
            "203.0.113.9",
            "/a",
            true,
            Some("roles.reader.allow[0]"),
        ),
        (
            "roaming",
            "2001:db8::1",
            "/a",
            true,
            Some("roles.reader.allow[0]"),
        ),
    ];
    for (agent, source, path, allowed, rule) in cases {
        let call = Call {
            agent,
            connection: "blog",
            method: "GET",
            path,
            source,
        };
        let decision = call.authorize(&policy);
        let case = format!("{agent} from {source} {path}: {}", decision.reason);
        assert_eq!(decision.allowed, allowed, "{case}");
        assert_eq!(decision.rule.as_deref(), rule, "{case}");
    }
}

#[test]
fn network_reason_shows_canonical_source() {
    let policy = policy(NETWORKS);
    let call = Call {
        agent: "office",
        connection: "blog",
        method: "GET",
        path: "/a",
        source: "::ffff:11.2.3.4",
    };
    assert_eq!(
        call.authorize(&policy),
        Decision {
            allowed: false,
            rule: Some("agents.office.networks".to_string()),
            reason: "source address 11.2.3.4 is outside the agent's networks".to_string(),
        }
    );
}

/// A configuration file cannot list a role twice for one agent, but a
/// `Config` built in code can; the policy still counts the role once.
#[test]
fn repeated_role_counts_once() {
    let mut config = config(
        r#"
[roles.reader]
allow = [{ connection = "blog", methods = ["GET"], paths = ["/**"] }]

[agents.twice]
owner = "jay@example.com"
roles = ["reader"]
"#,
    );
    let Some(agent) = config.agents.get_mut("twice") else {
        panic!("agent twice is missing from the test configuration");
    };
    agent.roles.push("reader".to_owned());
    let policy = match Policy::compile(&config) {
        Ok(policy) => policy,
        Err(error) => panic!("a repeated role must compile: {error}"),
    };
    let decision = decide(&policy, "twice", "blog", "GET", "/x");
    assert!(decision.allowed, "{}", decision.reason);
    let call = Call {
        agent: "twice",
        connection: "blog",
        method: "GET",
        path: "/x",
        source: "127.0.0.1",
    };
    assert_eq!(call.explain(&policy).rules.len(), 1);
}

#[test]
fn policy_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
}
