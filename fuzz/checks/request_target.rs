//! Fuzz check for request-target normalization and path patterns. The
//! input is a pattern, a newline, then a request path.
//!
//! Checked: no panics; a normalized path normalizes to itself; a pattern
//! without wildcards matches exactly the path it spells.

use castellan_model::{NormalizedPath, PathPattern};

/// Splits `data` into a pattern and a path and checks both.
pub fn check_request_target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern_source, raw_path) = text.split_once('\n').unwrap_or((text, text));
    let path = check_path(raw_path);
    check_path(pattern_source);
    let Ok(pattern) = PathPattern::parse(pattern_source) else {
        return;
    };
    if let Some(path) = path {
        if !pattern_source.contains('*') {
            let spelled = NormalizedPath::parse(pattern_source).ok();
            assert_eq!(
                pattern.matches(&path),
                spelled.as_ref() == Some(&path),
                "literal pattern {pattern_source:?} and path {raw_path:?}"
            );
        }
        if let Ok(own) = PathPattern::parse(path.as_str()) {
            assert!(
                own.matches(&path),
                "{:?} does not match itself",
                path.as_str()
            );
        }
    }
}

/// Normalizes `raw` and checks the result is a fixed point.
fn check_path(raw: &str) -> Option<NormalizedPath> {
    let path = NormalizedPath::parse(raw).ok()?;
    let again = NormalizedPath::parse(path.as_str())
        .unwrap_or_else(|error| panic!("{:?} no longer parses: {error}", path.as_str()));
    assert_eq!(again, path, "normalizing {raw:?} twice differs");
    let joined: String = path
        .segments()
        .map(|segment| format!("/{segment}"))
        .collect();
    assert_eq!(
        joined,
        path.as_str(),
        "segments of {raw:?} do not rebuild it"
    );
    assert_eq!(path.segments().len(), path.depth());
    Some(path)
}
