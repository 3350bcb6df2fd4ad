//! Request bodies and paths that change what a request does: secrets leaving
//! in bodies (the outbound data-loss check), method overrides hidden in form
//! bodies, case tricks on case-insensitive upstreams, and a credential
//! echoed in a response header name.

#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;

use serde_json::Value;

use support::castellan::{Castellan, Server};
use support::http::{raw_exchange, raw_status, send, Reply};
use support::leak::assert_no_secret;
use support::peers::{spawn_httpbin, Peer};

const UPSTREAM_KEY: &str = "sk-e2e-inspect-Hw4Rt8Ly2Kc6";

/// A private key in the corpus of the scanner, as an agent would paste it.
const EC_KEY: &str = include_str!("../../castellan-scan/tests/corpus/positive/private-key-ec.pem");

/// Scan limit of the checked connections in this file.
const DLP_MAX_BYTES: usize = 65536;

/// Builds a well-formed AWS access key id at run time.
fn aws_key() -> String {
    format!("AKIA{}", "Q7TXZ3MBN5RK2WVY")
}

fn config(httpbin: &Peer, echoer: SocketAddr) -> String {
    let url = httpbin.base_url();
    format!(
        r#"
[connections.guarded]
upstream = "{url}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "key"
dlp = "block"
dlp_max_bytes = {DLP_MAX_BYTES}

[connections.watched]
upstream = "{url}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "key"
dlp = "alert"
dlp_max_bytes = {DLP_MAX_BYTES}

[connections.plain]
upstream = "{url}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "key"

[connections.folded]
upstream = "{url}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "key"
case_insensitive_paths = true

[connections.echoer]
upstream = "http://{echoer}"
allow_private = true
auth = {{ kind = "bearer" }}
secret = "key"

[roles.writer]
allow = [
  {{ connection = "guarded", methods = ["POST"], paths = ["/anything/**"] }},
  {{ connection = "watched", methods = ["POST"], paths = ["/anything/**"] }},
  {{ connection = "plain", methods = ["GET", "POST"], paths = ["/anything/**"] }},
  {{ connection = "folded", methods = ["GET"], paths = ["/anything/**"] }},
  {{ connection = "echoer", methods = ["GET"], paths = ["/**"] }},
]
deny = [
  {{ connection = "folded", paths = ["/anything/Admin/**"] }},
  {{ connection = "plain", paths = ["/anything/Admin/**"] }},
]

[agents.writer-bot]
owner = "ops@example.com"
roles = ["writer"]
"#
    )
}

struct Setup {
    _httpbin: Peer,
    castellan: Castellan,
    server: Server,
    token: String,
}

fn setup() -> Setup {
    let httpbin = spawn_httpbin();
    let echoer = spawn_header_name_echoer();
    let castellan = Castellan::init();
    castellan.write_config(&config(&httpbin, echoer));
    castellan.set_secret("key", UPSTREAM_KEY);
    let token = castellan.issue_token("writer-bot");
    let server = castellan.serve();
    Setup {
        _httpbin: httpbin,
        castellan,
        server,
        token,
    }
}

impl Setup {
    fn post(&self, path: &str, content_type: &str, body: &str) -> Reply {
        let authorization = format!("Bearer {}", self.token);
        send(
            "POST",
            &self.server.url(path),
            &[
                ("authorization", &authorization),
                ("content-type", content_type),
            ],
            Some(body),
        )
    }

    fn get(&self, path: &str) -> Reply {
        let authorization = format!("Bearer {}", self.token);
        send(
            "GET",
            &self.server.url(path),
            &[("authorization", &authorization)],
            None,
        )
    }

    /// Returns the audit record of the request with `request_id`.
    fn record(&self, request_id: &str) -> Value {
        let mut found = None;
        support::castellan::poll_until(std::time::Duration::from_secs(5), || {
            found = self
                .castellan
                .audit_records()
                .into_iter()
                .find(|record| record["request_id"] == request_id);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no audit record for request {request_id}"))
    }

    /// Checks that no output of the gateway and no audit record contains `secret`.
    fn assert_nowhere(&self, secret: &str) {
        assert_no_secret(&self.server.logs(), secret, "the gateway logs");
        let records = serde_json::to_string(&self.castellan.audit_records()).expect("records");
        assert_no_secret(&records, secret, "the audit records");
    }
}

fn chat_body(content: &str) -> String {
    serde_json::json!({
        "model": "gpt-test",
        "messages": [{"role": "user", "content": content}],
    })
    .to_string()
}

fn request_id(reply: &Reply) -> String {
    reply
        .header("x-request-id")
        .expect("every response carries x-request-id")
        .to_owned()
}

/// Returns the rule ids recorded for a request.
fn findings(record: &Value) -> Vec<String> {
    record["findings"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .map(|id| id.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn provider_key_in_body_blocked() {
    let setup = setup();
    let key = aws_key();
    let reply = setup.post(
        "/guarded/anything/chat",
        "application/json",
        &chat_body(&format!("deploy with AWS_ACCESS_KEY_ID={key} please")),
    );
    assert_eq!(reply.status, 403, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["error"], "secret_in_request", "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("\"aws-access-key-id\""), "{reason}");
    assert!(reason.contains("dlp"), "{reason}");
    assert_no_secret(&reply.everything(), &key, "the rejection");
    let record = setup.record(&request_id(&reply));
    assert_eq!(record["decision"], "deny", "{record}");
    assert_eq!(record["status"], 403, "{record}");
    assert_eq!(findings(&record), ["aws-access-key-id"], "{record}");
    setup.assert_nowhere(&key);
}

/// A PEM key pasted into a JSON string has its newlines escaped as `\n`.
#[test]
fn private_key_in_json_string_blocked() {
    let setup = setup();
    let reply = setup.post(
        "/guarded/anything/chat",
        "application/json",
        &chat_body(&format!("please check this key:\n{EC_KEY}")),
    );
    assert_eq!(reply.status, 403, "{}", reply.body);
    let record = setup.record(&request_id(&reply));
    assert_eq!(findings(&record), ["private-key-ec"], "{record}");
    let key_line = EC_KEY.lines().nth(1).expect("the key has a body line");
    setup.assert_nowhere(key_line);
}

/// Clean bodies pass the check byte for byte, whether they arrive with a
/// length or chunked, and in one piece or many.
#[test]
fn clean_body_forwarded_intact() {
    let setup = setup();
    let text: String = (0..3000).map(|i| format!("line {i} of notes\n")).collect();
    assert!(text.len() < DLP_MAX_BYTES && text.len() > 40_000);
    let body = chat_body(&text);
    let reply = setup.post("/guarded/anything/chat", "application/json", &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["data"], body);
    let record = setup.record(&request_id(&reply));
    assert_eq!(record["decision"], "allow", "{record}");
    assert_eq!(record["bytes_in"], body.len(), "{record}");
    assert!(findings(&record).is_empty(), "{record}");

    let chunked = raw_chunked_post(
        setup.server.agent_addr,
        "/guarded/anything/chunked",
        &setup.token,
        &body,
    );
    assert_eq!(raw_status(&chunked), 200, "{chunked}");
    let echoed: Value = serde_json::from_str(response_body(&chunked)).expect("httpbin JSON");
    assert_eq!(echoed["data"], body);
}

/// An encoded body would hide a key from the scan, and an upstream that
/// decodes request bodies would still read it.
#[test]
fn encoded_body_rejected_when_scanned() {
    let setup = setup();
    for connection in ["guarded", "watched"] {
        let authorization = format!("Bearer {}", setup.token);
        let reply = send(
            "POST",
            &setup.server.url(&format!("/{connection}/anything/upload")),
            &[
                ("authorization", &authorization),
                ("content-encoding", "gzip"),
            ],
            Some("not really gzip"),
        );
        assert_eq!(reply.status, 415, "{connection}: {}", reply.body);
        let reason = reply.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(reason.contains("content-encoding"), "{reason}");
    }
}

#[test]
fn body_too_large_to_scan_rejected_in_block_mode() {
    let setup = setup();
    let body = "x".repeat(DLP_MAX_BYTES + 1);
    // A declared length over the limit is rejected before the body is read,
    // so only the head is sent here.
    let declared = raw_exchange(
        setup.server.agent_addr,
        &format!(
            "POST /guarded/anything/upload HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            setup.token,
            body.len()
        ),
    );
    assert_eq!(raw_status(&declared), 413, "{declared}");
    assert!(declared.contains("dlp_max_bytes"), "{declared}");

    // Without a declared length the gateway reads up to the limit first.
    let chunked = raw_chunked_post(
        setup.server.agent_addr,
        "/guarded/anything/upload",
        &setup.token,
        &body,
    );
    assert_eq!(raw_status(&chunked), 413, "{chunked}");
    assert!(chunked.contains("dlp_max_bytes"), "{chunked}");

    // Alert mode scans the start and forwards the whole body.
    let reply = setup.post("/watched/anything/upload", "text/plain", &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json()["data"].as_str().map(str::len),
        Some(body.len())
    );
}

#[test]
fn provider_key_in_body_recorded_in_alert_mode() {
    let setup = setup();
    let key = aws_key();
    let body = chat_body(&format!("AWS_ACCESS_KEY_ID={key}"));
    let reply = setup.post("/watched/anything/chat", "application/json", &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let record = setup.record(&request_id(&reply));
    assert_eq!(record["decision"], "allow", "{record}");
    assert_eq!(findings(&record), ["aws-access-key-id"], "{record}");
    assert!(
        setup.server.logs().contains("aws-access-key-id"),
        "the alert is logged"
    );
    // The agent's own request is echoed back to it by httpbin; what matters
    // is that Castellan's logs and records hold no copy.
    setup.assert_nowhere(&key);

    let reply = setup.post("/plain/anything/chat", "application/json", &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let record = setup.record(&request_id(&reply));
    assert!(findings(&record).is_empty(), "dlp is off: {record}");
}

#[test]
fn method_override_in_form_body_rejected() {
    let setup = setup();
    let cases = [
        (
            "urlencoded",
            "application/x-www-form-urlencoded",
            "title=x&_method=DELETE".to_owned(),
        ),
        (
            "urlencoded_escaped",
            "application/x-www-form-urlencoded; charset=utf-8",
            "%5Fmethod=PUT".to_owned(),
        ),
        (
            "multipart",
            "multipart/form-data; boundary=XyZ",
            "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nx\r\n--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XyZ--\r\n".to_owned(),
        ),
        (
            "urlencoded_comma_parameters",
            "application/x-www-form-urlencoded, charset=utf-8",
            "_method=DELETE".to_owned(),
        ),
        (
            "multipart_mixed",
            "multipart/mixed; boundary=XX",
            "--XX\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n".to_owned(),
        ),
        (
            "multipart_folded_header",
            "multipart/form-data; boundary=XX",
            "--XX\r\nContent-Disposition: form-data;\r\n name=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n".to_owned(),
        ),
        (
            "multipart_wrong_boundary",
            "multipart/form-data; boundary=declared",
            "--other\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--other--\r\n".to_owned(),
        ),
    ];
    for (case, content_type, body) in cases {
        let reply = setup.post("/plain/anything/form", content_type, &body);
        assert_eq!(reply.status, 400, "{case}: {}", reply.body);
        let reason = reply.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(reason.contains("_method"), "{case}: {reason}");
    }
    // Rack parses a POST body without a Content-Type as a form.
    let untyped = raw_exchange(
        setup.server.agent_addr,
        &format!(
            "POST /plain/anything/form HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {}\r\ncontent-length: 14\r\nconnection: close\r\n\r\n_method=DELETE",
            setup.token
        ),
    );
    assert_eq!(raw_status(&untyped), 400, "{untyped}");
    let reply = setup.post(
        "/plain/anything/form",
        "application/x-www-form-urlencoded",
        "title=x&method=DELETE",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["form"]["method"], "DELETE");
}

#[test]
fn case_tricks_folded_on_case_insensitive_connection() {
    let setup = setup();
    for path in [
        "/anything/Admin/x",
        "/anything/ADMIN/x",
        "/anything/aDmIn/x",
    ] {
        let reply = setup.get(&format!("/folded{path}"));
        assert_eq!(reply.status, 403, "{path}: {}", reply.body);
    }
    let reply = setup.get("/folded/anything/Public/README");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let url = reply.json()["url"].as_str().unwrap_or_default().to_owned();
    assert!(url.ends_with("/anything/public/readme"), "forwarded {url}");
    let record = setup.record(&request_id(&reply));
    assert_eq!(record["path"], "/anything/public/readme", "{record}");

    // Escaped non-ASCII cannot be folded safely.
    let reply = setup.get("/folded/anything/caf%C3%A9");
    assert_eq!(reply.status, 400, "{}", reply.body);

    // The same rule on an exact connection matches the exact case only,
    // as a case-sensitive upstream expects.
    assert_eq!(setup.get("/plain/anything/Admin/x").status, 403);
    assert_eq!(setup.get("/plain/anything/ADMIN/x").status, 200);
}

#[test]
fn credential_in_response_header_name_removed() {
    let setup = setup();
    let reply = setup.get("/echoer/echo");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_no_secret(
        &reply.everything().to_ascii_lowercase(),
        &UPSTREAM_KEY.to_ascii_lowercase(),
        "the response",
    );
    assert_eq!(reply.header("x-kept"), Some("1"), "{:?}", reply.headers);
}

/// Starts a loopback upstream that echoes the `Authorization` header it received
/// into the name of a response header, as a careless debug feature might.
fn spawn_header_name_echoer() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echoer");
    let address = listener.local_addr().expect("echoer address");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || echo_in_header_name(stream));
        }
    });
    address
}

fn echo_in_header_name(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the echoer socket"));
    let mut authorization = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = value.trim().replace(' ', "-");
            }
        }
        line.clear();
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nx-seen-{authorization}: 1\r\nx-kept: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
    let _ = reader.read_to_end(&mut Vec::new());
}

/// Sends `body` in 1000-byte chunks without a `Content-Length`.
fn raw_chunked_post(addr: SocketAddr, path: &str, token: &str, body: &str) -> String {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    for piece in body.as_bytes().chunks(1000) {
        request.push_str(&format!("{:x}\r\n", piece.len()));
        request.push_str(std::str::from_utf8(piece).expect("ASCII body"));
        request.push_str("\r\n");
    }
    request.push_str("0\r\n\r\n");
    raw_exchange(addr, &request)
}

/// Returns the body of a raw response, de-chunked when needed.
fn response_body(raw: &str) -> &str {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "expected a response with a length: {head}"
    );
    body
}
