//! The rule policies Cedar evaluates for one request, chosen by connection
//! and method at compile time.
//!
//! A rule's scope names one connection and either every method or a list of
//! methods. Cedar tests the scope before the conditions, so a rule whose
//! scope names another connection or another method can neither match nor
//! fail to evaluate. Leaving such rules out gives the same decision with
//! less work. Action entities have no parents, so `action in [...]` is true
//! exactly when the method is in the list.

use std::collections::{BTreeSet, HashMap};

use castellan_model::MethodSet;
use cedar_policy::PolicySet;

use crate::compile::CompiledPolicy;
use crate::error::PolicyError;

/// The scope of a rule policy: the connection and the methods it covers.
pub(crate) struct RuleScope {
    pub(crate) connection: String,
    pub(crate) methods: MethodSet,
}

/// The rules of one combination of roles, by connection and method. Agents
/// with the same roles share one instance.
#[derive(Default)]
pub(crate) struct RuleSets {
    connections: HashMap<String, ConnectionRules>,
}

/// The rules that name one connection.
struct ConnectionRules {
    /// For each method that a rule lists by name, the rules covering it.
    by_method: HashMap<String, PolicySet>,
    /// The rules covering every method, for a method no rule lists; `None`
    /// when there are none.
    any_method: Option<PolicySet>,
}

impl RuleSets {
    /// Groups the rules at `positions` of `compiled`. Network policies
    /// among them are skipped.
    pub(crate) fn new(
        compiled: &[CompiledPolicy],
        positions: &[usize],
    ) -> Result<Self, PolicyError> {
        let mut grouped: HashMap<&str, Vec<(usize, &MethodSet)>> = HashMap::new();
        for &position in positions {
            if let Some(scope) = &compiled[position].scope {
                grouped
                    .entry(&scope.connection)
                    .or_default()
                    .push((position, &scope.methods));
            }
        }
        let mut connections = HashMap::with_capacity(grouped.len());
        for (connection, rules) in grouped {
            connections.insert(
                connection.to_string(),
                ConnectionRules::new(compiled, &rules)?,
            );
        }
        Ok(RuleSets { connections })
    }

    /// Returns the rules that can match a request with `method` to
    /// `connection`, or `None` when no rule can.
    pub(crate) fn select(&self, connection: &str, method: &str) -> Option<&PolicySet> {
        let rules = self.connections.get(connection)?;
        match rules.by_method.get(method) {
            Some(set) => Some(set),
            None => rules.any_method.as_ref(),
        }
    }
}

impl ConnectionRules {
    fn new(
        compiled: &[CompiledPolicy],
        rules: &[(usize, &MethodSet)],
    ) -> Result<Self, PolicyError> {
        let named: BTreeSet<&str> = rules
            .iter()
            .filter_map(|(_, methods)| match methods {
                MethodSet::Any => None,
                MethodSet::Only(list) => Some(list.iter().map(String::as_str)),
            })
            .flatten()
            .collect();
        let mut by_method = HashMap::with_capacity(named.len());
        for method in named {
            let covering = rules.iter().filter(|(_, methods)| match methods {
                MethodSet::Any => true,
                MethodSet::Only(list) => list.iter().any(|listed| listed == method),
            });
            let positions: Vec<usize> = covering.map(|(position, _)| *position).collect();
            by_method.insert(method.to_string(), policy_set(compiled, &positions)?);
        }
        let any: Vec<usize> = rules
            .iter()
            .filter(|(_, methods)| matches!(methods, MethodSet::Any))
            .map(|(position, _)| *position)
            .collect();
        let any_method = if any.is_empty() {
            None
        } else {
            Some(policy_set(compiled, &any)?)
        };
        Ok(ConnectionRules {
            by_method,
            any_method,
        })
    }
}

/// Collects the policies at `positions` into one set.
pub(crate) fn policy_set(
    compiled: &[CompiledPolicy],
    positions: &[usize],
) -> Result<PolicySet, PolicyError> {
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
