//! The posture checks of `castellan findings`. Each check reads the
//! [`Posture`] and returns its findings; docs/inventory.md lists them with
//! their thresholds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use castellan_model::{Agent, Config, MethodSet, NormalizedPath, Rule, Segment};
use castellan_store::{CredentialSighting, RouteUsage};

use crate::commands::findings::{counted, Category, Finding, Severity, Subject};
use crate::commands::posture::{
    days_between, AgentStatus, AgentSummary, Posture, DAY_MS, USAGE_WINDOW_DAYS,
};
use crate::commands::rotation::rotation_period;
use crate::output;

/// An active agent token older than this many days should have been
/// replaced.
pub const TOKEN_MAX_AGE_DAYS: i64 = 90;

/// An agent without an authenticated request for this many days is unused.
pub const AGENT_UNUSED_DAYS: i64 = USAGE_WINDOW_DAYS;

/// Methods that change upstream state.
pub const WRITE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// Text that marks a browser's user agent, compared ignoring ASCII case:
/// every mainstream browser starts its `User-Agent` with `Mozilla/5.0`.
pub const BROWSER_MARKER: &str = "mozilla/";

/// Maximum length, in characters, of a user agent quoted in a finding.
const QUOTED_USER_AGENT_CHARS: usize = 80;

/// Runs every check and returns the findings, most severe first, then by
/// kind and object.
pub fn check_all(posture: &Posture) -> Vec<Finding> {
    let agents = posture.agents();
    let mut findings = Vec::new();
    findings.extend(stale_secrets(posture));
    findings.extend(long_lived_tokens(posture));
    findings.extend(unused_agents(posture, &agents));
    findings.extend(unowned_agents(&posture.config, &agents));
    findings.extend(undeclared_agent_tokens(&agents));
    findings.extend(rule_findings(posture));
    findings.extend(unused_write_methods(posture, &agents));
    findings.extend(shared_secrets(&posture.config));
    findings.extend(credentials_on_many_networks(&posture.networks));
    findings.extend(plaintext_upstreams(&posture.config));
    findings.extend(browser_use(&posture.user_agents));
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.kind.cmp(b.kind))
            .then_with(|| a.object.name.cmp(&b.object.name))
            .then_with(|| a.object.connection.cmp(&b.object.connection))
    });
    findings
}

fn subject(kind: &'static str, name: &str) -> Subject {
    Subject {
        kind,
        name: name.to_string(),
        agent: None,
        connection: None,
    }
}

/// NHI7: secret versions older than the rotation period of the secret: the
/// shortest `rotate_every` of the connections that use it.
fn stale_secrets(posture: &Posture) -> Vec<Finding> {
    let mut findings = Vec::new();
    for secret in &posture.secrets {
        let period = rotation_period(&posture.config, &secret.name);
        let max_age_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
        if posture.as_of_ms - secret.created_ms <= max_age_ms {
            continue;
        }
        let users: Vec<&str> = posture
            .config
            .connections
            .values()
            .filter(|c| c.secret == secret.name)
            .map(|c| c.name.as_str())
            .collect();
        let used_by = if users.is_empty() {
            "no connection uses it".to_string()
        } else {
            format!("used by {}", users.join(", "))
        };
        findings.push(Finding {
            kind: "secret-not-rotated",
            severity: Severity::Medium,
            category: Category::LongLivedSecrets,
            category_name: Category::LongLivedSecrets.name(),
            object: subject("secret", &secret.name),
            summary: format!(
                "Version {} of secret {} was stored {} days ago ({}), longer than its rotation period of {}; {used_by}.",
                secret.latest_version,
                secret.name,
                days_between(secret.created_ms, posture.as_of_ms),
                output::time(secret.created_ms),
                humantime::format_duration(period),
            ),
            why: "A credential that is never rotated stays valid wherever it was ever copied: old backups, logs, laptops, former staff.",
            fix: format!(
                "Create a new key at the provider, store it with `castellan secret rotate {}` (running gateways use it within a second), then revoke the old key at the provider.",
                secret.name
            ),
        });
    }
    findings
}

/// NHI7: active tokens without expiry, or older than [`TOKEN_MAX_AGE_DAYS`].
/// Canary tokens are decoys meant to live long, so they are skipped.
fn long_lived_tokens(posture: &Posture) -> Vec<Finding> {
    let mut findings = Vec::new();
    for token in &posture.tokens {
        if token.canary || !token.is_active_at(posture.as_of_ms) {
            continue;
        }
        let age_days = days_between(token.created_ms, posture.as_of_ms);
        let object = Subject {
            agent: Some(token.agent.clone()),
            ..subject("token", &token.id)
        };
        let fix = format!(
            "Issue a replacement with `castellan agent token issue {} --ttl 30d`, move the agent to it, then run `castellan agent token revoke {}`.",
            token.agent, token.id
        );
        if token.expires_ms.is_none() {
            findings.push(Finding {
                kind: "token-without-expiry",
                severity: Severity::High,
                category: Category::LongLivedSecrets,
                category_name: Category::LongLivedSecrets.name(),
                object,
                summary: format!(
                    "Token {} of agent {} never expires; it was issued {age_days} days ago.",
                    token.id, token.agent
                ),
                why: "A token that never expires works for whoever copies it, for as long as nobody notices.",
                fix,
            });
        } else if posture.as_of_ms - token.created_ms > TOKEN_MAX_AGE_DAYS * DAY_MS {
            findings.push(Finding {
                kind: "token-too-old",
                severity: Severity::Medium,
                category: Category::LongLivedSecrets,
                category_name: Category::LongLivedSecrets.name(),
                object,
                summary: format!(
                    "Token {} of agent {} was issued {age_days} days ago, more than {TOKEN_MAX_AGE_DAYS}.",
                    token.id, token.agent
                ),
                why: "The longer a token lives, the more places it has been copied to and the longer a leaked copy stays useful.",
                fix,
            });
        }
    }
    findings
}

/// NHI1: active agents without an authenticated request for
/// [`AGENT_UNUSED_DAYS`], counted from their last request or, if they never
/// made one, from their first token. Agents with neither are skipped,
/// because the store does not record when an agent was declared.
fn unused_agents(posture: &Posture, agents: &[AgentSummary<'_>]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for agent in agents {
        if agent.status != AgentStatus::Active {
            continue;
        }
        let (since_ms, what) = match (agent.last_used_ms, agent.created_ms) {
            (Some(last), _) => (last, "its last request"),
            (None, Some(created)) => (
                created,
                "its first token was issued, and it has made no request since",
            ),
            (None, None) => continue,
        };
        if posture.as_of_ms - since_ms <= AGENT_UNUSED_DAYS * DAY_MS {
            continue;
        }
        let tokens = agent.active_tokens.len();
        // Active tokens are what an attacker could still use.
        let severity = if tokens > 0 {
            Severity::Medium
        } else {
            Severity::Low
        };
        findings.push(Finding {
            kind: "agent-unused",
            severity,
            category: Category::ImproperOffboarding,
            category_name: Category::ImproperOffboarding.name(),
            object: Subject {
                agent: Some(agent.name.to_string()),
                ..subject("agent", agent.name)
            },
            summary: format!(
                "Agent {} has been idle for {} days since {what} ({}); it has {}.",
                agent.name,
                days_between(since_ms, posture.as_of_ms),
                output::time(since_ms),
                counted(tokens, "active token", "active tokens"),
            ),
            why: "An identity nobody uses is one nobody watches: its tokens and permissions stay open for whoever finds them.",
            fix: format!(
                "Ask its owner whether agent {} is retired; if so, revoke its tokens (`castellan agent token list {}`) and remove [agents.{}].",
                agent.name, agent.name, agent.name
            ),
        });
    }
    findings
}

/// NHI1: agents whose owner is empty or listed in
/// `[gateway] departed_owners`.
fn unowned_agents(config: &Config, agents: &[AgentSummary<'_>]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for summary in agents {
        let Some(agent) = summary.agent else {
            continue;
        };
        let (kind, summary_text) = if agent.owner.trim().is_empty() {
            (
                "owner-missing",
                format!("Agent {} has no owner.", agent.name),
            )
        } else if config.gateway.is_departed(&agent.owner) {
            (
                "owner-departed",
                format!(
                    "Agent {} is owned by {}, who is listed in departed_owners.",
                    agent.name, agent.owner
                ),
            )
        } else {
            continue;
        };
        // An agent that cannot make requests is less urgent to hand over.
        let severity = if summary.status == AgentStatus::Active {
            Severity::High
        } else {
            Severity::Medium
        };
        findings.push(Finding {
            kind,
            severity,
            category: Category::ImproperOffboarding,
            category_name: Category::ImproperOffboarding.name(),
            object: Subject {
                agent: Some(agent.name.clone()),
                ..subject("agent", &agent.name)
            },
            summary: summary_text,
            why: "Nobody accountable is left to notice misuse, approve its access or retire it.",
            fix: format!(
                "Set owner in [agents.{}] to a current employee who accepts it, or retire the agent: revoke its tokens and remove its declaration.",
                agent.name
            ),
        });
    }
    findings
}

/// NHI1: active tokens of agents that are no longer declared. The gateway
/// rejects them today, but declaring the name again revives them.
fn undeclared_agent_tokens(agents: &[AgentSummary<'_>]) -> Vec<Finding> {
    agents
        .iter()
        .filter(|a| a.status == AgentStatus::Undeclared && !a.active_tokens.is_empty())
        .map(|agent| {
            let ids: Vec<&str> = agent.active_tokens.iter().map(|t| t.id.as_str()).collect();
            Finding {
                kind: "token-of-undeclared-agent",
                severity: Severity::Medium,
                category: Category::ImproperOffboarding,
                category_name: Category::ImproperOffboarding.name(),
                object: Subject {
                    agent: Some(agent.name.to_string()),
                    ..subject("agent", agent.name)
                },
                summary: format!(
                    "Agent {} is not declared, but its tokens are still active: {}.",
                    agent.name,
                    ids.join(", ")
                ),
                why: "Offboarding stopped halfway: declaring an agent of the same name again would bring these tokens back to life.",
                fix: format!(
                    "Revoke each token with `castellan agent token revoke ID` ({}).",
                    ids.join(", ")
                ),
            }
        })
        .collect()
}

/// Returns whether `rule` allowed any of `routes` by one of `holders`.
fn rule_used(rule: &Rule, holders: &BTreeSet<&str>, routes: &[RouteUsage]) -> bool {
    routes.iter().any(|route| {
        holders.contains(route.agent.as_str())
            && route.connection == rule.connection
            && rule.methods.contains(&route.method)
            && NormalizedPath::parse(&route.path)
                .is_ok_and(|path| rule.paths.iter().any(|pattern| pattern.matches(&path)))
    })
}

fn methods_text(methods: &MethodSet) -> String {
    match methods {
        MethodSet::Any => "every method".to_string(),
        MethodSet::Only(methods) => methods.join(", "),
    }
}

fn rule_subject(rule: &Rule) -> Subject {
    Subject {
        connection: Some(rule.connection.clone()),
        ..subject("rule", &rule.id.to_string())
    }
}

/// NHI5: allow rules that no holder used within the usage window, and
/// allow rules with `/**` on a whole connection.
fn rule_findings(posture: &Posture) -> Vec<Finding> {
    let config = &posture.config;
    let mut findings = Vec::new();
    for role in config.roles.values() {
        let holders: BTreeSet<&str> = config
            .agents
            .values()
            .filter(|agent| agent.roles.contains(&role.name))
            .map(|agent| agent.name.as_str())
            .collect();
        for rule in &role.allow {
            if !rule_used(rule, &holders, &posture.routes) {
                let holders_text = if holders.is_empty() {
                    format!("no agent has role {}", role.name)
                } else {
                    format!("agents with role {}: {}", role.name, joined(&holders))
                };
                findings.push(Finding {
                    kind: "rule-unused",
                    severity: Severity::Low,
                    category: Category::Overprivileged,
                    category_name: Category::Overprivileged.name(),
                    object: rule_subject(rule),
                    summary: format!(
                        "Allow rule {} ({} on {} {}) allowed no request in the last {USAGE_WINDOW_DAYS} days ({holders_text}).",
                        rule.id,
                        methods_text(&rule.methods),
                        rule.connection,
                        patterns_text(rule),
                    ),
                    why: "A permission nobody uses only helps an attacker who takes over the agent.",
                    fix: format!(
                        "Remove rule {} from the configuration, or narrow it; `castellan policy suggest AGENT` shows what the agents called.",
                        rule.id
                    ),
                });
            }
            if rule
                .paths
                .iter()
                .any(|p| p.segments() == [Segment::AnyDepth])
            {
                let severity = if rule.methods == MethodSet::Any {
                    Severity::High
                } else {
                    Severity::Medium
                };
                findings.push(Finding {
                    kind: "rule-whole-connection",
                    severity,
                    category: Category::Overprivileged,
                    category_name: Category::Overprivileged.name(),
                    object: rule_subject(rule),
                    summary: format!(
                        "Allow rule {} grants {} on every path of connection {} (\"/**\").",
                        rule.id,
                        methods_text(&rule.methods),
                        rule.connection
                    ),
                    why: "A whole-API grant gives a compromised or confused agent every endpoint, including ones added to the API later.",
                    fix: "List the paths the agents need instead of \"/**\". `castellan policy suggest AGENT` derives them from the audit log.".to_string(),
                });
            }
        }
    }
    findings
}

fn patterns_text(rule: &Rule) -> String {
    rule.paths
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn joined(names: &BTreeSet<&str>) -> String {
    names.iter().copied().collect::<Vec<_>>().join(", ")
}

/// Returns the write methods `agent`'s allow rules grant on `connection`,
/// minus those a deny rule refuses on every path (`/**`).
fn granted_writes(config: &Config, agent: &Agent, connection: &str) -> Vec<&'static str> {
    let roles: Vec<_> = agent
        .roles
        .iter()
        .filter_map(|name| config.roles.get(name))
        .collect();
    let on_connection = |rule: &&Rule| rule.connection == connection;
    WRITE_METHODS
        .into_iter()
        .filter(|method| {
            let allowed = roles
                .iter()
                .flat_map(|role| role.allow.iter())
                .filter(on_connection)
                .any(|rule| rule.methods.contains(method));
            let denied_everywhere = roles
                .iter()
                .flat_map(|role| role.deny.iter())
                .filter(on_connection)
                .any(|rule| {
                    rule.methods.contains(method)
                        && rule
                            .paths
                            .iter()
                            .any(|p| p.segments() == [Segment::AnyDepth])
                });
            allowed && !denied_everywhere
        })
        .collect()
}

/// NHI5: write methods an active agent may use on a connection but did not
/// use within the usage window.
fn unused_write_methods(posture: &Posture, agents: &[AgentSummary<'_>]) -> Vec<Finding> {
    let config = &posture.config;
    let mut findings = Vec::new();
    for summary in agents {
        let Some(agent) = summary.agent else {
            continue;
        };
        if summary.status != AgentStatus::Active {
            continue;
        }
        let connections: BTreeSet<&str> = agent
            .roles
            .iter()
            .filter_map(|name| config.roles.get(name))
            .flat_map(|role| role.allow.iter())
            .map(|rule| rule.connection.as_str())
            .collect();
        for connection in connections {
            let unused: Vec<&str> = granted_writes(config, agent, connection)
                .into_iter()
                .filter(|method| {
                    !posture.routes.iter().any(|route| {
                        route.agent == agent.name
                            && route.connection == connection
                            && route.method == *method
                    })
                })
                .collect();
            if unused.is_empty() {
                continue;
            }
            findings.push(Finding {
                kind: "write-method-unused",
                severity: Severity::Medium,
                category: Category::Overprivileged,
                category_name: Category::Overprivileged.name(),
                object: Subject {
                    agent: Some(agent.name.clone()),
                    connection: Some(connection.to_string()),
                    ..subject("agent", &agent.name)
                },
                summary: format!(
                    "Agent {} may send {} to connection {} but made no allowed request with them in the last {USAGE_WINDOW_DAYS} days.",
                    agent.name,
                    unused.join(", "),
                    connection
                ),
                why: "Write access that an agent does not need lets a prompt-injected or buggy agent change or delete data.",
                fix: format!(
                    "Drop {} from the allow rules of agent {}'s roles on {connection}, or give the agent a read-only role.",
                    unused.join(", "),
                    agent.name
                ),
            });
        }
    }
    findings
}

/// NHI9: one vault secret behind several connections.
fn shared_secrets(config: &Config) -> Vec<Finding> {
    let mut by_secret: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for connection in config.connections.values() {
        by_secret
            .entry(&connection.secret)
            .or_default()
            .push(&connection.name);
    }
    by_secret
        .into_iter()
        .filter(|(_, connections)| connections.len() > 1)
        .map(|(secret, connections)| Finding {
            kind: "secret-shared",
            severity: Severity::Medium,
            category: Category::Reuse,
            category_name: Category::Reuse.name(),
            object: subject("secret", secret),
            summary: format!(
                "Secret {secret} is the credential of {} connections: {}.",
                connections.len(),
                connections.join(", ")
            ),
            why: "A shared credential cannot be rotated or revoked for one use without breaking the others, and the provider's logs cannot tell the uses apart.",
            fix: "Create a separate key at the provider for each connection, store each under its own name with `castellan secret set`, and point each connection's secret at its own name.".to_string(),
        })
        .collect()
}

/// NHI9: one credential used from several networks (IPv4 /16, IPv6 /48)
/// within the usage window.
fn credentials_on_many_networks(networks: &[CredentialSighting]) -> Vec<Finding> {
    let mut by_credential: BTreeMap<&str, Vec<&CredentialSighting>> = BTreeMap::new();
    for sighting in networks {
        by_credential
            .entry(&sighting.token_id)
            .or_default()
            .push(sighting);
    }
    by_credential
        .into_iter()
        .filter(|(_, sightings)| sightings.len() > 1)
        .map(|(credential, sightings)| {
            let agent = sightings[0].agent.clone();
            let listed: Vec<String> = sightings
                .iter()
                .map(|s| format!("{} ({})", s.value, counted(s.requests, "request", "requests")))
                .collect();
            Finding {
                kind: "credential-many-networks",
                severity: Severity::High,
                category: Category::Reuse,
                category_name: Category::Reuse.name(),
                object: Subject {
                    agent: Some(agent.clone()),
                    ..subject("credential", credential)
                },
                summary: format!(
                    "Credential {credential} of agent {agent} was used from {} networks in the last {USAGE_WINDOW_DAYS} days: {}.",
                    sightings.len(),
                    listed.join(", ")
                ),
                why: "One agent usually runs in one place; a token seen from several networks was probably copied to another workload or stolen.",
                fix: format!(
                    "Give each workload its own agent and token; if the extra networks are unexpected, revoke {credential} now. Restrict the agent with networks = [...] in [agents.{agent}]."
                ),
            }
        })
        .collect()
}

/// Returns whether an upstream host is on this machine.
fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// NHI4: connections that send their credential over plain HTTP to another
/// machine.
fn plaintext_upstreams(config: &Config) -> Vec<Finding> {
    config
        .connections
        .values()
        .filter(|c| c.upstream.scheme == "http" && !is_loopback_host(&c.upstream.host))
        .map(|connection| Finding {
            kind: "plaintext-upstream",
            severity: Severity::Critical,
            category: Category::InsecureAuthentication,
            category_name: Category::InsecureAuthentication.name(),
            object: Subject {
                connection: Some(connection.name.clone()),
                ..subject("connection", &connection.name)
            },
            summary: format!(
                "Connection {} sends its credential over plain HTTP to {}.",
                connection.name,
                connection.upstream.origin()
            ),
            why: "Anyone on the network path can read the injected credential and replay it directly against the API.",
            fix: format!(
                "Change the upstream of connection {} to https://; if the server has no TLS, put it behind a TLS proxy on the same host.",
                connection.name
            ),
        })
        .collect()
}

/// NHI10: agent credentials used with a browser's user agent within the
/// usage window.
fn browser_use(user_agents: &[CredentialSighting]) -> Vec<Finding> {
    let mut by_credential: BTreeMap<&str, Vec<&CredentialSighting>> = BTreeMap::new();
    for sighting in user_agents {
        if sighting.value.to_ascii_lowercase().contains(BROWSER_MARKER) {
            by_credential
                .entry(&sighting.token_id)
                .or_default()
                .push(sighting);
        }
    }
    by_credential
        .into_iter()
        .map(|(credential, sightings)| {
            let agent = sightings[0].agent.clone();
            let requests: u64 = sightings.iter().map(|s| s.requests).sum();
            let last = sightings.iter().map(|s| s.last_used_ms).max().unwrap_or(0);
            let example: String = sightings[0]
                .value
                .chars()
                .take(QUOTED_USER_AGENT_CHARS)
                .collect();
            Finding {
                kind: "browser-user-agent",
                severity: Severity::High,
                category: Category::HumanUse,
                category_name: Category::HumanUse.name(),
                object: Subject {
                    agent: Some(agent.clone()),
                    ..subject("credential", credential)
                },
                summary: format!(
                    "Credential {credential} of agent {agent} made {} with a browser user agent in the last {USAGE_WINDOW_DAYS} days, last at {} ({example:?}).",
                    counted(requests, "request", "requests"),
                    output::time(last)
                ),
                why: "A person is using an agent's identity: their actions are logged as the agent's, and the token now lives in a browser profile or history.",
                fix: format!(
                    "Ask the owner of agent {agent} who used {credential}; revoke it and give the person their own access."
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use castellan_store::{SecretInfo, TokenRecord};

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn posture(config: &str) -> Posture {
        Posture {
            config: Config::parse(config, Path::new("castellan.toml")).expect("valid config"),
            as_of_ms: NOW,
            tokens: Vec::new(),
            secrets: Vec::new(),
            suspended: Vec::new(),
            agent_usage: Vec::new(),
            routes: Vec::new(),
            networks: Vec::new(),
            user_agents: Vec::new(),
        }
    }

    fn kinds(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.kind).collect()
    }

    const AGENT: &str = "[agents.bot]\nowner = \"ops@example.com\"\n";

    #[test]
    fn empty_owner_reported() {
        let mut posture = posture(AGENT);
        posture.config.agents.get_mut("bot").unwrap().owner = "  ".to_string();

        let findings = check_all(&posture);

        assert_eq!(kinds(&findings), ["owner-missing"]);
        assert_eq!(findings[0].severity, Severity::High);
        assert_eq!(findings[0].category, Category::ImproperOffboarding);
    }

    #[test]
    fn secret_age_threshold_is_exclusive() {
        let mut posture = posture("");
        for (name, age_ms) in [("fresh", 30 * DAY_MS), ("stale", 30 * DAY_MS + 1)] {
            posture.secrets.push(SecretInfo {
                name: name.to_string(),
                latest_version: 2,
                created_ms: NOW - age_ms,
                first_created_ms: NOW - 90 * DAY_MS,
                versions: 2,
            });
        }

        let findings = stale_secrets(&posture);

        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].object.name, "stale");
        assert!(findings[0].summary.contains("no connection uses it"));
    }

    fn token(id: &str, created_ms: i64, expires_ms: Option<i64>) -> TokenRecord {
        TokenRecord {
            id: id.to_string(),
            agent: "bot".to_string(),
            hash: "00".repeat(32),
            created_ms,
            expires_ms,
            revoked_ms: None,
            last_used_ms: None,
            canary: false,
        }
    }

    #[test]
    fn token_checks_skip_inactive_and_canary() {
        let mut posture = posture(AGENT);
        let old = NOW - 91 * DAY_MS;
        let mut revoked = token("tok_revoked", old, None);
        revoked.revoked_ms = Some(NOW - DAY_MS);
        let mut canary = token("tok_canary", old, None);
        canary.canary = true;
        posture.tokens = vec![
            token("tok_old", old, Some(NOW + DAY_MS)),
            token("tok_young", NOW - 90 * DAY_MS, Some(NOW + DAY_MS)),
            token("tok_expired", old, Some(NOW)),
            revoked,
            canary,
        ];

        let findings = long_lived_tokens(&posture);

        let names: Vec<&str> = findings.iter().map(|f| f.object.name.as_str()).collect();
        assert_eq!(names, ["tok_old"]);
        assert_eq!(findings[0].kind, "token-too-old");
    }

    #[test]
    fn agent_unused_counts_from_last_use() {
        let mut posture = posture(AGENT);
        posture.tokens = vec![token("tok_1", NOW - 60 * DAY_MS, None)];
        posture.agent_usage = vec![castellan_store::AgentUsage {
            agent: "bot".to_string(),
            first_used_ms: NOW - 60 * DAY_MS,
            last_used_ms: NOW - 30 * DAY_MS,
            requests: 5,
        }];
        let agents = posture.agents();
        assert!(
            unused_agents(&posture, &agents).is_empty(),
            "exactly 30 days"
        );

        posture.agent_usage[0].last_used_ms -= 1;
        let agents = posture.agents();
        let findings = unused_agents(&posture, &agents);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Medium);
        assert!(
            findings[0].summary.contains("1 active token."),
            "{}",
            findings[0].summary
        );
    }

    #[test]
    fn ipv6_networks_group_per_credential() {
        let sighting = |token_id: &str, network: &str| CredentialSighting {
            token_id: token_id.to_string(),
            agent: "bot".to_string(),
            value: network.to_string(),
            first_used_ms: NOW,
            last_used_ms: NOW,
            requests: 1,
        };
        let networks = [
            sighting("tok_a", "2001:db8:1::/48"),
            sighting("tok_a", "2001:db8:2::/48"),
            sighting("tok_b", "2001:db8:1::/48"),
        ];

        let findings = credentials_on_many_networks(&networks);

        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].object.name, "tok_a");
        assert!(findings[0].summary.contains("2001:db8:2::/48 (1 request)"));
    }

    #[test]
    fn loopback_hosts_recognized() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1",
            "::ffff:10.0.0.1",
            "localhost.example.com",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn browser_marker_ignores_case() {
        let sighting = |value: &str| CredentialSighting {
            token_id: "tok_a".to_string(),
            agent: "bot".to_string(),
            value: value.to_string(),
            first_used_ms: NOW,
            last_used_ms: NOW,
            requests: 2,
        };

        assert_eq!(browser_use(&[sighting("curl/8.5.0, MOZILLA/5.0")]).len(), 1);
        assert!(browser_use(&[sighting("python-httpx/0.27.0")]).is_empty());
    }
}
