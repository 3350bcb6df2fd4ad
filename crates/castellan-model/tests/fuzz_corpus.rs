//! Runs the fuzz checks for configuration parsing and request-target
//! normalization over the seed corpus in `fuzz/corpus/` and over random
//! inputs, so that stable `cargo test` exercises the same properties as the
//! nightly-only fuzz targets.

#[path = "../../../fuzz/checks/config.rs"]
mod config_check;
#[path = "../../../fuzz/checks/request_target.rs"]
mod request_target_check;

use std::fs;
use std::path::PathBuf;

use proptest::prelude::*;

/// Returns the contents of every file in `fuzz/corpus/<target>`.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", directory.display()));
    let mut files: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|entry| entry.expect("a readable corpus entry").path())
        .map(|path| {
            let data = fs::read(&path).expect("a readable corpus file");
            (path, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no seeds", directory.display());
    files
}

#[test]
fn config_corpus_passes_checks() {
    for (path, data) in corpus("config") {
        eprintln!("{}", path.display());
        config_check::check_config(&data);
    }
}

#[test]
fn request_target_corpus_passes_checks() {
    for (path, data) in corpus("request_target") {
        eprintln!("{}", path.display());
        request_target_check::check_request_target(&data);
    }
}

/// Path-like text: slashes, escapes, dots, wildcards and a few bytes that
/// normalization treats specially.
fn path_like() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        r"(/|%[0-9a-fA-F]{0,2}|\.|\*|;|\\|[a-c~_-]|%2[eEfF]|\x00|é){0,24}",
    )
    .expect("a valid regex")
}

proptest! {
    #[test]
    fn random_targets_pass_checks(pattern in path_like(), path in path_like()) {
        request_target_check::check_request_target(format!("{pattern}\n{path}").as_bytes());
    }

    #[test]
    fn random_configs_pass_checks(upstream in r#"[a-z]{2,5}://[\[\]0-9a-zA-Z.:%@/-]{0,30}"#) {
        let source = format!(
            "[connections.a]\nupstream = \"{upstream}\"\nauth = {{ kind = \"bearer\" }}\nsecret = \"s\"\n"
        );
        config_check::check_config(source.as_bytes());
    }
}
