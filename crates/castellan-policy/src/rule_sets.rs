//! The rule policies Cedar evaluates for one request, chosen by connection
//! and method at compile time.
//!
//! A rule's scope names its role, one connection and either every method or
//! a list of methods. The policies Cedar evaluates leave the scope out (see
//! `cedar_text::rule_policy`), so selection here is the only test of it. A
//! request gets the rules of the agent's roles whose [`RuleScope`] covers
//! its connection and method. A policy must never be evaluated for a
//! request outside that scope. `explain` tests [`RuleScope::covers`] itself.
//! This decides as the displayed policies do, which keep the scope: action
//! entities have no parents, so `action in [...]` is true exactly when the
//! method is in the list.
//!
//! Each role gets its own [`RuleSets`], which every agent listing the role
//! shares. A set contains the evaluated policies of its rules, which rules
//! with the same effect and conditions share (`Policy::conditions`), and
//! maps each back to its first rule. [`RuleSetCache`] builds each distinct
//! Cedar policy set once and shares it, because a Cedar `PolicySet` takes
//! kilobytes even for one policy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use castellan_model::MethodSet;
use cedar_policy::{PolicyId, PolicySet};

use crate::compile::{condition_index, CompiledPolicy};
use crate::error::PolicyError;

/// The scope of a rule policy: the connection and the methods it covers.
pub(crate) struct RuleScope {
    pub(crate) connection: String,
    pub(crate) methods: MethodSet,
}

impl RuleScope {
    /// Tests a request's connection and method as the displayed policy's scope
    /// does: `action in [...]` is true exactly for a listed method, because
    /// action entities have no parents.
    pub(crate) fn covers(&self, connection: &str, method: &str) -> bool {
        self.connection == connection
            && match &self.methods {
                MethodSet::Any => true,
                MethodSet::Only(list) => list.iter().any(|listed| listed == method),
            }
    }
}

/// The rules of one role, by connection and method.
pub(crate) struct RuleSets {
    /// One entry per connection that a rule names, sorted by connection
    /// name for binary search.
    connections: Box<[ConnectionRules]>,
}

/// The rules that name one connection.
struct ConnectionRules {
    connection: String,
    /// For each method that a rule lists by name, the rules covering it.
    /// A list rather than a map, because a connection's rules name few methods.
    by_method: Box<[(String, RuleSet)]>,
    /// The rules covering every method, for a method no rule lists; `None`
    /// when there are none.
    any_method: Option<RuleSet>,
}

/// The rules that can match one request, as Cedar evaluates them.
pub(crate) struct RuleSet {
    /// The distinct evaluated policies of the rules, shared by every rule
    /// set with the same ones.
    pub(crate) policies: Arc<PolicySet>,
    /// For each policy in `policies`, by its index in `Policy::conditions`,
    /// the position in `Policy::compiled` of the first rule in reporting
    /// order that has it. Sorted by index.
    rules: Box<[(u32, usize)]>,
}

impl RuleSet {
    /// Returns the position of the first rule of this set that has the
    /// evaluated policy `id`, or `None` for a policy not in the set.
    pub(crate) fn position(&self, id: &PolicyId) -> Option<usize> {
        let index = condition_index(id)?;
        let found = self
            .rules
            .binary_search_by_key(&index, |&(condition, _)| condition);
        found.ok().map(|at| self.rules[at].1)
    }
}

impl RuleSets {
    /// Returns the rules that can match a request with `method` to
    /// `connection`, or `None` when no rule can.
    pub(crate) fn select(&self, connection: &str, method: &str) -> Option<&RuleSet> {
        let index = self
            .connections
            .binary_search_by(|rules| rules.connection.as_str().cmp(connection))
            .ok()?;
        let rules = &self.connections[index];
        let listed = rules
            .by_method
            .iter()
            .find(|(listed, _)| listed == method)
            .map(|(_, set)| set);
        listed.or(rules.any_method.as_ref())
    }
}

/// Builds [`RuleSets`] during one compilation and shares each distinct
/// Cedar policy set, such as the sets of two methods that the same rules
/// cover.
#[derive(Default)]
pub(crate) struct RuleSetCache {
    /// By the indexes in `Policy::conditions` of the policies in the set.
    sets: HashMap<Vec<u32>, Arc<PolicySet>>,
}

impl RuleSetCache {
    /// Returns the rule sets of the rules at `positions` of `compiled`,
    /// which must be sorted and free of duplicates. `conditions` contains the
    /// policies that the rules' `condition` fields index.
    pub(crate) fn rule_sets(
        &mut self,
        compiled: &[CompiledPolicy],
        conditions: &[cedar_policy::Policy],
        positions: &[usize],
    ) -> Result<RuleSets, PolicyError> {
        // Each rule names one connection, so the positions of a group
        // identify the connection too.
        let mut grouped: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &position in positions {
            let connection = &compiled[position].scope.connection;
            grouped.entry(connection).or_default().push(position);
        }
        let mut connections = Vec::with_capacity(grouped.len());
        for (connection, group) in grouped {
            connections.push(self.connection_rules(compiled, conditions, connection, group)?);
        }
        Ok(RuleSets {
            connections: connections.into_boxed_slice(),
        })
    }

    fn connection_rules(
        &mut self,
        compiled: &[CompiledPolicy],
        conditions: &[cedar_policy::Policy],
        connection: &str,
        positions: Vec<usize>,
    ) -> Result<ConnectionRules, PolicyError> {
        let methods_of = |position: usize| &compiled[position].scope.methods;
        let named: BTreeSet<&str> = positions
            .iter()
            .filter_map(|&position| match methods_of(position) {
                MethodSet::Only(list) => Some(list.iter().map(String::as_str)),
                MethodSet::Any => None,
            })
            .flatten()
            .collect();
        let mut by_method = Vec::with_capacity(named.len());
        for method in named {
            let covering = positions
                .iter()
                .copied()
                .filter(|&position| compiled[position].scope.covers(connection, method));
            let set = self.rule_set(compiled, conditions, covering)?;
            by_method.push((method.to_string(), set));
        }
        let mut any = positions
            .iter()
            .copied()
            .filter(|&position| matches!(methods_of(position), MethodSet::Any))
            .peekable();
        let any_method = if any.peek().is_none() {
            None
        } else {
            Some(self.rule_set(compiled, conditions, any)?)
        };
        Ok(ConnectionRules {
            connection: connection.to_string(),
            by_method: by_method.into_boxed_slice(),
            any_method,
        })
    }

    /// Returns the rule set of the rules at `positions`.
    fn rule_set(
        &mut self,
        compiled: &[CompiledPolicy],
        conditions: &[cedar_policy::Policy],
        positions: impl Iterator<Item = usize>,
    ) -> Result<RuleSet, PolicyError> {
        let mut rules: Vec<(u32, usize)> = positions
            .map(|position| (compiled[position].condition, position))
            .collect();
        // The first rule in reporting order names the policy: sorted by
        // condition, then position, deduplication keeps it.
        rules.sort_unstable();
        rules.dedup_by_key(|&mut (condition, _)| condition);
        let key: Vec<u32> = rules.iter().map(|&(condition, _)| condition).collect();
        let policies = match self.sets.get(&key) {
            Some(set) => Arc::clone(set),
            None => {
                let set = Arc::new(policy_set(compiled, conditions, &rules)?);
                self.sets.insert(key, Arc::clone(&set));
                set
            }
        };
        Ok(RuleSet {
            policies,
            rules: rules.into_boxed_slice(),
        })
    }
}

/// Collects the evaluated policies of `rules`, pairs of an index in
/// `conditions` and a position in `compiled`, into one set.
fn policy_set(
    compiled: &[CompiledPolicy],
    conditions: &[cedar_policy::Policy],
    rules: &[(u32, usize)],
) -> Result<PolicySet, PolicyError> {
    let mut set = PolicySet::new();
    for &(condition, position) in rules {
        let policy = conditions[condition as usize].clone();
        set.add(policy).map_err(|error| PolicyError::Generated {
            id: compiled[position].id.clone(),
            message: error.to_string(),
        })?;
    }
    Ok(set)
}
