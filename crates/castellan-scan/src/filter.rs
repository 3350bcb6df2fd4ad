//! Placeholder and look-alike filters that keep documentation examples,
//! templates and ids out of the findings.

/// Words that mark a value as an example or a template, matched
/// case-insensitively anywhere in the value.
const PLACEHOLDER_WORDS: &[&str] = &[
    "example",
    "placeholder",
    "your_",
    "your-",
    "yourkey",
    "yourtoken",
    "xxxx",
    "changeme",
    "change_me",
    "dummy",
    "sample",
    "redacted",
    "replace",
    "insert",
    "notreal",
    "not_a_real",
    "not-a-real",
    "todo",
    "<",
    ">",
    "${",
    "{{",
    "$(",
    "%(",
    "%s",
];

/// Values that are the conventional stand-in for a password rather than one.
const STOP_VALUES: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "secret",
    "pwd",
    "token",
    "test",
    "admin",
    "root",
    "user",
    "username",
    "none",
    "null",
    "undefined",
    "true",
    "false",
    "empty",
];

/// Returns whether `secret` is an example, template or filler value.
pub(crate) fn is_placeholder(secret: &[u8]) -> bool {
    let lower = secret.to_ascii_lowercase();
    if STOP_VALUES.iter().any(|word| lower == word.as_bytes()) {
        return true;
    }
    if PLACEHOLDER_WORDS
        .iter()
        .any(|word| contains(&lower, word.as_bytes()))
    {
        return true;
    }
    is_single_character(secret) || has_long_sequence(&lower)
}

/// Returns whether `value` is a UUID (8-4-4-4-12 hex digits).
pub(crate) fn is_uuid(value: &[u8]) -> bool {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut parts = value.split(|&byte| byte == b'-');
    GROUPS.iter().all(|&len| {
        parts
            .next()
            .is_some_and(|part| part.len() == len && part.iter().all(u8::is_ascii_hexdigit))
    }) && parts.next().is_none()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn is_single_character(secret: &[u8]) -> bool {
    secret.iter().all(|&byte| Some(&byte) == secret.first())
}

/// Detects runs such as `abcdefgh` or `12345678`, which random keys almost
/// never contain and hand-typed fillers often do.
fn has_long_sequence(lower: &[u8]) -> bool {
    const RUN: usize = 8;
    let mut run = 1;
    for pair in lower.windows(2) {
        if pair[0].is_ascii_alphanumeric() && pair[1] == pair[0].wrapping_add(1) {
            run += 1;
            if run >= RUN {
                return true;
            }
        } else {
            run = 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognized() {
        let cases: [(&str, bool); 10] = [
            ("AKIAIOSFODNN7EXAMPLE", true),
            ("${DATABASE_PASSWORD}", true),
            ("{{ secrets.token }}", true),
            ("<your-api-key>", true),
            ("xxxxxxxxxxxxxxxx", true),
            ("0123456789abcdefQ", true),
            ("password", true),
            ("Password", true),
            ("q8Vd2LmX0pRt7WzK", false),
            ("hunter2-Qx9", false),
        ];
        for (value, expected) in cases {
            assert_eq!(is_placeholder(value.as_bytes()), expected, "{value}");
        }
    }

    #[test]
    fn uuid_shape_is_recognized() {
        let cases = [
            ("123e4567-e89b-12d3-a456-426614174000", true),
            ("123E4567-E89B-12D3-A456-426614174000", true),
            ("123e4567-e89b-12d3-a456-42661417400", false),
            ("123e4567e89b12d3a456426614174000", false),
            ("123e4567-e89b-12d3-a456-426614174000-1", false),
        ];
        for (value, expected) in cases {
            assert_eq!(is_uuid(value.as_bytes()), expected, "{value}");
        }
    }
}
