//! Cedar ignores a `forbid` policy whose evaluation fails, which would turn
//! a deny rule into an allow. These tests check that deny rules of every
//! pattern shape still deny on the root path, short paths and paths of the
//! maximum depth, and that no request hits an evaluation error.

mod common;

use castellan_model::path::MAX_SEGMENTS;
use castellan_model::{MethodSet, NormalizedPath, PathPattern, RuleEffect};
use castellan_policy::AccessRequest;
use common::{path, single_role_policy};

fn deep(segment: &str, depth: usize) -> String {
    format!("/{segment}").repeat(depth)
}

fn deny_patterns() -> Vec<String> {
    let mut patterns: Vec<String> = [
        "/",
        "/a",
        "/a/",
        "/*",
        "/*/*/*",
        "/a/b/c/d/e/f/g/h",
        "/**",
        "/a/**",
        "/**/z",
        "/a/**/z",
        "/*/x/**",
        "/**/*.json",
        "/**/",
        "/*/**/*",
    ]
    .iter()
    .map(|pattern| pattern.to_string())
    .collect();
    patterns.push(deep("a", MAX_SEGMENTS));
    patterns.push(deep("a", MAX_SEGMENTS + 2));
    patterns.push(format!("/**{}", deep("a", MAX_SEGMENTS)));
    patterns.push(format!(
        "{}/**{}",
        deep("a", MAX_SEGMENTS / 2),
        deep("a", MAX_SEGMENTS / 2)
    ));
    patterns
}

fn request_paths() -> Vec<String> {
    let mut paths: Vec<String> = [
        "/",
        "/a",
        "/a/",
        "/z",
        "/a/z",
        "/x/x",
        "/q/x/y",
        "/f.json",
        "/a/b/c/d/e/f/g/h",
    ]
    .iter()
    .map(|raw| raw.to_string())
    .collect();
    paths.push(deep("a", MAX_SEGMENTS));
    paths.push(format!("{}/z", deep("a", MAX_SEGMENTS - 1)));
    paths.push(format!("{}/", deep("a", MAX_SEGMENTS - 1)));
    paths
}

#[test]
fn deny_rules_deny_at_every_depth() {
    let paths: Vec<NormalizedPath> = request_paths().iter().map(|raw| path(raw)).collect();
    for pattern in deny_patterns() {
        let reference = match PathPattern::parse(&pattern) {
            Ok(parsed) => parsed,
            Err(error) => panic!("test pattern {pattern:?} is invalid: {error}"),
        };
        let policy = single_role_policy(&[
            (RuleEffect::Allow, MethodSet::Any, &["/**"]),
            (RuleEffect::Deny, MethodSet::Any, &[pattern.as_str()]),
        ]);
        for path in &paths {
            let decision = policy.authorize(&AccessRequest {
                agent: "tester",
                connection: "blog",
                method: "GET",
                path,
                source: "127.0.0.1".parse().expect("valid address"),
            });
            let case = format!("deny {pattern} on {path}: {}", decision.reason);
            assert!(
                !decision.reason.contains("could not be evaluated"),
                "{case}"
            );
            assert_eq!(decision.allowed, !reference.matches(path), "{case}");
            if !decision.allowed {
                assert_eq!(
                    decision.rule.as_deref(),
                    Some("roles.subject.deny[0]"),
                    "{case}"
                );
            }
        }
    }
}
