//! The `[connections.NAME.rotation]` table: a command that makes a new
//! upstream key, the request that checks it and the command that revokes
//! the old one.

use std::path::Path;
use std::time::Duration;

use castellan_model::{Config, DEFAULT_ROTATION_TIMEOUT};

fn config(rotation: &str) -> String {
    format!(
        r#"
[connections.api]
upstream = "https://api.example.com"
auth = {{ kind = "bearer" }}
secret = "api-key"

[connections.api.rotation]
{rotation}
"#
    )
}

fn parse(rotation: &str) -> Result<Config, String> {
    Config::parse(&config(rotation), Path::new("castellan.toml")).map_err(|error| error.to_string())
}

#[test]
fn full_table_parses() {
    let config = parse(
        r#"
command = ["/usr/local/bin/new-key", "--project", "api"]
verify = "GET /v1/models?limit=1"
revoke_command = ["/usr/local/bin/revoke-key"]
timeout = "30s"
"#,
    )
    .expect("valid table");
    let provider = config.connections["api"]
        .rotation
        .as_ref()
        .expect("rotation");
    assert_eq!(
        provider.command,
        ["/usr/local/bin/new-key", "--project", "api"]
    );
    assert_eq!(provider.verify_method, "GET");
    assert_eq!(provider.verify_path, "/v1/models?limit=1");
    assert_eq!(
        provider.revoke_command.as_deref(),
        Some(&["/usr/local/bin/revoke-key".to_owned()][..])
    );
    assert_eq!(provider.timeout, Duration::from_secs(30));
}

#[test]
fn optional_keys_default() {
    let config = parse("command = [\"new-key\"]\nverify = \"HEAD /\"").expect("valid table");
    let provider = config.connections["api"]
        .rotation
        .as_ref()
        .expect("rotation");
    assert_eq!(provider.revoke_command, None);
    assert_eq!(provider.timeout, DEFAULT_ROTATION_TIMEOUT);
}

#[test]
fn invalid_tables_rejected() {
    let cases = [
        ("command = []\nverify = \"GET /\"", "command is empty"),
        ("command = [\" \"]\nverify = \"GET /\"", "command is empty"),
        (
            "command = [\"k\"]\nverify = \"GET /\"\nrevoke_command = []",
            "revoke_command is empty",
        ),
        (
            "command = [\"k\"]\nverify = \"/v1/models\"",
            "invalid verify",
        ),
        (
            "command = [\"k\"]\nverify = \"get /v1/models\"",
            "invalid verify",
        ),
        (
            "command = [\"k\"]\nverify = \"GET v1/models\"",
            "invalid verify",
        ),
        (
            "command = [\"k\"]\nverify = \"GET /\"\ntimeout = \"soon\"",
            "soon",
        ),
        (
            "command = [\"k\"]\nverify = \"GET /\"\nshell = true",
            "shell",
        ),
        ("verify = \"GET /\"", "command"),
    ];
    for (table, expected) in cases {
        let error = parse(table).expect_err(table);
        assert!(error.contains(expected), "{table}: {error}");
    }
}
