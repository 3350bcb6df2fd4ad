//! Generic rules: high-entropy values assigned to secret-looking names, and
//! credentials in HTTP authorization headers.

use super::{rule, Builtin};

pub(super) const RULES: &[Builtin] = &[
    rule(
        "generic-secret",
        "High-entropy value assigned to a key, token, secret or password name",
        &["key", "token", "secret", "passw", "pwd", "credential"],
        r#"(?m)(?P<lead>^[ \t]*(?:export[ \t]+|-[ \t]+)?)?(?i:(?P<name>[A-Za-z0-9_.\-]{0,40}(?:key|token|secret|passwd|password|pwd|credentials?)[A-Za-z0-9_.\-]{0,40}))["'\]]?\s{0,3}(?:=|:=|:|=>|\|\|=)\s{0,3}(?P<quote>["'`]?)(?P<secret>[A-Za-z0-9+/_\-][A-Za-z0-9+/_\-.=~!@#%^&*?]{11,199})(?P<after>[^A-Za-z0-9+/_\-.=~!@#%^&*?]|$)"#,
    )
    .entropy(3.5)
    .generic()
    // The part of the regex from the keyword to the 12th character of the
    // secret: the name may start before the keyword, and the secret may
    // run longer, but every match contains this much. Its lazy DFA stays
    // small. The full regex, with a bounded name before the keyword and a
    // secret of up to 199 characters, searched the keyword lines of 105 MB
    // of crate sources at about 40 MB/s.
    .line_filter(
        r#"(?i:(?:key|token|secret|passwd|password|pwd|credentials?)[A-Za-z0-9_.\-]{0,40})["'\]]?\s{0,3}(?:=|:=|:|=>|\|\|=)\s{0,3}["'`]?[A-Za-z0-9+/_\-][A-Za-z0-9+/_\-.=~!@#%^&*?]{11}"#,
    ),
    rule(
        "authorization-bearer",
        "Bearer token in an Authorization header",
        &["bearer"],
        r#"(?i:authorization["']?\s{0,3}[:=]\s{0,3}["']?bearer)\s+(?P<secret>[A-Za-z0-9_\-.=~+/]{20,})"#,
    )
    .entropy(3.5),
    rule(
        "authorization-basic",
        "Basic credentials in an Authorization header",
        &["basic"],
        r#"(?i:authorization["']?\s{0,3}[:=]\s{0,3}["']?basic)\s+(?P<secret>[A-Za-z0-9+/]{12,}={0,2})"#,
    )
    .entropy(3.0),
];
