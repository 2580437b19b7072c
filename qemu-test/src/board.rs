//! The Raspberry Pi 4 card image (`scripts/build-image.sh ROLE --board rpi4`): finding
//! it, and reading the files of its FAT (firmware) partition with mtools.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::artifacts::{ArtifactError, ESP_TYPE, dist_dir, partition_of_type};

/// `dist/<role>-<version>-rpi4.img`.
#[derive(Clone, Debug)]
pub struct CardImage {
    pub img: PathBuf,
}

impl CardImage {
    /// The newest `<role>-*-rpi4.img` in the dist directory.
    pub fn find(role: &str) -> Result<Self, ArtifactError> {
        let dist = dist_dir();
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(&dist)
            .map_err(|source| ArtifactError::Io {
                what: format!("reading {}", dist.display()),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{role}-")) && n.ends_with("-rpi4.img"))
            })
            .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
        found.sort();
        let (_, img) = found.pop().ok_or_else(|| {
            ArtifactError::Tool(format!(
                "no {role}-*-rpi4.img in {}: build it with scripts/build-image.sh {role} --board rpi4",
                dist.display()
            ))
        })?;
        Ok(Self { img })
    }
}

/// The mtools image spec (`disk@@offset`) of a disk's FAT partition (its ESP type).
fn fat(disk: &Path) -> Result<String, ArtifactError> {
    let (offset, _) = partition_of_type(disk, ESP_TYPE)?;
    Ok(format!("{}@@{offset}", disk.display()))
}

fn mtools(tool: &str, args: &[&str]) -> Result<Vec<u8>, ArtifactError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|source| ArtifactError::Io {
            what: format!("running {tool} (mtools)"),
            source,
        })?;
    if !out.status.success() {
        return Err(ArtifactError::Tool(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// Every file of the disk's FAT partition, as `/path` (directories left out), sorted.
pub fn fat_files(disk: &Path) -> Result<Vec<String>, ArtifactError> {
    let image = fat(disk)?;
    let listing = mtools("mdir", &["-/", "-b", "-i", &image, "::/"])?;
    let mut files: Vec<String> = String::from_utf8_lossy(&listing)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("::"))
        .filter(|p| !p.ends_with('/'))
        .map(str::to_owned)
        .collect();
    files.sort();
    Ok(files)
}

/// The bytes of `/path` on the disk's FAT partition.
pub fn fat_read(disk: &Path, path: &str) -> Result<Vec<u8>, ArtifactError> {
    let image = fat(disk)?;
    mtools("mtype", &["-i", &image, &format!("::{path}")])
}

/// Copies `/path` of the disk's FAT partition to `dest`, byte for byte.
pub fn fat_copy_out(disk: &Path, path: &str, dest: &Path) -> Result<(), ArtifactError> {
    let image = fat(disk)?;
    let dest = dest.display().to_string();
    mtools(
        "mcopy",
        &["-n", "-o", "-i", &image, &format!("::{path}"), &dest],
    )
    .map(|_| ())
}
