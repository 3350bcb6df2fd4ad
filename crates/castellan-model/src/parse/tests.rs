use std::path::Path;

use crate::{Config, Diagnostic, Location};

const CONNECTION_AND_ROLES: &str = r#"
[connections.blog]
upstream = "https://blog.example.com"
auth = { kind = "bearer" }
secret = "blog-token"

[roles.reader]
allow = [{ connection = "blog", methods = ["GET"], paths = ["/**"] }]

[roles.writer]
allow = [{ connection = "blog", methods = ["POST"], paths = ["/posts"] }]
"#;

fn diagnostics(agent: &str) -> Vec<Diagnostic> {
    let source = format!("{CONNECTION_AND_ROLES}\n{agent}");
    match Config::parse(&source, Path::new("castellan.toml")) {
        Ok(_) => panic!("configuration should be rejected:\n{source}"),
        Err(error) => error.diagnostics,
    }
}

#[test]
fn agent_role_listed_twice_rejected() {
    let diagnostics = diagnostics(
        "[agents.bot]\nowner = \"a@example.com\"\nroles = [\"reader\", \"writer\", \"reader\"]\n",
    );

    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let diagnostic = &diagnostics[0];
    assert_eq!(
        diagnostic.message,
        "agent \"bot\" lists role \"reader\" more than once"
    );
    assert_eq!(
        diagnostic.hint.as_deref(),
        Some("remove the repeated entry from roles")
    );
    // The error points at the second "reader", the entry to remove. The
    // `roles` line follows a blank line, `[agents.bot]` and `owner`.
    let line = CONNECTION_AND_ROLES.lines().count() + 4;
    assert_eq!(diagnostic.location, Location { line, column: 30 });
}

#[test]
fn agent_role_repeated_per_extra_entry() {
    let diagnostics = diagnostics(
        "[agents.bot]\nowner = \"a@example.com\"\nroles = [\"writer\", \"writer\", \"writer\"]\n",
    );

    let repeated = diagnostics
        .iter()
        .filter(|d| d.message == "agent \"bot\" lists role \"writer\" more than once")
        .count();
    assert_eq!(repeated, 2, "{diagnostics:?}");
    assert_eq!(diagnostics.len(), 2, "{diagnostics:?}");
}

#[test]
fn agent_distinct_roles_accepted() {
    let source = format!(
        "{CONNECTION_AND_ROLES}\n[agents.bot]\nowner = \"a@example.com\"\nroles = [\"reader\", \"writer\"]\n"
    );

    let config = Config::parse(&source, Path::new("castellan.toml")).expect("valid");

    assert_eq!(config.agents["bot"].roles, ["reader", "writer"]);
}
