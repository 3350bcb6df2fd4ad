//! Errors raised while compiling a configuration into Cedar policies.

/// An error that stops a configuration from compiling into a [`crate::Policy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("rule {rule} has no path patterns, so it covers nothing; list at least one, such as \"/**\"")]
    NoPaths { rule: String },
    #[error("rule {rule} has an empty methods list, so it covers nothing; list methods such as \"GET\", or use every method")]
    NoMethods { rule: String },
    #[error("agent {agent:?} names undefined role {role:?}; declare the role or remove it from the agent")]
    UndefinedRole { agent: String, role: String },
    #[error(
        "rule {rule} has a path pattern with more than one '**'; split it into several patterns"
    )]
    RepeatedAnyDepth { rule: String },
    #[error("rule {rule} is listed in {listed}; give the rule an id that names the role and the list that contain it")]
    MisplacedRule { rule: String, listed: String },
    #[error(
        "agent name {agent:?} is used by more than one agent; give each agent a name of its own"
    )]
    DuplicateAgent { agent: String },
    #[error("role name {role:?} is used by more than one role; give each role a name of its own")]
    DuplicateRole { role: String },
    #[error("the Cedar policy generated for {id} was rejected by Cedar ({message}); report this as a castellan-policy bug together with the rule")]
    Generated { id: String, message: String },
    #[error("the Cedar entity types could not be built ({message}); report this as a castellan-policy bug")]
    Entities { message: String },
}
