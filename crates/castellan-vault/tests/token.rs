use std::collections::HashSet;

use castellan_vault::token::TOKEN_LEN;
use castellan_vault::{
    looks_like_token, new_token_id, parse_token, AgentToken, PackedTokenId, TokenError, TokenHash,
};
use sha2::{Digest, Sha256};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Builds a token from a 40-character random part, encoding the checksum
/// independently of the crate.
fn token_with_random(random: &str) -> String {
    let body = format!("cst_{random}");
    let mut value = crc32fast::hash(body.as_bytes());
    let mut checksum = [b'0'; 6];
    for slot in checksum.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    format!("{body}{}", String::from_utf8_lossy(&checksum))
}

#[test]
fn generated_tokens_have_documented_format() {
    for _ in 0..100 {
        let token = AgentToken::generate();
        let text = token.expose();
        assert_eq!(text.len(), 50);
        assert_eq!(TOKEN_LEN, 50);
        assert!(text.starts_with("cst_"), "{text}");
        assert!(text[4..].bytes().all(|byte| byte.is_ascii_alphanumeric()));
        assert_eq!(text, token_with_random(&text[4..44]), "checksum encoding");
    }
}

#[test]
fn generated_tokens_parse() {
    for _ in 0..100 {
        let token = AgentToken::generate();
        let hash = parse_token(token.expose()).expect("generated token parses");
        assert_eq!(hash, token.hash());
    }
}

#[test]
fn handmade_token_parses() {
    let token = token_with_random(&"a".repeat(40));
    parse_token(&token).expect("independently encoded checksum");
}

#[test]
fn random_part_uses_whole_alphabet() {
    let mut seen = HashSet::new();
    for _ in 0..500 {
        seen.extend(AgentToken::generate().expose()[4..44].bytes());
    }
    assert_eq!(seen.len(), 62);
}

#[test]
fn generated_tokens_are_distinct() {
    let tokens: HashSet<String> = (0..1000)
        .map(|_| AgentToken::generate().expose().to_owned())
        .collect();
    assert_eq!(tokens.len(), 1000);
}

#[test]
fn checksum_catches_single_substitutions() {
    let token = AgentToken::generate();
    let original = token.expose().as_bytes();
    for position in 0..original.len() {
        for &replacement in BASE62.iter().chain(b"_-+/=. ") {
            if replacement == original[position] {
                continue;
            }
            let mut mutated = original.to_vec();
            mutated[position] = replacement;
            let mutated = String::from_utf8(mutated).expect("ASCII");

            let expected = if position < 4 {
                TokenError::MissingPrefix
            } else if !replacement.is_ascii_alphanumeric() {
                TokenError::InvalidCharacter { position }
            } else {
                TokenError::ChecksumMismatch
            };
            assert_eq!(
                parse_token(&mutated),
                Err(expected),
                "position {position} set to {:?}",
                char::from(replacement)
            );
        }
    }
}

#[test]
fn checksum_catches_adjacent_swaps() {
    for _ in 0..20 {
        let token = AgentToken::generate();
        let original = token.expose().as_bytes();
        for position in 4..original.len() - 1 {
            if original[position] == original[position + 1] {
                continue;
            }
            let mut mutated = original.to_vec();
            mutated.swap(position, position + 1);
            let mutated = String::from_utf8(mutated).expect("ASCII");
            assert_eq!(
                parse_token(&mutated),
                Err(TokenError::ChecksumMismatch),
                "swap at {position}"
            );
        }
    }
}

#[test]
fn parse_rejects_wrong_prefix_or_length() {
    let token = AgentToken::generate();
    let text = token.expose();
    let cases = [
        ("empty", String::new(), TokenError::MissingPrefix),
        (
            "prefix only",
            "cst_".to_owned(),
            TokenError::WrongLength { found: 4 },
        ),
        (
            "uppercase prefix",
            format!("CST_{}", &text[4..]),
            TokenError::MissingPrefix,
        ),
        (
            "other prefix",
            format!("ghp_{}", &text[4..]),
            TokenError::MissingPrefix,
        ),
        (
            "bearer scheme",
            format!("Bearer {text}"),
            TokenError::MissingPrefix,
        ),
        (
            "leading space",
            format!(" {text}"),
            TokenError::MissingPrefix,
        ),
        (
            "trailing newline",
            format!("{text}\n"),
            TokenError::WrongLength { found: 51 },
        ),
        (
            "one char short",
            text[..49].to_owned(),
            TokenError::WrongLength { found: 49 },
        ),
        (
            "one char extra",
            format!("{text}a"),
            TokenError::WrongLength { found: 51 },
        ),
        (
            "multibyte character",
            format!("cst_é{}", &text[6..]),
            TokenError::InvalidCharacter { position: 4 },
        ),
    ];
    for (case, candidate, expected) in cases {
        assert_eq!(parse_token(&candidate), Err(expected), "{case}");
    }
}

#[test]
fn token_errors_never_quote_candidate() {
    let token = AgentToken::generate();
    let mut typo = token.expose().as_bytes().to_vec();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ASCII");

    for candidate in [typo.as_str(), &token.expose()[..49]] {
        let message = parse_token(candidate).expect_err("invalid").to_string();
        assert!(!message.contains(&candidate[4..20]), "{message}");
    }
}

#[test]
fn hash_is_sha256_of_whole_token() {
    let token = AgentToken::generate();
    let expected: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
    assert_eq!(token.hash().as_bytes(), &expected);
}

#[test]
fn hashes_equal_only_for_same_token() {
    let first = AgentToken::generate();
    let second = AgentToken::generate();
    let first_hash = parse_token(first.expose()).expect("parse");
    assert_eq!(
        first_hash,
        parse_token(first.expose()).expect("parse again")
    );
    assert_ne!(
        first_hash,
        parse_token(second.expose()).expect("parse other")
    );
}

#[test]
fn hash_hex_round_trip() {
    let hash = AgentToken::generate().hash();
    let hex = hash.to_hex();
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()));
    assert_eq!(TokenHash::from_hex(&hex), Ok(hash));
    assert_eq!(TokenHash::from_hex(&hex.to_uppercase()), Ok(hash));
}

#[test]
fn hash_from_hex_rejects_invalid() {
    let hex = AgentToken::generate().hash().to_hex();
    let cases = [
        ("empty", String::new()),
        ("short", hex[..62].to_owned()),
        ("long", format!("{hex}00")),
        ("plus sign", format!("+f{}", &hex[2..])),
        ("non-hex", format!("zz{}", &hex[2..])),
        ("multibyte", format!("é{}", &hex[2..])),
    ];
    for (case, candidate) in cases {
        assert_eq!(
            TokenHash::from_hex(&candidate),
            Err(TokenError::InvalidHashHex),
            "{case}"
        );
    }
}

#[test]
fn token_id_has_public_format() {
    let ids: HashSet<String> = (0..100).map(|_| new_token_id()).collect();
    assert_eq!(ids.len(), 100);
    for id in &ids {
        assert_eq!(id.len(), 16, "{id}");
        assert!(id.starts_with("tok_"), "{id}");
        assert!(
            id[4..].bytes().all(|byte| byte.is_ascii_alphanumeric()),
            "{id}"
        );
        assert!(!looks_like_token(id), "{id}");
    }
}

#[test]
fn looks_like_token_checks_prefix_and_length() {
    let token = AgentToken::generate();
    let text = token.expose();
    let cases = [
        (text.to_owned(), true),
        (format!("cst_{}", "!".repeat(46)), true),
        (text[..49].to_owned(), false),
        (format!("{text}a"), false),
        (format!("xst_{}", &text[4..]), false),
        (String::new(), false),
    ];
    for (candidate, expected) in cases {
        assert_eq!(looks_like_token(&candidate), expected, "{candidate:?}");
    }
}

#[test]
fn generated_ids_pack_and_unpack() {
    let mut ids: Vec<String> = (0..1_000).map(|_| new_token_id()).collect();
    ids.push("tok_000000000000".to_string());
    ids.push("tok_zzzzzzzzzzzz".to_string());
    ids.push("tok_0123456789Az".to_string());
    let mut packed = HashSet::new();
    for id in &ids {
        let packed_id = PackedTokenId::pack(id).expect("a generated id packs");
        assert_eq!(packed_id.unpack().as_slice(), id.as_bytes(), "{id}");
        packed.insert(packed_id.unpack());
    }
    // Distinct ids stay distinct once packed.
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(packed.len(), distinct.len());
}

#[test]
fn other_ids_not_packed() {
    let cases = [
        ("empty", ""),
        ("prefix only", "tok_"),
        ("one character short", "tok_0123456789A"),
        ("one character long", "tok_0123456789Abc"),
        ("other prefix", "key_0123456789Ab"),
        ("upper-case prefix", "TOK_0123456789Ab"),
        ("not base62", "tok_0123456789A-"),
        ("multibyte", "tok_0123456789é"),
        ("free text", "imported from the previous gateway"),
    ];
    for (case, id) in cases {
        assert_eq!(PackedTokenId::pack(id), None, "{case}");
    }
}
