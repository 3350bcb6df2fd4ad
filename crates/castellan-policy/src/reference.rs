//! The earlier request building, kept to test the faster path against:
//! an `Agent` entity of its own as the principal, entity ids parsed per
//! request, the source address in the context as an `ip()` value, and
//! every policy of the agent as displayed, scopes and network policy included,
//! evaluated by Cedar in one set.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use castellan_model::{canonical_ip, Config, NormalizedPath};
use cedar_policy::{
    Context, Entities, Entity, EntityTypeName, EntityUid, PolicySet, Request, RestrictedExpression,
};
use proptest::prelude::*;

use crate::authorize::{AccessRequest, Decision};
use crate::cedar_text::{address_literal, network_policy_id, ContextShape};
use crate::compile::{uid, Policy};

/// Builds the request the earlier way. `with_source` leaves out
/// the `source` attribute when false, to compare with the faster path,
/// which checks the source before Cedar.
fn reference_request(policy: &Policy, request: &AccessRequest<'_>, with_source: bool) -> Request {
    let principal = agent_uid(request.agent);
    let action = uid(&policy.types.action, request.method);
    let resource = uid(&policy.types.connection, request.connection);
    let path = request.path;
    let from_start = path.depth().min(policy.shape.from_start);
    let from_end = path.depth().min(policy.shape.from_end);
    let depth = i64::try_from(path.depth()).expect("depth fits in i64");
    let mut pairs = vec![("depth".to_string(), RestrictedExpression::new_long(depth))];
    if with_source {
        let source = address_literal(canonical_ip(request.source));
        pairs.push(("source".to_string(), RestrictedExpression::new_ip(source)));
    }
    for (index, segment) in path.segments().take(from_start).enumerate() {
        pairs.push((
            format!("s{index}"),
            RestrictedExpression::new_string(segment.to_string()),
        ));
    }
    for (index, segment) in path.segments().rev().take(from_end).enumerate() {
        pairs.push((
            format!("r{index}"),
            RestrictedExpression::new_string(segment.to_string()),
        ));
    }
    let context = Context::from_pairs(pairs).expect("reference context builds");
    Request::new(principal, action, resource, context, None).expect("reference request builds")
}

fn agent_uid(name: &str) -> EntityUid {
    let agent: EntityTypeName = "Agent".parse().expect("Agent is an entity type name");
    uid(&agent, name)
}

/// Builds the entities the earlier way: the agent of `request` with its
/// roles as parents, and those roles.
fn reference_entities(policy: &Policy, request: &AccessRequest<'_>) -> Entities {
    let roles: HashSet<_> = policy.agents[request.agent]
        .roles
        .names()
        .map(|role| uid(&policy.types.role, role))
        .collect();
    let agent = Entity::new_no_attrs(agent_uid(request.agent), roles.clone());
    let roles = roles
        .into_iter()
        .map(|role| Entity::new_no_attrs(role, HashSet::new()));
    Entities::from_entities(roles.chain([agent]), None).expect("reference entities build")
}

/// Decides the earlier way: the agent's network policy and all rules of its
/// roles in one Cedar evaluation.
pub(crate) fn reference_authorize(policy: &Policy, request: &AccessRequest<'_>) -> Decision {
    let Some(agent) = policy.agents.get(request.agent) else {
        return Decision {
            allowed: false,
            rule: None,
            reason: format!("agent {:?} is not in the configuration", request.agent),
        };
    };
    // The displayed rule policies, with their scopes: the compiled ones leave
    // the scope to selection, which this evaluation skips.
    let mut set = PolicySet::new();
    for position in policy.group_rules(&agent.roles) {
        let id = cedar_policy::PolicyId::new(&policy.compiled[position].id);
        let text = policy.policy_text(position);
        let cedar =
            cedar_policy::Policy::parse(Some(id), &text).expect("displayed rule policy parses");
        set.add(cedar).expect("policy ids are unique");
    }
    // Network policies are not parsed when compiled, so parse them here.
    let network = network_policy_id(request.agent);
    if let Some(text) = policy.policy_text_of(&network) {
        let id = cedar_policy::PolicyId::new(&network);
        let cedar =
            cedar_policy::Policy::parse(Some(id), &text).expect("generated network policy parses");
        set.add(cedar).expect("policy ids are unique");
    }
    let cedar = reference_request(policy, request, true);
    let entities = reference_entities(policy, request);
    let response = policy.authorizer.is_authorized(&cedar, &set, &entities);
    // The network policy comes first in reporting order, so it names a
    // denial whatever rules were satisfied too.
    if response
        .diagnostics()
        .reason()
        .any(|id| id.to_string() == network)
    {
        return Decision {
            allowed: false,
            rule: Some(network),
            reason: format!(
                "source address {} is outside the agent's networks",
                canonical_ip(request.source)
            ),
        };
    }
    policy.decision(agent, request, &policy.outcome(&response))
}

/// The connections that rules of test configurations name.
const CONNECTION_TABLES: &str = r#"
[connections.blog]
upstream = "https://blog.example.com"
auth = { kind = "bearer" }
secret = "blog-token"

[connections.crm]
upstream = "https://crm.example.com"
auth = { kind = "bearer" }
secret = "crm-token"
"#;

const ROLES: &str = r#"
[roles.writer]
allow = [
  { connection = "blog", methods = ["GET", "POST"], paths = ["/posts/**", "/drafts/*"] },
  { connection = "crm", methods = ["GET"], paths = ["/contacts/*/notes"] },
]
deny = [{ connection = "blog", methods = ["*"], paths = ["/posts/*/admin", "/**/secret"] }]

# Rules of the reader on blog overlap the writer's, so that an agent with
# both roles meets a deny of either role over an allow of the other.
[roles.reader]
allow = [
  { connection = "crm", methods = ["*"], paths = ["/**"] },
  { connection = "blog", methods = ["GET"], paths = ["/posts/**"] },
]
deny = [
  { connection = "crm", methods = ["DELETE"], paths = ["/contacts/**"] },
  { connection = "blog", methods = ["POST"], paths = ["/drafts/*"] },
]
"#;

/// Networks that sources are drawn around: IPv4, IPv6, IPv4-mapped IPv6,
/// host routes and networks with host bits set.
const NETWORKS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.2.0/30",
    "192.168.1.7",
    "0.0.0.0/0",
    "fd00::/8",
    "2001:db8::1/128",
    "::/0",
    "::ffff:192.0.2.0/120",
    "::1",
];

const SOURCES: &[&str] = &[
    "10.1.2.2",
    "10.1.2.4",
    "10.255.0.1",
    "11.0.0.1",
    "192.168.1.7",
    "192.168.1.8",
    "192.0.2.200",
    "::ffff:192.0.2.9",
    "::ffff:10.9.9.9",
    "fd12::5",
    "fe80::1",
    "2001:db8::1",
    "2001:db8::2",
    "::1",
    "127.0.0.1",
];

/// Agents of [`config`], and one it does not declare.
const ALL_AGENTS: &[&str] = &["office", "branch", "anywhere", "ghost"];
const DECLARED_AGENTS: &[&str] = &["office", "branch", "anywhere"];

const PATHS: &[&str] = &[
    "/",
    "/posts",
    "/posts/",
    "/posts/1",
    "/posts/1/admin",
    "/posts/1/2/secret",
    "/drafts/x",
    "/drafts/x/y",
    "/contacts/7/notes",
    "/contacts/7",
    "/a%7Eb/c",
    // Pairs that differ only in a segment outside the context shape (the
    // first three segments and the last), so they share a cache key, and
    // one that differs from them only in the last segment.
    "/posts/1/2/x/secret",
    "/posts/1/2/y/secret",
    "/posts/1/2/x/public",
    "/drafts/x/y/a/b",
    "/drafts/x/y/c/b",
];

/// Connections of requests: two that rules name, one in another case and
/// one that no configuration declares.
const CONNECTIONS: &[&str] = &["blog", "crm", "Blog", "wiki"];

/// Methods of requests, with `GET` in three cases, which are three
/// different methods to the policy.
const METHODS: &[&str] = &["GET", "get", "Get", "POST", "DELETE", "PATCH", "PURGE"];

/// Builds a configuration with three agents whose networks are `networks`
/// (the first agent), a single entry of it (the second) and none (the third).
fn config(networks: &[&str]) -> Config {
    let list = |items: &[&str]| {
        let quoted: Vec<String> = items.iter().map(|item| format!("{item:?}")).collect();
        quoted.join(", ")
    };
    let first = networks.first().copied().unwrap_or("10.0.0.0/8");
    let source = format!(
        "{CONNECTION_TABLES}{ROLES}
[agents.office]
owner = \"jay@example.com\"
roles = [\"writer\", \"reader\"]
networks = [{}]

[agents.branch]
owner = \"jay@example.com\"
roles = [\"reader\"]
networks = [{}]

[agents.anywhere]
owner = \"jay@example.com\"
roles = [\"writer\"]
",
        list(networks),
        list(&[first]),
    );
    Config::parse(&source, Path::new("castellan.toml")).expect("test configuration is valid")
}

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(items.to_vec())
}

fn request_parts(agents: &'static [&'static str]) -> impl Strategy<Value = RequestParts> {
    (
        pick(agents),
        pick(CONNECTIONS),
        pick(METHODS),
        pick(PATHS),
        pick(SOURCES),
    )
}

/// The parts of one generated request, in the order [`request_parts`]
/// draws them: agent, connection, method, path and source.
type RequestParts = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// A generated request with its path and source parsed.
type ParsedRequest = (RequestParts, NormalizedPath, IpAddr);

fn parse_requests(requests: &[RequestParts]) -> Vec<ParsedRequest> {
    requests
        .iter()
        .map(|&parts| {
            let path = NormalizedPath::parse(parts.3).expect("test path is valid");
            let source = parts.4.parse().expect("test address is valid");
            (parts, path, source)
        })
        .collect()
}

fn access_request(parsed: &ParsedRequest) -> AccessRequest<'_> {
    let ((agent, connection, method, _, _), path, source) = parsed;
    AccessRequest {
        agent,
        connection,
        method,
        path,
        source: *source,
    }
}

/// Up to 48 requests, some of them equal, and a shuffled list of their
/// indexes in which each request appears twice.
fn request_sequences() -> impl Strategy<Value = (Vec<RequestParts>, Vec<usize>)> {
    prop::collection::vec(request_parts(ALL_AGENTS), 1..=48).prop_flat_map(|requests| {
        let indexes: Vec<usize> = (0..requests.len()).chain(0..requests.len()).collect();
        (Just(requests), Just(indexes).prop_shuffle())
    })
}

/// Compiled policies for every network list used in the tests, so cases
/// do not recompile.
fn policies() -> HashMap<Vec<&'static str>, Policy> {
    let mut compiled = HashMap::new();
    for length in 1..=3 {
        for start in 0..NETWORKS.len() {
            let networks = network_list(start, length);
            let policy = compile(&networks);
            compiled.insert(networks, policy);
        }
    }
    compiled
}

/// Returns `length` entries of [`NETWORKS`] from `start` on, wrapping
/// around.
fn network_list(start: usize, length: usize) -> Vec<&'static str> {
    NETWORKS
        .iter()
        .cycle()
        .skip(start)
        .take(length)
        .copied()
        .collect()
}

pub(crate) fn compile(networks: &[&str]) -> Policy {
    Policy::compile(&config(networks)).expect("test configuration compiles")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn decisions_match_reference(
        length in 1usize..=3,
        start in 0..NETWORKS.len(),
        (agent, connection, method, raw_path, source) in request_parts(ALL_AGENTS),
    ) {
        thread_local! {
            static POLICIES: HashMap<Vec<&'static str>, Policy> = policies();
        }
        let networks = network_list(start, length);
        let path = NormalizedPath::parse(raw_path).expect("test path is valid");
        let source: IpAddr = source.parse().expect("test address is valid");
        let request = AccessRequest { agent, connection, method, path: &path, source };
        POLICIES.with(|policies| {
            let policy = &policies[&networks];
            let expected = reference_authorize(policy, &request);
            // The policies live across cases, so the first call may already
            // hit an outcome that an earlier case with the same key cached.
            for attempt in ["first", "repeated"] {
                let decided = policy.authorize(&request);
                prop_assert_eq!(
                    &decided,
                    &expected,
                    "{} call: {} {} {} {} from {} in {:?}",
                    attempt, agent, method, connection, raw_path, source, networks
                );
            }
            Ok(())
        })?;
    }

    #[test]
    fn requests_match_reference(
        (agent, connection, method, raw_path, source) in request_parts(DECLARED_AGENTS),
    ) {
        thread_local! {
            static POLICY: Policy = compile(&["10.0.0.0/8"]);
        }
        let path = NormalizedPath::parse(raw_path).expect("test path is valid");
        let source: IpAddr = source.parse().expect("test address is valid");
        let request = AccessRequest { agent, connection, method, path: &path, source };
        POLICY.with(|policy| {
            let agent = &policy.agents[request.agent];
            let expected = reference_request(policy, &request, false);
            // The principal is each of the agent's roles in turn rather than
            // an entity of the agent's own; `decisions_match_reference`
            // shows that decisions stay the same.
            for role in agent.roles.roles.iter() {
                let built = policy.cedar_request(role, &request).expect("request builds");
                prop_assert_eq!(built.principal(), Some(&role.uid));
                prop_assert_eq!(built.action(), expected.action());
                prop_assert_eq!(built.resource(), expected.resource());
                prop_assert_eq!(built.context(), expected.context());
            }
            Ok(())
        })?;
    }
}

proptest! {
    // Each case decides up to 48 requests three times, so fewer cases cover
    // as many requests as the single-request tests above.
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn repeated_requests_match_reference(
        length in 1usize..=3,
        start in 0..NETWORKS.len(),
        (requests, shuffled) in request_sequences(),
    ) {
        thread_local! {
            static POLICIES: HashMap<Vec<&'static str>, Policy> = policies();
        }
        let networks = network_list(start, length);
        POLICIES.with(|policies| {
            let policy = &policies[&networks];
            // With an empty cache the first pass evaluates each distinct key
            // once and the shuffled pass only hits.
            policy.decisions.clear();
            authorize_in_order_and_shuffled(policy, &requests, &shuffled)
        })?;
    }
}

/// Authorizes `requests` in order, then in the order of `shuffled`, and
/// checks each decision against [`reference_authorize`].
fn authorize_in_order_and_shuffled(
    policy: &Policy,
    requests: &[RequestParts],
    shuffled: &[usize],
) -> Result<(), TestCaseError> {
    let parsed = parse_requests(requests);
    let expected: Vec<Decision> = parsed
        .iter()
        .map(|request| reference_authorize(policy, &access_request(request)))
        .collect();
    for (index, request) in parsed.iter().enumerate() {
        let decided = policy.authorize(&access_request(request));
        prop_assert_eq!(&decided, &expected[index], "in order: {:?}", request.0);
    }
    for &index in shuffled {
        let request = &parsed[index];
        let decided = policy.authorize(&access_request(request));
        prop_assert_eq!(&decided, &expected[index], "shuffled: {:?}", request.0);
    }
    Ok(())
}

/// Method lists of generated rules, as TOML arrays. The method and path
/// lists are few, so rules with the same effect and conditions, which share
/// one evaluated policy, occur often within a role and across roles.
const RULE_METHODS: &[&str] = &[
    r#"["*"]"#,
    r#"["GET"]"#,
    r#"["POST"]"#,
    r#"["GET", "POST"]"#,
    r#"["DELETE"]"#,
];

/// Path lists of generated rules, as TOML arrays.
const RULE_PATHS: &[&str] = &[
    r#"["/**"]"#,
    r#"["/x/**"]"#,
    r#"["/x/*"]"#,
    r#"["/x/*", "/y"]"#,
    r#"["/y"]"#,
];

/// Roles of generated configurations.
const RANDOM_ROLES: [&str; 3] = ["a", "b", "c"];

/// Agents of generated configurations and the roles each lists: none, each
/// role alone, and several in different orders, the reverse among them.
const RANDOM_AGENTS: &[(&str, &[&str])] = &[
    ("none", &[]),
    ("only-a", &["a"]),
    ("only-b", &["b"]),
    ("only-c", &["c"]),
    ("ab", &["a", "b"]),
    ("ba", &["b", "a"]),
    ("ac", &["a", "c"]),
    ("abc", &["a", "b", "c"]),
    ("cba", &["c", "b", "a"]),
    ("bca", &["b", "c", "a"]),
];

/// Connections of requests to generated configurations, and one they do
/// not declare.
const RANDOM_REQUEST_CONNECTIONS: &[&str] = &["blog", "crm", "wiki"];

/// Methods of requests to generated configurations: ones that rules list,
/// `GET` in lower case, which no rule lists, and one that only `*` covers.
const RANDOM_REQUEST_METHODS: &[&str] = &["GET", "get", "POST", "DELETE", "PATCH"];

/// Paths of requests to generated configurations, of depth 0 to 2. Of the
/// patterns in [`RULE_PATHS`], only `/**` matches `/` and `/z`.
const RANDOM_REQUEST_PATHS: &[&str] = &["/", "/x", "/x/1", "/x/1/2", "/y", "/z"];

/// One generated rule: its connection, then its methods and paths as TOML
/// arrays.
type RuleParts = (&'static str, &'static str, &'static str);

/// The deny rules and the allow rules of one generated role.
type RoleRules = (Vec<RuleParts>, Vec<RuleParts>);

/// One request to a generated configuration: agent, connection, method and
/// path.
type RandomRequest = (&'static str, &'static str, &'static str, &'static str);

fn role_rules() -> impl Strategy<Value = RoleRules> {
    let rule = || (pick(&["blog", "crm"]), pick(RULE_METHODS), pick(RULE_PATHS));
    (
        prop::collection::vec(rule(), 0..=4),
        prop::collection::vec(rule(), 0..=5),
    )
}

/// Draws requests from the agents of [`RANDOM_AGENTS`] and one that the
/// generated configurations do not declare.
fn random_request() -> impl Strategy<Value = RandomRequest> {
    let agents: Vec<&'static str> = RANDOM_AGENTS
        .iter()
        .map(|&(name, _)| name)
        .chain(["ghost"])
        .collect();
    (
        prop::sample::select(agents),
        pick(RANDOM_REQUEST_CONNECTIONS),
        pick(RANDOM_REQUEST_METHODS),
        pick(RANDOM_REQUEST_PATHS),
    )
}

/// Writes the configuration with the rules of [`RANDOM_ROLES`] in `roles`
/// and the agents of [`RANDOM_AGENTS`] as TOML, and parses it.
fn random_config(roles: &[RoleRules; 3]) -> Config {
    let rule_list = |rules: &[RuleParts]| {
        let lines: Vec<String> = rules
            .iter()
            .map(|(connection, methods, paths)| {
                format!(
                    "  {{ connection = {connection:?}, methods = {methods}, paths = {paths} }},\n"
                )
            })
            .collect();
        format!("[\n{}]", lines.concat())
    };
    let mut source = CONNECTION_TABLES.to_string();
    for (name, (deny, allow)) in RANDOM_ROLES.iter().zip(roles) {
        source.push_str(&format!(
            "\n[roles.{name}]\ndeny = {}\nallow = {}\n",
            rule_list(deny),
            rule_list(allow)
        ));
    }
    for (name, listed) in RANDOM_AGENTS {
        let listed: Vec<String> = listed.iter().map(|role| format!("{role:?}")).collect();
        source.push_str(&format!(
            "\n[agents.{name}]\nowner = \"jay@example.com\"\nroles = [{}]\n",
            listed.join(", ")
        ));
    }
    Config::parse(&source, Path::new("castellan.toml")).expect("generated configuration is valid")
}

proptest! {
    // Each case compiles a configuration, and the reference and the
    // explanation checks parse every displayed rule policy again for each
    // request. So the cases are fewer than above: 160 take about 4 s in the
    // dev profile on a shared 2-core machine.
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn random_rules_match_reference(
        roles in prop::array::uniform3(role_rules()),
        without_segments in any::<bool>(),
        requests in prop::collection::vec(random_request(), 1..=32),
    ) {
        let mut policy =
            Policy::compile(&random_config(&roles)).expect("generated configuration compiles");
        if without_segments {
            // Contexts then have no segment attributes, so a condition that
            // reads a segment fails to evaluate at the depths it matches.
            policy.shape = ContextShape::default();
        }
        decide_random_requests(&policy, &requests)?;
    }
}

/// Authorizes `requests` twice, the second time from the decision cache,
/// and explains them, checking each against the reference decision.
fn decide_random_requests(
    policy: &Policy,
    requests: &[RandomRequest],
) -> Result<(), TestCaseError> {
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let paths: Vec<NormalizedPath> = requests
        .iter()
        .map(|request| NormalizedPath::parse(request.3).expect("test path is valid"))
        .collect();
    let access: Vec<AccessRequest<'_>> = requests
        .iter()
        .zip(&paths)
        .map(|(&(agent, connection, method, _), path)| AccessRequest {
            agent,
            connection,
            method,
            path,
            source: loopback,
        })
        .collect();
    let expected: Vec<Decision> = access
        .iter()
        .map(|request| reference_authorize(policy, request))
        .collect();
    for (request, expected) in access.iter().zip(&expected) {
        let decided = policy.authorize(request);
        prop_assert_eq!(&decided, expected, "first call: {:?}", request);
        check_failed_rule_named(policy, request, &decided)?;
    }
    let evaluations = policy.evaluations.load(Ordering::Relaxed);
    for (request, expected) in access.iter().zip(&expected) {
        let decided = policy.authorize(request);
        prop_assert_eq!(&decided, expected, "cached call: {:?}", request);
    }
    prop_assert_eq!(
        policy.evaluations.load(Ordering::Relaxed),
        evaluations,
        "repeated requests are decided from the cache"
    );
    for (request, expected) in access.iter().zip(&expected) {
        check_explanation(policy, request, expected)?;
    }
    Ok(())
}

/// Checks that a denial for an evaluation error names a rule of the agent's
/// roles by its id, never the index of the evaluated policy it shares.
fn check_failed_rule_named(
    policy: &Policy,
    request: &AccessRequest<'_>,
    decision: &Decision,
) -> Result<(), TestCaseError> {
    let named = decision
        .reason
        .strip_prefix("policy ")
        .and_then(|rest| rest.strip_suffix(" could not be evaluated, so the request is denied"));
    let Some(named) = named else {
        return Ok(());
    };
    prop_assert!(
        named.parse::<u32>().is_err(),
        "evaluation error names policy index {}",
        named
    );
    let position = policy.positions.get(named).copied();
    prop_assert!(
        position.is_some(),
        "evaluation error names {}, which is no rule",
        named
    );
    let agent = &policy.agents[request.agent];
    prop_assert!(
        policy
            .group_rules(&agent.roles)
            .contains(&position.unwrap_or(usize::MAX)),
        "evaluation error names {}, which is no rule of agent {}",
        named,
        request.agent
    );
    Ok(())
}

/// Checks that the explanation of `request` has the decision `expected` and
/// lists the rules of the agent's roles in reporting order, each matched
/// exactly when its displayed policy alone is satisfied.
fn check_explanation(
    policy: &Policy,
    request: &AccessRequest<'_>,
    expected: &Decision,
) -> Result<(), TestCaseError> {
    let explanation = policy.explain(request);
    prop_assert_eq!(&explanation.decision, expected, "explained: {:?}", request);
    let positions = match policy.agents.get(request.agent) {
        Some(agent) => policy.group_rules(&agent.roles),
        None => Vec::new(),
    };
    let listed: Vec<String> = explanation
        .rules
        .iter()
        .map(|rule| rule.id.to_string())
        .collect();
    let rules: Vec<String> = positions
        .iter()
        .map(|&position| policy.compiled[position].id.clone())
        .collect();
    prop_assert_eq!(listed, rules, "explained: {:?}", request);
    for (rule, &position) in explanation.rules.iter().zip(&positions) {
        prop_assert_eq!(
            rule.matched,
            satisfied_alone(policy, position, request),
            "{} explaining {:?}",
            rule.id,
            request
        );
    }
    Ok(())
}

/// Evaluates the displayed policy of the rule at `position`, scope
/// included, in a set of its own the earlier way, and returns whether it is
/// satisfied without an evaluation error.
fn satisfied_alone(policy: &Policy, position: usize, request: &AccessRequest<'_>) -> bool {
    let id = &policy.compiled[position].id;
    let text = policy.policy_text(position);
    let cedar = cedar_policy::Policy::parse(Some(cedar_policy::PolicyId::new(id)), &text)
        .expect("displayed rule policy parses");
    let mut set = PolicySet::new();
    set.add(cedar).expect("an empty set takes any policy");
    let cedar_request = reference_request(policy, request, true);
    let entities = reference_entities(policy, request);
    let response = policy
        .authorizer
        .is_authorized(&cedar_request, &set, &entities);
    let satisfied = response
        .diagnostics()
        .reason()
        .any(|reason| reason.to_string() == *id);
    satisfied && response.diagnostics().errors().next().is_none()
}
