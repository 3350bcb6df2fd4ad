use castellan_vault::{open, rewrap, seal, MasterKey, SealedSecret, VaultError};

const NAME: &str = "github-token";
const VALUE: &[u8] = b"ghp_0123456789abcdefghijklmnopqrstuvwxyzAB";

fn sealed_sample(master: &MasterKey) -> SealedSecret {
    seal(master, NAME, 3, VALUE).expect("seal sample value")
}

fn assert_corrupted(result: Result<castellan_vault::SecretValue, VaultError>, case: &str) {
    match result {
        Err(VaultError::Corrupted { name, version }) => {
            assert_eq!(name, NAME, "{case}: error names the entry");
            assert!(
                version == 3 || version == 4,
                "{case}: error names the version"
            );
        }
        other => panic!("{case}: expected Corrupted, got {other:?}"),
    }
}

#[test]
fn seal_open_round_trip() {
    let master = MasterKey::generate();
    let values: [&[u8]; 4] = [VALUE, b"", &[0, 255, 128, 7], &[0x5a; 1 << 20]];
    for value in values {
        let sealed = seal(&master, NAME, 1, value).expect("seal");
        let opened = open(&master, &sealed).expect("open");
        assert_eq!(opened.expose(), value, "value of {} bytes", value.len());
        assert_eq!(opened.name(), NAME);
    }
}

#[test]
fn sealed_blobs_hide_the_value() {
    let master = MasterKey::generate();
    let sealed = sealed_sample(&master);
    let contains = |haystack: &[u8]| haystack.windows(VALUE.len()).any(|w| w == VALUE);
    assert!(!contains(&sealed.ciphertext));
    assert!(!contains(&sealed.wrapped_key));
}

#[test]
fn sealing_twice_gives_different_blobs() {
    let master = MasterKey::generate();
    let first = sealed_sample(&master);
    let second = sealed_sample(&master);
    assert_ne!(first.ciphertext, second.ciphertext);
    assert_ne!(first.wrapped_key, second.wrapped_key);
}

#[test]
fn blobs_start_with_format_byte() {
    let master = MasterKey::generate();
    let sealed = sealed_sample(&master);
    assert_eq!(sealed.wrapped_key[0], 1);
    assert_eq!(sealed.ciphertext[0], 1);
    // Format byte, 12-byte nonce, 32-byte data key, 16-byte tag.
    assert_eq!(sealed.wrapped_key.len(), 1 + 12 + 32 + 16);
    assert_eq!(sealed.ciphertext.len(), 1 + 12 + VALUE.len() + 16);
}

#[test]
fn open_rejects_moved_entry() {
    let master = MasterKey::generate();
    let sealed = sealed_sample(&master);
    let other = seal(&master, NAME, 4, b"another value").expect("seal other version");

    let renamed = SealedSecret {
        name: "github-token-2".to_owned(),
        ..sealed.clone()
    };
    let renumbered = SealedSecret {
        version: 4,
        ..sealed.clone()
    };
    let ciphertext_from_other_version = SealedSecret {
        ciphertext: other.ciphertext.clone(),
        ..sealed.clone()
    };
    let wrapped_key_from_other_version = SealedSecret {
        wrapped_key: other.wrapped_key.clone(),
        ..sealed.clone()
    };
    let layers_swapped = SealedSecret {
        wrapped_key: sealed.ciphertext.clone(),
        ciphertext: sealed.wrapped_key.clone(),
        ..sealed.clone()
    };

    match open(&master, &renamed) {
        Err(VaultError::Corrupted { name, version }) => {
            assert_eq!(name, "github-token-2");
            assert_eq!(version, 3);
        }
        other => panic!("renamed entry: expected Corrupted, got {other:?}"),
    }
    assert_corrupted(open(&master, &renumbered), "changed version");
    assert_corrupted(
        open(&master, &ciphertext_from_other_version),
        "ciphertext from another version",
    );
    assert_corrupted(
        open(&master, &wrapped_key_from_other_version),
        "wrapped key from another version",
    );
    assert_corrupted(open(&master, &layers_swapped), "layers swapped");
}

#[test]
fn open_rejects_any_flipped_byte() {
    let master = MasterKey::generate();
    let sealed = sealed_sample(&master);

    for index in 1..sealed.wrapped_key.len() {
        let mut tampered = sealed.clone();
        tampered.wrapped_key[index] ^= 0x01;
        assert_corrupted(open(&master, &tampered), &format!("wrapped_key[{index}]"));
    }
    for index in 1..sealed.ciphertext.len() {
        let mut tampered = sealed.clone();
        tampered.ciphertext[index] ^= 0x80;
        assert_corrupted(open(&master, &tampered), &format!("ciphertext[{index}]"));
    }
}

#[test]
fn open_rejects_unknown_format_byte() {
    let master = MasterKey::generate();
    let sealed = sealed_sample(&master);

    let mut wrapped = sealed.clone();
    wrapped.wrapped_key[0] = 2;
    let mut ciphertext = sealed.clone();
    ciphertext.ciphertext[0] = 0;

    for (case, tampered, expected) in [("wrapped key", wrapped, 2), ("ciphertext", ciphertext, 0)] {
        match open(&master, &tampered) {
            Err(VaultError::UnsupportedFormat { item, found }) => {
                assert_eq!(found, expected, "{case}");
                assert!(item.contains(NAME), "{case}: {item}");
            }
            other => panic!("{case}: expected UnsupportedFormat, got {other:?}"),
        }
    }
}

#[test]
fn open_rejects_truncated_blobs() {
    let master = MasterKey::generate();
    let sealed = sealed_sample(&master);
    for len in [0, 1, 12, 28, sealed.wrapped_key.len() - 1] {
        let mut tampered = sealed.clone();
        tampered.wrapped_key.truncate(len);
        assert_corrupted(
            open(&master, &tampered),
            &format!("wrapped_key cut to {len}"),
        );
    }
    for len in [0, 1, 12, 28, sealed.ciphertext.len() - 1] {
        let mut tampered = sealed.clone();
        tampered.ciphertext.truncate(len);
        assert_corrupted(
            open(&master, &tampered),
            &format!("ciphertext cut to {len}"),
        );
    }
}

#[test]
fn open_rejects_other_master_key() {
    let sealed = sealed_sample(&MasterKey::generate());
    assert_corrupted(open(&MasterKey::generate(), &sealed), "other master key");
}

#[test]
fn corrupted_message_names_entry_not_value() {
    let sealed = sealed_sample(&MasterKey::generate());
    let err = open(&MasterKey::generate(), &sealed).expect_err("other master key");
    let message = err.to_string();
    assert!(message.contains("\"github-token\" version 3"), "{message}");
    assert!(message.contains("master key"), "{message}");
    assert!(!message.contains("ghp_"), "{message}");
}

#[test]
fn rewrap_keeps_value_under_new_key() {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let sealed = sealed_sample(&old);

    let rewrapped = rewrap(&old, &new, &sealed).expect("rewrap");
    assert_eq!(rewrapped.name, sealed.name);
    assert_eq!(rewrapped.version, sealed.version);
    assert_eq!(rewrapped.ciphertext, sealed.ciphertext);
    assert_ne!(rewrapped.wrapped_key, sealed.wrapped_key);

    let opened = open(&new, &rewrapped).expect("open with new key");
    assert_eq!(opened.expose(), VALUE);
    assert_corrupted(open(&old, &rewrapped), "old key after rewrap");
}

#[test]
fn rewrap_rejects_wrong_old_key() {
    let sealed = sealed_sample(&MasterKey::generate());
    let result = rewrap(&MasterKey::generate(), &MasterKey::generate(), &sealed);
    assert!(
        matches!(result, Err(VaultError::Corrupted { .. })),
        "{result:?}"
    );
}

#[test]
fn rewrap_rejects_damaged_ciphertext() {
    let old = MasterKey::generate();
    let mut sealed = sealed_sample(&old);
    let last = sealed.ciphertext.len() - 1;
    sealed.ciphertext[last] ^= 0x01;
    let result = rewrap(&old, &MasterKey::generate(), &sealed);
    assert!(
        matches!(result, Err(VaultError::Corrupted { .. })),
        "{result:?}"
    );
}

#[test]
fn expose_str_checks_utf8() {
    let master = MasterKey::generate();
    let text = seal(&master, NAME, 1, "sk-ünïcode".as_bytes()).expect("seal text");
    let binary = seal(&master, "signing-key", 1, &[0xff, 0xfe, 0x00]).expect("seal binary");

    let opened_text = open(&master, &text).expect("open text");
    assert_eq!(opened_text.expose_str().expect("valid UTF-8"), "sk-ünïcode");

    let opened_binary = open(&master, &binary).expect("open binary");
    match opened_binary.expose_str() {
        Err(VaultError::NotUtf8 { name }) => assert_eq!(name, "signing-key"),
        other => panic!("expected NotUtf8, got {other:?}"),
    }
}

#[test]
fn sealed_secret_json_round_trip() {
    let master = MasterKey::generate();
    let sealed = sealed_sample(&master);
    let json = serde_json::to_string(&sealed).expect("serialize");
    let restored: SealedSecret = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(restored, sealed);
    assert_eq!(open(&master, &restored).expect("open").expose(), VALUE);
}
