//! `castellan scan` end to end: exit codes, output formats, baselines, git
//! history, standard input, `.gitignore`, and no full secret in any output.

#![forbid(unsafe_code)]

mod support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::castellan::{Castellan, BINARY};

/// Builds a well-formed fake value from a seed, so no full token is written
/// in this source file.
fn fake(prefix: &str, len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let body: String = (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from(ALPHABET[((state >> 33) % 62) as usize])
        })
        .collect();
    format!("{prefix}{body}")
}

fn github_token(seed: u64) -> String {
    fake("ghp_", 36, seed)
}

fn scan(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(BINARY);
    command
        .current_dir(dir)
        .arg("scan")
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start castellan scan");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("wait for castellan scan")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

fn rule_ids(output: &Output) -> Vec<String> {
    json(output)
        .as_array()
        .expect("array of findings")
        .iter()
        .map(|finding| finding["rule_id"].as_str().expect("rule_id").to_string())
        .collect()
}

fn assert_absent(output: &Output, secrets: &[&str]) {
    let text = all_output(output);
    for secret in secrets {
        assert!(!text.contains(secret), "output contains a full secret");
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("castellan-scan-e2e-")
        .tempdir()
        .expect("temporary directory")
}

fn pem_key() -> String {
    let body: Vec<String> = (0..8).map(|line| fake("", 64, 100 + line)).collect();
    format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
        body.join("\n")
    )
}

#[test]
fn clean_tree_exits_zero() {
    let dir = tempdir();
    fs::write(
        dir.path().join("main.rs"),
        "fn main() { let key = map.get(k); }\n",
    )
    .unwrap();
    let output = scan(dir.path(), &["."], None);
    assert_eq!(output.status.code(), Some(0), "{}", all_output(&output));
    assert_eq!(stdout(&output), "");
}

#[test]
fn findings_exit_one_in_every_format() {
    let dir = tempdir();
    let token = github_token(1);
    let key = pem_key();
    fs::write(dir.path().join(".env"), format!("GITHUB_TOKEN={token}\n")).unwrap();
    fs::write(dir.path().join("id_ed25519"), &key).unwrap();
    for format in ["table", "json", "sarif"] {
        let output = scan(dir.path(), &["--format", format], None);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{format}: {}",
            all_output(&output)
        );
        let text = stdout(&output);
        assert!(text.contains("github-pat"), "{format}: {text}");
        assert!(text.contains("private-key-openssh"), "{format}: {text}");
        assert_absent(&output, &[&token, &key, &key[40..120]]);
    }
}

#[test]
fn json_output_locates_each_finding() {
    let dir = tempdir();
    let first = github_token(2);
    let second = github_token(3);
    let text = format!("# config\r\nA={first}\r\nB = \"{second}\"\r\n");
    fs::write(dir.path().join("app.ini"), text).unwrap();
    let output = scan(dir.path(), &["--format", "json", "app.ini"], None);
    let findings = json(&output);
    let findings = findings.as_array().expect("array");
    assert_eq!(findings.len(), 2);
    assert_eq!(findings[0]["path"], "app.ini");
    assert_eq!(findings[0]["line"], 2);
    assert_eq!(findings[0]["column"], 3);
    assert_eq!(findings[1]["line"], 3);
    assert_eq!(findings[1]["column"], 6);
    assert_eq!(findings[0]["fingerprint"].as_str().map(str::len), Some(32));
    assert_ne!(findings[0]["fingerprint"], findings[1]["fingerprint"]);
    assert_absent(&output, &[&first, &second]);
}

#[test]
fn sarif_output_is_version_2_1_0() {
    let dir = tempdir();
    fs::write(dir.path().join("k.txt"), format!("x {}\n", github_token(4))).unwrap();
    let output = scan(dir.path(), &["--format", "sarif"], None);
    let log = json(&output);
    assert_eq!(log["version"], "2.1.0");
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "castellan-scan");
    assert!(run["tool"]["driver"]["rules"].as_array().unwrap().len() >= 80);
    let result = &run["results"][0];
    assert_eq!(result["ruleId"], "github-pat");
    let location = &result["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], "k.txt");
    assert_eq!(location["region"]["startLine"], 1);
    assert_eq!(location["region"]["startColumn"], 3);
}

#[test]
fn errors_exit_two() {
    let dir = tempdir();
    let missing = scan(dir.path(), &["no-such-dir"], None);
    assert_eq!(missing.status.code(), Some(2), "{}", all_output(&missing));
    assert!(all_output(&missing).contains("no-such-dir"));

    fs::write(
        dir.path().join("bad.toml"),
        "[[rules]]\nid = \"x\"\nregex = \"(\"\n",
    )
    .unwrap();
    let bad_rules = scan(dir.path(), &["--rules", "bad.toml", "."], None);
    assert_eq!(bad_rules.status.code(), Some(2));
    assert!(all_output(&bad_rules).contains("invalid regex"));

    let bad_format = scan(dir.path(), &["--format", "xml"], None);
    assert_eq!(bad_format.status.code(), Some(2));
}

#[test]
fn baseline_reports_only_new_findings() {
    let dir = tempdir();
    let old = github_token(5);
    fs::write(dir.path().join("old.env"), format!("T={old}\n")).unwrap();
    let update = scan(
        dir.path(),
        &["--baseline", "base.json", "--update-baseline", "."],
        None,
    );
    assert_eq!(update.status.code(), Some(0), "{}", all_output(&update));
    let baseline = fs::read_to_string(dir.path().join("base.json")).unwrap();
    assert!(baseline.contains("github-pat"));
    assert!(!baseline.contains(&old), "baseline holds the secret");

    let args = [
        "--baseline",
        "base.json",
        "--format",
        "json",
        "--exclude",
        "base.json",
        ".",
    ];
    let accepted = scan(dir.path(), &args, None);
    assert_eq!(accepted.status.code(), Some(0), "{}", all_output(&accepted));

    let new = github_token(6);
    fs::write(dir.path().join("new.env"), format!("T={new}\n")).unwrap();
    let output = scan(dir.path(), &args, None);
    assert_eq!(output.status.code(), Some(1));
    let findings = json(&output);
    assert_eq!(findings.as_array().unwrap().len(), 1);
    assert_eq!(findings[0]["path"], "./new.env");
}

fn git(dir: &Path, args: &[&str], date: &str) {
    let status = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Corpus",
            "-c",
            "user.email=corpus@example.com",
        ])
        .args(args)
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .stdout(Stdio::null())
        .status()
        .expect("run git");
    assert!(status.success(), "git {args:?}");
}

fn git_head(dir: &Path, rev: &str) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args(["rev-parse", rev])
        .output()
        .expect("git rev-parse");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn git_history_finds_removed_secret() {
    let dir = tempdir();
    let token = github_token(7);
    git(
        dir.path(),
        &["init", "-q", "-b", "main"],
        "2024-01-01T00:00:00Z",
    );
    fs::write(dir.path().join("readme.md"), "hello\n").unwrap();
    git(dir.path(), &["add", "."], "2024-01-01T00:00:00Z");
    git(
        dir.path(),
        &["commit", "-q", "-m", "first"],
        "2024-01-01T00:00:00Z",
    );
    fs::write(
        dir.path().join("config.env"),
        format!("one=1\nTOKEN={token}\n"),
    )
    .unwrap();
    git(dir.path(), &["add", "."], "2024-01-02T00:00:00Z");
    git(
        dir.path(),
        &["commit", "-q", "-m", "add config"],
        "2024-01-02T00:00:00Z",
    );
    let leaking = git_head(dir.path(), "HEAD");
    fs::write(dir.path().join("config.env"), "one=1\n").unwrap();
    git(
        dir.path(),
        &["commit", "-q", "-am", "remove token"],
        "2024-01-03T00:00:00Z",
    );

    let tree = scan(dir.path(), &["."], None);
    assert_eq!(tree.status.code(), Some(0), "{}", all_output(&tree));

    let history = scan(dir.path(), &["--git", "--format", "json", "."], None);
    assert_eq!(history.status.code(), Some(1), "{}", all_output(&history));
    let findings = json(&history);
    let findings = findings.as_array().expect("array");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["path"], "config.env");
    assert_eq!(findings[0]["line"], 2);
    assert_eq!(findings[0]["commit"]["id"], leaking.as_str());
    assert_eq!(findings[0]["commit"]["author_time"], 1_704_153_600);
    assert_absent(&history, &[&token]);

    let table = scan(dir.path(), &["--git", "."], None);
    assert!(
        stdout(&table).contains(&leaking[..10]),
        "{}",
        stdout(&table)
    );
}

#[test]
fn stdin_is_scanned_as_dash() {
    let dir = tempdir();
    let token = github_token(8);
    let input = format!("curl -H 'Authorization: token {token}'\n");
    let output = scan(
        dir.path(),
        &["--format", "json", "-"],
        Some(input.as_bytes()),
    );
    assert_eq!(output.status.code(), Some(1), "{}", all_output(&output));
    let findings = json(&output);
    assert_eq!(findings[0]["path"], "-");
    assert_eq!(findings[0]["rule_id"], "github-pat");
    assert_absent(&output, &[&token]);

    let clean = scan(dir.path(), &["-"], Some(b"nothing to see\n"));
    assert_eq!(clean.status.code(), Some(0));
}

#[test]
fn gitignore_and_globs_limit_files() {
    let dir = tempdir();
    fs::write(dir.path().join(".gitignore"), "ignored.env\n").unwrap();
    fs::write(
        dir.path().join("ignored.env"),
        format!("T={}\n", github_token(9)),
    )
    .unwrap();
    let clean = scan(dir.path(), &["."], None);
    assert_eq!(clean.status.code(), Some(0), "{}", all_output(&clean));

    fs::write(
        dir.path().join("app.py"),
        format!("T = '{}'\n", github_token(10)),
    )
    .unwrap();
    fs::write(
        dir.path().join("app.js"),
        format!("T = '{}'\n", github_token(11)),
    )
    .unwrap();
    let only_py = scan(dir.path(), &["--format", "json", "--include", "*.py"], None);
    let findings = json(&only_py);
    assert_eq!(findings.as_array().unwrap().len(), 1);
    assert_eq!(findings[0]["path"], "./app.py");

    let no_js = scan(dir.path(), &["--format", "json", "--exclude", "*.js"], None);
    assert_eq!(rule_ids(&no_js), vec!["github-pat"]);
}

#[test]
fn large_and_binary_files_are_skipped() {
    let dir = tempdir();
    let mut binary = vec![0u8, 1, 2];
    binary.extend(github_token(12).as_bytes());
    fs::write(dir.path().join("blob.bin"), binary).unwrap();
    fs::write(
        dir.path().join("big.txt"),
        format!("{}\n{}", "x".repeat(2000), github_token(13)),
    )
    .unwrap();
    let output = scan(dir.path(), &["--max-file-size", "1000", "."], None);
    assert_eq!(output.status.code(), Some(0), "{}", all_output(&output));
    assert!(all_output(&output).contains("2 skipped"));
}

#[test]
fn user_rules_add_to_builtin_rules() {
    let dir = tempdir();
    let rules = r#"
[[rules]]
id = "acme-key"
description = "ACME internal key"
regex = '''\b(acme_[a-z0-9]{24})\b'''
keywords = ["acme_"]
"#;
    fs::write(dir.path().join("rules.toml"), rules).unwrap();
    let acme = format!("acme_{}", fake("", 24, 14).to_ascii_lowercase());
    fs::write(
        dir.path().join("a.env"),
        format!("A={acme}\nB={}\n", github_token(15)),
    )
    .unwrap();
    let output = scan(
        dir.path(),
        &["--rules", "rules.toml", "--format", "json", "a.env"],
        None,
    );
    assert_eq!(rule_ids(&output), vec!["acme-key", "github-pat"]);

    let gitleaks = r#"
title = "gitleaks config"
[[rules]]
id = "acme-key"
regex = '''acme_[a-z0-9]{24}'''
secretGroup = 0
[rules.allowlist]
stopwords = ["acme_0"]
"#;
    fs::write(dir.path().join("gitleaks.toml"), gitleaks).unwrap();
    let output = scan(
        dir.path(),
        &["--rules", "gitleaks.toml", "--format", "json", "a.env"],
        None,
    );
    assert_eq!(rule_ids(&output), vec!["acme-key", "github-pat"]);
}

#[test]
fn issued_agent_token_is_detected() {
    let castellan = Castellan::init();
    let token = castellan.issue_token("example-bot");
    let dir = tempdir();
    fs::write(
        dir.path().join("agent.env"),
        format!("CASTELLAN_TOKEN={token}\n"),
    )
    .unwrap();
    let output = scan(dir.path(), &["--format", "json", "agent.env"], None);
    assert_eq!(rule_ids(&output), vec!["castellan-agent-token"]);
    assert_absent(&output, &[&token]);

    // One changed character breaks the checksum, so the token rule stays quiet.
    let mut typo = token.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    fs::write(dir.path().join("agent.env"), format!("note: {typo}\n")).unwrap();
    let output = scan(dir.path(), &["--format", "json", "agent.env"], None);
    assert_eq!(rule_ids(&output), Vec::<String>::new());
}

#[test]
fn import_without_terminal_is_rejected() {
    let dir = tempdir();
    fs::write(
        dir.path().join("a.env"),
        format!("T={}\n", github_token(16)),
    )
    .unwrap();
    let output = scan(dir.path(), &["--import", "a.env"], None);
    assert_eq!(output.status.code(), Some(2), "{}", all_output(&output));
    assert!(all_output(&output).contains("needs a terminal"));
}
