use http::{Request, Version};

use super::check_framing;

/// A named request: its HTTP version and header lines.
type Case = (
    &'static str,
    Version,
    &'static [(&'static str, &'static [u8])],
);

fn parts(version: Version, headers: &[(&str, &[u8])]) -> http::request::Parts {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/c/x")
        .version(version);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(())
        .expect("a valid test request")
        .into_parts()
        .0
}

#[test]
fn framing_accepted_cases() {
    let cases: [Case; 6] = [
        ("no body headers", Version::HTTP_11, &[]),
        (
            "content-length",
            Version::HTTP_11,
            &[("content-length", b"12")],
        ),
        (
            "repeated equal content-length",
            Version::HTTP_11,
            &[("content-length", b"5"), ("content-length", b"5")],
        ),
        (
            "chunked",
            Version::HTTP_11,
            &[("transfer-encoding", b"chunked")],
        ),
        (
            "chunked in capitals",
            Version::HTTP_11,
            &[("transfer-encoding", b"CHUNKED")],
        ),
        (
            "content-length over HTTP/2",
            Version::HTTP_2,
            &[("content-length", b"0")],
        ),
    ];
    for (name, version, headers) in cases {
        assert!(check_framing(&parts(version, headers)).is_ok(), "{name}");
    }
}

#[test]
fn framing_rejected_cases() {
    let cases: [Case; 12] = [
        (
            "content-length with chunked",
            Version::HTTP_11,
            &[("content-length", b"4"), ("transfer-encoding", b"chunked")],
        ),
        (
            "chunked twice in one line",
            Version::HTTP_11,
            &[("transfer-encoding", b"chunked, chunked")],
        ),
        (
            "chunked on two lines",
            Version::HTTP_11,
            &[
                ("transfer-encoding", b"chunked"),
                ("transfer-encoding", b"chunked"),
            ],
        ),
        (
            "gzip before chunked",
            Version::HTTP_11,
            &[("transfer-encoding", b"gzip, chunked")],
        ),
        (
            "identity before chunked",
            Version::HTTP_11,
            &[("transfer-encoding", b"identity, chunked")],
        ),
        (
            "trailing empty coding",
            Version::HTTP_11,
            &[("transfer-encoding", b"chunked,")],
        ),
        (
            "identity alone",
            Version::HTTP_11,
            &[("transfer-encoding", b"identity")],
        ),
        (
            "xchunked",
            Version::HTTP_11,
            &[("transfer-encoding", b"xchunked")],
        ),
        (
            "chunked over HTTP/1.0",
            Version::HTTP_10,
            &[("transfer-encoding", b"chunked")],
        ),
        (
            "signed content-length",
            Version::HTTP_11,
            &[("content-length", b"+5")],
        ),
        (
            "hex content-length",
            Version::HTTP_11,
            &[("content-length", b"0x5")],
        ),
        (
            "differing content-length",
            Version::HTTP_11,
            &[("content-length", b"5"), ("content-length", b"6")],
        ),
    ];
    for (name, version, headers) in cases {
        let rejection = check_framing(&parts(version, headers)).expect_err(name);
        assert_eq!(rejection.status, 400, "{name}");
        assert!(rejection.close_connection, "{name}");
    }
}

#[test]
fn framing_rejection_closes_connection() {
    let request = parts(Version::HTTP_11, &[("transfer-encoding", b"gzip, chunked")]);
    let rejection = check_framing(&request).expect_err("gzip is not accepted");
    let response = rejection.to_response("request-id");
    assert_eq!(
        response.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
}
