//! Files published beside a signed `SHA256SUMS`: a directory URL holding the files, a
//! `SHA256SUMS` over them (sha256sum's format) and `SHA256SUMS.minisig`, signed with a
//! key that signs desired-state documents. The A/B updater ([`crate::update`]) stages OS
//! versions this way, and Kiwi's netboot image store fills itself this way.
//!
//! What is trusted is the signature over `SHA256SUMS`, never the transport: a manifest
//! is only accepted signed (insecure mode included), and each file is checked against
//! its line (length as announced, sha256) before it is given its name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use sha2::{Digest, Sha256};

use crate::fetch::{FetchError, client_builder, transport};
use crate::trust::{TrustError, TrustPolicy};
use crate::update::UpdateError;

/// `SHA256SUMS` of a few files is a few hundred bytes; anything past this is not ours.
pub const MAX_SUMS: usize = 64 * 1024;
/// A minisign signature is ~300 bytes.
pub const MAX_SIGNATURE: usize = 4096;

/// How this node fetches signed files: the keys it verifies documents with, and the
/// transport settings of its link to Kahuna. Plain data (the keys are read at each
/// [`trust`](Self::trust)), handed to roles in [`crate::role::RoleContext`].
#[derive(Debug, Clone, Default)]
pub struct SignedSource {
    /// Directory of trusted minisign public keys (`*.pub`).
    pub trusted_keys: PathBuf,
    /// `kowabunga.pubkey=` keys (base64).
    pub pubkeys: Vec<String>,
    /// Plain http allowed (`kowabunga.insecure`); a signature is still required.
    pub insecure: bool,
    /// CA bundle instead of the system store (`kowabunga.ca_file`).
    pub ca_file: Option<PathBuf>,
}

impl SignedSource {
    pub fn trust(&self) -> Result<TrustPolicy, TrustError> {
        TrustPolicy::load(&self.trusted_keys, &self.pubkeys, self.insecure)
    }

    /// An HTTP client for large downloads: `connect_timeout` to connect, then at most
    /// `read_timeout` between two reads (no cap on the whole transfer).
    pub fn client(
        &self,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Client, FetchError> {
        client_builder(self.ca_file.as_deref(), connect_timeout, self.insecure)?
            .read_timeout(read_timeout)
            .build()
            .map_err(|e| FetchError::Client(e.to_string()))
    }

    /// `url` if its scheme is allowed: https, or http in insecure mode.
    pub fn check_scheme(&self, url: &str) -> Result<(), FetchError> {
        if url.starts_with("http://") && !self.insecure {
            return Err(FetchError::PlainHttp(url.to_owned()));
        }
        Ok(())
    }
}

/// `base/SHA256SUMS` and its signature, fetched (size-capped) and verified: the
/// manifest's bytes and the signature's, both to be kept with the files.
pub async fn signed_sums(
    client: &Client,
    base: &str,
    trust: &TrustPolicy,
) -> Result<(Vec<u8>, Vec<u8>), UpdateError> {
    let sums_url = format!("{base}/SHA256SUMS");
    let sums = get_small(client, &sums_url, MAX_SUMS)
        .await?
        .ok_or_else(|| FetchError::Status {
            url: sums_url.clone(),
            status: 404,
        })?;
    let signature = get_small(client, &format!("{sums_url}.minisig"), MAX_SIGNATURE)
        .await?
        .ok_or(UpdateError::Unsigned)?;
    trust
        .verify(&sums, Some(&signature))
        .map_err(UpdateError::Signature)?;
    Ok((sums, signature))
}

/// One line of `SHA256SUMS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumsLine {
    /// 1-based, for error messages.
    pub line: usize,
    /// Lower-case hex.
    pub sha256: String,
    pub name: String,
}

/// The lines of `SHA256SUMS` (`HASH  NAME` or `HASH *NAME`; blank lines skipped). The
/// caller decides which names it accepts.
pub fn parse_sums(text: &str) -> Result<Vec<SumsLine>, UpdateError> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let bad = |detail: String| UpdateError::Manifest {
            line: line_no,
            detail,
        };
        if line.trim().is_empty() {
            continue;
        }
        let (hash, rest) = line
            .split_once(' ')
            .ok_or_else(|| bad("not 'SHA256  NAME'".into()))?;
        let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'));
        let name = name.ok_or_else(|| bad("not 'SHA256  NAME'".into()))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!("{hash:?} is not a sha256 (64 hex digits)")));
        }
        lines.push(SumsLine {
            line: line_no,
            sha256: hash.to_ascii_lowercase(),
            name: name.to_owned(),
        });
    }
    Ok(lines)
}

/// A small file; `None` when the server has none (404).
pub(crate) async fn get_small(
    client: &Client,
    url: &str,
    limit: usize,
) -> Result<Option<Vec<u8>>, FetchError> {
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| transport(url, e))?;
    match response.status() {
        StatusCode::NOT_FOUND => return Ok(None),
        status if !status.is_success() => {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        _ => {}
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(url, e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Downloads `base/NAME` of `line` to `dest` as is, at most `max` bytes, and checks its
/// length and sha256: on success `dest` holds exactly the signed bytes; on any error it
/// is removed. Returns the size.
pub async fn download_checked(
    client: &Client,
    base: &str,
    line: &SumsLine,
    dest: &Path,
    max: u64,
) -> Result<u64, UpdateError> {
    let result = download_into(client, base, line, dest, max).await;
    if result.is_err() {
        // Best effort: the download's error matters more than a failed cleanup.
        let _ = tokio::fs::remove_file(dest).await;
    }
    result
}

async fn download_into(
    client: &Client,
    base: &str,
    line: &SumsLine,
    dest: &Path,
    max: u64,
) -> Result<u64, UpdateError> {
    use tokio::io::AsyncWriteExt;
    let name = &line.name;
    let url = format!("{base}/{name}");
    let mut response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| transport(&url, e))?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url,
            status: response.status().as_u16(),
        }
        .into());
    }
    let too_large = || UpdateError::TooLarge {
        name: name.clone(),
        limit: max,
    };
    let expected = response.content_length();
    if expected.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let io = |what: &'static str| {
        let path = dest.to_owned();
        move |source| UpdateError::Io { what, path, source }
    };
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(io("creating"))?;
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                return Err(match expected {
                    Some(expected) if received < expected => UpdateError::Truncated {
                        name: name.clone(),
                        expected,
                        received,
                    },
                    _ => transport(&url, e).into(),
                });
            }
        };
        received += chunk.len() as u64;
        if received > max {
            return Err(too_large());
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io("writing"))?;
    }
    if let Some(expected) = expected
        && received != expected
    {
        return Err(UpdateError::Truncated {
            name: name.clone(),
            expected,
            received,
        });
    }
    let actual = hex(&hasher.finalize());
    if actual != line.sha256 {
        return Err(UpdateError::HashMismatch {
            name: name.clone(),
            expected: line.sha256.clone(),
            actual,
        });
    }
    file.sync_all().await.map_err(io("syncing"))?;
    Ok(received)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn sums_lines_parse_in_both_modes_and_bad_lines_are_named() {
        let lines = parse_sums(&format!("{H}  a.txt\n\n{} *b.bin\n", H.to_uppercase()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].line, lines[0].name.as_str()), (1, "a.txt"));
        assert_eq!((lines[1].line, lines[1].name.as_str()), (3, "b.bin"));
        assert_eq!(lines[1].sha256, H, "lower-cased");
        for (text, line) in [
            (format!("{H}  a\ngarbage\n"), 2),
            (format!("{}  a\n", &H[1..]), 1),
            (format!("{H}\ta\n"), 1),
        ] {
            assert!(
                matches!(parse_sums(&text), Err(UpdateError::Manifest { line: l, .. }) if l == line),
                "{text:?}"
            );
        }
    }
}
