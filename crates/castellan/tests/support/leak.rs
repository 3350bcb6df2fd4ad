//! Searches for a secret in text that reached an agent, a log or a file,
//! in the forms an upstream or a logger could write it.

// Each test binary compiles this module and uses only some of its items.
#![allow(dead_code)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// Returns the forms of `secret` that count as a leak: the value itself and
/// its base64 encodings. Percent-encoded forms are found by decoding the
/// text searched instead, which also catches mixed encodings.
pub fn secret_forms(secret: &str) -> Vec<String> {
    vec![
        secret.to_owned(),
        STANDARD.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
    ]
}

/// Returns a description of each place `secret` occurs in `text`, in any of
/// its forms, before or after percent-decoding and JSON unescaping.
pub fn find_secret(text: &str, secret: &str) -> Vec<String> {
    let decoded = percent_decode(text);
    let unescaped = text.replace("\\/", "/");
    let mut found = Vec::new();
    for form in secret_forms(secret) {
        for (view, haystack) in [
            ("as sent", text),
            ("percent-decoded", decoded.as_str()),
            ("JSON-unescaped", unescaped.as_str()),
        ] {
            if let Some(index) = haystack.find(&form) {
                found.push(format!(
                    "{view} at byte {index}: {}",
                    excerpt(haystack, index)
                ));
            }
        }
    }
    found
}

/// Panics unless `text`, described by `place`, is free of `secret`. The
/// message shows where the secret was found, masked.
pub fn assert_no_secret(text: &str, secret: &str, place: &str) {
    let found = find_secret(text, secret);
    assert!(
        found.is_empty(),
        "{place} contains the secret: {}",
        found.join("; ").replace(secret, "<SECRET>")
    );
}

/// Returns whether `needle` occurs in the bytes of `haystack`.
pub fn bytes_contain(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// Decodes `%XX` escapes and keeps everything else, including invalid
/// escapes, byte for byte.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escape = bytes
            .get(index + 1..index + 3)
            .filter(|_| bytes[index] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn excerpt(text: &str, index: usize) -> String {
    let mut start = index.saturating_sub(40);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (index + 80).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    format!("{:?}", &text[start..end])
}
