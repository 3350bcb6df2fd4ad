//! The rule policies Cedar evaluates for one request, chosen by connection
//! and method at compile time.
//!
//! A rule's scope names one connection and either every method or a list of
//! methods. Cedar tests the scope before the conditions, so a rule whose
//! scope names another connection or another method can neither match nor
//! fail to evaluate. Leaving such rules out gives the same decision with
//! less work. Action entities have no parents, so `action in [...]` is true
//! exactly when the method is in the list.
//!
//! Selection is the only test of the scope: the policies Cedar evaluates
//! leave it out (see `cedar_text::rule_policy`), so a policy must never be
//! evaluated for a request outside its [`RuleScope`].
//!
//! Each role gets its own [`RuleSets`], which every agent listing the role
//! shares. [`RuleSetCache`] builds each distinct Cedar policy set once and
//! shares it, because a Cedar `PolicySet` takes kilobytes even for one
//! policy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use castellan_model::MethodSet;
use cedar_policy::PolicySet;

use crate::compile::CompiledPolicy;
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
    by_method: Box<[(String, Arc<PolicySet>)]>,
    /// The rules covering every method, for a method no rule lists; `None`
    /// when there are none.
    any_method: Option<Arc<PolicySet>>,
}

impl RuleSets {
    /// Returns the rules that can match a request with `method` to
    /// `connection`, or `None` when no rule can.
    pub(crate) fn select(&self, connection: &str, method: &str) -> Option<&PolicySet> {
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
        listed.or(rules.any_method.as_ref()).map(Arc::as_ref)
    }
}

/// Builds [`RuleSets`] during one compilation and shares each distinct
/// Cedar policy set, such as the sets of two methods that the same rules
/// cover.
#[derive(Default)]
pub(crate) struct RuleSetCache {
    /// By the positions of the policies in the set.
    sets: HashMap<Vec<usize>, Arc<PolicySet>>,
}

impl RuleSetCache {
    /// Returns the rule sets of the rules at `positions` of `compiled`,
    /// which must be sorted and free of duplicates.
    pub(crate) fn rule_sets(
        &mut self,
        compiled: &[CompiledPolicy],
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
            connections.push(self.connection_rules(compiled, connection, group)?);
        }
        Ok(RuleSets {
            connections: connections.into_boxed_slice(),
        })
    }

    fn connection_rules(
        &mut self,
        compiled: &[CompiledPolicy],
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
            let covering: Vec<usize> = positions
                .iter()
                .copied()
                .filter(|&position| compiled[position].scope.covers(connection, method))
                .collect();
            by_method.push((method.to_string(), self.policy_set(compiled, covering)?));
        }
        let any: Vec<usize> = positions
            .iter()
            .copied()
            .filter(|&position| matches!(methods_of(position), MethodSet::Any))
            .collect();
        let any_method = if any.is_empty() {
            None
        } else {
            Some(self.policy_set(compiled, any)?)
        };
        Ok(ConnectionRules {
            connection: connection.to_string(),
            by_method: by_method.into_boxed_slice(),
            any_method,
        })
    }

    fn policy_set(
        &mut self,
        compiled: &[CompiledPolicy],
        positions: Vec<usize>,
    ) -> Result<Arc<PolicySet>, PolicyError> {
        if let Some(set) = self.sets.get(&positions) {
            return Ok(Arc::clone(set));
        }
        let set = Arc::new(policy_set(compiled, &positions)?);
        self.sets.insert(positions, Arc::clone(&set));
        Ok(set)
    }
}

/// Collects the rule policies at `positions` into one set.
fn policy_set(compiled: &[CompiledPolicy], positions: &[usize]) -> Result<PolicySet, PolicyError> {
    let mut set = PolicySet::new();
    for position in positions {
        let policy = &compiled[*position].cedar;
        set.add(policy.clone())
            .map_err(|error| PolicyError::Generated {
                id: policy.id().to_string(),
                message: error.to_string(),
            })?;
    }
    Ok(set)
}
