//! Which documents the agent believes: detached minisign signatures over the exact bytes,
//! made by a key baked into the image or given on the kernel command line.
//!
//! Signatures from the stock `minisign` CLI verify (prehashed, the CLI's default, and
//! legacy ones). The trusted comment is covered by the signature too, but the agent does
//! not rely on it: version, node and validity come from the signed document itself.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use minisign_verify::{PublicKey, Signature};
use thiserror::Error;

/// Where images put the keys they trust.
pub const IMAGE_TRUSTED_KEYS_DIR: &str = "/usr/share/kowabunga/trusted-keys";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TrustError {
    #[error("document is not signed (no .minisig) and the agent is not in insecure mode")]
    Unsigned,
    #[error(
        "no trusted public key is configured (add one to {IMAGE_TRUSTED_KEYS_DIR} or kowabunga.pubkey=)"
    )]
    NoTrustedKey,
    #[error("signature is not a minisign signature: {0}")]
    MalformedSignature(String),
    #[error(
        "signature does not verify with any trusted key (tampered document or untrusted signer)"
    )]
    BadSignature,
    #[error("trusted key {path}: {detail}")]
    BadKey { path: String, detail: String },
}

/// How a document's origin was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// A trusted key signed it.
    Signed,
    /// No signature, accepted because the agent runs in insecure mode.
    UnsignedInsecure,
}

/// The keys the agent trusts and whether unsigned documents are allowed.
pub struct TrustPolicy {
    keys: Vec<PublicKey>,
    insecure: bool,
}

impl std::fmt::Debug for TrustPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustPolicy")
            .field("keys", &self.keys.len())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl TrustPolicy {
    /// Keys from every `*.pub` file in `dir` (minisign's public key file format; a missing
    /// directory holds no key) plus `extra` base64 keys from the command line.
    pub fn load(dir: &Path, extra: &[String], insecure: bool) -> Result<Self, TrustError> {
        let mut keys = Vec::new();
        for path in key_files(dir)? {
            let text = fs::read_to_string(&path).map_err(|e| TrustError::BadKey {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
            keys.push(decode_key_file(&text).map_err(|detail| TrustError::BadKey {
                path: path.display().to_string(),
                detail,
            })?);
        }
        for (i, b64) in extra.iter().enumerate() {
            keys.push(
                PublicKey::from_base64(b64.trim()).map_err(|e| TrustError::BadKey {
                    path: format!("kowabunga.pubkey #{}", i + 1),
                    detail: e.to_string(),
                })?,
            );
        }
        Ok(Self { keys, insecure })
    }

    pub fn insecure(&self) -> bool {
        self.insecure
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Check `signature` (the `.minisig` file's text) over `bytes`.
    pub fn verify(&self, bytes: &[u8], signature: Option<&[u8]>) -> Result<Verified, TrustError> {
        let Some(signature) = signature else {
            return if self.insecure {
                Ok(Verified::UnsignedInsecure)
            } else {
                Err(TrustError::Unsigned)
            };
        };
        // A signature that is present is always checked, even in insecure mode.
        if self.keys.is_empty() {
            return Err(TrustError::NoTrustedKey);
        }
        let text = std::str::from_utf8(signature)
            .map_err(|_| TrustError::MalformedSignature("not UTF-8".into()))?;
        let signature =
            Signature::decode(text).map_err(|e| TrustError::MalformedSignature(e.to_string()))?;
        if self
            .keys
            .iter()
            .any(|key| key.verify(bytes, &signature, true).is_ok())
        {
            Ok(Verified::Signed)
        } else {
            Err(TrustError::BadSignature)
        }
    }
}

fn key_files(dir: &Path) -> Result<Vec<PathBuf>, TrustError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(TrustError::BadKey {
                path: dir.display().to_string(),
                detail: e.to_string(),
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    files.sort();
    Ok(files)
}

/// A minisign `.pub` file: an `untrusted comment:` line, then the base64 key.
fn decode_key_file(text: &str) -> Result<PublicKey, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .ok_or("no key line")?;
    PublicKey::from_base64(line).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made once with `minisign -G -W` / `minisign -S` (prehashed), kept here so these unit tests need no
    // tool; the integration tests sign with the real CLI.
    const PUB: &str = "RWQHQxblgKNvJoSN8CljTEA8gvId0bNoLlb/QqlOpBtRszIdgGeByn2k";
    const SIG: &str = "untrusted comment: signature from minisign secret key\nRUQHQxblgKNvJsdHo3K5idJ4xzM50ymoQ9le9DRLKXuZWUkTmFjVlQhGd350CPnqGB67/5RjRFq0/sHUjtDOemTyu5mkcNvFKQo=\ntrusted comment: timestamp:1795322899\tfile:test\thashed\nMvXMepCX0sreOyIzgUw8Gh+ET5UwFwH9toIIcRbOjZ+ZQXgsv5m/+GPBBdaQUIlxNyVTTM2LsCaieDmdg4NRAw==\n";

    fn policy(insecure: bool) -> TrustPolicy {
        TrustPolicy::load(Path::new("/nonexistent"), &[PUB.to_owned()], insecure).unwrap()
    }

    #[test]
    fn verifies_the_reference_signature() {
        assert_eq!(
            policy(false).verify(b"test", Some(SIG.as_bytes())),
            Ok(Verified::Signed)
        );
    }

    #[test]
    fn tampered_body_fails() {
        assert_eq!(
            policy(false).verify(b"tesT", Some(SIG.as_bytes())),
            Err(TrustError::BadSignature)
        );
    }

    #[test]
    fn unsigned_needs_insecure_but_bad_signatures_never_pass() {
        assert_eq!(policy(false).verify(b"x", None), Err(TrustError::Unsigned));
        assert_eq!(
            policy(true).verify(b"x", None),
            Ok(Verified::UnsignedInsecure)
        );
        assert_eq!(
            policy(true).verify(b"tesT", Some(SIG.as_bytes())),
            Err(TrustError::BadSignature)
        );
        assert!(matches!(
            policy(false).verify(b"x", Some(b"garbage")),
            Err(TrustError::MalformedSignature(_))
        ));
    }

    #[test]
    fn key_files_are_read_from_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("kahuna.pub"),
            format!("untrusted comment: minisign public key\n{PUB}\n"),
        )
        .unwrap();
        fs::write(dir.path().join("README"), "not a key").unwrap();
        let policy = TrustPolicy::load(dir.path(), &[], false).unwrap();
        assert_eq!(policy.key_count(), 1);
        assert_eq!(
            policy.verify(b"test", Some(SIG.as_bytes())),
            Ok(Verified::Signed)
        );
        fs::write(
            dir.path().join("bad.pub"),
            "untrusted comment: x\nnot-base64!\n",
        )
        .unwrap();
        let err = TrustPolicy::load(dir.path(), &[], false).unwrap_err();
        assert!(err.to_string().contains("bad.pub"), "{err}");
    }

    #[test]
    fn no_keys_is_its_own_error() {
        let policy = TrustPolicy::load(Path::new("/nonexistent"), &[], false).unwrap();
        assert_eq!(
            policy.verify(b"x", Some(SIG.as_bytes())),
            Err(TrustError::NoTrustedKey)
        );
    }
}
