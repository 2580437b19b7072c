//! Minisign keys made and used with the real `minisign` CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A minisign key pair made by the `minisign` CLI.
pub struct Key {
    pub dir: PathBuf,
}

impl Key {
    pub fn generate(dir: &Path, name: &str) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(dir.join("key.pub"))
            .arg("-s")
            .arg(dir.join("key.sec"))
            .stdout(Stdio::null())
            .status()
            .expect("the minisign CLI is needed (scripts/install-deps.sh installs it)");
        assert!(status.success());
        Self { dir }
    }

    pub fn public_file(&self) -> PathBuf {
        self.dir.join("key.pub")
    }

    /// The `.minisig` text the CLI makes for `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        let file = self.dir.join("doc.toml");
        std::fs::write(&file, bytes).unwrap();
        let status = Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(self.dir.join("key.sec"))
            .arg("-m")
            .arg(&file)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(self.dir.join("doc.toml.minisig")).unwrap()
    }
}
