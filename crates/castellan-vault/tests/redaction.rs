//! `Debug` output and error messages must never contain key or secret material.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use castellan_vault::{open, seal, AgentToken, MasterKey};

/// Forms a byte string may take in formatted output: lowercase and uppercase hex and
/// the comma-separated decimal of `{:?}` on a byte slice.
fn renderings(bytes: &[u8]) -> Vec<String> {
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let decimal = format!("{:?}", &bytes[..8]);
    vec![
        hex[..16].to_owned(),
        hex[..16].to_uppercase(),
        decimal[1..decimal.len() - 1].to_owned(),
    ]
}

#[test]
fn master_key_debug_is_redacted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("master.key");
    let key = MasterKey::create_file(&path).expect("create key file");
    let hex = fs::read_to_string(&path).expect("read key file");
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex byte"))
        .collect();

    let debug = format!("{key:?}");
    assert_eq!(debug, "MasterKey([redacted])");
    for rendering in renderings(&bytes) {
        assert!(!debug.contains(&rendering), "{debug}");
        assert!(!format!("{key:#?}").contains(&rendering));
    }
}

#[test]
fn secret_value_debug_is_redacted() {
    let master = MasterKey::generate();
    let value = b"sk-proj-3f9a8c7d6e5b4a3928171605f4e3d2c1";
    let sealed = seal(&master, "openai", 1, value).expect("seal");
    let opened = open(&master, &sealed).expect("open");

    let debug = format!("{opened:?}");
    assert_eq!(debug, "SecretValue([redacted])");
    for rendering in renderings(value) {
        assert!(!debug.contains(&rendering), "{debug}");
    }
    assert!(!format!("{opened:#?}").contains("sk-proj"));
}

#[test]
fn agent_token_debug_is_redacted() {
    let token = AgentToken::generate();
    let debug = format!("{token:?}");
    assert_eq!(debug, "AgentToken([redacted])");
    assert!(!debug.contains(&token.expose()[4..20]));
    assert!(!format!("{:?}", token.hash()).contains(&token.expose()[4..20]));
}

#[test]
fn key_file_errors_omit_content() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("master.key");
    let secret_line = "sk-live-not-a-hex-key-but-still-a-secret-0123456789abcdefghijkl\n";
    fs::write(&path, secret_line).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");

    let err = MasterKey::load_file(&path).expect_err("invalid content");
    assert!(!err.to_string().contains("sk-live"), "{err}");
    assert!(!format!("{err:?}").contains("sk-live"), "{err:?}");
}
