//! The node's own WireGuard keys: one private key per tunnel, made on the node the
//! first time the tunnel is set and kept on `/var` (`<dir>/<link>.key`, 0600, in a
//! 0700 directory) across generations and boots, so that the public key the other
//! side was given stays valid. The private key is never in a document, a log, a
//! report or `/status`; the public key is logged when the key is made and shown in
//! `/status`.

use std::path::{Path, PathBuf};

use crate::model::check_key;
use crate::wg::Wg;

/// Where the keys live.
#[derive(Debug, Clone)]
pub struct Keys {
    dir: PathBuf,
}

impl Keys {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, link: &str) -> PathBuf {
        self.dir.join(format!("{link}.key"))
    }

    /// The private key of `link`'s tunnel, made with `wg genkey` if there is none yet.
    pub async fn private_key(&self, wg: &Wg, link: &str) -> Result<String, String> {
        let path = self.path(link);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let key = text.trim().to_owned();
                check_key(&path.display().to_string(), &key)
                    .map_err(|e| format!("the key file is damaged: {e}"))?;
                return Ok(key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        let key = wg.genkey().await?;
        check_key("wg genkey", &key).map_err(|e| e.to_string())?;
        write_key(&path, &key)?;
        let public = wg.pubkey(&key).await?;
        tracing::info!(%link, public_key = %public, "wireguard: made the tunnel's key pair");
        Ok(key)
    }
}

/// Writes `key` to `path` (0600, in a 0700 directory) through a file beside it,
/// fsynced, renamed.
fn write_key(path: &Path, key: &str) -> Result<(), String> {
    kowabunga_private_file::write_private(path, format!("{key}\n").as_bytes())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A key is made once (0600 in a 0700 directory) and read back after.
    #[tokio::test]
    async fn a_key_is_made_once_and_kept_private() {
        let tmp = tempfile::tempdir().unwrap();
        let keys = Keys::new(tmp.path().join("wireguard"));
        let wg = Wg::default();
        let first = keys.private_key(&wg, "wg0").await.unwrap();
        assert_eq!(keys.private_key(&wg, "wg0").await.unwrap(), first);
        assert_ne!(keys.private_key(&wg, "wg1").await.unwrap(), first);
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(tmp.path().join("wireguard/wg0.key")), 0o600);
        assert_eq!(mode(tmp.path().join("wireguard")), 0o700);
        // A damaged file is an error naming the file, not a new key.
        std::fs::write(tmp.path().join("wireguard/wg0.key"), "garbage\n").unwrap();
        let err = keys.private_key(&wg, "wg0").await.unwrap_err();
        assert!(err.contains("wg0.key") && err.contains("damaged"), "{err}");
        assert!(!err.contains(&first));
    }
}
