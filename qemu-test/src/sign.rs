//! Signs documents with the stock `minisign` CLI, as an operator would
//! (`minisign -S -s key -m doc`), so the agent is tested against real signatures.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "minisign {args} failed: {stderr} (is minisign installed? scripts/install-deps.sh --for qemu)"
    )]
    Minisign { args: String, stderr: String },
}

/// A minisign key pair in a directory.
pub struct Signer {
    dir: PathBuf,
}

impl Signer {
    /// Generates a password-less key pair in `dir`.
    pub fn generate(dir: &Path) -> Result<Self, SignError> {
        fs::create_dir_all(dir).map_err(|source| SignError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let signer = Self {
            dir: dir.to_owned(),
        };
        signer.minisign(&[
            "-G",
            "-W",
            "-f",
            "-p",
            &signer.public_path(),
            "-s",
            &signer.secret_path(),
        ])?;
        Ok(signer)
    }

    fn public_path(&self) -> String {
        self.dir.join("kahuna.pub").display().to_string()
    }

    fn secret_path(&self) -> String {
        self.dir.join("kahuna.key").display().to_string()
    }

    fn minisign(&self, args: &[&str]) -> Result<(), SignError> {
        let out = Command::new("minisign")
            .args(args)
            .output()
            .map_err(|source| SignError::Io {
                what: "running minisign".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(SignError::Minisign {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }

    /// The public key as `kowabunga.pubkey=` takes it: the base64 line of the .pub file.
    pub fn public_key_base64(&self) -> Result<String, SignError> {
        let text = fs::read_to_string(self.public_path()).map_err(|source| SignError::Io {
            what: "reading the public key".into(),
            source,
        })?;
        Ok(text.lines().nth(1).unwrap_or_default().trim().to_owned())
    }

    /// Signs `document` (written to `name` in the key directory); returns the .minisig bytes.
    pub fn sign(&self, name: &str, document: &[u8]) -> Result<Vec<u8>, SignError> {
        let path = self.dir.join(name);
        fs::write(&path, document).map_err(|source| SignError::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        let path_s = path.display().to_string();
        self.minisign(&["-S", "-s", &self.secret_path(), "-m", &path_s])?;
        let sig = self.dir.join(format!("{name}.minisig"));
        fs::read(&sig).map_err(|source| SignError::Io {
            what: format!("reading {}", sig.display()),
            source,
        })
    }
}
