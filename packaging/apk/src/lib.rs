//! Alpine APK v2 packages, written the way `abuild` writes them.
//!
//! An APK v2 file is three gzip streams, concatenated:
//!
//! 1. the **signature**: a tar holding `.SIGN.RSA.<key>.rsa.pub`, the RSA PKCS#1 v1.5
//!    signature of the SHA-1 of stream 2's bytes ([`sign`]);
//! 2. the **control** tar: `.PKGINFO` ([`pkginfo`]) and the install scripts;
//! 3. the **data** tar: the files, each preceded by a PAX header with its SHA-1
//!    (`APK-TOOLS.checksum.SHA1`), whose gzip stream's SHA-256 is `.PKGINFO`'s `datahash`.
//!
//! Streams 1 and 2 are "cut": their tar end-of-archive blocks are dropped, so that the
//! three decompress to one tar archive (what `abuild-tar --cut` does). [`tarball`] builds
//! the three tars; this module puts them together.

pub mod pkginfo;
pub mod sign;
pub mod tarball;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub use pkginfo::PackageInfo;
pub use sign::Signer;
pub use tarball::{File, Script};

/// One package: its metadata, its files and its install scripts.
#[derive(Debug, Clone)]
pub struct Package {
    pub info: PackageInfo,
    pub files: Vec<File>,
    pub scripts: Vec<Script>,
    /// Every mtime in the package (and `.PKGINFO`'s builddate): SOURCE_DATE_EPOCH.
    pub mtime: u64,
}

impl Package {
    /// The package's bytes: signature, control and data streams, signed by `signer`.
    pub fn write(&self, signer: &Signer) -> Result<Vec<u8>> {
        let data = tarball::gzip(&tarball::data_tar(&self.files, self.mtime)?)
            .context("compressing the data tar")?;
        let datahash = hex::encode(Sha256::digest(&data));
        let installed_size = self.files.iter().map(|f| f.content.len() as u64).sum();
        let pkginfo = self.info.render(self.mtime, installed_size, &datahash)?;
        let control = tarball::gzip(&tarball::control_tar(&pkginfo, &self.scripts, self.mtime)?)
            .context("compressing the control tar")?;
        let signature = signer.sign(&control)?;
        let signature = tarball::gzip(&tarball::signature_tar(
            &signer.entry_name(),
            &signature,
            self.mtime,
        )?)
        .context("compressing the signature tar")?;

        let mut apk = Vec::with_capacity(signature.len() + control.len() + data.len());
        apk.extend_from_slice(&signature);
        apk.extend_from_slice(&control);
        apk.extend_from_slice(&data);
        Ok(apk)
    }
}
