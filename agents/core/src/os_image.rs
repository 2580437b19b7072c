//! Which OS image the node runs and what its other A/B slot holds: the running version
//! and how the node updates, shown in `/status`, `/metrics` and every report to Kahuna
//! (`docs/images.md`, "A/B updates").
//!
//! Read once at start, from what the image itself says:
//! - `/etc/os-release`: `IMAGE_ID` (`kowabunga-kiwi`) and `IMAGE_VERSION` (`0.1.0`);
//! - the root filesystem: erofs (a disk boot, from slot A or B), a RAM filesystem (a
//!   netboot: the whole root came in the initrd), anything else (the agent installed
//!   from a package on a general-purpose host);
//! - the GPT labels of the partitions: root slots are labelled `IMAGE_ID_VERSION` (the
//!   `%M_%A` of the image's repart definitions), verity partitions
//!   `IMAGE_ID_VERSION_verity`, a free slot `_empty` (systemd-sysupdate's mark). The
//!   kernel gives a partition's label (`PARTNAME` in its sysfs uevent) only for the
//!   partitions it found when it read the table: those systemd-repart adds on first
//!   boot (slot B, `/var`) have none until the next boot. udev's database has them all
//!   (`ID_PART_ENTRY_NAME`, from blkid, in `/run/udev/data/b<major>:<minor>`), and is
//!   readable from the agent's sandbox, where `/dev/disk/by-partlabel` is not.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How this node boots, and so how it updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Boot {
    /// From a disk with A/B root slots, through UEFI: updates go to the other slot.
    Disk,
    /// From a disk, started by a board's own firmware without UEFI (the Raspberry Pi
    /// image's firmware partition): no UKI, no boot counting, so no A/B updates; the
    /// new version's image is written to the card.
    BoardFirmware,
    /// Netbooted, the root in RAM: no slots; it runs what the netboot server serves,
    /// so it is updated by serving the new version there, then rebooting it.
    Diskless,
    /// Not a Kowabunga image (a .deb/.apk install): the host's package manager updates it.
    Package,
}

impl Boot {
    pub fn as_str(self) -> &'static str {
        match self {
            Boot::Disk => "disk",
            Boot::BoardFirmware => "board_firmware",
            Boot::Diskless => "diskless",
            Boot::Package => "package",
        }
    }
}

/// The other A/B slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "version")]
pub enum OtherSlot {
    /// Never written (`_empty`): no version to go back to.
    Empty,
    /// Holds this version (the previous one, or an update waiting for its reboot).
    Version(String),
    /// No second slot found (a disk made before the B slot was created, or no disk).
    None,
}

/// What `/status` shows under `os`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OsImage {
    /// `IMAGE_ID` of os-release (`kowabunga-kiwi`), when the image says.
    pub image_id: Option<String>,
    /// `IMAGE_VERSION` of os-release: the running version.
    pub version: Option<String>,
    pub boot: Boot,
    /// Only for [`Boot::Disk`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_slot: Option<OtherSlot>,
    /// How this node gets a new version, in words, for an operator reading `/status`.
    pub updates: &'static str,
    /// Where the A/B updater is (`os-update/state.json`), when the agent runs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<crate::update::UpdateState>,
}

/// Reads which image the node runs, afresh at each call (the system's, or a test's).
#[derive(Clone)]
pub struct OsSource(std::sync::Arc<dyn Fn() -> OsImage + Send + Sync>);

impl OsSource {
    pub fn new(read: impl Fn() -> OsImage + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(read))
    }

    pub fn read(&self) -> OsImage {
        (self.0)()
    }
}

impl std::fmt::Debug for OsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OsSource")
    }
}

/// The root filesystem's kind, from `statfs("/")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootFs {
    Erofs,
    Ram,
    Other,
}

/// `f_type` of statfs(2) (linux/magic.h), compared on their 32 bits (the field is a
/// `long`, signed or not depending on the architecture).
const EROFS_SUPER_MAGIC: u32 = 0xE0F5_E1E2;
const TMPFS_MAGIC: u32 = 0x0102_1994;
const RAMFS_MAGIC: u32 = 0x8584_58F6;

impl OsImage {
    /// This node's image, from `/etc/os-release`, `statfs("/")`, `/sys/class/block`,
    /// udev's database and `/sys/firmware/efi` (booted through UEFI or not).
    pub fn read_system() -> Self {
        Self::read(
            Path::new("/etc/os-release"),
            &Partitions {
                sys_class_block: PathBuf::from("/sys/class/block"),
                udev_data: PathBuf::from("/run/udev/data"),
            },
            root_fs(),
            Path::new("/sys/firmware/efi").exists(),
        )
    }

    /// The same from other paths (tests).
    pub fn read(os_release: &Path, partitions: &Partitions, root: RootFs, uefi: bool) -> Self {
        let release = std::fs::read(os_release)
            .ok()
            .and_then(|bytes| etc_os_release::OsRelease::from_reader(bytes.as_slice()).ok());
        let image_id = release
            .as_ref()
            .and_then(|r| r.image_id())
            .map(str::to_owned);
        let version = release
            .as_ref()
            .and_then(|r| r.image_version())
            .map(str::to_owned);
        let boot = match (root, &image_id) {
            (RootFs::Erofs, Some(_)) if uefi => Boot::Disk,
            (RootFs::Erofs, Some(_)) => Boot::BoardFirmware,
            (RootFs::Ram, Some(_)) => Boot::Diskless,
            _ => Boot::Package,
        };
        let other_slot = match (boot, &image_id, &version) {
            (Boot::Disk, Some(id), Some(running)) => {
                Some(other_slot(&partitions.labels(), id, running))
            }
            (Boot::Disk, ..) => Some(OtherSlot::None),
            _ => None,
        };
        let updates = match boot {
            Boot::Disk => {
                "A/B: a new version is written to the other slot and booted with boot counting"
            }
            Boot::Diskless => {
                "netboot: the netboot server serves the new version's kernel and initrd, then the node reboots"
            }
            Boot::BoardFirmware => {
                "reflash: the board's firmware boots the firmware partition's kernel (no UEFI, no A/B slots)"
            }
            Boot::Package => "by the host's package manager",
        };
        Self {
            image_id,
            version,
            boot,
            other_slot,
            updates,
            update: None,
        }
    }

    /// The same, with the updater's state.
    pub fn with_update(mut self, update: crate::update::UpdateState) -> Self {
        self.update = Some(update);
        self
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let name = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        let other = match &self.other_slot {
            Some(OtherSlot::Empty) => ", other slot empty".to_string(),
            Some(OtherSlot::Version(v)) => format!(", other slot {v}"),
            Some(OtherSlot::None) => ", no other slot".to_string(),
            None => String::new(),
        };
        format!(
            "os image {} {}, boot {}{other}",
            name(&self.image_id),
            name(&self.version),
            self.boot.as_str()
        )
    }
}

fn root_fs() -> RootFs {
    match nix::sys::statfs::statfs("/") {
        Ok(fs) => match fs.filesystem_type().0 as u32 {
            TMPFS_MAGIC | RAMFS_MAGIC => RootFs::Ram,
            EROFS_SUPER_MAGIC => RootFs::Erofs,
            _ => RootFs::Other,
        },
        Err(_) => RootFs::Other,
    }
}

/// Where partitions and their labels are read.
pub struct Partitions {
    /// `/sys/class/block`: one directory per block device, with its `uevent`.
    pub sys_class_block: PathBuf,
    /// `/run/udev/data`: udev's database, `b<major>:<minor>` per block device.
    pub udev_data: PathBuf,
}

impl Partitions {
    /// Every partition's GPT label: `PARTNAME=` of its uevent, else udev's
    /// `ID_PART_ENTRY_NAME`.
    fn labels(&self) -> BTreeSet<String> {
        let Ok(entries) = std::fs::read_dir(&self.sys_class_block) else {
            return BTreeSet::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("uevent")).ok())
            .filter(|uevent| uevent.lines().any(|l| l == "DEVTYPE=partition"))
            .filter_map(|uevent| self.label(&uevent))
            .collect()
    }

    fn label(&self, uevent: &str) -> Option<String> {
        let field = |key: &str| {
            uevent
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        };
        if let Some(name) = field("PARTNAME") {
            return Some(name.to_owned());
        }
        let db = self
            .udev_data
            .join(format!("b{}:{}", field("MAJOR")?, field("MINOR")?));
        std::fs::read_to_string(db)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("E:ID_PART_ENTRY_NAME="))
            .map(str::to_owned)
    }
}

/// The slot that is not the running one: another version's root label, else `_empty`.
fn other_slot(labels: &BTreeSet<String>, image_id: &str, running: &str) -> OtherSlot {
    let prefix = format!("{image_id}_");
    let other = labels
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|v| !v.ends_with("_verity") && *v != running)
        .max_by(|a, b| crate::update::compare_versions(a, b));
    match other {
        Some(v) => OtherSlot::Version(v.to_owned()),
        None if labels.contains("_empty") => OtherSlot::Empty,
        None => OtherSlot::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partitions labelled `labels` under `dir/sys`; those from `added_at_runtime` on
    /// have no PARTNAME (added by systemd-repart after the kernel read the table), their
    /// label only in udev's database under `dir/udev`.
    fn sysfs(dir: &Path, labels: &[&str], added_at_runtime: usize) -> Partitions {
        let sys = dir.join("sys");
        let udev = dir.join("udev");
        std::fs::create_dir_all(&udev).unwrap();
        for (i, label) in labels.iter().enumerate() {
            let part = sys.join(format!("vda{}", i + 1));
            std::fs::create_dir_all(&part).unwrap();
            let partname = if i < added_at_runtime {
                format!("PARTNAME={label}\n")
            } else {
                std::fs::write(
                    udev.join(format!("b253:{}", i + 1)),
                    format!("S:disk/by-partlabel/{label}\nE:ID_PART_ENTRY_SCHEME=gpt\nE:ID_PART_ENTRY_NAME={label}\nG:systemd\n"),
                )
                .unwrap();
                String::new()
            };
            std::fs::write(
                part.join("uevent"),
                format!(
                    "MAJOR=253\nMINOR={}\nDEVNAME=vda{}\nDEVTYPE=partition\nPARTN={}\n{partname}",
                    i + 1,
                    i + 1,
                    i + 1
                ),
            )
            .unwrap();
        }
        // A whole disk and a device-mapper device: no label, udev entries of their own.
        for (dev, minor) in [("vda", 0), ("dm-0", 0)] {
            std::fs::create_dir_all(sys.join(dev)).unwrap();
            std::fs::write(
                sys.join(dev).join("uevent"),
                format!("MAJOR=252\nMINOR={minor}\nDEVTYPE=disk\n"),
            )
            .unwrap();
        }
        std::fs::write(
            udev.join("b252:0"),
            "E:ID_PART_ENTRY_NAME=not-a-partition\n",
        )
        .unwrap();
        Partitions {
            sys_class_block: sys,
            udev_data: udev,
        }
    }

    /// A disk after first boot: slot A running 0.1.1, slot B and its verity free.
    const FIRST_BOOT: &[&str] = &[
        "esp",
        "kowabunga-kiwi_0.1.1",
        "kowabunga-kiwi_0.1.1_verity",
        "_empty",
        "_empty",
        "var",
    ];

    fn os_release(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("os-release");
        std::fs::write(
            &path,
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n\
             IMAGE_ID=kowabunga-kiwi\nIMAGE_VERSION=\"0.1.1\"\n",
        )
        .unwrap();
        path
    }

    #[test]
    fn a_fresh_disk_runs_slot_a_with_slot_b_empty() {
        let dir = tempfile::tempdir().unwrap();
        // First boot: repart added slot B and /var after the kernel read the table.
        let parts = sysfs(dir.path(), FIRST_BOOT, 3);
        let os = OsImage::read(&os_release(dir.path()), &parts, RootFs::Erofs, true);
        assert_eq!(os.image_id.as_deref(), Some("kowabunga-kiwi"));
        assert_eq!(os.version.as_deref(), Some("0.1.1"));
        assert_eq!(os.boot, Boot::Disk);
        assert_eq!(os.other_slot, Some(OtherSlot::Empty));
        assert_eq!(
            os.summary(),
            "os image kowabunga-kiwi 0.1.1, boot disk, other slot empty"
        );
        let json = serde_json::to_value(&os).unwrap();
        assert_eq!(json["other_slot"], serde_json::json!({ "state": "empty" }));
    }

    #[test]
    fn after_an_update_the_other_slot_holds_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let parts = sysfs(
            dir.path(),
            &[
                "esp",
                "kowabunga-kiwi_0.1.0",
                "kowabunga-kiwi_0.1.0_verity",
                "kowabunga-kiwi_0.1.1",
                "kowabunga-kiwi_0.1.1_verity",
                "var",
            ],
            6,
        );
        let os = OsImage::read(&os_release(dir.path()), &parts, RootFs::Erofs, true);
        assert_eq!(os.other_slot, Some(OtherSlot::Version("0.1.0".into())));
        let json = serde_json::to_value(&os).unwrap();
        assert_eq!(
            json["other_slot"],
            serde_json::json!({ "state": "version", "version": "0.1.0" })
        );
    }

    #[test]
    fn a_netbooted_node_has_no_slots_and_says_how_it_updates() {
        let dir = tempfile::tempdir().unwrap();
        let parts = sysfs(dir.path(), &["some-other-disk"], 1);
        let os = OsImage::read(&os_release(dir.path()), &parts, RootFs::Ram, true);
        assert_eq!(os.boot, Boot::Diskless);
        assert_eq!(os.other_slot, None);
        assert!(os.updates.contains("netboot server"));
        assert!(
            serde_json::to_value(&os)
                .unwrap()
                .get("other_slot")
                .is_none()
        );
    }

    #[test]
    fn an_image_started_without_uefi_has_no_slots_and_is_reflashed() {
        let dir = tempfile::tempdir().unwrap();
        let parts = sysfs(dir.path(), &["kowabunga-kiwi_0.1.0", "_empty"], 6);
        let os = OsImage::read(&os_release(dir.path()), &parts, RootFs::Erofs, false);
        assert_eq!(os.boot, Boot::BoardFirmware);
        assert_eq!(os.other_slot, None);
        assert!(os.updates.starts_with("reflash"), "{}", os.updates);
        assert_eq!(
            serde_json::to_value(&os).unwrap()["boot"],
            serde_json::json!("board_firmware")
        );
    }

    #[test]
    fn a_package_install_or_a_missing_os_release_is_not_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let parts = sysfs(dir.path(), &[], 0);
        let os = OsImage::read(&dir.path().join("missing"), &parts, RootFs::Erofs, true);
        assert_eq!(
            (os.boot, os.image_id, os.version),
            (Boot::Package, None, None)
        );
        let debian = dir.path().join("debian");
        std::fs::write(&debian, "ID=debian\nVERSION_ID=12\n").unwrap();
        assert_eq!(
            OsImage::read(&debian, &parts, RootFs::Other, true).boot,
            Boot::Package
        );
    }

    #[test]
    fn without_udev_data_the_runtime_partitions_are_not_seen() {
        // The test can fail: the same first-boot disk with udev's database empty shows
        // no free slot (what reading PARTNAME alone gave under QEMU).
        let dir = tempfile::tempdir().unwrap();
        let parts = sysfs(dir.path(), FIRST_BOOT, 3);
        for entry in std::fs::read_dir(&parts.udev_data).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let os = OsImage::read(&os_release(dir.path()), &parts, RootFs::Erofs, true);
        assert_eq!(os.other_slot, Some(OtherSlot::None));
    }
}
