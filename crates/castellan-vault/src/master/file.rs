//! Master key files: 64 lowercase hex characters and a newline, mode 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use super::{MasterKey, MASTER_KEY_LEN};
use crate::{hex, KeyFileReason, VaultError};

const HEX_LEN: usize = MASTER_KEY_LEN * 2;
/// Read buffer size. Anything longer than a key, a line end and some stray whitespace
/// is rejected without reading further.
const READ_LIMIT: usize = 128;

impl MasterKey {
    /// Creates a new random key at `path` with mode 0600 and returns it.
    ///
    /// The key is written to a temporary file in the same directory, synced, then
    /// hard-linked into place, which fails if `path` exists. So no other file is ever
    /// overwritten and no half-written key file is ever visible at `path`.
    pub fn create_file(path: &Path) -> Result<Self, VaultError> {
        let key = Self::generate();
        let contents = encode_key_file(&key);

        let temp = TempFile::create(path)?;
        write_and_sync(&temp.file, &contents).map_err(|err| io_error(path, "write", err))?;
        link_no_clobber(&temp.path, path)?;
        drop(temp);
        sync_parent_dir(path)?;
        Ok(key)
    }

    /// Loads the key at `path`, rejecting files that group or other users can access.
    pub fn load_file(path: &Path) -> Result<Self, VaultError> {
        let mut file = File::open(path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => key_file_error(path, KeyFileReason::NotFound),
            _ => io_error(path, "open", err),
        })?;
        check_metadata(path, &file)?;

        let mut buffer = Zeroizing::new([0u8; READ_LIMIT]);
        let len = read_up_to(&mut file, buffer.as_mut_slice())
            .map_err(|err| io_error(path, "read", err))?;
        if len == READ_LIMIT {
            let detail = format!("the file is {READ_LIMIT} bytes or longer");
            return Err(key_file_error(
                path,
                KeyFileReason::InvalidContent { detail },
            ));
        }
        let bytes = decode_key_file(&buffer[..len])
            .map_err(|detail| key_file_error(path, KeyFileReason::InvalidContent { detail }))?;
        Ok(Self::from_bytes(&bytes))
    }
}

/// A temporary key file next to the target, removed when dropped.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn create(target: &Path) -> Result<Self, VaultError> {
        let Some(name) = target.file_name() else {
            return Err(key_file_error(target, KeyFileReason::NoFileName));
        };
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".tmp-{:016x}", OsRng.next_u64()));
        let path = target.with_file_name(temp_name);

        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|err| io_error(target, "create a temporary file for", err))?;
        Ok(Self { path, file })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // After a successful link the target keeps the data, so removing the temporary
        // name only drops a second link. A failure here leaves a stray 0600 file, which
        // is harmless and has no caller to report to.
        let _ = fs::remove_file(&self.path);
    }
}

fn write_and_sync(mut file: &File, contents: &[u8]) -> io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

fn link_no_clobber(temp: &Path, target: &Path) -> Result<(), VaultError> {
    // NOTE: file systems without hard links (FAT, some network mounts) fail here;
    // the data directory is expected to live on a POSIX file system.
    fs::hard_link(temp, target).map_err(|err| match err.kind() {
        io::ErrorKind::AlreadyExists => key_file_error(target, KeyFileReason::AlreadyExists),
        _ => io_error(target, "create", err),
    })
}

fn sync_parent_dir(path: &Path) -> Result<(), VaultError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| io_error(path, "sync the directory of", err))
}

fn check_metadata(path: &Path, file: &File) -> Result<(), VaultError> {
    let metadata = file
        .metadata()
        .map_err(|err| io_error(path, "inspect", err))?;
    if !metadata.is_file() {
        return Err(key_file_error(path, KeyFileReason::NotRegularFile));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(key_file_error(
            path,
            KeyFileReason::InsecurePermissions { mode },
        ));
    }
    Ok(())
}

/// Reads until end of file or until `buffer` is full, returning the bytes read.
fn read_up_to(file: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut len = 0;
    while len < buffer.len() {
        match file.read(&mut buffer[len..]) {
            Ok(0) => break,
            Ok(read) => len += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(len)
}

fn encode_key_file(key: &MasterKey) -> Zeroizing<Vec<u8>> {
    let mut contents = Zeroizing::new(Vec::with_capacity(HEX_LEN + 1));
    hex::encode_into(key.expose(), &mut contents);
    contents.push(b'\n');
    contents
}

/// Decodes the key file content. The error text describes the problem without quoting
/// any of the content.
fn decode_key_file(contents: &[u8]) -> Result<Zeroizing<[u8; MASTER_KEY_LEN]>, String> {
    let digits = contents.trim_ascii_end();
    if digits.len() != HEX_LEN {
        return Err(format!(
            "found {} characters before any trailing whitespace, expected {HEX_LEN}",
            digits.len()
        ));
    }
    let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
    hex::decode_into(digits, key.as_mut_slice())
        .ok_or_else(|| "found a character that is not a hexadecimal digit".to_owned())?;
    Ok(key)
}

fn key_file_error(path: &Path, reason: KeyFileReason) -> VaultError {
    VaultError::KeyFile {
        path: path.to_path_buf(),
        reason,
    }
}

fn io_error(path: &Path, action: &'static str, source: io::Error) -> VaultError {
    key_file_error(path, KeyFileReason::Io { action, source })
}
