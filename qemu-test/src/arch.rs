//! The guest's architecture: the suffix of its image files and how QEMU boots it.

use std::fmt;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// UEFI for Arm's `virt` machine (Debian's `qemu-efi-aarch64`), two 64 MiB flashes.
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arch {
    #[default]
    X86_64,
    Aarch64,
}

impl Arch {
    /// Every architecture `scripts/build-image.sh --arch` builds.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// As in the image files' names (`kiwi-0.1.0-aarch64.raw`) and `uname -m`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// As `scripts/build-image.sh --arch` takes it.
    pub fn build_flag(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "arm64",
        }
    }

    pub fn emulator(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    pub fn machine(self) -> &'static str {
        match self {
            Arch::X86_64 => "q35",
            Arch::Aarch64 => "virt",
        }
    }

    /// The CPU under TCG. On Arm, QEMU's own pointer-authentication algorithm instead
    /// of the architected QARMA (which dominates a TCG boot's time otherwise).
    pub fn tcg_cpu(self) -> &'static str {
        match self {
            Arch::X86_64 => "max",
            Arch::Aarch64 => "max,pauth-impdef=on",
        }
    }

    /// UEFI firmware: code (read-only) and the variables template each guest copies.
    pub fn uefi_firmware(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => (OVMF_CODE, OVMF_VARS),
            Arch::Aarch64 => (AAVMF_CODE, AAVMF_VARS),
        }
    }

    /// The Debian package of [`emulator`](Self::emulator) and its firmware, for errors.
    pub fn install_hint(self) -> &'static str {
        match self {
            Arch::X86_64 => "scripts/install-deps.sh --for qemu",
            Arch::Aarch64 => "scripts/install-deps.sh --for arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
