//! The images this Kiwi keeps for netbooting: `<dir>/<id>/` per image
//! ([`ImageSource::id`], `ROLE-VERSION-ARCH`), holding `vmlinuz`, `initrd`, `cmdline`
//! and the signed `SHA256SUMS` and `SHA256SUMS.minisig` they were checked against.
//!
//! An image is filled into `<dir>/.partial-<id>/` and renamed into place once every file
//! matches the signed manifest: a directory `<dir>/<id>/` is a verified image, and
//! nothing else is served. Leftover partial directories are removed at the next fill.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kowabunga_agent::signed_files::{
    SignedSource, SumsLine, download_checked, parse_sums, signed_sums,
};
use kowabunga_agent::update::UpdateError;

use crate::model::ImageSource;

/// The files of one image, as kept.
pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd";
const CMDLINE: &str = "cmdline";
/// Caps per file: a kernel is ~10 MiB, a PXE initrd (the whole root) 100-300 MiB.
const MAX_KERNEL: u64 = 128 << 20;
const MAX_INITRD: u64 = 2 << 30;
const MAX_CMDLINE: u64 = 4096;

/// Where images are kept.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

/// A verified image in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    pub dir: PathBuf,
    /// The image's own kernel parameters (its `.pxe.cmdline`), one word each.
    pub cmdline: Vec<String>,
}

impl StoredImage {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl ImageStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The verified image `id`, if the store has it.
    pub fn get(&self, id: &str) -> Option<StoredImage> {
        let dir = self.dir.join(id);
        let text = std::fs::read_to_string(dir.join(CMDLINE)).ok()?;
        Some(StoredImage {
            cmdline: cmdline_words(&text).ok()?,
            dir,
        })
    }

    /// Removes every image but `keep` (and leftover partial fills). Returns the ids
    /// removed.
    pub fn prune(&self, keep: &BTreeSet<String>) -> std::io::Result<Vec<String>> {
        let mut removed = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                std::fs::remove_dir_all(entry.path())?;
                if !name.starts_with(".partial-") {
                    removed.push(name);
                }
            }
        }
        Ok(removed)
    }

    /// Downloads `image` and checks it against its signed manifest; on success it is in
    /// the store under its id, on error nothing of it is.
    pub async fn fill(
        &self,
        image: &ImageSource,
        signed: &SignedSource,
    ) -> Result<StoredImage, UpdateError> {
        let id = image.id();
        let partial = self.dir.join(format!(".partial-{id}"));
        let result = self.fill_into(image, signed, &partial).await;
        if result.is_err() {
            // Best effort: the fill's error matters more than a failed cleanup.
            let _ = tokio::fs::remove_dir_all(&partial).await;
        }
        result
    }

    async fn fill_into(
        &self,
        image: &ImageSource,
        signed: &SignedSource,
        partial: &Path,
    ) -> Result<StoredImage, UpdateError> {
        let id = image.id();
        let base = image.url.trim_end_matches('/');
        signed.check_scheme(base)?;
        let trust = signed.trust().map_err(UpdateError::Signature)?;
        let client = signed.client(Duration::from_secs(10), Duration::from_secs(60))?;
        let (sums, signature) = signed_sums(&client, base, &trust).await?;
        let text = std::str::from_utf8(&sums).map_err(|_| UpdateError::Manifest {
            line: 0,
            detail: "not UTF-8".into(),
        })?;
        let lines = parse_sums(text)?;
        let find = |suffix: &'static str| -> Result<&SumsLine, UpdateError> {
            let name = format!("{id}.pxe.{suffix}");
            let mut matching = lines.iter().filter(|l| l.name == name);
            match (matching.next(), matching.next()) {
                (Some(line), None) => Ok(line),
                (None, _) => Err(UpdateError::MissingArtifact(suffix)),
                (Some(_), Some(_)) => Err(UpdateError::DuplicateArtifact(suffix)),
            }
        };
        let files = [
            (find("vmlinuz")?, KERNEL, MAX_KERNEL),
            (find("initrd")?, INITRD, MAX_INITRD),
            (find("cmdline")?, CMDLINE, MAX_CMDLINE),
        ];
        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| UpdateError::Io { what, path, source }
        };
        match tokio::fs::remove_dir_all(partial).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing", partial)(e));
            }
            _ => {}
        }
        tokio::fs::create_dir_all(partial)
            .await
            .map_err(io("creating", partial))?;
        for (line, name, max) in files {
            download_checked(&client, base, line, &partial.join(name), max).await?;
        }
        let cmdline_path = partial.join(CMDLINE);
        let text = tokio::fs::read_to_string(&cmdline_path)
            .await
            .map_err(io("reading", &cmdline_path))?;
        let cmdline = cmdline_words(&text).map_err(|detail| UpdateError::Manifest {
            line: 0,
            detail: format!("{id}.pxe.cmdline: {detail}"),
        })?;
        for (name, content) in [("SHA256SUMS", &sums), ("SHA256SUMS.minisig", &signature)] {
            let path = partial.join(name);
            tokio::fs::write(&path, content)
                .await
                .map_err(io("writing", &path))?;
        }
        let target = self.dir.join(&id);
        match tokio::fs::remove_dir_all(&target).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing", &target)(e));
            }
            _ => {}
        }
        tokio::fs::rename(partial, &target)
            .await
            .map_err(io("renaming", partial))?;
        Ok(StoredImage {
            dir: target,
            cmdline,
        })
    }
}

/// An image's `.pxe.cmdline`: one line of kernel parameters, each one word iPXE takes
/// literally.
fn cmdline_words(text: &str) -> Result<Vec<String>, String> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    if line.contains('\n') {
        return Err("more than one line".into());
    }
    let words: Vec<String> = line
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = words
        .iter()
        .find(|w| !w.chars().all(crate::model::plain_char))
    {
        return Err(format!("{bad:?}: not a plain kernel parameter"));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_image_cmdline_is_one_line_of_plain_words() {
        assert_eq!(
            cmdline_words("console=ttyS0 systemd.mask=var.mount\n").unwrap(),
            ["console=ttyS0", "systemd.mask=var.mount"]
        );
        assert!(cmdline_words("a\nb\n").is_err());
        assert!(cmdline_words("init=${x}\n").is_err());
    }

    #[test]
    fn prune_keeps_what_is_asked_and_removes_partial_fills() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["kiwi-1-x86_64", "kaktus-2-x86_64", ".partial-kiwi-3-x86_64"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        let store = ImageStore::new(tmp.path());
        let keep = BTreeSet::from(["kiwi-1-x86_64".to_owned()]);
        assert_eq!(store.prune(&keep).unwrap(), ["kaktus-2-x86_64"]);
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["kiwi-1-x86_64"]);
        // A directory without its cmdline is no image.
        assert!(store.get("kiwi-1-x86_64").is_none());
        std::fs::write(tmp.path().join("kiwi-1-x86_64/cmdline"), "quiet\n").unwrap();
        assert_eq!(store.get("kiwi-1-x86_64").unwrap().cmdline, ["quiet"]);
    }
}
