//! TFTP for firmware PXE ROMs, which cannot fetch over HTTP: they are given an iPXE
//! boot loader (Debian's `ipxe` package, in the kiwi image), which then asks DHCP again
//! as iPXE and gets its script over HTTP (the usual chainload). Read-only, and only
//! those loaders: no other file is served.
//!
//! The protocol is `async-tftp`'s (RFC 1350 with the block size, transfer size and
//! window size options PXE ROMs use); this module only chooses the files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_tftp::packet;
use async_tftp::server::Handler;
use futures_lite::io::{Cursor, Sink};

/// The well-known TFTP port.
pub const TFTP_PORT: u16 = 69;
/// Where Debian's `ipxe` package puts its boot loaders.
pub const LOADER_DIR: &str = "/usr/lib/ipxe";

/// iPXE for a PXE ROM: for BIOS, the UNDI loader (keeps the ROM's driver); for x86-64
/// UEFI, the SNP loader (uses the firmware's network driver). Other architectures
/// (32-bit UEFI, arm64) get none.
pub fn loader_for(arch: u16) -> Option<&'static str> {
    match arch {
        0 => Some("undionly.kpxe"),
        7 | 9 => Some("snponly.efi"),
        _ => None,
    }
}

const LOADERS: [&str; 2] = ["undionly.kpxe", "snponly.efi"];

/// Serves the files of [`LOADERS`] in `dir`, read whole (a loader is under 1 MiB).
pub struct Loaders {
    dir: PathBuf,
    served: Arc<AtomicU64>,
}

impl Loaders {
    pub fn new(dir: impl Into<PathBuf>, served: Arc<AtomicU64>) -> Self {
        Self {
            dir: dir.into(),
            served,
        }
    }
}

/// The loader `path` names, if it names one (with or without a leading `/`).
fn loader_name(path: &Path) -> Option<&'static str> {
    let name = path.to_str()?;
    let name = name.strip_prefix('/').unwrap_or(name);
    LOADERS.into_iter().find(|l| *l == name)
}

impl Handler for Loaders {
    type Reader = Cursor<Vec<u8>>;
    type Writer = Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let Some(name) = loader_name(path) else {
            tracing::debug!(%client, path = %path.display(), "netboot: tftp: not a boot loader");
            return Err(packet::Error::FileNotFound);
        };
        let file = self.dir.join(name);
        let bytes = blocking::unblock(move || std::fs::read(file))
            .await
            .map_err(|e| {
                tracing::warn!("netboot: tftp: {name}: {e}");
                packet::Error::FileNotFound
            })?;
        self.served.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%client, loader = name, "netboot: tftp: boot loader sent");
        let len = bytes.len() as u64;
        Ok((Cursor::new(bytes), Some(len)))
    }

    async fn write_req_open(
        &mut self,
        _client: &SocketAddr,
        _path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        Err(packet::Error::IllegalOperation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_loaders_by_architecture() {
        assert_eq!(loader_for(0), Some("undionly.kpxe"));
        assert_eq!(loader_for(7), Some("snponly.efi"));
        assert_eq!(loader_for(9), Some("snponly.efi"));
        assert_eq!(loader_for(11), None);
        assert_eq!(
            loader_name(Path::new("/undionly.kpxe")),
            Some("undionly.kpxe")
        );
        assert_eq!(loader_name(Path::new("snponly.efi")), Some("snponly.efi"));
        for other in [
            "../etc/passwd",
            "/etc/passwd",
            "ipxe.efi",
            "x/undionly.kpxe",
        ] {
            assert_eq!(loader_name(Path::new(other)), None, "{other}");
        }
    }
}
