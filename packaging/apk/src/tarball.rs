//! The three tar archives of a package and their gzip streams.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Component, Path};

use anyhow::{Context, Result, bail};
use flate2::{Compression, GzBuilder};
use sha1::{Digest, Sha1};

/// One file of the package.
#[derive(Debug, Clone)]
pub struct File {
    /// Where it is installed, relative to `/` (`usr/bin/kiwi`).
    pub path: String,
    /// Permission bits (0o755, 0o644...). Owner and group are always root.
    pub mode: u32,
    pub content: Vec<u8>,
}

/// An install script of the control tar.
#[derive(Debug, Clone)]
pub struct Script {
    /// `pre-install`, `post-install`, `pre-upgrade`, `post-upgrade`, `pre-deinstall`
    /// or `post-deinstall`.
    pub kind: String,
    pub content: Vec<u8>,
}

const SCRIPT_KINDS: [&str; 6] = [
    "pre-install",
    "post-install",
    "pre-upgrade",
    "post-upgrade",
    "pre-deinstall",
    "post-deinstall",
];

/// gzip at the best level, no file name, mtime 0 (byte-for-byte reproducible).
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("root")?;
    header.set_groupname("root")?;
    Ok(header)
}

/// The data tar: every parent directory (0755), then the files, each after a PAX
/// header `APK-TOOLS.checksum.SHA1` holding its SHA-1 (what `abuild-tar --hash` adds;
/// apk-tools records it in its database). Ends with the end-of-archive blocks.
pub fn data_tar(files: &[File], mtime: u64) -> Result<Vec<u8>> {
    let mut paths = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for file in files {
        check_path(&file.path)?;
        if !paths.insert(file.path.as_str()) {
            bail!("file '{}' is in the package twice", file.path);
        }
        if file.mode & !0o7777 != 0 {
            bail!(
                "file '{}': mode {:o} is not permission bits",
                file.path,
                file.mode
            );
        }
        let mut parent = Path::new(&file.path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_path_buf());
            parent = dir.parent();
        }
    }
    let mut builder = tar::Builder::new(Vec::new());
    for dir in &dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime)?;
        builder
            .append_data(&mut h, dir, std::io::empty())
            .with_context(|| format!("adding directory {}", dir.display()))?;
    }
    let mut files: Vec<&File> = files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for file in files {
        let sha1 = hex::encode(Sha1::digest(&file.content));
        builder.append_pax_extensions([("APK-TOOLS.checksum.SHA1", sha1.as_bytes())])?;
        let mut h = header(
            tar::EntryType::Regular,
            file.mode,
            file.content.len() as u64,
            mtime,
        )?;
        builder
            .append_data(&mut h, &file.path, file.content.as_slice())
            .with_context(|| format!("adding {}", file.path))?;
    }
    Ok(builder.into_inner()?)
}

/// The control tar: `.PKGINFO`, then the install scripts (0755), cut.
pub fn control_tar(pkginfo: &str, scripts: &[Script], mtime: u64) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Regular, 0o644, pkginfo.len() as u64, mtime)?;
    builder.append_data(&mut h, ".PKGINFO", pkginfo.as_bytes())?;
    let mut seen = BTreeSet::new();
    for script in scripts {
        if !SCRIPT_KINDS.contains(&script.kind.as_str()) {
            bail!(
                "unknown install script '{}' (one of {})",
                script.kind,
                SCRIPT_KINDS.join(", ")
            );
        }
        if !seen.insert(script.kind.as_str()) {
            bail!("install script '{}' given twice", script.kind);
        }
        let mut h = header(
            tar::EntryType::Regular,
            0o755,
            script.content.len() as u64,
            mtime,
        )?;
        builder.append_data(
            &mut h,
            format!(".{}", script.kind),
            script.content.as_slice(),
        )?;
    }
    cut(builder.into_inner()?)
}

/// The signature tar: one entry, `name`, holding `signature`, cut.
pub fn signature_tar(name: &str, signature: &[u8], mtime: u64) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = header(
        tar::EntryType::Regular,
        0o644,
        signature.len() as u64,
        mtime,
    )?;
    builder.append_data(&mut h, name, signature)?;
    cut(builder.into_inner()?)
}

/// Drops the end-of-archive marker (two zero blocks), as `abuild-tar --cut` does, so
/// that the next stream's entries follow in the same archive.
fn cut(mut tar: Vec<u8>) -> Result<Vec<u8>> {
    const END: usize = 2 * 512;
    if tar.len() < END || tar[tar.len() - END..].iter().any(|&b| b != 0) {
        bail!("tar archive does not end with its end-of-archive blocks");
    }
    tar.truncate(tar.len() - END);
    Ok(tar)
}

/// A package path: relative, normal components only, no directory of its own.
fn check_path(path: &str) -> Result<()> {
    let p = Path::new(path);
    if path.is_empty()
        || path.ends_with('/')
        || !p.components().all(|c| matches!(c, Component::Normal(_)))
    {
        bail!("file path '{path}': give it relative to / with no '.', '..' or trailing '/'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn file(path: &str, mode: u32, content: &[u8]) -> File {
        File {
            path: path.into(),
            mode,
            content: content.to_vec(),
        }
    }

    #[test]
    fn data_tar_lists_parent_directories_then_files_with_their_sha1() {
        let tar = data_tar(
            &[
                file("usr/bin/kiwi", 0o755, b"binary"),
                file("etc/init.d/kiwi", 0o755, b"#!/sbin/openrc-run\n"),
            ],
            42,
        )
        .unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header().clone();
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
            assert_eq!(header.mtime().unwrap(), 42);
            if header.entry_type().is_file() {
                let sha1 = entry
                    .pax_extensions()
                    .unwrap()
                    .unwrap()
                    .map(|e| e.unwrap())
                    .find(|e| e.key().unwrap() == "APK-TOOLS.checksum.SHA1")
                    .map(|e| e.value().unwrap().to_string())
                    .unwrap();
                let mut content = Vec::new();
                entry.read_to_end(&mut content).unwrap();
                assert_eq!(sha1, hex::encode(Sha1::digest(&content)));
            }
            seen.push(path);
        }
        assert_eq!(
            seen,
            [
                "etc",
                "etc/init.d",
                "usr",
                "usr/bin",
                "etc/init.d/kiwi",
                "usr/bin/kiwi"
            ]
        );
    }

    #[test]
    fn cut_tars_have_no_end_of_archive_blocks_and_concatenate_into_one_archive() {
        let control = control_tar("pkgname = kiwi\n", &[], 0).unwrap();
        assert_eq!(
            control.len(),
            1024,
            "one header and one data block, no end marker"
        );
        let mut both = signature_tar(".SIGN.RSA.k.rsa.pub", b"sig", 0).unwrap();
        both.extend(control);
        both.extend(data_tar(&[file("a", 0o644, b"x")], 0).unwrap());
        let names: Vec<String> = tar::Archive::new(both.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [".SIGN.RSA.k.rsa.pub", ".PKGINFO", "a"]);
    }

    #[test]
    fn bad_paths_modes_and_scripts_are_refused_naming_them() {
        for path in [
            "/usr/bin/kiwi",
            "usr/../etc/passwd",
            "usr/bin/",
            "./usr",
            "",
        ] {
            let err = data_tar(&[file(path, 0o644, b"")], 0)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("'{path}'")), "{path}: {err}");
        }
        let err = data_tar(&[file("a", 0o644, b""), file("a", 0o644, b"")], 0).unwrap_err();
        assert!(err.to_string().contains("twice"));
        let err = data_tar(&[file("a", 0o100644, b"")], 0).unwrap_err();
        assert!(err.to_string().contains("permission bits"));
        let script = Script {
            kind: "post-remove".into(),
            content: vec![],
        };
        let err = control_tar("", &[script], 0).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown install script 'post-remove'")
        );
    }

    #[test]
    fn gzip_is_reproducible() {
        assert_eq!(gzip(b"same bytes").unwrap(), gzip(b"same bytes").unwrap());
    }
}
