//! Fuzz check for agent token parsing: any input is accepted only when it
//! has the token shape, and errors never repeat the candidate.

use castellan_vault::{looks_like_token, parse_token, TokenHash};

/// Feeds `data` to the token parser and checks what comes back.
pub fn check_token(data: &[u8]) {
    let Ok(candidate) = std::str::from_utf8(data) else {
        return;
    };
    match parse_token(candidate) {
        Ok(hash) => {
            assert!(looks_like_token(candidate), "accepted {candidate:?}");
            let hex = hash.to_hex();
            assert_eq!(
                TokenHash::from_hex(&hex).map(|h| h.to_hex()).ok(),
                Some(hex)
            );
        }
        Err(error) => {
            // A rejected candidate may be a real token with a typo, so it is
            // a secret that must not reach logs through the message.
            let message = error.to_string();
            if candidate.starts_with("cst_") && candidate.len() >= 8 {
                assert!(!message.contains(candidate), "error repeats the candidate");
            }
        }
    }
}
