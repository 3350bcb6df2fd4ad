//! A configuration the size of the `bench/run` load test, compiled, and
//! requests to decide against it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use castellan_model::{Config, NormalizedPath};
use castellan_policy::{AccessRequest, Decision, Policy};

/// Size of a generated configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSize {
    pub connections: usize,
    pub roles: usize,
    pub agents: usize,
}

/// The size `bench/run` measures the gateway with.
pub const LOAD_TEST_SIZE: ConfigSize = ConfigSize {
    connections: 50,
    roles: 100,
    agents: 1_000,
};

/// Writes `castellan.toml` text in the layout `bench/run` generates.
///
/// Role `role-NNN` allows `GET` and `POST` on `/v1/items/**` and
/// `/v1/status` of one connection and `GET` on `/v1/reports/*` of another,
/// and denies `DELETE` on the first. Agent `agent-0000` has the first,
/// the middle and the last role (`role-000`, `role-050` and `role-099` of
/// 100), every other agent two roles. Every agent may call only from
/// `127.0.0.0/8`. `size` needs at least one connection and one role.
pub fn config_text(size: ConfigSize) -> String {
    let mut text = String::new();
    for i in 0..size.connections {
        let _ = write!(
            text,
            "\n[connections.conn-{i:02}]\n\
             upstream = \"http://127.0.0.1:9/api/{i:02}\"\n\
             auth = {{ kind = \"bearer\" }}\n\
             secret = \"secret-{i:02}\"\n\
             allow_private = true\n"
        );
    }
    for i in 0..size.roles {
        let first = i % size.connections;
        let second = (i + 17) % size.connections;
        let _ = write!(
            text,
            "\n[roles.role-{i:03}]\n\
             allow = [\n  \
             {{ connection = \"conn-{first:02}\", methods = [\"GET\", \"POST\"], paths = [\"/v1/items/**\", \"/v1/status\"] }},\n  \
             {{ connection = \"conn-{second:02}\", methods = [\"GET\"], paths = [\"/v1/reports/*\"] }},\n\
             ]\n\
             deny = [{{ connection = \"conn-{first:02}\", methods = [\"DELETE\"], paths = [\"/**\"] }}]\n"
        );
    }
    for j in 0..size.agents {
        let indexes: BTreeSet<usize> = if j == 0 {
            [0, size.roles / 2, size.roles - 1].into()
        } else {
            [j % size.roles, (j * 7 + 3) % size.roles].into()
        };
        let roles: Vec<String> = indexes
            .iter()
            .map(|index| format!("\"role-{index:03}\""))
            .collect();
        let roles = roles.join(", ");
        let _ = write!(
            text,
            "\n[agents.agent-{j:04}]\n\
             owner = \"team-{:02}@example.com\"\n\
             roles = [{roles}]\n\
             networks = [\"127.0.0.0/8\"]\n",
            j % 40
        );
    }
    text
}

/// Parses the generated configuration text.
///
/// # Panics
///
/// Panics with the parser's diagnostics if the text is invalid, which means
/// the generator and the configuration format disagree.
pub fn parse_config(text: &str) -> Config {
    match Config::parse(text, Path::new("castellan.toml")) {
        Ok(config) => config,
        Err(error) => panic!("the generated castellan.toml is invalid: {error}"),
    }
}

/// Compiles a configuration of `size`.
///
/// # Panics
///
/// Panics if the configuration does not parse or compile.
pub fn compile(size: ConfigSize) -> Policy {
    let config = parse_config(&config_text(size));
    match Policy::compile(&config) {
        Ok(policy) => policy,
        Err(error) => panic!("the generated configuration does not compile: {error}"),
    }
}

/// One request to decide and the outcome it must get.
#[derive(Debug, Clone)]
pub struct DecisionCase {
    /// Short label for bench ids.
    pub label: &'static str,
    pub agent: &'static str,
    pub connection: &'static str,
    pub method: &'static str,
    pub path: NormalizedPath,
    pub source: IpAddr,
    pub allowed: bool,
    /// Whether Cedar decides the case, so that its outcome goes through the
    /// policy's decision cache. The network check and a connection and
    /// method that no rule names decide before the cache.
    pub cached: bool,
}

impl DecisionCase {
    /// Returns the request in the form `Policy::authorize` takes.
    pub fn request(&self) -> AccessRequest<'_> {
        AccessRequest {
            agent: self.agent,
            connection: self.connection,
            method: self.method,
            path: &self.path,
            source: self.source,
        }
    }

    /// Returns the case's path with its third segment replaced by `id`.
    ///
    /// Policies of [`config_text`] read the first three segments (for
    /// `/v1/reports/*`), so each `id` makes a request that the decision
    /// cache has not seen. The rules that decide the cases match any third
    /// segment, so the decision stays the same.
    ///
    /// # Panics
    ///
    /// Panics if the case's path has fewer than three segments.
    pub fn path_variant(&self, id: u64) -> NormalizedPath {
        let mut segments: Vec<&str> = self.path.segments().collect();
        assert!(
            segments.len() >= 3,
            "case {} has no third path segment to vary",
            self.label
        );
        let id = id.to_string();
        segments[2] = &id;
        let raw = format!("/{}", segments.join("/"));
        NormalizedPath::parse(&raw)
            .unwrap_or_else(|error| panic!("varied path {raw:?} is invalid: {error}"))
    }
}

/// Requests of agent `agent-0000` against [`LOAD_TEST_SIZE`]: one allowed
/// and one for each way of being denied (deny rule, no allow rule, source
/// outside the agent's networks).
///
/// # Panics
///
/// Panics if a fixed path fails to normalize.
pub fn decision_cases() -> Vec<DecisionCase> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let case = |label, connection, method, path: &str, source, allowed, cached| DecisionCase {
        label,
        agent: "agent-0000",
        connection,
        method,
        path: NormalizedPath::parse(path)
            .unwrap_or_else(|error| panic!("fixed path {path:?} is invalid: {error}")),
        source,
        allowed,
        cached,
    };
    vec![
        case(
            "allowed",
            "conn-00",
            "GET",
            "/v1/items/42/details",
            loopback,
            true,
            true,
        ),
        case(
            "denied_by_rule",
            "conn-00",
            "DELETE",
            "/v1/items/42",
            loopback,
            false,
            true,
        ),
        case(
            "denied_no_rule",
            "conn-01",
            "GET",
            "/v1/items/42",
            loopback,
            false,
            false,
        ),
        case(
            "denied_network",
            "conn-00",
            "GET",
            "/v1/items/42",
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            false,
            false,
        ),
    ]
}

/// Decides `case` and checks the outcome, so a bench cannot time a
/// configuration that decides differently than intended.
///
/// # Panics
///
/// Panics if the decision differs from `case.allowed`.
pub fn check_case(policy: &Policy, case: &DecisionCase) -> Decision {
    let decision = policy.authorize(&case.request());
    assert_eq!(
        decision.allowed, case.allowed,
        "case {} was decided differently than expected: {}",
        case.label, decision.reason
    );
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_has_requested_size() {
        let config = parse_config(&config_text(LOAD_TEST_SIZE));
        assert_eq!(config.connections.len(), 50);
        assert_eq!(config.roles.len(), 100);
        assert_eq!(config.agents.len(), 1_000);
    }

    #[test]
    fn decision_cases_decide_as_labelled() {
        let policy = compile(LOAD_TEST_SIZE);
        let expected_rules = [
            Some("roles.role-000.allow[0]"),
            Some("roles.role-000.deny[0]"),
            None,
            Some("agents.agent-0000.networks"),
        ];
        let cases = decision_cases();
        assert_eq!(cases.len(), expected_rules.len());
        for (case, expected_rule) in cases.iter().zip(expected_rules) {
            let decision = check_case(&policy, case);
            assert_eq!(decision.rule.as_deref(), expected_rule, "{}", case.label);
        }
    }

    #[test]
    fn path_variants_decide_like_case() {
        let policy = compile(LOAD_TEST_SIZE);
        for case in decision_cases().iter().filter(|case| case.cached) {
            let expected = check_case(&policy, case);
            for id in [0, 7, 123_456] {
                let path = case.path_variant(id);
                assert_ne!(path, case.path, "{}", case.label);
                let request = AccessRequest {
                    path: &path,
                    ..case.request()
                };
                let decision = policy.authorize(&request);
                assert_eq!(decision.allowed, expected.allowed, "{} {path}", case.label);
                assert_eq!(decision.rule, expected.rule, "{} {path}", case.label);
            }
        }
    }
}
