//! Helpers shared by the integration tests: configurations from TOML text
//! and one-line requests.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;

use castellan_model::{
    Agent, Config, Location, MethodSet, NormalizedPath, PathPattern, Role, Rule, RuleEffect, RuleId,
};
use castellan_policy::{AccessRequest, Decision, Explanation, Policy};

/// Connections every test configuration can refer to.
const CONNECTIONS: &str = r#"
[connections.blog]
upstream = "https://blog.example.com"
auth = { kind = "bearer" }
secret = "blog-token"

[connections.crm]
upstream = "https://crm.example.com"
auth = { kind = "bearer" }
secret = "crm-token"
"#;

/// Parses `roles_and_agents` after the shared connections.
pub fn config(roles_and_agents: &str) -> Config {
    let source = format!("{CONNECTIONS}\n{roles_and_agents}");
    match Config::parse(&source, Path::new("castellan.toml")) {
        Ok(config) => config,
        Err(error) => panic!("test configuration is invalid: {error}\n{source}"),
    }
}

/// Compiles `roles_and_agents` after the shared connections.
pub fn policy(roles_and_agents: &str) -> Policy {
    match Policy::compile(&config(roles_and_agents)) {
        Ok(policy) => policy,
        Err(error) => panic!("test configuration does not compile: {error}"),
    }
}

pub fn path(raw: &str) -> NormalizedPath {
    match NormalizedPath::parse(raw) {
        Ok(path) => path,
        Err(error) => panic!("test path {raw:?} is invalid: {error}"),
    }
}

pub fn address(text: &str) -> IpAddr {
    match text.parse() {
        Ok(address) => address,
        Err(error) => panic!("test address {text:?} is invalid: {error}"),
    }
}

/// A request from loopback.
pub struct Call<'a> {
    pub agent: &'a str,
    pub connection: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub source: &'a str,
}

impl Call<'_> {
    pub fn authorize(&self, policy: &Policy) -> Decision {
        let path = path(self.path);
        policy.authorize(&self.request(&path))
    }

    pub fn explain(&self, policy: &Policy) -> Explanation {
        let path = path(self.path);
        policy.explain(&self.request(&path))
    }

    fn request<'p>(&'p self, path: &'p NormalizedPath) -> AccessRequest<'p> {
        AccessRequest {
            agent: self.agent,
            connection: self.connection,
            method: self.method,
            path,
            source: address(self.source),
        }
    }
}

/// Authorizes `method path` on `connection` for `agent` from 127.0.0.1.
pub fn decide(
    policy: &Policy,
    agent: &str,
    connection: &str,
    method: &str,
    raw_path: &str,
) -> Decision {
    Call {
        agent,
        connection,
        method,
        path: raw_path,
        source: "127.0.0.1",
    }
    .authorize(policy)
}

/// Builds a configuration by hand with one agent, `tester`, whose single role
/// `subject` contains `rules` (effect, methods, path patterns), so that pattern
/// text needs no TOML quoting.
pub fn single_role_config(rules: &[(RuleEffect, MethodSet, &[&str])]) -> Config {
    let mut role = Role {
        name: "subject".to_string(),
        allow: Vec::new(),
        deny: Vec::new(),
    };
    for (effect, methods, patterns) in rules {
        let list = match effect {
            RuleEffect::Allow => &mut role.allow,
            RuleEffect::Deny => &mut role.deny,
        };
        let paths = patterns
            .iter()
            .map(|pattern| match PathPattern::parse(pattern) {
                Ok(parsed) => parsed,
                Err(error) => panic!("test pattern {pattern:?} is invalid: {error}"),
            })
            .collect();
        list.push(Rule {
            id: RuleId {
                role: "subject".to_string(),
                effect: *effect,
                index: list.len(),
            },
            connection: "blog".to_string(),
            methods: methods.clone(),
            paths,
            location: Location::default(),
        });
    }
    let agent = Agent {
        name: "tester".to_string(),
        owner: "jay@example.com".to_string(),
        description: None,
        roles: vec!["subject".to_string()],
        networks: Vec::new(),
        expires: None,
        limits: Default::default(),
        client_certificate: None,
        token_file: None,
        token_lifetime: castellan_model::DEFAULT_TOKEN_LIFETIME,
        location: Location::default(),
    };
    let mut config = Config::default();
    config.roles.insert(role.name.clone(), role);
    config.agents.insert(agent.name.clone(), agent);
    config
}

/// Compiles [`single_role_config`].
pub fn single_role_policy(rules: &[(RuleEffect, MethodSet, &[&str])]) -> Policy {
    match Policy::compile(&single_role_config(rules)) {
        Ok(policy) => policy,
        Err(error) => panic!("test rules do not compile: {error}"),
    }
}
