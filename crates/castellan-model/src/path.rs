//! Request path normalization.
//!
//! The policy decides on the path the upstream will receive, so the gateway
//! normalizes each request path once, authorizes the result and forwards
//! exactly that string. Anything that two servers could read two ways is
//! rejected instead of guessed:
//!
//! 1. `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!    decoded, every other escape is kept with upper-case hex digits.
//! 2. Escaped `/`, `\`, control bytes and escapes that do not decode to
//!    valid UTF-8 are rejected, as are raw backslashes, control bytes,
//!    non-ASCII bytes and `;` path parameters.
//! 3. `.` and `..` segments, escaped or not, are rejected.
//! 4. Empty segments (`//`) collapse; a trailing slash is kept because
//!    many APIs tell `/items` from `/items/`.

use std::fmt;

/// A request path in canonical form, split into segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalizedPath {
    canonical: String,
    /// Byte ranges of each segment in `canonical`, without the slashes.
    segments: Vec<(usize, usize)>,
}

/// Reason a request path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("the path contains a control or non-ASCII byte 0x{0:02X}; percent-encode it")]
    InvalidByte(u8),
    #[error("the path contains a backslash, which servers disagree on; use '/'")]
    Backslash,
    #[error("the path contains ';' path parameters, which servers disagree on")]
    PathParameter,
    #[error("the path contains '#', which never belongs in a request path")]
    Fragment,
    #[error("the path contains an invalid percent escape at byte {0}; write '%' as '%25'")]
    InvalidEscape(usize),
    #[error("the path contains an encoded {0}, which servers disagree on")]
    AmbiguousEscape(&'static str),
    #[error("the path has a segment whose escapes are not valid UTF-8")]
    InvalidUtf8,
    #[error("the path contains a '.' or '..' segment; send the resolved path")]
    DotSegment,
    #[error("the path has {0} segments, the maximum is {MAX_SEGMENTS}")]
    TooDeep(usize),
    #[error("the path contains an escaped non-ASCII character, which a case-insensitive upstream may fold in ways Castellan cannot check; use ASCII")]
    FoldedNonAscii,
}

/// Maximum number of segments in a request path.
pub const MAX_SEGMENTS: usize = 64;

impl NormalizedPath {
    /// Normalizes `raw`, the path part of a request target (no query).
    ///
    /// An empty path means `/`.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.is_empty() {
            return Ok(NormalizedPath {
                canonical: "/".into(),
                segments: vec![(1, 1)],
            });
        }
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        check_raw_bytes(raw)?;

        let mut canonical = String::with_capacity(raw.len());
        let mut segments = Vec::new();
        let pieces: Vec<&str> = raw[1..].split('/').collect();
        let last = pieces.len() - 1;
        for (index, piece) in pieces.iter().enumerate() {
            // Collapse `//`, but keep the empty last segment of a trailing slash.
            if piece.is_empty() && index != last {
                continue;
            }
            canonical.push('/');
            let start = canonical.len();
            canonicalize_segment(piece, raw, &mut canonical)?;
            let segment = &canonical[start..];
            if segment == "." || segment == ".." {
                return Err(PathError::DotSegment);
            }
            segments.push((start, canonical.len()));
        }
        if segments.is_empty() {
            canonical.push('/');
            segments.push((1, 1));
        }
        // A trailing slash after collapsed empties, as in `/a//`, leaves one
        // empty last segment, which is what we want.
        if segments.len() > MAX_SEGMENTS {
            return Err(PathError::TooDeep(segments.len()));
        }
        Ok(NormalizedPath {
            canonical,
            segments,
        })
    }

    /// Returns the canonical path, starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// Returns the segments in order; the root path `/` has one empty segment.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &str> + DoubleEndedIterator + '_ {
        self.segments
            .iter()
            .map(|(start, end)| &self.canonical[*start..*end])
    }

    /// Returns the number of segments.
    pub fn depth(&self) -> usize {
        self.segments.len()
    }

    /// Returns the path with ASCII letters in lower case, the canonical form
    /// on connections whose upstream ignores case. Escapes keep upper-case
    /// hex digits. Escaped non-ASCII characters are rejected: upstreams fold
    /// their case by rules Castellan cannot know.
    pub fn case_folded(&self) -> Result<NormalizedPath, PathError> {
        Ok(NormalizedPath {
            canonical: fold_case(&self.canonical)?,
            segments: self.segments.clone(),
        })
    }

    /// Returns segment `index` counted from the start.
    pub fn segment(&self, index: usize) -> Option<&str> {
        self.segments
            .get(index)
            .map(|(start, end)| &self.canonical[*start..*end])
    }
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

pub(crate) fn check_raw_bytes(raw: &str) -> Result<(), PathError> {
    for byte in raw.bytes() {
        match byte {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            b'#' => return Err(PathError::Fragment),
            0x00..=0x20 | 0x7F..=0xFF => return Err(PathError::InvalidByte(byte)),
            _ => {}
        }
    }
    Ok(())
}

/// Lower-cases the ASCII letters of canonical path text, leaving the hex
/// digits of `%XX` escapes as they are. The result has the same length, so
/// segment offsets stay valid.
pub(crate) fn fold_case(canonical: &str) -> Result<String, PathError> {
    let bytes = canonical.as_bytes();
    let mut folded = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let escape = &canonical[i..i + 3];
            if bytes[i + 1] >= b'8' {
                return Err(PathError::FoldedNonAscii);
            }
            folded.push_str(escape);
            i += 3;
            continue;
        }
        folded.push(bytes[i].to_ascii_lowercase() as char);
        i += 1;
    }
    Ok(folded)
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Appends the canonical form of one raw segment to `out`.
///
/// `whole` is the full raw path, used only to report escape offsets.
pub(crate) fn canonicalize_segment(
    piece: &str,
    whole: &str,
    out: &mut String,
) -> Result<(), PathError> {
    let bytes = piece.as_bytes();
    let offset = piece.as_ptr() as usize - whole.as_ptr() as usize;
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'%' {
            out.push(byte as char);
            decoded.push(byte);
            i += 1;
            continue;
        }
        let (Some(high), Some(low)) = (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::InvalidEscape(offset + i));
        };
        let value = high << 4 | low;
        match value {
            b'/' => return Err(PathError::AmbiguousEscape("'/' (%2F)")),
            b'\\' => return Err(PathError::AmbiguousEscape("backslash (%5C)")),
            0x00..=0x1F | 0x7F => return Err(PathError::AmbiguousEscape("control byte")),
            _ if is_unreserved(value) => out.push(value as char),
            _ => {
                out.push('%');
                out.push(
                    char::from_digit(u32::from(high), 16).map_or('0', |c| c.to_ascii_uppercase()),
                );
                out.push(
                    char::from_digit(u32::from(low), 16).map_or('0', |c| c.to_ascii_uppercase()),
                );
            }
        }
        decoded.push(value);
        i += 3;
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let cases = [
            ("", "/"),
            ("/", "/"),
            ("/posts", "/posts"),
            ("/posts/", "/posts/"),
            ("//posts///1", "/posts/1"),
            ("/posts//", "/posts/"),
            ("/%70osts/%7e", "/posts/~"),
            ("/a%2fb%20c", "ERR"),
            ("/a%20b", "/a%20b"),
            ("/a%3bb", "/a%3Bb"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            (
                "/v1/models/gemini:generateContent",
                "/v1/models/gemini:generateContent",
            ),
        ];
        for (raw, expected) in cases {
            let result = NormalizedPath::parse(raw);
            if expected == "ERR" {
                assert!(result.is_err(), "{raw} should be rejected");
            } else {
                assert_eq!(result.expect(raw).as_str(), expected, "{raw}");
            }
        }
    }

    #[test]
    fn ambiguous_paths_rejected() {
        let cases = [
            ("posts", PathError::NotAbsolute),
            ("/a/../admin", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/a/%2e%2E/b", PathError::DotSegment),
            ("/a/%2E", PathError::DotSegment),
            ("/a%2Fb", PathError::AmbiguousEscape("'/' (%2F)")),
            ("/a%5cb", PathError::AmbiguousEscape("backslash (%5C)")),
            ("/a\\b", PathError::Backslash),
            ("/a%00", PathError::AmbiguousEscape("control byte")),
            ("/a\u{1}", PathError::InvalidByte(1)),
            ("/admin;x=1", PathError::PathParameter),
            ("/a%zz", PathError::InvalidEscape(2)),
            ("/a%4", PathError::InvalidEscape(2)),
            ("/%C0%AF", PathError::InvalidUtf8),
            ("/%FF", PathError::InvalidUtf8),
            ("/a#b", PathError::Fragment),
        ];
        for (raw, expected) in cases {
            assert_eq!(NormalizedPath::parse(raw), Err(expected), "{raw}");
        }
    }

    #[test]
    fn segments_and_depth() {
        let path = NormalizedPath::parse("/v1/chat/completions").expect("valid");
        assert_eq!(path.depth(), 3);
        assert_eq!(
            path.segments().collect::<Vec<_>>(),
            ["v1", "chat", "completions"]
        );
        assert_eq!(path.segment(2), Some("completions"));
        let root = NormalizedPath::parse("/").expect("valid");
        assert_eq!(root.segments().collect::<Vec<_>>(), [""]);
        let trailing = NormalizedPath::parse("/items/").expect("valid");
        assert_eq!(trailing.segments().collect::<Vec<_>>(), ["items", ""]);
    }

    #[test]
    fn case_folding_keeps_escapes() {
        let cases = [
            ("/Admin/Users", Ok("/admin/users")),
            ("/%41DMIN", Ok("/admin")),
            ("/a%3bB", Ok("/a%3Bb")),
            ("/a%7CZ", Ok("/a%7Cz")),
            ("/caf%C3%A9", Err(PathError::FoldedNonAscii)),
        ];
        for (raw, expected) in cases {
            let path = NormalizedPath::parse(raw).expect(raw);
            let folded = path.case_folded();
            assert_eq!(
                folded
                    .as_ref()
                    .map(NormalizedPath::as_str)
                    .map_err(Clone::clone),
                expected,
                "{raw}"
            );
            if let Ok(folded) = folded {
                assert_eq!(folded.depth(), path.depth());
                let again = folded.case_folded().expect("folded paths fold");
                assert_eq!(again, folded, "idempotent");
            }
        }
    }

    #[test]
    fn deep_paths_rejected() {
        let raw = "/a".repeat(MAX_SEGMENTS + 1);
        assert_eq!(
            NormalizedPath::parse(&raw),
            Err(PathError::TooDeep(MAX_SEGMENTS + 1))
        );
    }
}
