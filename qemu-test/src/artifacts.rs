//! Finds the artifacts `scripts/build-image.sh` wrote (`dist/`, or `$KOWABUNGA_DIST`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::arch::Arch;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "no {role} image in {dist} (looked for {role}-*-{arch}.raw): build it first with \
         scripts/build-image.sh {role} --arch {flag}"
    )]
    Missing {
        role: String,
        arch: Arch,
        flag: &'static str,
        dist: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tool(String),
}

/// One role's build outputs.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// `dist/<role>-<version>-<arch>`, without extension.
    pub stem: PathBuf,
    pub arch: Arch,
    pub raw: PathBuf,
    pub qcow2: PathBuf,
    pub pxe_kernel: PathBuf,
    pub pxe_initrd: PathBuf,
    /// Kernel command line of the PXE boot (without kowabunga.* keys).
    pub pxe_cmdline: String,
}

pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

pub fn dist_dir() -> PathBuf {
    std::env::var_os("KOWABUNGA_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("dist"))
}

impl Artifacts {
    /// The newest `<role>-*-<arch>.raw` in the dist directory and its siblings.
    pub fn find(role: &str, arch: Arch) -> Result<Self, ArtifactError> {
        let dist = dist_dir();
        let missing = || ArtifactError::Missing {
            role: role.to_owned(),
            arch,
            flag: arch.build_flag(),
            dist: dist.display().to_string(),
        };
        let suffix = format!("-{arch}.raw");
        let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(&dist)
            .map_err(|_| missing())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{role}-")) && n.ends_with(&suffix))
            })
            .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
        candidates.sort();
        let (_, raw) = candidates.pop().ok_or_else(missing)?;
        let stem = raw.with_extension("");
        let sibling = |ext: &str| PathBuf::from(format!("{}.{ext}", stem.display()));
        let pxe_cmdline_path = sibling("pxe.cmdline");
        let pxe_cmdline = fs::read_to_string(&pxe_cmdline_path)
            .map_err(|source| ArtifactError::Io {
                what: format!("reading {}", pxe_cmdline_path.display()),
                source,
            })?
            .trim()
            .to_owned();
        let artifacts = Self {
            qcow2: sibling("qcow2"),
            pxe_kernel: sibling("pxe.vmlinuz"),
            pxe_initrd: sibling("pxe.initrd"),
            pxe_cmdline,
            raw,
            stem,
            arch,
        };
        for p in [
            &artifacts.qcow2,
            &artifacts.pxe_kernel,
            &artifacts.pxe_initrd,
        ] {
            if !p.is_file() {
                return Err(ArtifactError::Io {
                    what: format!(
                        "{} (rebuild with scripts/build-image.sh {role})",
                        p.display()
                    ),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
        }
        Ok(artifacts)
    }

    /// The label of root A: `kowabunga-<role>_<version>` (the image's IMAGE_ID and
    /// IMAGE_VERSION, the form systemd-sysupdate reads a slot's version from), taken
    /// from the file name `<role>-<version>-<arch>.raw`.
    pub fn root_label(&self) -> Result<String, ArtifactError> {
        let name = self
            .stem
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        name.strip_suffix(&format!("-{}", self.arch))
            .and_then(|rest| rest.split_once('-'))
            .map(|(role, version)| format!("kowabunga-{role}_{version}"))
            .ok_or_else(|| {
                ArtifactError::Tool(format!(
                    "{}: not named <role>-<version>-{}",
                    self.raw.display(),
                    self.arch
                ))
            })
    }

    /// A private, writable copy of the raw disk, grown to `size_gib` (room for the B
    /// slot and /var, which systemd-repart creates on first boot).
    pub fn disk_copy(&self, dir: &Path, size_gib: u64) -> Result<PathBuf, ArtifactError> {
        grown_copy(&self.raw, dir, size_gib)
    }
}

/// A sparse copy of the disk image `src` in `dir`, grown to `size_gib`.
pub fn grown_copy(src: &Path, dir: &Path, size_gib: u64) -> Result<PathBuf, ArtifactError> {
    let copy = dir.join(src.file_name().unwrap_or_default());
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(&copy)
        .status()
        .map_err(|source| ArtifactError::Io {
            what: "running cp".into(),
            source,
        })?;
    if !status.success() {
        return Err(ArtifactError::Tool(format!("cp {} failed", src.display())));
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .map_err(|source| ArtifactError::Io {
            what: format!("opening {}", copy.display()),
            source,
        })?;
    file.set_len(size_gib << 30)
        .map_err(|source| ArtifactError::Io {
            what: format!("growing {}", copy.display()),
            source,
        })?;
    Ok(copy)
}

/// Runs `scripts/personalize-image.sh` on a disk image.
pub fn personalize(disk: &Path, args: &[&str]) -> Result<(), ArtifactError> {
    let script = workspace_root().join("scripts/personalize-image.sh");
    let out = Command::new(&script)
        .arg(disk)
        .args(args)
        .output()
        .map_err(|source| ArtifactError::Io {
            what: format!("running {}", script.display()),
            source,
        })?;
    if !out.status.success() {
        return Err(ArtifactError::Tool(format!(
            "personalize-image.sh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Byte offset and length of the GPT partition labelled `label` in a disk image
/// (read with `sfdisk --json`).
pub fn partition(disk: &Path, label: &str) -> Result<(u64, u64), ArtifactError> {
    find_partition(disk, |p| p["name"].as_str() == Some(label)).ok_or_else(|| {
        ArtifactError::Tool(format!(
            "no partition labelled {label} in {}",
            disk.display()
        ))
    })?
}

/// The partitions of a disk image's GPT (`sfdisk --json`'s objects) and its sector size.
fn partition_table(disk: &Path) -> Result<(u64, Vec<serde_json::Value>), ArtifactError> {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .map_err(|source| ArtifactError::Io {
            what: "running sfdisk (fdisk)".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(ArtifactError::Tool(format!(
            "sfdisk --json {} failed: {}",
            disk.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let table: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| ArtifactError::Tool(format!("sfdisk printed no JSON: {e}")))?;
    let sector = table["partitiontable"]["sectorsize"]
        .as_u64()
        .unwrap_or(512);
    let partitions = table["partitiontable"]["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok((sector, partitions))
}

/// Offset and length of the first partition `matches` accepts: `None` when there is
/// none, `Some(Err)` when the table cannot be read.
fn find_partition(
    disk: &Path,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> Option<Result<(u64, u64), ArtifactError>> {
    let (sector, partitions) = match partition_table(disk) {
        Ok(table) => table,
        Err(e) => return Some(Err(e)),
    };
    partitions.iter().find(|p| matches(p)).and_then(|p| {
        Some(Ok((
            p["start"].as_u64()? * sector,
            p["size"].as_u64()? * sector,
        )))
    })
}

/// One image version's A/B update artifacts (`update/<role>/` of a build): the version
/// they carry and each file's name and bytes (`SHA256SUMS` among them, unsigned or not).
#[derive(Debug)]
pub struct Update {
    pub version: String,
    pub files: Vec<(String, Vec<u8>)>,
}

impl Update {
    /// Reads `<dist>/update/<role>/`; the version is read off the UKI's file name
    /// (`kowabunga-<role>_<version>_<arch>.efi.zst`).
    pub fn read(dist: &Path, role: &str) -> Result<Self, ArtifactError> {
        let dir = dist.join("update").join(role);
        let io = |what: String| move |source| ArtifactError::Io { what, source };
        let mut files = Vec::new();
        let mut version = None;
        for entry in fs::read_dir(&dir).map_err(io(format!(
            "reading {} (build it with scripts/build-image.sh {role} --out {})",
            dir.display(),
            dist.display()
        )))? {
            let path = entry
                .map_err(io(format!("reading {}", dir.display())))?
                .path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name == "SHA256SUMS.minisig" {
                continue;
            }
            if let Some(rest) = name
                .strip_prefix(&format!("kowabunga-{role}_"))
                .and_then(|r| r.strip_suffix(".efi.zst"))
            {
                version = rest.rsplit_once('_').map(|(v, _arch)| v.to_owned());
            }
            let bytes = fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
            files.push((name, bytes));
        }
        let version = version.ok_or_else(|| {
            ArtifactError::Tool(format!(
                "no kowabunga-{role}_*.efi.zst in {}",
                dir.display()
            ))
        })?;
        Ok(Self { version, files })
    }

    /// The `SHA256SUMS` file.
    pub fn sums(&self) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(name, _)| name == "SHA256SUMS")
            .map(|(_, bytes)| bytes.as_slice())
    }
}

/// The files in `/EFI/Linux` of a disk image's ESP (listed with mtools' `mdir`).
pub fn esp_linux_entries(disk: &Path) -> Result<Vec<String>, ArtifactError> {
    let (offset, _) = partition_of_type(disk, ESP_TYPE)?;
    let out = Command::new("mdir")
        .arg("-b")
        .arg("-i")
        .arg(format!("{}@@{offset}", disk.display()))
        .arg("::/EFI/Linux")
        .output()
        .map_err(|source| ArtifactError::Io {
            what: "running mdir (mtools)".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(ArtifactError::Tool(format!(
            "mdir ::/EFI/Linux on {} failed: {}",
            disk.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().rsplit('/').next().map(str::to_owned))
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    Ok(names)
}

/// The EFI system partition's GPT type.
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// The labels of a disk image's GPT partitions, in table order.
pub fn partition_labels(disk: &Path) -> Result<Vec<String>, ArtifactError> {
    Ok(partition_table(disk)?
        .1
        .into_iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect())
}

/// GPT type of an x86-64 root partition (slots A and B).
pub const ROOT_X86_64_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

/// Offset and length of the partition of type `gpt_type` labelled `label`: `None` when
/// there is none.
pub fn partition_of(
    disk: &Path,
    gpt_type: &str,
    label: &str,
) -> Result<Option<(u64, u64)>, ArtifactError> {
    find_partition(disk, |p| {
        p["name"].as_str() == Some(label)
            && p["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case(gpt_type))
    })
    .transpose()
}

/// `len` bytes of `disk` at `offset`.
pub fn read_at(disk: &Path, offset: u64, len: usize) -> Result<Vec<u8>, ArtifactError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |what: &str| {
        let what = format!("{what} {}", disk.display());
        move |source| ArtifactError::Io { what, source }
    };
    let mut file = fs::File::open(disk).map_err(io("opening"))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(io("seeking in"))?;
    let mut bytes = vec![0; len];
    file.read_exact(&mut bytes).map_err(io("reading"))?;
    Ok(bytes)
}

pub fn partition_of_type(disk: &Path, gpt_type: &str) -> Result<(u64, u64), ArtifactError> {
    find_partition(disk, |p| {
        p["type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case(gpt_type))
    })
    .ok_or_else(|| {
        ArtifactError::Tool(format!(
            "no partition of type {gpt_type} in {}",
            disk.display()
        ))
    })?
}

/// Overwrites `bytes` at `offset` in `disk` (the tests' way to tamper with an image).
pub fn overwrite(disk: &Path, offset: u64, bytes: &[u8]) -> Result<(), ArtifactError> {
    use std::io::{Seek, SeekFrom, Write};
    let io = |what: &str| {
        let what = format!("{what} {}", disk.display());
        move |source| ArtifactError::Io { what, source }
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(io("opening"))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(io("seeking in"))?;
    file.write_all(bytes).map_err(io("writing"))?;
    file.sync_all().map_err(io("syncing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(stem: &str) -> Artifacts {
        named_for(stem, Arch::X86_64)
    }

    fn named_for(stem: &str, arch: Arch) -> Artifacts {
        let sibling = |ext: &str| PathBuf::from(format!("/dist/{stem}.{ext}"));
        Artifacts {
            raw: sibling("raw"),
            qcow2: sibling("qcow2"),
            pxe_kernel: sibling("pxe.vmlinuz"),
            pxe_initrd: sibling("pxe.initrd"),
            pxe_cmdline: String::new(),
            stem: PathBuf::from("/dist").join(stem),
            arch,
        }
    }

    #[test]
    fn root_a_is_labelled_by_image_id_and_version() {
        assert_eq!(
            named("kiwi-0.1.0-x86_64").root_label().ok().as_deref(),
            Some("kowabunga-kiwi_0.1.0")
        );
        assert_eq!(
            named("kontroller-1.2.3-rc1-x86_64")
                .root_label()
                .ok()
                .as_deref(),
            Some("kowabunga-kontroller_1.2.3-rc1")
        );
        assert!(named("kiwi-0.1.0-arm64").root_label().is_err());
        assert_eq!(
            named_for("kiwi-0.1.0-aarch64", Arch::Aarch64)
                .root_label()
                .ok()
                .as_deref(),
            Some("kowabunga-kiwi_0.1.0")
        );
        assert!(
            named_for("kiwi-0.1.0-x86_64", Arch::Aarch64)
                .root_label()
                .is_err()
        );
    }
}
