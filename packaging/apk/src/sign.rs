//! abuild's package signature: RSA PKCS#1 v1.5 over the SHA-1 of the control stream.

use std::path::Path;

use anyhow::{Context, Result, bail};
use rsa::PrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer as _};
use sha1::Sha1;

/// A packager's signing key and the name of its public key (`NAME.rsa.pub`), which
/// apk finds in `/etc/apk/keys/` to check the package.
pub struct Signer {
    key: SigningKey<Sha1>,
    public_key_name: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("Signer")
            .field("public_key_name", &self.public_key_name)
            .finish()
    }
}

impl Signer {
    /// Reads a PEM private key (PKCS#8, or PKCS#1 as `openssl genrsa` wrote before
    /// OpenSSL 3). `public_key_name` defaults to the key file's name plus `.pub`
    /// (abuild-keygen writes `me-1234.rsa` and `me-1234.rsa.pub`).
    pub fn from_pem_file(path: &Path, public_key_name: Option<&str>) -> Result<Self> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading the signing key {}", path.display()))?;
        let name = match public_key_name {
            Some(name) => name.to_string(),
            None => {
                let file = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .with_context(|| format!("{}: no file name", path.display()))?;
                format!("{file}.pub")
            }
        };
        Self::from_pem(&pem, &name).with_context(|| format!("signing key {}", path.display()))
    }

    pub fn from_pem(pem: &str, public_key_name: &str) -> Result<Self> {
        if public_key_name.is_empty() || public_key_name.contains(['/', '\n']) {
            bail!("public key name '{public_key_name}': a file name, as in /etc/apk/keys/");
        }
        let key = PrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| PrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| anyhow::anyhow!("not an RSA private key in PEM (PKCS#8 or PKCS#1)"))?;
        Ok(Self {
            key: SigningKey::new(key),
            public_key_name: public_key_name.to_string(),
        })
    }

    /// The signature tar's entry: `.SIGN.RSA.<public key name>`.
    pub fn entry_name(&self) -> String {
        format!(".SIGN.RSA.{}", self.public_key_name)
    }

    /// Signs `control` (the control stream's gzip bytes).
    pub fn sign(&self, control: &[u8]) -> Result<Vec<u8>> {
        let signature = self
            .key
            .try_sign(control)
            .map_err(|e| anyhow::anyhow!("RSA signing failed: {e}"))?;
        Ok(signature.to_vec())
    }
}
