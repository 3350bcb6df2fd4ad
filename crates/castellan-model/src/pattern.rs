//! Path patterns in role rules: `*` matches one segment, `**` any depth.

use std::fmt;

use crate::path::{canonicalize_segment, check_raw_bytes, fold_case, NormalizedPath, PathError};

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A segment that must equal this canonical text.
    Literal(String),
    /// `*`: exactly one non-empty segment.
    Any,
    /// A segment with `*` inside, such as `*.json`: the literal parts in
    /// order, with any text in between but never a `/`.
    Glob(Vec<String>),
    /// `**`: zero or more segments.
    AnyDepth,
}

/// A compiled path pattern such as `/posts/*/comments` or `/v1/**`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
}

/// Error in a path pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a path pattern must start with '/'")]
    NotAbsolute,
    #[error("a path pattern may contain '**' only once")]
    RepeatedAnyDepth,
    #[error("'**' must be a whole segment, as in '/v1/**'")]
    PartialAnyDepth,
    #[error("a path pattern has no query part; remove '?'")]
    Query,
    #[error("{0}")]
    Path(#[from] PathError),
}

impl PathPattern {
    /// Parses a pattern, canonicalizing its literal text exactly as request
    /// paths are canonicalized so that `%7E` in a pattern matches `~`.
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        if !source.starts_with('/') {
            return Err(PatternError::NotAbsolute);
        }
        if source.contains('?') {
            return Err(PatternError::Query);
        }
        check_raw_bytes(source)?;
        let mut segments = Vec::new();
        let pieces: Vec<&str> = source[1..].split('/').collect();
        let last = pieces.len() - 1;
        for (index, piece) in pieces.iter().enumerate() {
            if piece.is_empty() && index != last {
                continue;
            }
            segments.push(parse_segment(piece, source)?);
        }
        if segments.is_empty() {
            segments.push(Segment::Literal(String::new()));
        }
        let any_depth = segments
            .iter()
            .filter(|segment| **segment == Segment::AnyDepth)
            .count();
        if any_depth > 1 {
            return Err(PatternError::RepeatedAnyDepth);
        }
        Ok(PathPattern {
            source: source.to_string(),
            segments,
        })
    }

    /// Returns the pattern with its literal text in lower case, for
    /// connections that match paths case-insensitively; see
    /// [`NormalizedPath::case_folded`].
    pub fn case_folded(self) -> Result<Self, PatternError> {
        let segments = self
            .segments
            .into_iter()
            .map(|segment| match segment {
                Segment::Literal(text) => Ok(Segment::Literal(fold_case(&text)?)),
                Segment::Glob(parts) => Ok(Segment::Glob(
                    parts
                        .iter()
                        .map(|part| fold_case(part))
                        .collect::<Result<_, _>>()?,
                )),
                other => Ok(other),
            })
            .collect::<Result<_, PathError>>()?;
        Ok(PathPattern {
            source: self.source,
            segments,
        })
    }

    /// Returns the pattern as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Splits the pattern around its `**`: the segments before it and after
    /// it, or `None` when the pattern has a fixed depth.
    pub fn split_any_depth(&self) -> Option<(&[Segment], &[Segment])> {
        let position = self
            .segments
            .iter()
            .position(|segment| *segment == Segment::AnyDepth)?;
        Some((&self.segments[..position], &self.segments[position + 1..]))
    }

    /// Tells whether `path` matches this pattern.
    ///
    /// This is the reference semantics; the policy engine compiles the same
    /// pattern to Cedar and its tests check both agree.
    pub fn matches(&self, path: &NormalizedPath) -> bool {
        let actual: Vec<&str> = path.segments().collect();
        match self.split_any_depth() {
            None => {
                actual.len() == self.segments.len()
                    && self
                        .segments
                        .iter()
                        .zip(&actual)
                        .all(|(pattern, segment)| pattern.matches(segment))
            }
            Some((prefix, suffix)) => {
                actual.len() >= prefix.len() + suffix.len()
                    && prefix
                        .iter()
                        .zip(&actual)
                        .all(|(pattern, segment)| pattern.matches(segment))
                    && suffix
                        .iter()
                        .rev()
                        .zip(actual.iter().rev())
                        .all(|(pattern, segment)| pattern.matches(segment))
            }
        }
    }
}

impl Segment {
    /// Tells whether one path segment matches this (non-`**`) segment.
    pub fn matches(&self, segment: &str) -> bool {
        match self {
            Segment::Literal(text) => text == segment,
            Segment::Any => !segment.is_empty(),
            Segment::Glob(parts) => glob_matches(parts, segment),
            Segment::AnyDepth => true,
        }
    }
}

fn glob_matches(parts: &[String], segment: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return true;
    };
    let Some(mut remaining) = segment.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part.as_str()) {
            Some(found) => remaining = &remaining[found + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last.as_str())
}

fn parse_segment(piece: &str, whole: &str) -> Result<Segment, PatternError> {
    match piece {
        "**" => return Ok(Segment::AnyDepth),
        "*" => return Ok(Segment::Any),
        _ => {}
    }
    if piece.contains("**") {
        return Err(PatternError::PartialAnyDepth);
    }
    let mut parts = Vec::new();
    for part in piece.split('*') {
        let mut canonical = String::new();
        canonicalize_segment(part, whole, &mut canonical)?;
        parts.push(canonical);
    }
    if parts.len() == 1 {
        let literal = parts.remove(0);
        if literal == "." || literal == ".." {
            return Err(PathError::DotSegment.into());
        }
        return Ok(Segment::Literal(literal));
    }
    Ok(Segment::Glob(parts))
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> NormalizedPath {
        NormalizedPath::parse(raw).expect("test path is valid")
    }

    #[test]
    fn pattern_matching_table() {
        let cases = [
            ("/posts/**", "/posts", true),
            ("/posts/**", "/posts/", true),
            ("/posts/**", "/posts/1/comments", true),
            ("/posts/**", "/postsx", false),
            ("/posts/**", "/", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
            ("/", "/", true),
            ("/", "/a", false),
            ("/posts/*", "/posts/1", true),
            ("/posts/*", "/posts/", false),
            ("/posts/*", "/posts/1/2", false),
            ("/posts/*/comments", "/posts/7/comments", true),
            ("/posts/*/comments", "/posts/7/8/comments", false),
            ("/*/x/**", "/a/b/x/c", false),
            ("/*/x/**", "/a/x/c", true),
            ("/a/**/b", "/a/b", true),
            ("/a/**/b", "/a/1/2/b", true),
            ("/a/**/b", "/a", false),
            ("/a/**/b", "/a/b/c", false),
            ("/files/*.json", "/files/x.json", true),
            ("/files/*.json", "/files/x.jsonl", false),
            ("/files/*.json", "/files/a/x.json", false),
            ("/v1/*:generate", "/v1/gemini:generate", true),
            ("/%7Euser", "/~user", true),
            ("/a%20b", "/a%20b", true),
        ];
        for (pattern, raw, expected) in cases {
            let compiled = PathPattern::parse(pattern).expect(pattern);
            assert_eq!(compiled.matches(&path(raw)), expected, "{pattern} vs {raw}");
        }
    }

    #[test]
    fn invalid_patterns_rejected() {
        let cases = [
            ("posts", PatternError::NotAbsolute),
            ("/a/**/b/**", PatternError::RepeatedAnyDepth),
            ("/a**", PatternError::PartialAnyDepth),
            ("/a?x=1", PatternError::Query),
            ("/a/../b", PatternError::Path(PathError::DotSegment)),
            (
                "/a%2Fb",
                PatternError::Path(PathError::AmbiguousEscape("'/' (%2F)")),
            ),
        ];
        for (pattern, expected) in cases {
            assert_eq!(PathPattern::parse(pattern), Err(expected), "{pattern}");
        }
    }
}
