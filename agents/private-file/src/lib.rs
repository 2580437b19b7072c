//! Files only the agent may read: its persisted API key, WireGuard and Ceph keys, the
//! secrets of a NoCloud seed. Each is written whole or not at all, and is never
//! readable by anyone else, not even for an instant: the file is created 0600 beside
//! its target, written, fsynced and renamed into place, in a directory created 0700.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The mode of every file written here.
pub const FILE_MODE: u32 = 0o600;
/// The mode of a directory created here (an existing one keeps its own).
pub const DIR_MODE: u32 = 0o700;

/// Writes `contents` to `path` as described in the crate's documentation. On error,
/// `path` is as it was (the temporary file may remain; the next write replaces it).
/// The error names the file it is about.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let with_path = |what: &str, at: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", at.display()))
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| with_path("creating", dir, e))?;
    let tmp = temporary(path);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(with_path("removing", &tmp, e));
        }
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(|e| with_path("creating", &tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| with_path("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| with_path("renaming", &tmp, e))
}

/// `.NAME.tmp` beside `path`.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn written_whole_private_and_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys/wg0.key");
        write_private(&path, b"first\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first\n");
        assert_eq!((mode(&path), mode(path.parent().unwrap())), (0o600, 0o700));
        // A leftover temporary file of an interrupted write is replaced.
        std::fs::write(tmp.path().join("keys/.wg0.key.tmp"), b"stale").unwrap();
        write_private(&path, b"second\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second\n");
        assert_eq!(mode(&path), 0o600);
        assert!(!tmp.path().join("keys/.wg0.key.tmp").exists());
        // An existing directory keeps its mode.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        write_private(&open.join("k"), b"x").unwrap();
        assert_eq!(mode(&open), 0o755);
    }

    #[test]
    fn an_error_names_the_file_and_leaves_the_target() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("k");
        write_private(&path, b"kept").unwrap();
        // The target is a directory now: the rename fails, the error names the file.
        let dir_target = tmp.path().join("d");
        std::fs::create_dir(&dir_target).unwrap();
        std::fs::write(dir_target.join("x"), b"").unwrap();
        let e = write_private(&dir_target, b"new").unwrap_err();
        assert!(e.to_string().contains(".d.tmp"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
    }
}
