//! Agent token files kept by `castellan serve`: written with mode 0600,
//! accepted by the gateway, and replaced at once when the token in the file
//! is revoked.

#![forbid(unsafe_code)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::castellan::{poll_until, Castellan};
use support::http::get_as;
use support::leak::assert_no_secret;
use support::peers::spawn_httpbin;

const UPSTREAM_KEY: &str = "sk-e2e-token-files-upstream-Rt5Nw8Kx";

/// Maximum wait for the token file task: a one-second poll, a store write
/// and a file write, with margin for a loaded machine.
const WRITE_LIMIT: Duration = Duration::from_secs(10);

fn read_token(path: &std::path::Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    Some(text.trim_end().to_owned()).filter(|token| !token.is_empty())
}

#[test]
fn token_file_is_written_and_replaced_after_revocation() {
    let castellan = Castellan::init();
    let upstream = spawn_httpbin();
    let path = castellan.scratch_dir().join("file-bot.token");
    castellan.write_config(&format!(
        r#"
[connections.api]
upstream = "{upstream}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "api-key"

[roles.reader]
allow = [{{ connection = "api", methods = ["GET"], paths = ["/**"] }}]

[agents.file-bot]
owner = "ops@example.com"
roles = ["reader"]
token_file = "{path}"
token_lifetime = "1h"
"#,
        upstream = upstream.base_url(),
        path = path.display()
    ));
    castellan.set_secret("api-key", UPSTREAM_KEY);
    let server = castellan.serve();

    assert!(
        poll_until(WRITE_LIMIT, || read_token(&path).is_some()).is_some(),
        "no token file\n{}",
        server.logs()
    );
    let first = read_token(&path).expect("token");
    let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The gateway loads the new token at its next store poll.
    let accepted = poll_until(WRITE_LIMIT, || {
        get_as(&server.url("/api/get"), &first).status == 200
    });
    assert!(accepted.is_some(), "the file's token is not accepted");

    let ids = castellan.token_ids("file-bot");
    assert_eq!(ids.len(), 1, "one managed token: {ids:?}");
    castellan.cli_ok(&["agent", "token", "revoke", &ids[0]]);
    let replaced = poll_until(WRITE_LIMIT, || {
        read_token(&path).is_some_and(|token| token != first)
    });
    assert!(replaced.is_some(), "file not replaced\n{}", server.logs());
    let second = read_token(&path).expect("token");

    let fresh = poll_until(WRITE_LIMIT, || {
        get_as(&server.url("/api/get"), &second).status == 200
    });
    assert!(fresh.is_some(), "the new token is not accepted");
    assert_eq!(get_as(&server.url("/api/get"), &first).status, 401);

    let events = castellan.cli_ok(&["audit", "events", "--json"]);
    assert!(events.contains("token.issue"), "{events}");
    let outputs = format!("{}\n{events}", server.logs());
    assert_no_secret(&outputs, &first, "logs and events");
    assert_no_secret(&outputs, &second, "logs and events");
}
