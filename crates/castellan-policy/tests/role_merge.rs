//! An agent with several roles must be decided as one evaluation of all the
//! rules of its roles would decide it, with the same deciding rule and
//! reason, whatever order the agent lists its roles in. Two independent
//! references check this: the rules' own matching in the model crate, and
//! one Cedar evaluation of the generated policies with an `Agent` entity
//! whose parents are its roles.

mod common;

use castellan_model::{canonical_ip, Config, NormalizedPath, Rule, RuleEffect};
use castellan_policy::{AccessRequest, Decision, Policy};
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression,
};
use common::{address, config, path};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

/// Roles whose rules overlap on `blog`, so that a deny of one role meets an
/// allow of another. `guard` has deny rules only. Roles are compiled in
/// name order, which is also their reporting order.
const ROLES: &str = r#"
[roles.author]
allow = [
  { connection = "blog", methods = ["GET", "POST"], paths = ["/posts/**", "/drafts/*"] },
  { connection = "blog", methods = ["*"], paths = ["/media/*"] },
]
deny = [{ connection = "blog", methods = ["POST"], paths = ["/posts/*/locked"] }]

[roles.editor]
allow = [
  { connection = "blog", methods = ["*"], paths = ["/posts/*/locked", "/drafts/**"] },
  { connection = "crm", methods = ["GET"], paths = ["/contacts/*"] },
]
deny = [{ connection = "blog", methods = ["DELETE"], paths = ["/posts/**"] }]

[roles.guard]
deny = [
  { connection = "blog", methods = ["*"], paths = ["/drafts/secret", "/**/admin"] },
  { connection = "crm", methods = ["GET"], paths = ["/contacts/vip"] },
]

[roles.viewer]
allow = [{ connection = "blog", methods = ["GET", "HEAD"], paths = ["/**"] }]

[agents.none]
owner = "jay@example.com"
roles = []

[agents.author]
owner = "jay@example.com"
roles = ["author"]

[agents.guarded]
owner = "jay@example.com"
roles = ["guard"]

[agents.pair]
owner = "jay@example.com"
roles = ["author", "editor"]

[agents.reversed]
owner = "jay@example.com"
roles = ["guard", "editor", "author"]

[agents.everyone]
owner = "jay@example.com"
roles = ["viewer", "guard", "editor", "author"]

[agents.office]
owner = "jay@example.com"
roles = ["editor", "viewer"]
networks = ["10.0.0.0/8"]
"#;

const AGENTS: [&str; 8] = [
    "none", "author", "guarded", "pair", "reversed", "everyone", "office", "ghost",
];
const CONNECTIONS: [&str; 3] = ["blog", "crm", "wiki"];
const METHODS: [&str; 7] = ["GET", "get", "HEAD", "POST", "PUT", "DELETE", "PATCH"];
const SEGMENTS: [&str; 10] = [
    "posts", "drafts", "media", "contacts", "locked", "admin", "secret", "vip", "1", "x",
];
const SOURCES: [&str; 3] = ["127.0.0.1", "10.1.2.3", "::ffff:10.9.8.7"];

/// A request by name, before its path and source are parsed.
#[derive(Debug, Clone)]
struct Call {
    agent: &'static str,
    connection: &'static str,
    method: &'static str,
    path: String,
    source: &'static str,
}

impl Call {
    fn new(agent: &'static str, connection: &'static str, method: &'static str, raw: &str) -> Self {
        Call {
            agent,
            connection,
            method,
            path: raw.to_string(),
            source: "127.0.0.1",
        }
    }

    fn request<'a>(&'a self, path: &'a NormalizedPath) -> AccessRequest<'a> {
        AccessRequest {
            agent: self.agent,
            connection: self.connection,
            method: self.method,
            path,
            source: address(self.source),
        }
    }
}

fn covers(rule: &Rule, call: &Call, path: &NormalizedPath) -> bool {
    rule.connection == call.connection
        && rule.methods.contains(call.method)
        && rule.paths.iter().any(|pattern| pattern.matches(path))
}

/// Returns the rules of the agent's roles in reporting order: roles in name
/// order, each role's deny rules before its allow rules.
fn agent_rules<'c>(config: &'c Config, agent: &str) -> Vec<&'c Rule> {
    let Some(agent) = config.agents.get(agent) else {
        return Vec::new();
    };
    config
        .roles
        .values()
        .filter(|role| agent.roles.contains(&role.name))
        .flat_map(|role| role.deny.iter().chain(&role.allow))
        .collect()
}

fn deny(rule: Option<String>, reason: String) -> Decision {
    Decision {
        allowed: false,
        rule,
        reason,
    }
}

/// Decides `call` from the configuration alone: the first covering deny
/// rule in reporting order, else the first covering allow rule.
fn expected_decision(config: &Config, call: &Call, path: &NormalizedPath) -> Decision {
    let Some(agent) = config.agents.get(call.agent) else {
        return deny(
            None,
            format!("agent {:?} is not in the configuration", call.agent),
        );
    };
    let source = address(call.source);
    if !agent.networks.is_empty() && !agent.allows_source(source) {
        return deny(
            Some(format!("agents.{}.networks", agent.name)),
            format!(
                "source address {} is outside the agent's networks",
                canonical_ip(source)
            ),
        );
    }
    let rules = agent_rules(config, call.agent);
    let covering = |denies: bool| {
        rules
            .iter()
            .filter(|rule| (rule.id.effect == RuleEffect::Deny) == denies)
            .find(|rule| covers(rule, call, path))
    };
    if let Some(rule) = covering(true) {
        return deny(Some(rule.id.to_string()), format!("denied by {}", rule.id));
    }
    if let Some(rule) = covering(false) {
        return Decision {
            allowed: true,
            rule: Some(rule.id.to_string()),
            reason: format!("allowed by {}", rule.id),
        };
    }
    let target = format!("{} {} on connection {}", call.method, path, call.connection);
    let reason = if agent.roles.is_empty() {
        format!("the agent has no roles, so nothing allows {target}")
    } else {
        format!(
            "no rule of agent's roles ({}) allows {target}",
            agent.roles.join(", ")
        )
    };
    deny(None, reason)
}

fn entity_type(name: &str) -> EntityTypeName {
    name.parse().expect("valid entity type name")
}

fn entity(entity_type: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(self::entity_type(entity_type), EntityId::new(id))
}

/// Every generated policy in one Cedar set, with the reporting position of
/// each policy id.
struct OneSet {
    set: PolicySet,
    positions: HashMap<PolicyId, usize>,
}

impl OneSet {
    /// Parses the output of [`Policy::cedar_text`], where each policy starts
    /// with its `@id` annotation on a line of its own.
    fn new(policy: &Policy) -> Self {
        let text = policy.cedar_text();
        let mut set = PolicySet::new();
        let mut positions = HashMap::new();
        for (position, chunk) in text.split("\n@id(").enumerate() {
            let source = if position == 0 {
                chunk.to_string()
            } else {
                format!("@id({chunk}")
            };
            let parsed =
                cedar_policy::Policy::parse(None, &source).expect("generated policy parses");
            let id = PolicyId::new(parsed.annotation("id").expect("every policy has an @id"));
            let parsed = parsed.new_id(id.clone());
            set.add(parsed).expect("policy ids are unique");
            positions.insert(id, position);
        }
        OneSet { set, positions }
    }

    /// Evaluates every policy at once for the agent of `call`, with the
    /// agent as the principal and its roles as the agent's parents, and
    /// returns whether Cedar allowed and the first deciding policy.
    fn decide(
        &self,
        config: &Config,
        call: &Call,
        path: &NormalizedPath,
    ) -> (bool, Option<String>) {
        let agent = &config.agents[call.agent];
        let parents: HashSet<EntityUid> = agent
            .roles
            .iter()
            .map(|role| entity("Role", role))
            .collect();
        let roles = config
            .roles
            .keys()
            .map(|role| Entity::new_no_attrs(entity("Role", role), HashSet::new()));
        let principal = entity("Agent", call.agent);
        let entities = Entities::from_entities(
            roles.chain([Entity::new_no_attrs(principal.clone(), parents)]),
            None,
        )
        .expect("entities build");

        let depth = i64::try_from(path.depth()).expect("depth fits in i64");
        let source = canonical_ip(address(call.source)).to_string();
        let mut pairs = vec![
            ("depth".to_string(), RestrictedExpression::new_long(depth)),
            ("source".to_string(), RestrictedExpression::new_ip(source)),
        ];
        for (index, segment) in path.segments().enumerate() {
            let value = RestrictedExpression::new_string(segment.to_string());
            pairs.push((format!("s{index}"), value));
        }
        for (index, segment) in path.segments().rev().enumerate() {
            let value = RestrictedExpression::new_string(segment.to_string());
            pairs.push((format!("r{index}"), value));
        }
        let context = Context::from_pairs(pairs).expect("context builds");
        let request = Request::new(
            principal,
            entity("Action", call.method),
            entity("Connection", call.connection),
            context,
            None,
        )
        .expect("request builds");

        let response = Authorizer::new().is_authorized(&request, &self.set, &entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "evaluation errors: {errors:?}");
        let deciding = response
            .diagnostics()
            .reason()
            .min_by_key(|id| self.positions[*id])
            .map(ToString::to_string);
        let allowed = response.decision() == cedar_policy::Decision::Allow;
        (allowed, deciding)
    }
}

/// Checks `authorize`, a repeat that the decision cache may decide, and
/// `explain` against both references.
fn check(config: &Config, policy: &Policy, one_set: &OneSet, call: &Call) {
    let path = path(&call.path);
    let request = call.request(&path);
    let expected = expected_decision(config, call, &path);
    let decided = policy.authorize(&request);
    assert_eq!(decided, expected, "{call:?}");
    assert_eq!(policy.authorize(&request), expected, "repeat of {call:?}");

    if config.agents.contains_key(call.agent) {
        let (allowed, deciding) = one_set.decide(config, call, &path);
        assert_eq!(decided.allowed, allowed, "one Cedar set for {call:?}");
        assert_eq!(decided.rule, deciding, "one Cedar set for {call:?}");
    }

    let explanation = policy.explain(&request);
    assert_eq!(explanation.decision, expected, "explain of {call:?}");
    let listed: Vec<(String, bool)> = explanation
        .rules
        .iter()
        .map(|rule| (rule.id.to_string(), rule.matched))
        .collect();
    let expected_rules: Vec<(String, bool)> = agent_rules(config, call.agent)
        .into_iter()
        .map(|rule| (rule.id.to_string(), covers(rule, call, &path)))
        .collect();
    assert_eq!(listed, expected_rules, "explained rules of {call:?}");
    assert_eq!(
        explanation.deciding_policy.is_some(),
        expected.rule.is_some(),
        "deciding policy of {call:?}"
    );
}

#[test]
fn forbid_of_any_role_wins() {
    let config = config(ROLES);
    let policy = Policy::compile(&config).expect("configuration compiles");
    let one_set = OneSet::new(&policy);
    // (agent, method, path, allowed, deciding rule)
    let cases = [
        // author allows POST /posts/**, but its own deny covers locked posts.
        (
            "author",
            "POST",
            "/posts/1/locked",
            false,
            Some("roles.author.deny[0]"),
        ),
        // editor allows the locked post, author's deny still wins.
        (
            "pair",
            "POST",
            "/posts/1/locked",
            false,
            Some("roles.author.deny[0]"),
        ),
        (
            "pair",
            "PUT",
            "/posts/1/locked",
            true,
            Some("roles.editor.allow[0]"),
        ),
        // editor's deny is named before guard's, because roles report in
        // name order, not in the order the agent lists them.
        (
            "reversed",
            "DELETE",
            "/posts/1/admin",
            false,
            Some("roles.editor.deny[0]"),
        ),
        (
            "reversed",
            "GET",
            "/posts/admin",
            false,
            Some("roles.guard.deny[0]"),
        ),
        (
            "reversed",
            "GET",
            "/drafts/secret",
            false,
            Some("roles.guard.deny[0]"),
        ),
        (
            "reversed",
            "GET",
            "/drafts/open",
            true,
            Some("roles.author.allow[0]"),
        ),
        (
            "everyone",
            "GET",
            "/drafts/a/b",
            true,
            Some("roles.editor.allow[0]"),
        ),
        (
            "everyone",
            "HEAD",
            "/anything",
            true,
            Some("roles.viewer.allow[0]"),
        ),
        (
            "everyone",
            "DELETE",
            "/posts",
            false,
            Some("roles.editor.deny[0]"),
        ),
        (
            "everyone",
            "DELETE",
            "/media/1",
            true,
            Some("roles.author.allow[1]"),
        ),
        // A role with deny rules only never allows.
        ("guarded", "GET", "/drafts/open", false, None),
        (
            "guarded",
            "GET",
            "/admin",
            false,
            Some("roles.guard.deny[0]"),
        ),
        // Rules name methods in upper case, so `get` meets only `*` rules.
        ("everyone", "get", "/posts/1", false, None),
        (
            "everyone",
            "get",
            "/media/1",
            true,
            Some("roles.author.allow[1]"),
        ),
        (
            "everyone",
            "get",
            "/admin",
            false,
            Some("roles.guard.deny[0]"),
        ),
        ("none", "GET", "/posts", false, None),
        ("ghost", "GET", "/posts", false, None),
    ];
    for (agent, method, raw, allowed, rule) in cases {
        let call = Call::new(agent, "blog", method, raw);
        let decision = common::decide(&policy, agent, "blog", method, raw);
        assert_eq!(decision.allowed, allowed, "{call:?}: {}", decision.reason);
        assert_eq!(decision.rule.as_deref(), rule, "{call:?}");
        check(&config, &policy, &one_set, &call);
    }
}

#[test]
fn other_connections_decide_alone() {
    let config = config(ROLES);
    let policy = Policy::compile(&config).expect("configuration compiles");
    let one_set = OneSet::new(&policy);
    let cases = [
        (
            "everyone",
            "crm",
            "/contacts/vip",
            false,
            Some("roles.guard.deny[1]"),
        ),
        (
            "everyone",
            "crm",
            "/contacts/7",
            true,
            Some("roles.editor.allow[1]"),
        ),
        (
            "pair",
            "crm",
            "/contacts/vip",
            true,
            Some("roles.editor.allow[1]"),
        ),
        ("guarded", "crm", "/contacts/7", false, None),
        ("everyone", "wiki", "/contacts/7", false, None),
    ];
    for (agent, connection, raw, allowed, rule) in cases {
        let call = Call::new(agent, connection, "GET", raw);
        let decision = common::decide(&policy, agent, connection, "GET", raw);
        assert_eq!(decision.allowed, allowed, "{call:?}: {}", decision.reason);
        assert_eq!(decision.rule.as_deref(), rule, "{call:?}");
        check(&config, &policy, &one_set, &call);
    }
    let unknown = common::decide(&policy, "reversed", "wiki", "GET", "/x");
    assert_eq!(
        unknown.reason,
        "no rule of agent's roles (guard, editor, author) allows GET /x on connection wiki"
    );
    let idle = common::decide(&policy, "none", "blog", "GET", "/x");
    assert_eq!(
        idle.reason,
        "the agent has no roles, so nothing allows GET /x on connection blog"
    );
}

#[test]
fn network_denial_precedes_roles() {
    let config = config(ROLES);
    let policy = Policy::compile(&config).expect("configuration compiles");
    let one_set = OneSet::new(&policy);
    for source in SOURCES {
        for raw in ["/drafts/secret", "/posts/1", "/nothing"] {
            let mut call = Call::new("office", "blog", "GET", raw);
            call.source = source;
            check(&config, &policy, &one_set, &call);
        }
    }
}

/// A configuration built in code may list a role twice. Its rules count
/// once: the decision and the explained rules are those of the agent that
/// lists each role once.
#[test]
fn repeated_role_counts_once() {
    let mut config = config(ROLES);
    let mut twice = config.agents["pair"].clone();
    twice.name = "twice".to_string();
    twice.roles = ["author", "editor", "author", "editor"]
        .map(String::from)
        .to_vec();
    config.agents.insert(twice.name.clone(), twice);
    let policy = Policy::compile(&config).expect("configuration compiles");
    let calls = [
        ("blog", "POST", "/posts/1/locked"),
        ("blog", "PUT", "/posts/1/locked"),
        ("blog", "DELETE", "/posts/1"),
        ("blog", "GET", "/drafts/a"),
        ("crm", "GET", "/contacts/1"),
        ("crm", "POST", "/contacts/1"),
        ("wiki", "GET", "/"),
    ];
    for (connection, method, raw) in calls {
        let once = Call::new("pair", connection, method, raw);
        let repeated = Call::new("twice", connection, method, raw);
        let path = path(raw);
        let expected = policy.authorize(&once.request(&path));
        let decided = policy.authorize(&repeated.request(&path));
        assert_eq!(decided.allowed, expected.allowed, "{repeated:?}");
        assert_eq!(decided.rule, expected.rule, "{repeated:?}");
        assert_eq!(decided.reason, expected.reason, "{repeated:?}");
        let explained = policy.explain(&repeated.request(&path)).rules;
        assert_eq!(
            explained,
            policy.explain(&once.request(&path)).rules,
            "{repeated:?}"
        );
    }
}

fn call_strategy() -> impl Strategy<Value = Call> {
    (
        prop::sample::select(AGENTS.to_vec()),
        prop::sample::select(CONNECTIONS.to_vec()),
        prop::sample::select(METHODS.to_vec()),
        prop::collection::vec(prop::sample::select(SEGMENTS.to_vec()), 0..5),
        prop::sample::select(SOURCES.to_vec()),
    )
        .prop_map(|(agent, connection, method, segments, source)| Call {
            agent,
            connection,
            method,
            path: format!("/{}", segments.join("/")),
            source,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Sequences of requests on one compiled policy, so that later requests
    /// can meet outcomes that earlier ones left in the decision cache.
    #[test]
    fn merged_roles_match_one_evaluation(calls in prop::collection::vec(call_strategy(), 1..24)) {
        let config = config(ROLES);
        let policy = Policy::compile(&config).expect("configuration compiles");
        let one_set = OneSet::new(&policy);
        for call in &calls {
            check(&config, &policy, &one_set, call);
        }
    }
}

/// `SOURCES` must contain addresses outside and inside the networks of
/// `office`, one of them IPv4-mapped, or the network checks above test
/// only one side.
#[test]
fn sources_cover_both_sides() {
    let office = &config(ROLES).agents["office"];
    let inside: Vec<bool> = SOURCES
        .iter()
        .map(|source| office.allows_source(address(source)))
        .collect();
    assert_eq!(inside, [false, true, true]);
}
