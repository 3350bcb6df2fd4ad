//! The Cedar compilation of path patterns must decide exactly as
//! `PathPattern::matches`, the reference semantics in the model crate.

mod common;

use castellan_model::{MethodSet, NormalizedPath, PathPattern, RuleEffect};
use castellan_policy::Decision;
use common::{decide, single_role_policy};
use proptest::prelude::*;

/// Pattern segments: literals (some percent-encoded), `*`, globs and empty
/// text, which collapses except at the end.
fn pattern_segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a", "b", "x", "ab", "~", "%7E", "a:b", "@", "'", "*", "*.json", "a*", "*b", "*a*b", "x*x",
        "",
    ])
}

fn path_segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a", "b", "x", "ab", "abb", "aab", "xx", "xyx", "~", "%7e", "a:b", "@", "'", "f.json",
        ".json", "*",
    ])
}

/// Patterns with up to five segments, a `**` at any position or none, and
/// an optional trailing slash, so `/*/x/**` and `/**/b` shapes occur.
fn pattern() -> impl Strategy<Value = (String, PathPattern)> {
    (
        prop::collection::vec(pattern_segment(), 0..5),
        prop::option::of(0usize..6),
        any::<bool>(),
    )
        .prop_map(|(mut segments, any_depth, trailing_slash)| {
            if let Some(position) = any_depth {
                segments.insert(position.min(segments.len()), "**");
            }
            let mut text = format!("/{}", segments.join("/"));
            if trailing_slash {
                text.push('/');
            }
            text
        })
        .prop_filter_map("pattern is invalid", |text| {
            let parsed = PathPattern::parse(&text).ok()?;
            Some((text, parsed))
        })
}

fn path() -> impl Strategy<Value = (String, NormalizedPath)> {
    (prop::collection::vec(path_segment(), 0..7), any::<bool>())
        .prop_map(|(segments, trailing_slash)| {
            let mut text = format!("/{}", segments.join("/"));
            if trailing_slash && !segments.is_empty() {
                text.push('/');
            }
            text
        })
        .prop_filter_map("path is invalid", |text| {
            let parsed = NormalizedPath::parse(&text).ok()?;
            Some((text, parsed))
        })
}

fn assert_no_evaluation_error(decision: &Decision) {
    assert!(
        !decision.reason.contains("could not be evaluated"),
        "{}",
        decision.reason
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn allow_rule_matches_reference((pattern, parsed) in pattern(), (raw_path, path) in path()) {
        let policy = single_role_policy(&[(RuleEffect::Allow, MethodSet::Any, &[pattern.as_str()])]);
        let decision = decide(&policy, "tester", "blog", "GET", &raw_path);
        assert_no_evaluation_error(&decision);
        prop_assert_eq!(decision.allowed, parsed.matches(&path), "{} vs {}", pattern, path);
    }

    #[test]
    fn deny_rule_matches_reference((pattern, parsed) in pattern(), (raw_path, path) in path()) {
        let policy = single_role_policy(&[
            (RuleEffect::Allow, MethodSet::Any, &["/**"]),
            (RuleEffect::Deny, MethodSet::Any, &[pattern.as_str()]),
        ]);
        let decision = decide(&policy, "tester", "blog", "GET", &raw_path);
        assert_no_evaluation_error(&decision);
        prop_assert_eq!(decision.allowed, !parsed.matches(&path), "{} vs {}", pattern, path);
    }
}

/// Cases where translating a pattern to one `like` over the whole path
/// would over-match, because `*` in `like` crosses `/`, and cases where `*`
/// meets the empty last segment of a trailing slash.
#[test]
fn one_segment_wildcards_stay_in_segment() {
    let cases = [
        ("/*/x/**", "/a/x/c", true),
        ("/*/x/**", "/a/b/x/c", false),
        ("/*/x/**", "/a/x", true),
        ("/*", "/a/b", false),
        ("/a/*.json", "/a/b/c.json", false),
        ("/**/b/*", "/b/c", true),
        ("/**/b/*", "/b/c/d", false),
        ("/a/**/b", "/a/b", true),
        ("/a/**/b", "/a/x/y/b", true),
        ("/a/**/b", "/ab", false),
        ("/a/**/a", "/a", false),
        ("/*", "/", false),
        ("/posts/*", "/posts/", false),
        ("/posts/**/*", "/posts/", false),
        ("/posts/**", "/posts/", true),
        ("/posts/", "/posts", false),
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
