use castellan_model::{NormalizedPath, PathPattern};
use proptest::prelude::*;

/// Raw paths built from pieces that exercise every normalization rule.
fn raw_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("a".to_string()),
        Just("B".to_string()),
        Just("%41".to_string()),
        Just("%7e".to_string()),
        Just("%2F".to_string()),
        Just("%2e".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%20".to_string()),
        Just("%zz".to_string()),
        Just("%C3%A9".to_string()),
        Just("%C3".to_string()),
        Just(";x".to_string()),
        Just("\\".to_string()),
        Just("".to_string()),
        Just(":".to_string()),
        Just("~".to_string()),
    ];
    proptest::collection::vec(proptest::collection::vec(piece, 0..3), 0..6).prop_map(|segments| {
        segments
            .into_iter()
            .map(|parts| format!("/{}", parts.concat()))
            .collect::<String>()
    })
}

proptest! {
    #[test]
    fn normalization_is_idempotent(raw in raw_path()) {
        if let Ok(once) = NormalizedPath::parse(&raw) {
            let twice = NormalizedPath::parse(once.as_str()).expect("canonical form parses");
            prop_assert_eq!(once.as_str(), twice.as_str());
            prop_assert_eq!(once.depth(), twice.depth());
        }
    }

    #[test]
    fn canonical_paths_have_no_dot_segments(raw in raw_path()) {
        if let Ok(path) = NormalizedPath::parse(&raw) {
            for segment in path.segments() {
                prop_assert!(segment != "." && segment != "..");
                prop_assert!(!segment.to_ascii_uppercase().contains("%2F"));
                prop_assert!(!segment.to_ascii_uppercase().contains("%2E"));
            }
        }
    }

    #[test]
    fn patterns_match_their_own_literal_paths(raw in raw_path()) {
        if let Ok(path) = NormalizedPath::parse(&raw) {
            let pattern = PathPattern::parse(path.as_str()).expect("canonical paths are patterns");
            prop_assert!(pattern.matches(&path));
        }
    }
}

/// Swaps the case of every ASCII letter outside `%XX` escapes.
fn swap_case(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut escape = 0;
    for c in raw.chars() {
        if c == '%' {
            escape = 2;
            out.push(c);
        } else if escape > 0 {
            escape -= 1;
            out.push(c);
        } else if c.is_ascii_lowercase() {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

proptest! {
    /// On a case-insensitive connection, changing the case of a request
    /// path never changes which folded patterns match it.
    #[test]
    fn case_tricks_do_not_change_matches(raw in raw_path(), pattern in raw_path()) {
        let (Ok(path), Ok(pattern)) = (NormalizedPath::parse(&raw), PathPattern::parse(&pattern))
        else {
            return Ok(());
        };
        let Ok(pattern) = pattern.case_folded() else {
            return Ok(());
        };
        let swapped = NormalizedPath::parse(&swap_case(&raw)).expect("case does not change validity");
        match (path.case_folded(), swapped.case_folded()) {
            (Ok(folded), Ok(swapped)) => {
                prop_assert_eq!(folded.as_str(), swapped.as_str());
                prop_assert_eq!(pattern.matches(&folded), pattern.matches(&swapped));
                let again = folded.case_folded().expect("folded paths fold");
                prop_assert_eq!(again.as_str(), folded.as_str());
            }
            (Err(_), Err(_)) => {}
            (one, other) => prop_assert!(false, "{one:?} but {other:?}"),
        }
    }
}
