use castellan_vault::master::SALT_LEN;
use castellan_vault::{KdfParams, KeyCheck, MasterKey, VaultError};
use secrecy::SecretString;

/// Returns parameters with small costs to keep the tests fast. The test
/// `recommended_params_follow_owasp` covers the real costs.
fn fast_params(salt: u8) -> KdfParams {
    KdfParams {
        salt: vec![salt; SALT_LEN],
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    }
}

fn passphrase(text: &str) -> SecretString {
    SecretString::from(text)
}

fn same_key(first: &MasterKey, second: &MasterKey) -> bool {
    first.verify(&second.key_check()).is_ok()
}

#[test]
fn derive_is_deterministic_for_same_salt() {
    let params = fast_params(1);
    let first = MasterKey::derive(&passphrase("correct horse"), &params).expect("derive");
    let second = MasterKey::derive(&passphrase("correct horse"), &params).expect("derive");
    assert!(same_key(&first, &second));
}

#[test]
fn derive_differs_for_other_inputs() {
    let base = MasterKey::derive(&passphrase("correct horse"), &fast_params(1)).expect("derive");
    let other_salt =
        MasterKey::derive(&passphrase("correct horse"), &fast_params(2)).expect("derive");
    let other_passphrase =
        MasterKey::derive(&passphrase("correct horsE"), &fast_params(1)).expect("derive");
    let other_cost = MasterKey::derive(
        &passphrase("correct horse"),
        &KdfParams {
            t_cost: 2,
            ..fast_params(1)
        },
    )
    .expect("derive");

    assert!(!same_key(&base, &other_salt), "other salt");
    assert!(!same_key(&base, &other_passphrase), "other passphrase");
    assert!(!same_key(&base, &other_cost), "other time cost");
}

#[test]
fn recommended_params_follow_owasp() {
    let params = KdfParams::recommended();
    assert_eq!(params.m_cost, 19_456);
    assert_eq!(params.t_cost, 2);
    assert_eq!(params.p_cost, 1);
    assert_eq!(params.salt.len(), 16);
    assert_ne!(params.salt, KdfParams::recommended().salt, "salt is random");

    let key = MasterKey::derive(&passphrase("correct horse"), &params).expect("derive");
    let again = MasterKey::derive(&passphrase("correct horse"), &params).expect("derive");
    assert!(same_key(&key, &again));
}

#[test]
fn kdf_params_json_round_trip() {
    let params = KdfParams::recommended();
    let json = serde_json::to_string(&params).expect("serialize");
    assert!(json.contains("\"m_cost\":19456"), "{json}");
    let restored: KdfParams = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(restored, params);
}

#[test]
fn derive_rejects_bad_inputs() {
    let cases = [
        (
            "empty passphrase",
            "",
            fast_params(1),
            "passphrase is empty",
        ),
        (
            "short salt",
            "pass",
            KdfParams {
                salt: vec![0; 8],
                ..fast_params(1)
            },
            "salt is 8 bytes long",
        ),
        (
            "zero time cost",
            "pass",
            KdfParams {
                t_cost: 0,
                ..fast_params(1)
            },
            "invalid Argon2id parameters",
        ),
        (
            "zero parallelism",
            "pass",
            KdfParams {
                p_cost: 0,
                ..fast_params(1)
            },
            "invalid Argon2id parameters",
        ),
    ];
    for (case, text, params, expected) in cases {
        match MasterKey::derive(&passphrase(text), &params) {
            Err(err @ VaultError::Kdf { .. }) => {
                let message = err.to_string();
                assert!(message.contains(expected), "{case}: {message}");
            }
            other => panic!("{case}: expected Kdf error, got {other:?}"),
        }
    }
}

#[test]
fn key_check_accepts_right_key() {
    let key = MasterKey::generate();
    key.verify(&key.key_check()).expect("own key check");
}

#[test]
fn key_check_detects_wrong_key() {
    let check = MasterKey::generate().key_check();
    let err = MasterKey::generate().verify(&check).expect_err("wrong key");
    assert!(matches!(err, VaultError::WrongMasterKey), "{err:?}");
    assert!(err.to_string().starts_with("wrong master key"), "{err}");
}

#[test]
fn key_check_uses_fresh_nonce() {
    let key = MasterKey::generate();
    assert_ne!(key.key_check(), key.key_check());
}

#[test]
fn key_check_json_round_trip() {
    let key = MasterKey::generate();
    let check = key.key_check();
    let json = serde_json::to_string(&check).expect("serialize");
    let restored: KeyCheck = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(restored, check);
    key.verify(&restored).expect("restored check");
}

#[test]
fn key_check_rejects_damaged_check() {
    let key = MasterKey::generate();
    let check = key.key_check();

    let mut flipped = check.clone();
    let last = flipped.sealed.len() - 1;
    flipped.sealed[last] ^= 0x01;
    let mut unknown_format = check.clone();
    unknown_format.sealed[0] = 9;
    let truncated = KeyCheck {
        sealed: check.sealed[..20].to_vec(),
    };

    assert!(matches!(
        key.verify(&flipped),
        Err(VaultError::WrongMasterKey)
    ));
    assert!(matches!(
        key.verify(&unknown_format),
        Err(VaultError::UnsupportedFormat { found: 9, .. })
    ));
    assert!(matches!(
        key.verify(&truncated),
        Err(VaultError::KeyCheckCorrupted { len: 20 })
    ));
}
