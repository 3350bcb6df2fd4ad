//! Compilation of a configuration into Cedar policies.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use castellan_model::{Agent, Config, Location, MethodSet, Role, Rule, RuleEffect, RuleId};
use cedar_policy::{Authorizer, Entities, EntityId, EntityTypeName, EntityUid, PolicyId};
use ipnet::IpNet;

use crate::cedar_text::{
    annotated, displayed_rule_policy, network_policy_agent, network_policy_text, rule_policy,
    ContextShape,
};
use crate::decision_cache::DecisionCache;
use crate::error::PolicyError;
use crate::rule_sets::{RuleScope, RuleSetCache, RuleSets};

/// The roles and agents of a configuration compiled to Cedar.
///
/// Compiled once per configuration and immutable afterwards apart from its
/// decision cache, which is thread-safe, so one instance can be shared
/// between request handlers in an `Arc`.
pub struct Policy {
    /// Empty: the evaluated rule policies read no entity, and the principal
    /// of an evaluation needs none.
    pub(crate) entities: Entities,
    pub(crate) authorizer: Authorizer,
    /// The rule policies in reporting order: the roles in name order, and
    /// each role's deny rules, then its allow rules, in configuration order. Network restrictions are
    /// checked in Rust and have no entry here (see [`NetworkRestriction`]).
    pub(crate) compiled: Vec<CompiledPolicy>,
    /// The distinct policies that Cedar evaluates, each parsed once for
    /// every rule with the same effect and conditions. The policy at index
    /// `i` has the id `i` (see [`condition_id`]).
    pub(crate) conditions: Box<[cedar_policy::Policy]>,
    /// Position of each rule id in `compiled`.
    pub(crate) positions: HashMap<String, usize>,
    pub(crate) agents: HashMap<String, AgentEntry>,
    pub(crate) shape: ContextShape,
    pub(crate) types: EntityTypes,
    /// Entity ids that requests use, parsed once here instead of per request.
    pub(crate) uids: RequestUids,
    /// Context attribute names `s0, s1, ...` up to `shape.from_start` and
    /// `r0, r1, ...` up to `shape.from_end`.
    pub(crate) segment_keys: SegmentKeys,
    /// Cedar outcomes of recent requests, dropped with the policy on reload.
    pub(crate) decisions: DecisionCache,
    /// Number of Cedar evaluations, which tests read to tell a cache hit
    /// from a miss.
    #[cfg(test)]
    pub(crate) evaluations: std::sync::atomic::AtomicUsize,
}

/// `Action` and `Connection` entity ids of every method and connection that
/// the configuration names. A request with another method or connection
/// builds its id on the spot.
#[derive(Default)]
pub(crate) struct RequestUids {
    pub(crate) actions: HashMap<String, EntityUid>,
    pub(crate) connections: HashMap<String, EntityUid>,
}

/// Names of the segment attributes of request contexts.
#[derive(Default)]
pub(crate) struct SegmentKeys {
    pub(crate) from_start: Vec<String>,
    pub(crate) from_end: Vec<String>,
}

impl SegmentKeys {
    fn new(shape: ContextShape) -> Self {
        SegmentKeys {
            from_start: (0..shape.from_start).map(|i| format!("s{i}")).collect(),
            from_end: (0..shape.from_end).map(|i| format!("r{i}")).collect(),
        }
    }
}

/// The Cedar policy of one rule and the rule it came from.
pub(crate) struct CompiledPolicy {
    /// Index in [`Policy::conditions`] of the policy that Cedar evaluates
    /// for this rule: the rule's effect and conditions under an
    /// unconstrained scope (see `cedar_text::rule_policy`), without an
    /// `@id` annotation. Cedar keeps annotations in a map of their own,
    /// about 1 KiB for each policy, and the rule's id is in `id` already.
    ///
    /// No text is kept beside it: cedar-policy 4 displays a policy parsed
    /// from text as that text (`LosslessPolicy::Text`), so
    /// [`Policy::policy_text`] writes the displayed text from that policy
    /// and `scope`.
    pub(crate) condition: u32,
    /// The policy id as text, which decisions name as their rule.
    pub(crate) id: String,
    pub(crate) rule: RuleId,
    /// Line and column of the rule in the configuration file.
    pub(crate) location: Location,
    /// The connection and methods of the rule.
    pub(crate) scope: RuleScope,
}

/// The compiled form of one agent.
pub(crate) struct AgentEntry {
    /// The roles of the agent, shared with every agent that lists the same.
    pub(crate) roles: Arc<RoleGroup>,
    /// The agent's network restriction, if it has one.
    pub(crate) network: Option<NetworkRestriction>,
}

/// One role in compiled form, shared by every agent that lists it.
///
/// Displayed rule policies name roles only (`principal in Role::"..."`),
/// never an agent, and evaluated ones no principal at all. Cedar denies
/// when a `forbid` is satisfied and otherwise allows when a `permit` is.
/// So `Policy::authorize` evaluates the rules of each of an agent's roles
/// on their own, which lets agents share each role's rule sets, and
/// combines the results into the decision of all the rules at once.
/// Nothing is compiled per combination of roles. With a principal entity
/// and rule sets per combination, the compiled policy for the 10,000 agents
/// of `bench/scale.sh` took 9 MiB more, because nearly each of them lists a
/// combination of its own.
pub(crate) struct CompiledRole {
    pub(crate) name: String,
    /// The id of the `Role` entity, the principal of the Cedar requests
    /// that evaluate this role's rules, which no evaluated policy reads.
    pub(crate) uid: EntityUid,
    /// Positions in `compiled` of the role's deny rules, then its allow
    /// rules.
    pub(crate) rules: Box<[usize]>,
    /// The role's rules by connection and method.
    pub(crate) rule_sets: RuleSets,
}

/// The roles of an agent in the order it lists them, shared by every agent
/// that lists the same roles in the same order.
pub(crate) struct RoleGroup {
    pub(crate) roles: Box<[Arc<CompiledRole>]>,
}

impl RoleGroup {
    /// Names of the roles in the order the agents list them, each once.
    pub(crate) fn names(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        self.roles.iter().map(|role| role.name.as_str())
    }
}

/// The networks an agent may call from, checked before Cedar evaluates.
///
/// Each restriction has a Cedar policy of its own, `agents.NAME.networks`,
/// which decisions name and the CLI shows, but it is never parsed or
/// evaluated: its text is written from these ranges when asked for. With
/// an entry in [`Policy::compiled`] and its id in [`Policy::positions`],
/// the 7,500 restrictions of `bench/scale.sh` took about 1.9 MiB.
pub(crate) struct NetworkRestriction {
    /// The networks with host bits cleared, as the policy text lists them.
    pub(crate) networks: Box<[IpNet]>,
}

/// The Cedar entity types used in requests.
pub(crate) struct EntityTypes {
    pub(crate) action: EntityTypeName,
    pub(crate) connection: EntityTypeName,
    pub(crate) role: EntityTypeName,
}

impl EntityTypes {
    fn new() -> Result<Self, PolicyError> {
        Ok(EntityTypes {
            action: type_name("Action")?,
            connection: type_name("Connection")?,
            role: type_name("Role")?,
        })
    }
}

fn type_name(name: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(name).map_err(|error| PolicyError::Entities {
        message: format!("entity type {name}: {error}"),
    })
}

pub(crate) fn uid(entity_type: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(entity_type.clone(), EntityId::new(id))
}

impl Policy {
    /// Compiles every rule of every role into a Cedar policy, and keeps
    /// every agent's network restriction for the check in Rust.
    /// [`Policy::cedar_text`] and [`Policy::policy_text_of`] write the text
    /// of both kinds of policy.
    pub fn compile(config: &Config) -> Result<Policy, PolicyError> {
        let types = EntityTypes::new()?;
        let mut builder = Builder::default();
        let mut rule_sets = RuleSetCache::default();
        let mut roles = HashMap::with_capacity(config.roles.len());
        for role in config.roles.values() {
            let rules = builder.add_role(role)?;
            let compiled = CompiledRole {
                name: role.name.clone(),
                uid: uid(&types.role, &role.name),
                rule_sets: rule_sets.rule_sets(&builder.compiled, &builder.conditions, &rules)?,
                rules: rules.into_boxed_slice(),
            };
            // As with agents below: a configuration built in code could give
            // two roles one name, and the later one would silently replace
            // the other's rules, deny rules included.
            if roles
                .insert(role.name.clone(), Arc::new(compiled))
                .is_some()
            {
                return Err(PolicyError::DuplicateRole {
                    role: role.name.clone(),
                });
            }
        }
        let mut agents = HashMap::with_capacity(config.agents.len());
        let mut groups: HashMap<&[String], Arc<RoleGroup>> = HashMap::new();
        for agent in config.agents.values() {
            let group = match groups.get(agent.roles.as_slice()) {
                Some(group) => Arc::clone(group),
                None => {
                    let group = Arc::new(role_group(agent, &roles)?);
                    groups.insert(&agent.roles, Arc::clone(&group));
                    group
                }
            };
            let network = (!agent.networks.is_empty()).then(|| NetworkRestriction {
                networks: agent.networks.iter().map(IpNet::trunc).collect(),
            });
            let entry = AgentEntry {
                roles: group,
                network,
            };
            // Parsed configurations key each agent by its name, but one
            // built in code could give two agents the same name, and the
            // later one would take the other's roles and networks.
            if agents.insert(agent.name.clone(), entry).is_some() {
                return Err(PolicyError::DuplicateAgent {
                    agent: agent.name.clone(),
                });
            }
        }
        let uids = request_uids(config, &types);
        // The policy lives until the next reload, so give back the spare
        // capacity that growing the vector left.
        let mut compiled = builder.compiled;
        compiled.shrink_to_fit();
        Ok(Policy {
            entities: Entities::empty(),
            authorizer: Authorizer::new(),
            compiled,
            conditions: builder.conditions.into_boxed_slice(),
            positions: builder.positions,
            agents,
            segment_keys: SegmentKeys::new(builder.shape),
            shape: builder.shape,
            types,
            uids,
            decisions: DecisionCache::default(),
            #[cfg(test)]
            evaluations: Default::default(),
        })
    }

    /// Returns the generated Cedar policies in reporting order: the
    /// network policies of the agents in name order, then the rules.
    pub fn cedar_text(&self) -> String {
        let mut restricted: Vec<(&str, &NetworkRestriction)> = self
            .agents
            .iter()
            .filter_map(|(name, entry)| Some((name.as_str(), entry.network.as_ref()?)))
            .collect();
        restricted.sort_unstable_by_key(|(name, _)| *name);
        let networks = restricted
            .into_iter()
            .map(|(name, network)| network_policy_text(name, &network.networks));
        let rules = (0..self.compiled.len()).map(|position| self.policy_text(position));
        networks.chain(rules).collect::<Vec<String>>().join("\n")
    }

    /// Returns the positions in `compiled` of the rules of `group`'s roles
    /// in reporting order.
    #[cfg(test)]
    pub(crate) fn group_rules(&self, group: &RoleGroup) -> Vec<usize> {
        let rules: std::collections::BTreeSet<usize> = group
            .roles
            .iter()
            .flat_map(|role| role.rules.iter().copied())
            .collect();
        rules.into_iter().collect()
    }

    /// Returns the policy that Cedar evaluates for `rule`.
    pub(crate) fn condition(&self, rule: &CompiledPolicy) -> &cedar_policy::Policy {
        &self.conditions[rule.condition as usize]
    }

    /// Returns the Cedar text of the rule policy at `position` in
    /// `compiled`, with its `@id` annotation and the rule's scope.
    pub(crate) fn policy_text(&self, position: usize) -> String {
        let compiled = &self.compiled[position];
        let evaluated = self.condition(compiled).to_string();
        let displayed = displayed_rule_policy(
            &compiled.rule,
            &compiled.scope.connection,
            &compiled.scope.methods,
            &evaluated,
        );
        annotated(&compiled.id, &displayed)
    }

    /// Returns the Cedar text of the policy with id `id`: a rule policy or
    /// the network policy of an agent.
    pub(crate) fn policy_text_of(&self, id: &str) -> Option<String> {
        if let Some(&position) = self.positions.get(id) {
            return Some(self.policy_text(position));
        }
        let agent = network_policy_agent(id)?;
        let network = self.agents.get(agent)?.network.as_ref()?;
        Some(network_policy_text(agent, &network.networks))
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.compiled.len())
            .field("agents", &self.agents.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Builder {
    compiled: Vec<CompiledPolicy>,
    positions: HashMap<String, usize>,
    conditions: Vec<cedar_policy::Policy>,
    /// Index in `conditions` of each evaluated policy text.
    condition_indexes: HashMap<String, u32>,
    shape: ContextShape,
}

impl Builder {
    /// Adds a role's deny rules, then its allow rules, and returns their
    /// positions.
    ///
    /// A rule's policy takes its principal and its effect from the rule's
    /// id, and only the role that lists the rule evaluates it. A
    /// configuration built in code could list a rule whose id names another
    /// role, which no evaluation would match, or the other effect, which
    /// would turn a deny into an allow. Such a rule is rejected.
    fn add_role(&mut self, role: &Role) -> Result<Vec<usize>, PolicyError> {
        let mut positions = Vec::with_capacity(role.deny.len() + role.allow.len());
        let deny = role
            .deny
            .iter()
            .map(|rule| (rule, RuleEffect::Deny, "deny"));
        let allow = role
            .allow
            .iter()
            .map(|rule| (rule, RuleEffect::Allow, "allow"));
        for (rule, effect, list) in deny.chain(allow) {
            if rule.id.role != role.name || rule.id.effect != effect {
                return Err(PolicyError::MisplacedRule {
                    rule: rule.id.to_string(),
                    listed: format!("roles.{}.{list}", role.name),
                });
            }
            positions.push(self.add_rule(rule)?);
        }
        Ok(positions)
    }

    fn add_rule(&mut self, rule: &Rule) -> Result<usize, PolicyError> {
        let id = rule.id.to_string();
        let text = rule_policy(rule, &mut self.shape)?;
        let condition = self.condition(&id, text)?;
        let position = self.compiled.len();
        if self.positions.insert(id.clone(), position).is_some() {
            return Err(PolicyError::Generated {
                id,
                message: "another policy has the same id".to_string(),
            });
        }
        self.compiled.push(CompiledPolicy {
            condition,
            id,
            rule: rule.id.clone(),
            location: rule.location,
            scope: RuleScope {
                connection: rule.connection.clone(),
                methods: rule.methods.clone(),
            },
        });
        Ok(position)
    }

    /// Returns the index in `conditions` of the evaluated policy `text` of
    /// rule `id`, parsing it on first use.
    fn condition(&mut self, id: &str, text: String) -> Result<u32, PolicyError> {
        if let Some(&index) = self.condition_indexes.get(&text) {
            return Ok(index);
        }
        let generated = |message: String| PolicyError::Generated {
            id: id.to_string(),
            message,
        };
        let index = u32::try_from(self.conditions.len())
            .map_err(|_| generated("the configuration has too many distinct rules".to_string()))?;
        let cedar = cedar_policy::Policy::parse(Some(condition_id(index)), &text)
            .map_err(|error| generated(error.to_string()))?;
        self.conditions.push(cedar);
        self.condition_indexes.insert(text, index);
        Ok(index)
    }
}

/// Returns the Cedar policy id of the evaluated policy at `index` of
/// [`Policy::conditions`]: the index in decimal.
pub(crate) fn condition_id(index: u32) -> PolicyId {
    PolicyId::new(index.to_string())
}

/// Returns the index that [`condition_id`] wrote into `id`.
pub(crate) fn condition_index(id: &PolicyId) -> Option<u32> {
    let text: &str = id.as_ref();
    text.parse().ok()
}

/// Builds the entity ids of the configuration's connections, of the
/// connections and methods its rules name, and of the standard HTTP methods.
fn request_uids(config: &Config, types: &EntityTypes) -> RequestUids {
    const STANDARD_METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    let mut uids = RequestUids::default();
    let mut add_action = |method: &str| {
        uids.actions
            .entry(method.to_string())
            .or_insert_with(|| uid(&types.action, method));
    };
    STANDARD_METHODS.into_iter().for_each(&mut add_action);
    let rules = config
        .roles
        .values()
        .flat_map(|role| role.deny.iter().chain(&role.allow));
    for rule in rules.clone() {
        if let MethodSet::Only(methods) = &rule.methods {
            methods.iter().for_each(|method| add_action(method));
        }
    }
    let connections = config
        .connections
        .keys()
        .chain(rules.map(|rule| &rule.connection));
    for connection in connections {
        uids.connections
            .entry(connection.clone())
            .or_insert_with(|| uid(&types.connection, connection));
    }
    uids
}

/// Looks up the compiled roles of `agent` in the order it lists them,
/// each once. A configuration built in code rather than parsed may repeat
/// a role, and evaluating its rules twice would only cost time.
fn role_group(
    agent: &Agent,
    roles: &HashMap<String, Arc<CompiledRole>>,
) -> Result<RoleGroup, PolicyError> {
    let mut listed: Vec<Arc<CompiledRole>> = Vec::with_capacity(agent.roles.len());
    for name in &agent.roles {
        let role = roles.get(name).ok_or_else(|| PolicyError::UndefinedRole {
            agent: agent.name.clone(),
            role: name.clone(),
        })?;
        if !listed.iter().any(|seen| Arc::ptr_eq(seen, role)) {
            listed.push(Arc::clone(role));
        }
    }
    Ok(RoleGroup {
        roles: listed.into_boxed_slice(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const CONFIG: &str = r#"
[connections.blog]
upstream = "https://blog.example.com"
auth = { kind = "bearer" }
secret = "blog-token"

[roles.reader]
allow = [{ connection = "blog", methods = ["GET"], paths = ["/**"] }]

[roles.writer]
allow = [{ connection = "blog", methods = ["POST"], paths = ["/**"] }]

[agents.first]
owner = "jay@example.com"
roles = ["reader"]

[agents.second]
owner = "jay@example.com"
roles = ["reader"]

[agents.both]
owner = "jay@example.com"
roles = ["reader", "writer"]

[agents.reversed]
owner = "jay@example.com"
roles = ["writer", "reader"]

[agents.none]
owner = "jay@example.com"
"#;

    fn policy() -> Policy {
        let config =
            Config::parse(CONFIG, Path::new("castellan.toml")).expect("valid configuration");
        Policy::compile(&config).expect("configuration compiles")
    }

    fn names(policy: &Policy, agent: &str) -> Vec<String> {
        policy.agents[agent]
            .roles
            .names()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn misplaced_rules_rejected() {
        let compile_error = |change: fn(&mut Config)| {
            let mut config =
                Config::parse(CONFIG, Path::new("castellan.toml")).expect("valid configuration");
            change(&mut config);
            Policy::compile(&config)
                .expect_err("a misplaced rule is rejected")
                .to_string()
        };
        let other_role = compile_error(|config| {
            let writer = config.roles.get_mut("writer").expect("writer is declared");
            writer.allow[0].id.role = "reader".to_string();
        });
        assert_eq!(
            other_role,
            "rule roles.reader.allow[0] is listed in roles.writer.allow; give the rule an id that names the role and the list that contain it"
        );
        // A deny rule with an allow id would compile to a permit.
        let other_list = compile_error(|config| {
            let writer = config.roles.get_mut("writer").expect("writer is declared");
            let mut rule = writer.allow[0].clone();
            rule.id.index = 7;
            writer.deny.push(rule);
        });
        assert_eq!(
            other_list,
            "rule roles.writer.allow[7] is listed in roles.writer.deny; give the rule an id that names the role and the list that contain it"
        );
    }

    #[test]
    fn same_conditions_share_one_policy() {
        let text = r#"
[connections.blog]
upstream = "https://blog.example.com"
auth = { kind = "bearer" }
secret = "blog-token"

[roles.reader]
allow = [{ connection = "blog", methods = ["GET"], paths = ["/**"] }]

[roles.editor]
allow = [
  { connection = "blog", methods = ["PUT"], paths = ["/**"] },
  { connection = "blog", methods = ["*"], paths = ["/**"] },
]
deny = [{ connection = "blog", methods = ["DELETE"], paths = ["/**"] }]

[agents.both]
owner = "jay@example.com"
roles = ["reader", "editor"]
"#;
        let config = Config::parse(text, Path::new("castellan.toml")).expect("valid configuration");
        let policy = Policy::compile(&config).expect("configuration compiles");
        assert_eq!(policy.compiled.len(), 4);
        // One permit and one forbid with the condition of `/**`.
        assert_eq!(policy.conditions.len(), 2);

        let path = castellan_model::NormalizedPath::parse("/posts/1").expect("valid path");
        let request = |method| crate::AccessRequest {
            agent: "both",
            connection: "blog",
            method,
            path: &path,
            source: std::net::IpAddr::from([127, 0, 0, 1]),
        };
        let decide = |method| policy.authorize(&request(method)).rule;
        // Reporting order puts each role's deny rules first, the roles in
        // name order, and the first rule that covers a request names it.
        assert_eq!(decide("GET").as_deref(), Some("roles.editor.allow[1]"));
        assert_eq!(decide("PUT").as_deref(), Some("roles.editor.allow[0]"));
        assert_eq!(decide("POST").as_deref(), Some("roles.editor.allow[1]"));
        assert_eq!(decide("DELETE").as_deref(), Some("roles.editor.deny[0]"));

        let explanation = policy.explain(&request("GET"));
        let matched: Vec<(String, bool)> = explanation
            .rules
            .iter()
            .map(|rule| (rule.id.to_string(), rule.matched))
            .collect();
        let expected = [
            ("roles.editor.deny[0]", false),
            ("roles.editor.allow[0]", false),
            ("roles.editor.allow[1]", true),
            ("roles.reader.allow[0]", true),
        ];
        let expected: Vec<(String, bool)> = expected
            .iter()
            .map(|(id, matched)| (id.to_string(), *matched))
            .collect();
        assert_eq!(matched, expected);
    }

    #[test]
    fn duplicate_agent_names_rejected() {
        let mut config =
            Config::parse(CONFIG, Path::new("castellan.toml")).expect("valid configuration");
        let mut copy = config.agents["both"].clone();
        copy.name = "first".to_string();
        config.agents.insert("copy".to_string(), copy);
        let error = Policy::compile(&config).expect_err("a repeated agent name is rejected");
        assert_eq!(
            error.to_string(),
            "agent name \"first\" is used by more than one agent; give each agent a name of its own"
        );
    }

    #[test]
    fn duplicate_role_names_rejected() {
        let mut config =
            Config::parse(CONFIG, Path::new("castellan.toml")).expect("valid configuration");
        // A role named like another, with a deny rule whose id no other
        // rule has: without the check, one role's rules would be dropped.
        let mut copy = config.roles["writer"].clone();
        copy.name = "reader".to_string();
        copy.deny = std::mem::take(&mut copy.allow);
        for rule in &mut copy.deny {
            rule.id.role = "reader".to_string();
            rule.id.effect = RuleEffect::Deny;
        }
        config.roles.insert("copy".to_string(), copy);
        let error = Policy::compile(&config).expect_err("a repeated role name is rejected");
        assert_eq!(
            error.to_string(),
            "role name \"reader\" is used by more than one role; give each role a name of its own"
        );
    }

    #[test]
    fn agents_with_same_roles_share_group() {
        let policy = policy();
        let first = &policy.agents["first"].roles;
        assert!(Arc::ptr_eq(first, &policy.agents["second"].roles));
        // No entity for the roles, the agents or their groups.
        assert!(policy.entities.is_empty());
        assert_eq!(names(&policy, "first"), ["reader"]);
    }

    #[test]
    fn groups_share_compiled_roles_and_keep_listed_order() {
        let policy = policy();
        let role = |agent: &str, index: usize| Arc::clone(&policy.agents[agent].roles.roles[index]);
        assert!(!Arc::ptr_eq(
            &policy.agents["both"].roles,
            &policy.agents["reversed"].roles
        ));
        assert!(Arc::ptr_eq(&role("first", 0), &role("both", 0)));
        assert!(Arc::ptr_eq(&role("both", 0), &role("reversed", 1)));
        assert!(Arc::ptr_eq(&role("both", 1), &role("reversed", 0)));
        assert_eq!(names(&policy, "reversed"), ["writer", "reader"]);
        assert!(names(&policy, "none").is_empty());
        assert_eq!(role("first", 0).uid.to_string(), "Role::\"reader\"");
        assert_eq!(policy.group_rules(&policy.agents["both"].roles).len(), 2);
    }
}
