//! The libvirt secret an `rbd` pool's instances authenticate with: Kahuna's domain XML
//! names it by UUID (`<auth username='libvirt'><secret type='ceph' uuid=...>`), and
//! QEMU reads the cephx key from it. The key comes from a file on the node (never from
//! a document); the secret is private (libvirt never hands the value back), so its
//! description carries the key's sha256, which is how plan tells whether the value in
//! libvirt is the file's.

use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::libvirt_protocol::PoolStep;

/// A cephx key read from its file: the base64 text and its digest. The key itself is
/// never printed (`Debug` shows the digest only).
pub struct CephKey {
    text: String,
    pub digest: String,
}

impl std::fmt::Debug for CephKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CephKey(sha256:{})", self.digest)
    }
}

impl CephKey {
    /// Read and check the key file: one base64 line, as `ceph auth get-key` prints it.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "ceph key file {}: {e} (write the client's key there, as `ceph auth get-key client.<id>` prints it)",
                path.display()
            )
        })?;
        let text = text.trim().to_owned();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .map_err(|_| format!("ceph key file {}: not a base64 key", path.display()))?;
        if decoded.is_empty() {
            return Err(format!("ceph key file {}: empty", path.display()));
        }
        let digest = hex(&Sha256::digest(text.as_bytes()));
        Ok(Self { text, digest })
    }

    /// The key's bytes, as libvirt stores a `ceph` secret's value.
    pub fn bytes(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.text)
            .unwrap_or_default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Write the kernel command line's `kowabunga.ceph_key`s as `<dir>/<client>.key`
/// (directory 0700, files 0600, replaced atomically, left alone when unchanged), where
/// `rbd` pools that name no `key_file` read them.
pub fn persist_keys(
    dir: &Path,
    keys: &std::collections::BTreeMap<String, kernel_cmdline::Secret>,
) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if keys.is_empty() {
        return Ok(());
    }
    let err = |what: &Path, e: std::io::Error| format!("ceph keys: {}: {e}", what.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(dir, e))?;
    for (client, key) in keys {
        let path = dir.join(format!("{client}.key"));
        if std::fs::read_to_string(&path).is_ok_and(|k| k.trim() == key.expose()) {
            continue;
        }
        kowabunga_private_file::write_private(&path, format!("{}\n", key.expose()).as_bytes())
            .map_err(|e| format!("ceph keys: {e}"))?;
        tracing::info!("ceph key of client.{client} written to {}", path.display());
    }
    Ok(())
}

/// What a pool wants of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedSecret {
    pub uuid: String,
    pub client: String,
    pub key_file: PathBuf,
}

/// The description that marks a secret as holding the key with `digest`.
pub fn description(client: &str, digest: &str) -> String {
    format!("kowabunga: cephx key of client.{client}, sha256:{digest}")
}

/// The secret's XML: private, persistent, usage `ceph` named after its UUID (libvirt
/// refuses two secrets with one usage name).
pub fn secret_xml(uuid: &str, client: &str, digest: &str) -> String {
    format!(
        "<secret ephemeral='no' private='yes'><uuid>{uuid}</uuid><description>{}</description><usage type='ceph'><name>kowabunga {uuid}</name></usage></secret>",
        description(client, digest)
    )
}

/// The digest a secret's description records, if it is one of ours.
pub fn recorded_digest(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let text = doc
        .descendants()
        .find(|n| n.has_tag_name("description"))?
        .text()?;
    text.rsplit_once("sha256:").map(|(_, d)| d.to_owned())
}

/// Whether libvirt's secret (its XML, `None` when libvirt has none) holds the key with
/// `digest`.
pub fn in_place(xml: Option<&str>, digest: &str) -> bool {
    xml.and_then(recorded_digest).as_deref() == Some(digest)
}

/// The helper's step that defines (or redefines) the secret and sets its value from the
/// key file. `digest` is the one plan read: a key file changed since is refused.
pub fn put(wanted: &WantedSecret, digest: &str) -> PoolStep {
    PoolStep::Secret {
        uuid: wanted.uuid.clone(),
        xml: secret_xml(&wanted.uuid, &wanted.client, digest),
        key_file: wanted.key_file.clone(),
        digest: digest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_key_file_and_never_prints_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libvirt.key");
        std::fs::write(&path, "AQACAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==\n").unwrap();
        let key = CephKey::read(&path).unwrap();
        assert!(!format!("{key:?}").contains(&key.text[..8]));
        assert_eq!(key.digest.len(), 64);
        assert!(!key.bytes().is_empty());

        std::fs::write(&path, "not base64 !").unwrap();
        let err = CephKey::read(&path).unwrap_err();
        assert!(err.contains("not a base64 key"), "{err}");
        let err = CephKey::read(&dir.path().join("missing.key")).unwrap_err();
        assert!(
            err.contains("missing.key") && err.contains("ceph auth get-key"),
            "{err}"
        );
    }

    #[test]
    fn keys_from_the_command_line_are_written_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("ceph");
        let key = "AQACAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
        let keys = std::collections::BTreeMap::from([(
            "libvirt".to_owned(),
            kernel_cmdline::Secret::new(key),
        )]);
        persist_keys(&keys_dir, &keys).unwrap();
        let path = keys_dir.join("libvirt.key");
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), key);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&keys_dir), mode(&path)), (0o700, 0o600));
        assert_eq!(CephKey::read(&path).unwrap().digest.len(), 64);
        // Unchanged: not rewritten.
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        persist_keys(&keys_dir, &keys).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );
        // Nothing asked: no directory made.
        let none = dir.path().join("none");
        persist_keys(&none, &Default::default()).unwrap();
        assert!(!none.exists());
    }

    #[test]
    fn the_description_records_the_digest() {
        let xml = secret_xml("6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10", "libvirt", "ab12");
        assert_eq!(recorded_digest(&xml).as_deref(), Some("ab12"));
        assert_eq!(recorded_digest("<secret/>"), None);
    }
}
