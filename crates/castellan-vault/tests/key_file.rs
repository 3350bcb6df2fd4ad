use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use castellan_vault::{seal, KeyFileReason, MasterKey, VaultError};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).expect("write key file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("set mode");
}

fn reason_of(err: VaultError) -> KeyFileReason {
    match err {
        VaultError::KeyFile { reason, .. } => reason,
        other => panic!("expected KeyFile error, got {other:?}"),
    }
}

#[test]
fn created_key_file_has_mode_0600() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("master.key");
    MasterKey::create_file(&path).expect("create key file");

    let metadata = fs::metadata(&path).expect("metadata");
    assert!(metadata.is_file());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
}

#[test]
fn created_key_file_is_hex_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("master.key");
    MasterKey::create_file(&path).expect("create key file");

    let contents = fs::read_to_string(&path).expect("read key file");
    assert_eq!(contents.len(), 65);
    assert!(contents.ends_with('\n'));
    assert!(contents[..64]
        .bytes()
        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)));
}

#[test]
fn created_key_file_leaves_no_temp_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("master.key");
    MasterKey::create_file(&path).expect("create key file");
    let _ = MasterKey::create_file(&path).expect_err("second create");

    let names: Vec<_> = fs::read_dir(dir.path())
        .expect("list dir")
        .map(|entry| entry.expect("dir entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("master.key")]);
}

#[test]
fn created_key_loads_back_same_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("master.key");
    let created = MasterKey::create_file(&path).expect("create key file");
    let loaded = MasterKey::load_file(&path).expect("load key file");

    loaded.verify(&created.key_check()).expect("same key");
    let sealed = seal(&created, "entry", 1, b"value").expect("seal");
    let opened = castellan_vault::open(&loaded, &sealed).expect("open with loaded key");
    assert_eq!(opened.expose(), b"value");
}

#[test]
fn create_rejects_existing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("master.key");
    write_with_mode(&path, b"keep me\n", 0o600);

    let err = MasterKey::create_file(&path).expect_err("existing file");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("already exists"), "{message}");
    assert!(message.contains("remove the file or choose another data directory"));
    assert!(matches!(reason_of(err), KeyFileReason::AlreadyExists));
    assert_eq!(fs::read(&path).expect("read"), b"keep me\n");
}

#[test]
fn create_reports_missing_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent").join("master.key");
    let err = MasterKey::create_file(&path).expect_err("missing directory");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(matches!(reason_of(err), KeyFileReason::Io { .. }));
}

#[test]
fn load_accepts_owner_only_modes() {
    let dir = tempfile::tempdir().expect("temp dir");
    for mode in [0o600, 0o400, 0o700] {
        let path = dir.path().join(format!("key-{mode:o}"));
        write_with_mode(&path, format!("{KEY_HEX}\n").as_bytes(), mode);
        MasterKey::load_file(&path).unwrap_or_else(|err| panic!("mode {mode:o}: {err}"));
    }
}

#[test]
fn load_rejects_group_or_other_access() {
    let dir = tempfile::tempdir().expect("temp dir");
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666] {
        let path = dir.path().join(format!("key-{mode:o}"));
        write_with_mode(&path, format!("{KEY_HEX}\n").as_bytes(), mode);

        let err = MasterKey::load_file(&path).expect_err("insecure mode");
        let message = err.to_string();
        assert!(message.contains(&format!("mode 0{mode:o}")), "{message}");
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
        match reason_of(err) {
            KeyFileReason::InsecurePermissions { mode: found } => assert_eq!(found, mode),
            other => panic!("mode {mode:o}: expected InsecurePermissions, got {other:?}"),
        }
    }
}

#[test]
fn load_rejects_invalid_content() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: [(&str, Vec<u8>); 8] = [
        ("empty", Vec::new()),
        ("63 digits", format!("{}\n", &KEY_HEX[..63]).into_bytes()),
        ("65 digits", format!("{KEY_HEX}0\n").into_bytes()),
        (
            "non-hex digit",
            format!("{}zz\n", &KEY_HEX[..62]).into_bytes(),
        ),
        ("0x prefix", format!("0x{}\n", &KEY_HEX[..62]).into_bytes()),
        (
            "second line",
            format!("{KEY_HEX}\n{KEY_HEX}\n").into_bytes(),
        ),
        (
            "leading space",
            format!(" {}\n", &KEY_HEX[..63]).into_bytes(),
        ),
        ("long garbage", vec![b'x'; 4096]),
    ];
    for (case, contents) in cases {
        let path = dir.path().join(case.replace(' ', "-"));
        write_with_mode(&path, &contents, 0o600);

        let err = MasterKey::load_file(&path).expect_err(case);
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{case}: {message}"
        );
        assert!(
            !message.contains(&KEY_HEX[..16]),
            "{case}: message quotes the key"
        );
        assert!(
            !message.contains("xxxx"),
            "{case}: message quotes the content"
        );
        assert!(
            matches!(reason_of(err), KeyFileReason::InvalidContent { .. }),
            "{case}"
        );
    }
}

#[test]
fn load_accepts_uppercase_and_crlf() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lower = dir.path().join("lower");
    let upper = dir.path().join("upper");
    write_with_mode(&lower, format!("{KEY_HEX}\n").as_bytes(), 0o600);
    write_with_mode(
        &upper,
        format!("{}\r\n", KEY_HEX.to_uppercase()).as_bytes(),
        0o600,
    );

    let lower_key = MasterKey::load_file(&lower).expect("lowercase key");
    let upper_key = MasterKey::load_file(&upper).expect("uppercase key with CRLF");
    upper_key
        .verify(&lower_key.key_check())
        .expect("same key either case");
}

#[test]
fn load_missing_file_names_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("master.key");
    let err = MasterKey::load_file(&path).expect_err("missing file");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("castellan init"), "{message}");
    assert!(message.contains("--data-dir"), "{message}");
    assert!(matches!(reason_of(err), KeyFileReason::NotFound));
}

#[test]
fn load_rejects_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = MasterKey::load_file(dir.path()).expect_err("directory");
    assert!(matches!(reason_of(err), KeyFileReason::NotRegularFile));
}
