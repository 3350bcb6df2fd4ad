//! Path literals reach Cedar as string and `like` literals, so every
//! character a normalized path can hold must survive the quoting.

mod common;

use castellan_model::{MethodSet, RuleEffect};
use common::{decide, single_role_policy};

#[test]
fn path_literals_quoted_exactly() {
    // (pattern, request path, allowed)
    let cases = [
        (
            "/v1/models/gemini:generateContent",
            "/v1/models/gemini:generateContent",
            true,
        ),
        ("/v1/*:generate", "/v1/gemini:generate", true),
        ("/v1/*:generate", "/v1/gemini:stream", false),
        ("/%7Euser", "/~user", true),
        ("/~user", "/%7euser", true),
        ("/a%20b", "/a%20b", true),
        ("/100%25", "/100%25", true),
        ("/100%25", "/100", false),
        ("/say\"hi\"", "/say\"hi\"", true),
        ("/say\"hi\"", "/say%22hi%22", false),
        ("/*\"*", "/a\"b", true),
        ("/*\"*", "/ab", false),
        ("/it's", "/it's", true),
        ("/a@b", "/a@b", true),
        ("/a!$&()+,=", "/a!$&()+,=", true),
        ("/%2A", "/%2a", true),
        ("/%2A", "/*", false),
        ("/x*y", "/x*y", true),
        ("/x*y", "/xqy", true),
        ("/*%20*", "/a%20b", true),
        ("/*%20*", "/a+b", false),
        ("/{id}", "/{id}", true),
        ("/[x]|<y>^`", "/[x]|<y>^`", true),
    ];
    for (pattern, raw_path, expected) in cases {
        let policy = single_role_policy(&[(RuleEffect::Allow, MethodSet::Any, &[pattern])]);
        let decision = decide(&policy, "tester", "blog", "GET", raw_path);
        assert_eq!(
            decision.allowed, expected,
            "{pattern} vs {raw_path}: {}",
            decision.reason
        );
    }
}

#[test]
fn quotes_escaped_in_cedar_text() {
    let policy = single_role_policy(&[(RuleEffect::Allow, MethodSet::Any, &["/say\"hi\"/*\"*"])]);
    let text = policy.cedar_text();
    assert!(text.contains(r#"context.s0 == "say\"hi\"""#), "{text}");
    assert!(text.contains(r#"context.s1 like "*\"*""#), "{text}");
}

#[test]
fn method_tokens_quoted_exactly() {
    let methods = MethodSet::Only(vec![
        "GET".to_string(),
        "M-SEARCH".to_string(),
        "X_Y".to_string(),
    ]);
    let policy = single_role_policy(&[(RuleEffect::Allow, methods, &["/**"])]);
    let cases = [
        ("GET", true),
        ("M-SEARCH", true),
        ("X_Y", true),
        ("POST", false),
        ("get", false),
        ("M", false),
    ];
    for (method, expected) in cases {
        let decision = decide(&policy, "tester", "blog", method, "/a");
        assert_eq!(decision.allowed, expected, "{method}: {}", decision.reason);
    }
}
