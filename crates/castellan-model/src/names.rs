//! Rules for the names of connections, roles, agents and secrets.

/// Maximum length of any declared name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a declared name: lowercase ASCII letters, digits, `-` and `_`,
/// starting with a letter or digit.
///
/// Names appear in URL paths (connections), policy identifiers and audit
/// records, so one spelling per object keeps `Blog` and `blog` from being
/// two connections that an operator reads as one.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the name is {} characters long, the maximum is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    let mut invalid: Vec<char> = name
        .chars()
        .filter(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        .collect();
    invalid.dedup();
    if !invalid.is_empty() {
        let listed: Vec<String> = invalid.iter().map(|c| format!("{c:?}")).collect();
        return Err(format!(
            "the name contains {}; use lowercase letters, digits, '-' or '_'",
            listed.join(", ")
        ));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("the name must start with a lowercase letter or a digit".into());
    }
    Ok(())
}

/// Returns the candidate closest to `unknown`, if one is close enough to be a
/// likely typo.
pub fn closest<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        for good in ["blog", "marketing-bot", "a1", "open_ai", "9lives"] {
            assert!(check_name(good).is_ok(), "{good} should be accepted");
        }
        for bad in ["", "Blog", "-x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn closest_finds_typos_only() {
        let names = ["marketing", "support", "ops"];
        assert_eq!(closest("marketng", names), Some("marketing"));
        assert_eq!(closest("opz", names), Some("ops"));
        assert_eq!(closest("finance", names), None);
    }
}
