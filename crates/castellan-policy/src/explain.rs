//! Explanations for `castellan policy explain`: which rules cover a request.

use castellan_model::{Location, RuleEffect, RuleId};
use cedar_policy::PolicySet;

use crate::authorize::{AccessRequest, Decision};
use crate::compile::Policy;

/// The decision for a request and, for each rule of the agent's roles,
/// whether it covers the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub decision: Decision,
    /// Rules of the agent's roles in reporting order (each role's deny rules,
    /// then its allow rules); empty for an unknown agent.
    pub rules: Vec<RuleMatch>,
    /// Cedar text of the deciding policy, when a policy decided.
    pub deciding_policy: Option<String>,
}

/// One rule and whether it covers the explained request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    pub id: RuleId,
    pub effect: RuleEffect,
    /// The rule covers the connection, the method and the path.
    pub matched: bool,
    /// Line and column of the rule in the configuration file.
    pub location: Location,
}

impl Policy {
    /// Explains a request by evaluating each rule of the agent's roles on
    /// its own with Cedar, next to the full decision.
    ///
    /// This evaluates one policy set per rule, so it is meant for the CLI,
    /// not the request path.
    pub fn explain(&self, request: &AccessRequest<'_>) -> Explanation {
        let decision = self.authorize(request);
        let deciding_policy = decision
            .rule
            .as_ref()
            .and_then(|rule| self.policy_text_of(rule));
        let mut matches = Vec::new();
        if let Some(agent) = self.agents.get(request.agent) {
            for role in agent.roles.roles.iter() {
                // A request that cannot be built is already denied with that
                // reason in `decision`, and no rule can match it.
                let Ok(cedar) = self.cedar_request(role, request) else {
                    break;
                };
                matches.extend(
                    role.rules
                        .iter()
                        .map(|&position| (position, self.rule_match(position, request, &cedar))),
                );
            }
        }
        // Reporting order, with the rules of all roles merged.
        matches.sort_by_key(|(position, _)| *position);
        let rules = matches.into_iter().map(|(_, rule)| rule).collect();
        Explanation {
            decision,
            rules,
            deciding_policy,
        }
    }

    /// Tests the scope of the rule at `position`, then evaluates its policy
    /// alone, which leaves the scope out (see `CompiledPolicy::condition`).
    /// A policy that raises an evaluation error counts as not matched.
    fn rule_match(
        &self,
        position: usize,
        request: &AccessRequest<'_>,
        cedar_request: &cedar_policy::Request,
    ) -> RuleMatch {
        let compiled = &self.compiled[position];
        let cedar = self.condition(compiled);
        let in_scope = compiled.scope.covers(request.connection, request.method);
        let matched = in_scope && self.satisfied_alone(cedar, cedar_request);
        RuleMatch {
            id: compiled.rule.clone(),
            effect: compiled.rule.effect,
            matched,
            location: compiled.location,
        }
    }

    /// Evaluates `cedar` in a set of its own and returns whether it is
    /// satisfied without an evaluation error.
    fn satisfied_alone(
        &self,
        cedar: &cedar_policy::Policy,
        request: &cedar_policy::Request,
    ) -> bool {
        let mut single = PolicySet::new();
        if single.add(cedar.clone()).is_err() {
            return false;
        }
        let response = self.evaluate(request, &single);
        let satisfied = response
            .diagnostics()
            .reason()
            .any(|reason| reason == cedar.id());
        satisfied && response.diagnostics().errors().next().is_none()
    }
}
