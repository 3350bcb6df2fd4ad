//! Runs the fuzz check for agent token parsing over the seed corpus in
//! `fuzz/corpus/token` and over generated tokens with one character changed,
//! so that stable `cargo test` exercises the same properties as the
//! nightly-only fuzz target.

#[path = "../../../fuzz/checks/token.rs"]
mod token_check;

use std::fs;
use std::path::PathBuf;

use castellan_vault::{parse_token, AgentToken};

#[test]
fn token_corpus_passes_checks() {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/token");
    let entries = fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", directory.display()));
    let mut seeds = 0;
    for entry in entries {
        let path = entry.expect("a readable corpus entry").path();
        let data = fs::read(&path).expect("a readable corpus file");
        token_check::check_token(&data);
        seeds += 1;
    }
    assert!(seeds > 0, "{} has no seeds", directory.display());
}

#[test]
fn changed_token_characters_rejected() {
    let token = AgentToken::generate();
    let text = token.expose();
    token_check::check_token(text.as_bytes());
    assert!(parse_token(text).is_ok());
    for position in 0..text.len() {
        for replacement in [b'0', b'z', b'Z', b'-', b' '] {
            let mut changed = text.as_bytes().to_vec();
            if changed[position] == replacement {
                continue;
            }
            changed[position] = replacement;
            token_check::check_token(&changed);
            let changed = String::from_utf8(changed).expect("ASCII stays UTF-8");
            assert!(parse_token(&changed).is_err(), "position {position}");
        }
    }
}
