//! `castellan policy explain`: show a decision without sending anything.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use castellan_model::RuleEffect;
use castellan_policy::{AccessRequest, Policy};

use crate::cli::ExplainArgs;
use crate::data_dir::DataDir;
use crate::output::{printable, printable_lines};

pub fn run(data_dir: &DataDir, args: &ExplainArgs) -> Result<ExitCode> {
    let config = data_dir.load_config()?;
    let policy = Policy::compile(&config).context("the roles do not compile to a policy")?;
    let (connection, raw_path) = split_target(&args.url)?;
    let Some(declared) = config.connections.get(connection) else {
        bail!(
            "no connection named {connection:?} in {}",
            data_dir.config.display()
        );
    };
    let path = declared
        .normalize_path(raw_path)
        .with_context(|| format!("the gateway would reject the path {raw_path:?} with 400"))?;
    // The gateway rejects such a method before it checks any rule (see
    // `check_method` in castellan-gateway), so explaining its upper-case
    // form would show a decision that no request gets.
    let method = args.method.as_str();
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        bail!(
            "the gateway would reject the method {method:?} with 400, because HTTP methods are case-sensitive; send {:?}",
            method.to_ascii_uppercase()
        );
    }
    let request = AccessRequest {
        agent: &args.agent,
        connection,
        method,
        path: &path,
        source: args.source,
    };
    let explanation = policy.explain(&request);
    let decision = &explanation.decision;
    println!(
        "{} {} {} for agent {:?} from {}",
        if decision.allowed { "ALLOW" } else { "DENY" },
        printable(method),
        printable(&format!("/{connection}{path}")),
        args.agent,
        args.source
    );
    println!(
        "  rule:   {}",
        printable(
            decision
                .rule
                .as_deref()
                .unwrap_or("(none: deny by default)")
        )
    );
    println!("  reason: {}", printable(&decision.reason));
    let rules: Vec<_> = explanation
        .rules
        .iter()
        .filter(|rule| rule_connection(&config, rule) == Some(connection))
        .collect();
    if !rules.is_empty() {
        println!("  rules of the agent's roles for this connection:");
        for rule in rules {
            let effect = match rule.effect {
                RuleEffect::Allow => "allow",
                RuleEffect::Deny => "deny",
            };
            println!(
                "    {:<5} {:<30} {} ({}:{})",
                effect,
                printable(&rule.id.to_string()),
                if rule.matched {
                    "matches"
                } else {
                    "does not match"
                },
                printable(&data_dir.config.display().to_string()),
                rule.location.line
            );
        }
    }
    if args.cedar {
        if let Some(text) = &explanation.deciding_policy {
            println!("  deciding Cedar policy:\n{}", printable_lines(text));
        }
    }
    Ok(if decision.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Returns the connection that the rule `matched` refers to.
fn rule_connection<'a>(
    config: &'a castellan_model::Config,
    rule: &castellan_policy::RuleMatch,
) -> Option<&'a str> {
    let role = config.roles.get(&rule.id.role)?;
    let rules = match rule.effect {
        RuleEffect::Allow => &role.allow,
        RuleEffect::Deny => &role.deny,
    };
    rules
        .iter()
        .find(|candidate| candidate.id == rule.id)
        .map(|candidate| candidate.connection.as_str())
}

/// Splits `/connection/path` or `http://host/connection/path?query`.
fn split_target(url: &str) -> Result<(&str, &str)> {
    let path = match url.find("://") {
        Some(scheme_end) => {
            let after = &url[scheme_end + 3..];
            after.find('/').map_or("/", |slash| &after[slash..])
        }
        None => url,
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let Some(trimmed) = path.strip_prefix('/') else {
        bail!("invalid URL {url:?}: write /connection/path or a full gateway URL");
    };
    Ok(match trimmed.find('/') {
        Some(slash) => (&trimmed[..slash], &trimmed[slash..]),
        None => (trimmed, ""),
    })
}
