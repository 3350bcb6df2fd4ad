use std::path::Path;

use castellan_model::{AuditDurability, Config};

fn parse_gateway(table: &str) -> Result<Config, String> {
    Config::parse(table, Path::new("castellan.toml")).map_err(|error| error.to_string())
}

#[test]
fn audit_durability_defaults_to_batched() {
    let config = parse_gateway("[gateway]\n").expect("an empty gateway table is valid");
    assert_eq!(config.gateway.audit_durability, AuditDurability::Batched);
    let config = parse_gateway("").expect("an empty file is valid");
    assert_eq!(config.gateway.audit_durability, AuditDurability::Batched);
}

#[test]
fn audit_durability_values_parse() {
    let cases = [
        ("batched", AuditDurability::Batched),
        ("strict", AuditDurability::Strict),
    ];
    for (value, expected) in cases {
        let source = format!("[gateway]\naudit_durability = \"{value}\"\n");
        let config = parse_gateway(&source).unwrap_or_else(|error| panic!("{value}: {error}"));
        assert_eq!(config.gateway.audit_durability, expected, "{value}");
        assert_eq!(expected.as_str(), value);
    }
}

#[test]
fn invalid_audit_durability_rejected_with_location() {
    let cases = ["Strict", "sync", "", "batched "];
    for value in cases {
        let source =
            format!("[gateway]\nauth_failures_per_minute = 5\naudit_durability = \"{value}\"\n");
        let message = match parse_gateway(&source) {
            Ok(_) => panic!("audit_durability = {value:?} should be rejected"),
            Err(message) => message,
        };
        assert!(
            message.contains(&format!("invalid audit_durability {value:?}")),
            "{value:?}: {message}"
        );
        assert!(
            message.contains("castellan.toml:3:20"),
            "{value:?}: {message}"
        );
        assert!(message.contains("\"strict\""), "{value:?}: {message}");
    }
}

#[test]
fn audit_durability_must_be_string() {
    let message = match parse_gateway("[gateway]\naudit_durability = true\n") {
        Ok(_) => panic!("a boolean audit_durability should be rejected"),
        Err(message) => message,
    };
    assert!(message.contains("castellan.toml:2:"), "{message}");
}
