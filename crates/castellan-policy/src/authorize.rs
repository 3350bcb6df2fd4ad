//! Per-request authorization: check the source network, look up the
//! decision cache, and on a miss build the Cedar request, evaluate and
//! cache the outcome, then report.

use std::net::IpAddr;

use castellan_model::{canonical_ip, NormalizedPath, RuleEffect};
use cedar_policy::{
    AuthorizationError, Context, EntityUid, PolicyId, PolicySet, Request, Response,
    RestrictedExpression,
};

use crate::cedar_text::network_policy_id;
use crate::compile::{uid, AgentEntry, CompiledPolicy, CompiledRole, Policy};
use crate::decision_cache::Outcome;

/// One request to authorize: who calls what, from where.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// Name of the authenticated agent.
    pub agent: &'a str,
    pub connection: &'a str,
    /// HTTP method token, such as `GET`.
    pub method: &'a str,
    /// The normalized path that will be forwarded upstream.
    pub path: &'a NormalizedPath,
    /// Peer address of the agent's connection to the gateway.
    pub source: IpAddr,
}

/// The outcome of authorizing one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Id of the deciding rule, such as `roles.marketing.allow[0]` or
    /// `agents.x.networks`. It is `None` when no rule decided: default deny,
    /// unknown agent or evaluation failure.
    pub rule: Option<String>,
    /// A sentence for the error body and the audit record.
    pub reason: String,
}

impl Decision {
    fn deny(rule: Option<String>, reason: String) -> Self {
        Decision {
            allowed: false,
            rule,
            reason,
        }
    }
}

impl Policy {
    /// Decides one request: denied unless an allow rule of the agent's roles
    /// covers it, no deny rule covers it and the source is in the agent's
    /// networks.
    pub fn authorize(&self, request: &AccessRequest<'_>) -> Decision {
        let Some(agent) = self.agents.get(request.agent) else {
            return unknown_agent(request.agent);
        };
        if let Some(denial) = self.check_network(agent, request) {
            return denial;
        }
        let mut selected = agent
            .roles
            .roles
            .iter()
            .filter_map(|role| {
                let policies = role.rule_sets.select(request.connection, request.method)?;
                Some((role, policies))
            })
            .peekable();
        if selected.peek().is_none() {
            // No rule of the agent's roles covers this connection and
            // method, so Cedar would deny without a deciding policy and
            // without errors.
            return Decision::deny(None, no_rule_reason(agent, request));
        }
        // The network check above must stay before this lookup, because the
        // key leaves out the source address.
        let key = self.decisions.key(request, self.shape);
        if let Some(outcome) = key.as_ref().and_then(|key| self.decisions.get(key)) {
            return self.decision(agent, request, &outcome);
        }
        let context = match self.context(request) {
            Ok(context) => context,
            Err(decision) => return decision,
        };
        // Each role that has rules here is evaluated on its own (see
        // `CompiledRole`). The action, resource and context are shared, and
        // a context clone only counts a reference.
        let (action, resource) = self.action_and_resource(request);
        let mut findings = Findings::default();
        for (role, rules) in selected {
            let cedar = match self.request_for(&role.uid, &action, &resource, context.clone()) {
                Ok(cedar) => cedar,
                Err(decision) => return decision,
            };
            let response = self.evaluate(&cedar, &rules.policies);
            findings.add(self, &response, |id| rules.position(id));
        }
        let outcome = findings.outcome(self);
        let decision = self.decision(agent, request, &outcome);
        if let Some(key) = key {
            self.decisions.insert(key, outcome);
        }
        decision
    }

    /// Denies a source outside the agent's networks, naming the agent's
    /// network policy.
    ///
    /// This decides exactly as evaluating that policy with Cedar: its
    /// `isInRange` is true for an address in a range of the same family, and
    /// both sides see the address after `canonical_ip`. Checking here keeps
    /// the address out of the Cedar context, where Cedar would parse it from
    /// text on every request. The policy is the first in reporting order
    /// that can decide for the agent, so it also wins over any forbid rule.
    fn check_network(&self, agent: &AgentEntry, request: &AccessRequest<'_>) -> Option<Decision> {
        let network = agent.network.as_ref()?;
        let source = canonical_ip(request.source);
        if network.networks.iter().any(|range| range.contains(&source)) {
            return None;
        }
        let reason = format!("source address {source} is outside the agent's networks");
        Some(Decision::deny(
            Some(network_policy_id(request.agent)),
            reason,
        ))
    }

    /// Builds the Cedar request that evaluates the rules of `role`.
    pub(crate) fn cedar_request(
        &self,
        role: &CompiledRole,
        request: &AccessRequest<'_>,
    ) -> Result<Request, Decision> {
        let context = self.context(request)?;
        let (action, resource) = self.action_and_resource(request);
        self.request_for(&role.uid, &action, &resource, context)
    }

    /// Returns the `Action` and `Connection` entity ids of `request`. The
    /// ids of configured methods and connections are built at compile time.
    fn action_and_resource(&self, request: &AccessRequest<'_>) -> (EntityUid, EntityUid) {
        let action = cached_uid(&self.uids.actions, &self.types.action, request.method);
        let resource = cached_uid(
            &self.uids.connections,
            &self.types.connection,
            request.connection,
        );
        (action, resource)
    }

    /// Builds a Cedar request for `principal`. Entities are built at compile
    /// time, so only the context is new for each request.
    fn request_for(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        context: Context,
    ) -> Result<Request, Decision> {
        let request = Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context,
            None,
        );
        request.map_err(|_| {
            Decision::deny(
                None,
                "the Cedar request could not be built, so the request is denied".to_string(),
            )
        })
    }

    pub(crate) fn evaluate(&self, request: &Request, set: &PolicySet) -> Response {
        #[cfg(test)]
        self.evaluations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.authorizer.is_authorized(request, set, &self.entities)
    }

    /// Fills `depth` and the segment attributes that some policy reads:
    /// `s<i>` counts from the start of the path, `r<i>` from its end.
    fn context(&self, request: &AccessRequest<'_>) -> Result<Context, Decision> {
        let path = request.path;
        let keys = &self.segment_keys;
        let from_start = path.depth().min(self.shape.from_start);
        let from_end = path.depth().min(self.shape.from_end);
        let depth = i64::try_from(path.depth()).unwrap_or(i64::MAX);
        let mut pairs = Vec::with_capacity(1 + from_start + from_end);
        pairs.push(("depth".to_string(), RestrictedExpression::new_long(depth)));
        let start = keys.from_start.iter().zip(path.segments()).take(from_start);
        for (key, segment) in start {
            pairs.push((key.clone(), string_value(segment)));
        }
        let end = keys
            .from_end
            .iter()
            .zip(path.segments().rev())
            .take(from_end);
        for (key, segment) in end {
            pairs.push((key.clone(), string_value(segment)));
        }
        Context::from_pairs(pairs).map_err(|_| {
            Decision::deny(
                None,
                "the Cedar request context could not be built, so the request is denied"
                    .to_string(),
            )
        })
    }

    /// Reduces one Cedar response to its outcome, for a response in which
    /// policies have the ids of their rules.
    #[cfg(test)]
    pub(crate) fn outcome(&self, response: &Response) -> Outcome {
        let mut findings = Findings::default();
        findings.add(self, response, |id| {
            let id: &str = id.as_ref();
            self.positions.get(id).copied()
        });
        findings.outcome(self)
    }

    /// Turns an outcome into the decision for `request`, whose path, method
    /// and connection a default denial quotes.
    pub(crate) fn decision(
        &self,
        agent: &AgentEntry,
        request: &AccessRequest<'_>,
        outcome: &Outcome,
    ) -> Decision {
        match outcome {
            Outcome::Allowed(position) => {
                let id = &self.compiled[*position].id;
                Decision {
                    allowed: true,
                    rule: Some(id.clone()),
                    reason: prefixed("allowed by ", id),
                }
            }
            Outcome::Forbidden(position) => forbidden(&self.compiled[*position]),
            Outcome::EvaluationFailed(policy) => Decision::deny(
                None,
                format!("policy {policy} could not be evaluated, so the request is denied"),
            ),
            Outcome::AllowedWithoutPermit => Decision::deny(
                None,
                "Cedar allowed the request without a known permit policy, so it is denied"
                    .to_string(),
            ),
            Outcome::NoRule => Decision::deny(None, no_rule_reason(agent, request)),
        }
    }
}

/// Returns the entity id from `cache`, or builds it for a name the
/// configuration does not contain.
fn cached_uid(
    cache: &std::collections::HashMap<String, EntityUid>,
    entity_type: &cedar_policy::EntityTypeName,
    id: &str,
) -> EntityUid {
    match cache.get(id) {
        Some(uid) => uid.clone(),
        None => uid(entity_type, id),
    }
}

fn string_value(segment: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(segment.to_string())
}

fn forbidden(policy: &CompiledPolicy) -> Decision {
    Decision::deny(Some(policy.id.clone()), prefixed("denied by ", &policy.id))
}

/// Joins `prefix` and `id` in one allocation of the exact size, which on a
/// cache hit costs less than `format!`.
fn prefixed(prefix: &str, id: &str) -> String {
    let mut text = String::with_capacity(prefix.len() + id.len());
    text.push_str(prefix);
    text.push_str(id);
    text
}

fn unknown_agent(name: &str) -> Decision {
    Decision::deny(None, format!("agent {name:?} is not in the configuration"))
}

fn no_rule_reason(agent: &AgentEntry, request: &AccessRequest<'_>) -> String {
    let target = format!(
        "{} {} on connection {}",
        request.method, request.path, request.connection
    );
    let names = agent.roles.names();
    if names.len() == 0 {
        format!("the agent has no roles, so nothing allows {target}")
    } else {
        let names: Vec<&str> = names.collect();
        format!(
            "no rule of agent's roles ({}) allows {target}",
            names.join(", ")
        )
    }
}

/// The results of the Cedar evaluations of one request, one for each role
/// of the agent that has rules for it.
///
/// Combining per-role responses this way gives the outcome of one
/// evaluation of all the rules together: a satisfied `forbid` in any role
/// denies, and otherwise a satisfied `permit` in any role allows. A role's
/// response allows only if none of its forbids is satisfied, so every
/// satisfied forbid is a reason of a denying response.
#[derive(Default)]
pub(crate) struct Findings {
    /// The first satisfied forbid in reporting order.
    forbid: Option<usize>,
    /// The first satisfied policy, in reporting order, of a response that
    /// allowed.
    permit: Option<usize>,
    /// Whether some response allowed.
    allowed: bool,
    /// The policy that raised an evaluation error, the first in reporting
    /// order of those in `compiled`.
    failure: Option<(usize, PolicyId)>,
}

impl Findings {
    /// Adds the response of one role's evaluation. `position_of` maps a
    /// Cedar policy id to the position in `compiled` of its rule.
    pub(crate) fn add(
        &mut self,
        policy: &Policy,
        response: &Response,
        position_of: impl Fn(&PolicyId) -> Option<usize>,
    ) {
        let first = response
            .diagnostics()
            .reason()
            .filter_map(&position_of)
            .min();
        match response.decision() {
            cedar_policy::Decision::Deny => {
                self.forbid = self.forbid.into_iter().chain(first).min()
            }
            cedar_policy::Decision::Allow => {
                self.allowed = true;
                self.permit = self.permit.into_iter().chain(first).min();
            }
        }
        for error in response.diagnostics().errors() {
            let AuthorizationError::PolicyEvaluationError(error) = error;
            let id = error.policy_id();
            let position = position_of(id);
            let earliest = position.unwrap_or(usize::MAX);
            if self
                .failure
                .as_ref()
                .is_none_or(|(earlier, _)| earliest < *earlier)
            {
                // Name the rule rather than the evaluated policy it shares.
                let rule = position.map(|position| PolicyId::new(&policy.compiled[position].id));
                self.failure = Some((earliest, rule.unwrap_or_else(|| id.clone())));
            }
        }
    }

    /// Names the first deciding policy in reporting order. An evaluation
    /// error denies the request, because Cedar skips a failing `forbid` and
    /// would otherwise allow.
    pub(crate) fn outcome(self, policy: &Policy) -> Outcome {
        match (self.forbid, self.failure, self.permit) {
            // A satisfied forbid denies whatever else failed to evaluate.
            (Some(position), _, _) => Outcome::Forbidden(position),
            (None, Some((_, id)), _) => Outcome::EvaluationFailed(id),
            (None, None, Some(position))
                if policy.compiled[position].rule.effect == RuleEffect::Allow =>
            {
                Outcome::Allowed(position)
            }
            (None, None, _) if self.allowed => Outcome::AllowedWithoutPermit,
            (None, None, _) => Outcome::NoRule,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use castellan_model::Config;

    use super::*;
    use crate::cedar_text::ContextShape;

    const CONFIG: &str = r#"
[connections.blog]
upstream = "https://blog.example.com"
auth = { kind = "bearer" }
secret = "blog-token"

[roles.writer]
allow = [{ connection = "blog", methods = ["*"], paths = ["/**"] }]
deny = [{ connection = "blog", methods = ["*"], paths = ["/admin"] }]

[roles.reader]
allow = [{ connection = "blog", methods = ["GET"], paths = ["/**"] }]

[roles.blocker]
deny = [{ connection = "blog", methods = ["GET"], paths = ["/**"] }]

[agents.bot]
owner = "jay@example.com"
roles = ["writer"]

[agents.mixed]
owner = "jay@example.com"
roles = ["reader", "writer"]

[agents.blocked]
owner = "jay@example.com"
roles = ["writer", "blocker"]

[agents.office]
owner = "jay@example.com"
roles = ["writer"]
networks = ["10.0.0.0/8"]
"#;

    /// Compiles `CONFIG` but leaves the segment attributes out of request
    /// contexts, so the deny rule on `/admin` fails to evaluate.
    fn policy_with_failing_deny() -> Policy {
        let config =
            Config::parse(CONFIG, Path::new("castellan.toml")).expect("valid configuration");
        let mut policy = Policy::compile(&config).expect("configuration compiles");
        policy.shape = ContextShape::default();
        policy
    }

    fn admin_request<'a>(agent: &'a str, path: &'a NormalizedPath) -> AccessRequest<'a> {
        AccessRequest {
            agent,
            connection: "blog",
            method: "GET",
            path,
            source: IpAddr::from([127, 0, 0, 1]),
        }
    }

    #[test]
    fn evaluation_error_denies_request() {
        let policy = policy_with_failing_deny();
        let path = NormalizedPath::parse("/admin").expect("valid path");
        let request = admin_request("bot", &path);
        let role = &policy.agents["bot"].roles.roles[0];
        let cedar = policy
            .cedar_request(role, &request)
            .expect("request builds");
        let rules = role
            .rule_sets
            .select("blog", "GET")
            .expect("the role has rules for GET on blog");
        let response = policy.evaluate(&cedar, &rules.policies);
        // Cedar alone skips the failing forbid and allows through the permit.
        assert_eq!(response.decision(), cedar_policy::Decision::Allow);

        let decision = policy.authorize(&request);
        assert!(!decision.allowed);
        assert_eq!(decision.rule, None);
        assert_eq!(
            decision.reason,
            "policy roles.writer.deny[0] could not be evaluated, so the request is denied"
        );
    }

    #[test]
    fn error_in_one_role_beats_permit_of_another() {
        let policy = policy_with_failing_deny();
        let path = NormalizedPath::parse("/admin").expect("valid path");
        let decision = policy.authorize(&admin_request("mixed", &path));
        assert!(!decision.allowed);
        assert_eq!(decision.rule, None);
        assert_eq!(
            decision.reason,
            "policy roles.writer.deny[0] could not be evaluated, so the request is denied"
        );
    }

    #[test]
    fn forbid_of_one_role_beats_error_in_another() {
        let policy = policy_with_failing_deny();
        let path = NormalizedPath::parse("/admin").expect("valid path");
        let decision = policy.authorize(&admin_request("blocked", &path));
        assert!(!decision.allowed);
        assert_eq!(decision.rule.as_deref(), Some("roles.blocker.deny[0]"));
    }

    #[test]
    fn satisfied_forbid_reported_despite_error() {
        let policy = policy_with_failing_deny();
        let path = NormalizedPath::parse("/admin").expect("valid path");
        let decision = policy.authorize(&admin_request("office", &path));
        assert!(!decision.allowed);
        assert_eq!(decision.rule.as_deref(), Some("agents.office.networks"));
    }
}
