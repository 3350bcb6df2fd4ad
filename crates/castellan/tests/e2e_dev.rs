//! `castellan serve --dev`: a throwaway gateway in front of the built-in
//! echo upstream, whose printed curl lines work as printed.

#![forbid(unsafe_code)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::castellan::{poll_until, Castellan, Server, SHUTDOWN_TIMEOUT};
use support::http::{send, Reply};

/// Limit for the welcome text, printed right after the listening line.
const WELCOME_LIMIT: Duration = Duration::from_secs(5);

/// A request as a printed `curl` line describes it.
#[derive(Debug)]
struct CurlCall {
    method: String,
    headers: Vec<(String, String)>,
    url: String,
}

/// Splits a shell line into words, honouring single quotes (all the dev
/// mode's lines use).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for character in line.chars() {
        match character {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            other => {
                word.push(other);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Parses `curl [-s] [-X METHOD] [-H 'Name: value']... URL`.
fn parse_curl(line: &str) -> CurlCall {
    let words = shell_words(line.trim());
    assert_eq!(
        words.first().map(String::as_str),
        Some("curl"),
        "not a curl line: {line}"
    );
    let mut call = CurlCall {
        method: "GET".to_owned(),
        headers: Vec::new(),
        url: String::new(),
    };
    let mut rest = words[1..].iter();
    while let Some(word) = rest.next() {
        match word.as_str() {
            "-s" | "--silent" => {}
            "-X" | "--request" => call.method = rest.next().cloned().unwrap_or_default(),
            "-H" | "--header" => {
                let header = rest.next().cloned().unwrap_or_default();
                let (name, value) = header.split_once(':').unwrap_or((&header, ""));
                call.headers
                    .push((name.trim().to_owned(), value.trim().to_owned()));
            }
            other if other.starts_with('-') => panic!("unsupported curl option {other} in {line}"),
            url => call.url = url.to_owned(),
        }
    }
    assert!(call.url.starts_with("http://"), "no URL in {line}");
    call
}

fn run(call: &CurlCall) -> Reply {
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    send(&call.method, &call.url, &headers, None)
}

/// Returns the line after the line containing `heading`.
fn line_after<'a>(text: &'a str, heading: &str) -> &'a str {
    let mut lines = text.lines().skip_while(|line| !line.contains(heading));
    lines.next();
    lines
        .next()
        .unwrap_or_else(|| panic!("no line after {heading:?} in:\n{text}"))
}

fn wait_for_welcome(server: &Server) -> String {
    let printed = poll_until(WELCOME_LIMIT, || server.stdout().contains("Ctrl-C"));
    assert!(
        printed.is_some(),
        "dev mode printed no welcome\n{}",
        server.logs()
    );
    server.stdout()
}

#[test]
fn dev_mode_printed_calls_work() {
    let castellan = Castellan::init();
    let mut server = castellan.serve_with(&["--dev"], &[]);
    let welcome = wait_for_welcome(&server);

    let token = welcome
        .split_whitespace()
        .find(|word| word.starts_with("cst_"))
        .unwrap_or_else(|| panic!("no agent token in:\n{welcome}"));
    let allowed = parse_curl(line_after(&welcome, "An allowed call"));
    let denied = parse_curl(line_after(&welcome, "A denied call"));
    let anonymous = parse_curl(line_after(&welcome, "without a token"));
    for call in [&allowed, &denied, &anonymous] {
        assert!(
            call.url.starts_with(&server.url("/")),
            "the curl line must use the bound address {}: {call:?}",
            server.agent_addr
        );
    }

    let allowed_reply = run(&allowed);
    assert_eq!(allowed_reply.status, 200, "{}", allowed_reply.body);
    let echo = allowed_reply.json();
    let injected = echo["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert!(
        injected.len() > "Bearer ".len() && injected.bytes().all(|b| b == b'*'),
        "the echoed upstream key must be masked: {echo}"
    );
    assert!(
        !allowed_reply.body.contains(token),
        "the echo upstream saw the agent token: {echo}"
    );
    assert_eq!(run(&denied).status, 403, "{denied:?}");
    assert_eq!(run(&anonymous).status, 401, "{anonymous:?}");

    let data_dir = welcome
        .lines()
        .find_map(|line| line.trim().strip_prefix("data directory"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no data directory line in:\n{welcome}"));
    assert!(
        data_dir.is_dir(),
        "{} does not exist while serving",
        data_dir.display()
    );
    server.signal("TERM");
    assert!(
        server.wait_for_exit(SHUTDOWN_TIMEOUT).is_some(),
        "{}",
        server.logs()
    );
    assert!(
        !data_dir.exists(),
        "{} outlived dev mode",
        data_dir.display()
    );
}
