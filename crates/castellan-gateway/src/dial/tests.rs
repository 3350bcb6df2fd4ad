use std::net::SocketAddr;

use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use tower_service::Service;

use super::*;

fn policy(allow_private: bool) -> AddressPolicy {
    AddressPolicy {
        connection: Arc::from("internal"),
        allow_private,
    }
}

fn socket(text: &str) -> SocketAddr {
    text.parse().expect("a valid test socket address")
}

#[test]
fn rejected_addresses_dropped_from_answer() {
    let resolved = [socket("127.0.0.1:0"), socket("93.184.215.14:0")];
    let allowed = allowed_addresses(&policy(false), &resolved).expect("one address passes");
    assert_eq!(allowed, vec![socket("93.184.215.14:0")]);
}

#[test]
fn all_rejected_answer_names_class() {
    let resolved = [socket("[fd00:ec2::254]:0"), socket("10.0.0.1:0")];
    let error = allowed_addresses(&policy(false), &resolved).expect_err("all are rejected");
    assert!(is_internal_address(error.as_ref()));
    let message = error.to_string();
    assert!(message.contains("cloud metadata"), "{message}");
    assert!(message.contains("allow_private = true"), "{message}");
    assert!(message.contains("\"internal\""), "{message}");
}

#[test]
fn allow_private_keeps_every_address() {
    let resolved = [socket("127.0.0.1:0"), socket("[::1]:0")];
    let allowed = allowed_addresses(&policy(true), &resolved).expect("all pass");
    assert_eq!(allowed, resolved.to_vec());
}

#[test]
fn empty_answer_is_not_internal() {
    let error = allowed_addresses(&policy(false), &[]).expect_err("nothing to dial");
    assert!(!is_internal_address(error.as_ref()));
}

#[test]
fn literal_hosts_parsed_like_connector() {
    let cases = [
        ("http://127.0.0.1:8080/", Some("127.0.0.1")),
        ("http://[::ffff:7f00:1]:80/", Some("::ffff:127.0.0.1")),
        ("https://[fd00:ec2::254]/", Some("fd00:ec2::254")),
        ("http://localhost:80/", None),
        ("http://example.com/", None),
        // Non-canonical numeric forms are not IP literals to the connector,
        // so they go through the resolver, which checks every address it resolves.
        ("http://2130706433/", None),
    ];
    for (uri, expected) in cases {
        let uri: Uri = uri.parse().expect("a valid test URI");
        let expected = expected.map(|text| text.parse::<IpAddr>().expect("a valid address"));
        assert_eq!(literal_host(&uri), expected, "{uri}");
    }
}

#[tokio::test]
async fn resolver_rejects_localhost() {
    let mut resolver = CheckedResolver {
        policy: policy(false),
    };
    let name: Name = "localhost".parse().expect("a valid host name");
    let error = resolver
        .call(name)
        .await
        .expect_err("localhost is loopback");
    assert!(is_internal_address(error.as_ref()), "{error}");
}

#[tokio::test]
async fn connector_rejects_loopback_literal() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback listener");
    let address = listener.local_addr().expect("listener address");
    let uri: Uri = format!("http://{address}/").parse().expect("a valid URI");

    let mut rejecting = CheckedConnector::new("internal", false);
    let error = rejecting.call(uri.clone()).await.expect_err("loopback");
    assert!(is_internal_address(error.as_ref()), "{error}");

    let mut allowed = CheckedConnector::new("internal", true);
    allowed
        .call(uri)
        .await
        .expect("allow_private reaches loopback");
    let accepted = tokio::time::timeout(std::time::Duration::from_secs(5), listener.accept()).await;
    assert!(
        matches!(accepted, Ok(Ok(_))),
        "the dial reached the listener"
    );
}

#[tokio::test]
async fn connector_resolves_names_through_check() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback listener");
    let port = listener.local_addr().expect("listener address").port();
    let uri: Uri = format!("http://localhost:{port}/")
        .parse()
        .expect("a valid URI");
    let mut rejecting = CheckedConnector::new("internal", false);
    let error = rejecting
        .call(uri)
        .await
        .expect_err("localhost is loopback");
    assert!(is_internal_address(error.as_ref()), "{error}");
}

/// Upstream URLs that spell an internal address in another numeric form.
/// The configuration parser normalizes each to a literal (WHATWG URL host
/// parsing), which the connector checks without a DNS lookup.
const ALTERNATIVE_FORMS: [&str; 16] = [
    "http://2130706433/",
    "http://0x7f000001/",
    "http://017700000001/",
    "http://0x7f.1/",
    "http://127.1/",
    "http://0177.0.0.1/",
    "http://127.0.0.1./",
    "http://127.0.0.1%2e/",
    "http://0/",
    "http://169.254.43518/",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[0:0:0:0:0:ffff:169.254.169.254]/",
    "http://[fd00:ec2:0::254]/",
];

#[test]
fn alternative_numeric_forms_are_literals() {
    for upstream in ALTERNATIVE_FORMS {
        let source = format!(
            "[connections.internal]\nupstream = \"{upstream}\"\nauth = {{ kind = \"bearer\" }}\nsecret = \"key\"\n"
        );
        let config = castellan_model::Config::parse(&source, std::path::Path::new("test.toml"))
            .unwrap_or_else(|error| panic!("{upstream}: {error}"));
        let origin = config.connections["internal"].upstream.origin();
        let uri: Uri = origin.parse().expect("the origin is a valid URI");
        let literal = literal_host(&uri).unwrap_or_else(|| panic!("{upstream} -> {origin}"));
        assert!(
            classify(literal).is_internal(),
            "{upstream} -> {literal} is {}",
            classify(literal)
        );
    }
}
