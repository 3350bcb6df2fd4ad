//! Agents' `token_file`: an absolute path that no other agent shares.

use std::path::Path;

use castellan_model::Config;

fn parse(agents: &str) -> Result<Config, String> {
    let source = format!(
        r#"
[connections.api]
upstream = "https://api.example.com"
auth = {{ kind = "bearer" }}
secret = "api-key"

[roles.reader]
allow = [{{ connection = "api", methods = ["GET"], paths = ["/**"] }}]
{agents}
"#
    );
    Config::parse(&source, Path::new("castellan.toml")).map_err(|error| error.to_string())
}

fn agent(name: &str, token_file: &str) -> String {
    format!(
        "\n[agents.{name}]\nowner = \"ops@example.com\"\nroles = [\"reader\"]\ntoken_file = \"{token_file}\"\n"
    )
}

#[test]
fn absolute_distinct_paths_accepted() {
    let agents = agent("a", "/run/castellan/a.token") + &agent("b", "/run/castellan/b.token");
    let config = parse(&agents).expect("valid");
    assert_eq!(
        config.agents["a"].token_file.as_deref(),
        Some(Path::new("/run/castellan/a.token"))
    );
}

#[test]
fn relative_path_rejected() {
    let error = parse(&agent("a", "tokens/a.token")).unwrap_err();
    assert!(error.contains("relative path"), "{error}");
    assert!(error.contains("tokens/a.token"), "{error}");
}

#[test]
fn shared_path_rejected() {
    let agents =
        agent("a", "/run/castellan/shared.token") + &agent("b", "/run/castellan/shared.token");
    let error = parse(&agents).unwrap_err();
    assert!(error.contains("same token_file"), "{error}");
    assert!(error.contains("\"a\""), "{error}");
    assert!(error.contains("\"b\""), "{error}");
}
