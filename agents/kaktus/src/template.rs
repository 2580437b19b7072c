//! `CreateTemplateVolume`: download an OS image over HTTP(S) into a pool, as a raw
//! template that OS volumes are cloned from.
//!
//! The body streams into a hidden work file: at most the configured cap, each chunk
//! within a stall timeout, the whole within a deadline, hashed on the way. Accepted:
//! qcow2 (converted to raw with `qemu-img convert`, refused when it names a backing or
//! external data file, which would read host files) or raw. Refused with a clear error:
//! an HTTP error status, an HTML page, a compressed archive (`.xz`, `.zst`, `.gz`,
//! `.bz2`), a body shorter than its `Content-Length`, a body over the cap, a sha256
//! mismatch. On every failure the work files are removed: nothing is left behind.
//!
//! The expected sha256 travels in the URL's fragment (`...image.qcow2#sha256=<hex>`):
//! Kahuna passes the source URL through untouched, and a fragment is never sent to the
//! server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kowabunga_model::Progress;
use kowabunga_process::Invocation;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::storage::{Storage, Target, WorkFile, image_info, qcow2_backing_file, virtual_size};
use crate::storage_rbd;

/// How long a whole download may take (Kahuna waits up to an hour for the reply).
pub const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(55 * 60);
/// How long the server may send nothing before the download counts as stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes gathered before each write of a download to its file.
const WRITE_BUFFER: usize = 1 << 20;
/// How long converting a qcow2 image to raw may take.
const CONVERT_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// What the first bytes of a download say it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    Qcow2,
    Raw,
    Refused(String),
}

/// Classify an image by its first bytes (at least 64 of them, or the whole body).
pub fn sniff(head: &[u8]) -> Sniffed {
    let archive = |kind: &str| {
        Sniffed::Refused(format!(
            "the source is a {kind} archive, not a disk image: point at the uncompressed .qcow2 or .raw image"
        ))
    };
    if head.starts_with(b"QFI\xfb") {
        return Sniffed::Qcow2;
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return archive("xz");
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return archive("zstd");
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return archive("gzip");
    }
    if head.starts_with(b"BZh") {
        return archive("bzip2");
    }
    let text = String::from_utf8_lossy(&head[..head.len().min(64)]).to_ascii_lowercase();
    let text = text.trim_start();
    if text.starts_with("<!doctype html") || text.starts_with("<html") || text.starts_with("<head")
    {
        return Sniffed::Refused(
            "the source answered an HTML page, not a disk image (a login or error page?)".into(),
        );
    }
    if head.is_empty() {
        return Sniffed::Refused("the source is empty".into());
    }
    Sniffed::Raw
}

/// The URL to fetch and the sha256 its fragment asks for.
pub fn parse_source(source: &str) -> Result<(reqwest::Url, Option<[u8; 32]>), String> {
    let mut url = reqwest::Url::parse(source)
        .map_err(|e| format!("template source {source:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "template source {source:?}: only http and https are accepted"
        ));
    }
    let mut sha = None;
    if let Some(fragment) = url.fragment() {
        let hex = fragment.strip_prefix("sha256=").ok_or_else(|| {
            format!("template source {source:?}: the fragment must be sha256=<64 hex digits>")
        })?;
        sha = Some(parse_hex(hex).ok_or_else(|| {
            format!("template source {source:?}: sha256 {hex:?} is not 64 hex digits")
        })?);
    }
    url.set_fragment(None);
    Ok((url, sha))
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Template downloads into the node's pools.
#[derive(Clone)]
pub struct Templates {
    storage: Storage,
    progress: Progress,
    /// The HTTP client, or why it could not be built (reported by each download).
    client: Result<reqwest::Client, String>,
    deadline: Duration,
    stall: Duration,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    pub fn new(storage: Storage, progress: Progress) -> Self {
        let client = tls_config().and_then(|tls| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .connect_timeout(Duration::from_secs(30))
                .redirect(redirect_policy())
                .build()
                .map_err(|e| format!("template downloads: HTTP client: {e}"))
        });
        Self {
            storage,
            progress,
            client,
            deadline: DOWNLOAD_DEADLINE,
            stall: STALL_TIMEOUT,
        }
    }

    /// Shorter deadlines (tests).
    pub fn with_timeouts(mut self, deadline: Duration, stall: Duration) -> Self {
        self.deadline = deadline;
        self.stall = stall;
        self
    }

    /// Download `source` into `pool`/`volume` as a raw template; its size in bytes.
    pub async fn create(&self, pool: &str, volume: &str, source: &str) -> Result<u64, String> {
        let target = self.storage.target(pool, volume)?;
        let what = format!("template {pool}/{volume}");
        let (scratch, exists) = match &target {
            Target::Local(v) => (v.dir.clone(), v.path.exists()),
            Target::Rbd(v) => (PathBuf::from(storage_rbd::SCRATCH_DIR), v.exists().await?),
        };
        if exists {
            return Err(format!("{what}: volume already exists"));
        }
        let (url, sha) = parse_source(source).map_err(|e| format!("{what}: {e}"))?;
        let cap = self.storage.inventory().template_max_bytes;
        let task = format!("template {pool}/{volume}");
        let download = WorkFile::new(&scratch, volume);
        let result = async {
            let format = tokio::time::timeout(
                self.deadline,
                self.download(&url, download.path(), cap, sha, &task),
            )
            .await
            .map_err(|_| format!("download did not finish within {:?}", self.deadline))??;
            let raw = match format {
                Sniffed::Qcow2 => {
                    self.progress.set(&task, "converting qcow2 to raw");
                    let raw = WorkFile::new(&scratch, volume);
                    to_raw(download.path(), raw.path()).await?;
                    // qemu-img leaves its output in the page cache.
                    sync(raw.path()).await?;
                    raw
                }
                Sniffed::Raw => {
                    sync(download.path()).await?;
                    download
                }
                Sniffed::Refused(why) => return Err(why),
            };
            match &target {
                Target::Local(v) => raw.publish(&v.path)?,
                Target::Rbd(v) => {
                    self.progress.set(&task, "importing into Ceph");
                    // The work file is removed when `raw` drops, imported or not.
                    v.import_template(raw.path(), self.deadline).await?;
                }
            }
            Ok::<(), String>(())
        }
        .await;
        self.progress.clear(&task);
        result.map_err(|e| format!("{what} from {url}: {e}"))?;
        match target {
            Target::Local(v) => {
                self.storage.refresh(&v.pool.name).await;
                virtual_size(&v.path).await
            }
            Target::Rbd(v) => v.size().await,
        }
    }

    /// Stream the body into `into`; what its first bytes say it is.
    async fn download(
        &self,
        url: &reqwest::Url,
        into: &Path,
        cap: u64,
        sha: Option<[u8; 32]>,
        task: &str,
    ) -> Result<Sniffed, String> {
        self.progress.set(task, "connecting");
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let mut response = tokio::time::timeout(self.stall, client.get(url.clone()).send())
            .await
            .map_err(|_| format!("no answer within {:?}", self.stall))?
            .map_err(|e| format!("request failed: {}", chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the server answered HTTP {status}"));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/html") {
            return Err(
                "the server answered an HTML page (Content-Type text/html), not a disk image"
                    .into(),
            );
        }
        let length = response.content_length();
        if let Some(len) = length.filter(|len| *len > cap) {
            return Err(format!(
                "the image is {len} bytes, over this node's cap of {cap} bytes"
            ));
        }
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(into)
            .await
            .map_err(|e| format!("cannot create {}: {e}", into.display()))?;
        // Large writes: each write of a tokio file is a trip to the blocking pool, and
        // the body arrives in chunks of a few KiB.
        let mut file = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        // Hashed only when the source names a sha256.
        let mut hasher = sha.map(|_| Sha256::new());
        let mut head: Vec<u8> = Vec::with_capacity(64);
        let mut received: u64 = 0;
        let mut reported: u64 = 0;
        let total = length
            .map(|l| format!(" of {} MiB", l >> 20))
            .unwrap_or_default();
        loop {
            let chunk = tokio::time::timeout(self.stall, response.chunk())
                .await
                .map_err(|_| {
                    format!(
                        "stalled: nothing received for {:?} after {received} bytes",
                        self.stall
                    )
                })?
                .map_err(|e| format!("download broke after {received} bytes: {}", chain(&e)))?;
            let Some(chunk) = chunk else { break };
            received += chunk.len() as u64;
            if received > cap {
                return Err(format!("the image is over this node's cap of {cap} bytes"));
            }
            if head.len() < 64 {
                let take = (64 - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
                if head.len() == 64
                    && let Sniffed::Refused(why) = sniff(&head)
                {
                    return Err(why);
                }
            }
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&chunk);
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("cannot write {}: {e}", into.display()))?;
            if received - reported >= 8 << 20 {
                reported = received;
                self.progress
                    .set(task, format!("downloaded {} MiB{total}", received >> 20));
            }
        }
        if let Some(len) = length
            && received != len
        {
            return Err(format!("truncated: received {received} of {len} bytes"));
        }
        // Not synced here: a raw image is synced before it is published, a qcow2 one
        // is only read back by the conversion (whose output qemu-img flushes).
        file.flush()
            .await
            .map_err(|e| format!("cannot write {}: {e}", into.display()))?;
        if let (Some(expected), Some(hasher)) = (sha, hasher) {
            let got: [u8; 32] = hasher.finalize().into();
            if got != expected {
                return Err(format!(
                    "sha256 mismatch: expected {}, got {}",
                    to_hex(&expected),
                    to_hex(&got)
                ));
            }
        }
        Ok(sniff(&head))
    }
}

/// Flush a written file to disk.
async fn sync(path: &Path) -> Result<(), String> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .await
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    file.sync_all()
        .await
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Convert a downloaded qcow2 image to raw, refusing images that point outside
/// themselves (a backing file or an external data file would be read from the host).
async fn to_raw(qcow2: &Path, raw: &Path) -> Result<(), String> {
    if let Some(backing) = qcow2_backing_file(qcow2) {
        return Err(format!(
            "the qcow2 image names a backing file ({backing:?}): refused"
        ));
    }
    let info = image_info(qcow2, "qcow2")
        .await
        .map_err(|e| format!("not a valid qcow2 image: {e}"))?;
    if info.get("backing-filename").is_some()
        || info.pointer("/format-specific/data/data-file").is_some()
    {
        return Err("the qcow2 image names a backing or external data file: refused".into());
    }
    let out = Invocation::new("qemu-img", CONVERT_DEADLINE)
        // -W: clusters written out of order, as they are read (several times faster
        // than in order for the same result: docs/benchmarks.md).
        .args(["convert", "-q", "-W", "-f", "qcow2", "-O", "raw"])
        .arg(qcow2.as_os_str())
        .arg(raw.as_os_str())
        .run()
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!(
            "qemu-img convert failed: {}",
            out.stderr_lossy().trim()
        ));
    }
    Ok(())
}

/// An error and its causes, `outer: inner: ...` (reqwest's own text leaves them out).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Redirects a template download follows.
pub const MAX_REDIRECTS: usize = 5;

/// Whether a download may go from `previous` to `next` after `hops` redirects: at most
/// [`MAX_REDIRECTS`], and never from https down to http (the image would lose the
/// integrity its https source promised).
pub fn redirect_allowed(
    previous: &reqwest::Url,
    next: &reqwest::Url,
    hops: usize,
) -> Result<(), String> {
    if hops > MAX_REDIRECTS {
        return Err(format!(
            "more than {MAX_REDIRECTS} redirects (last to {next})"
        ));
    }
    if previous.scheme() == "https" && next.scheme() != "https" {
        return Err(format!("redirect from {previous} down to {next} refused"));
    }
    Ok(())
}

fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let hops = attempt.previous().len();
        let verdict = match attempt.previous().last() {
            Some(previous) => redirect_allowed(previous, attempt.url(), hops),
            None => Ok(()),
        };
        match verdict {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(why),
        }
    })
}

/// HTTPS with the system's roots (ring provider, as the rest of the agent).
fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!("system CA store: {error}");
    }
    roots.add_parsable_certificates(found.certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("template downloads: TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_images_archives_and_pages() {
        assert_eq!(sniff(b"QFI\xfb\0\0\0\x03"), Sniffed::Qcow2);
        assert_eq!(sniff(&[0u8; 64]), Sniffed::Raw);
        for (head, word) in [
            (&b"\xfd7zXZ\0rest"[..], "xz archive"),
            (&b"\x28\xb5\x2f\xfdrest"[..], "zstd archive"),
            (&b"\x1f\x8brest"[..], "gzip archive"),
            (&b"  <!DOCTYPE html><html>"[..], "HTML page"),
            (&b""[..], "empty"),
        ] {
            match sniff(head) {
                Sniffed::Refused(why) => assert!(why.contains(word), "{why}"),
                other => panic!("{head:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn redirects_are_bounded_and_never_downgrade() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(
            redirect_allowed(&u("http://a/x"), &u("https://b/y"), 1),
            Ok(())
        );
        assert_eq!(
            redirect_allowed(&u("https://a/x"), &u("https://b/y"), 5),
            Ok(())
        );
        let err = redirect_allowed(&u("https://a/x"), &u("http://a/x"), 1).unwrap_err();
        assert!(err.contains("down to http://a/x refused"), "{err}");
        let err = redirect_allowed(&u("http://a/x"), &u("http://a/y"), 6).unwrap_err();
        assert!(err.contains("more than 5 redirects"), "{err}");
    }

    #[test]
    fn reads_the_sha256_from_the_fragment() {
        let hex = "ab".repeat(32);
        let (url, sha) =
            parse_source(&format!("https://img.example/x.qcow2#sha256={hex}")).unwrap();
        assert_eq!(url.as_str(), "https://img.example/x.qcow2");
        assert_eq!(sha, Some([0xab; 32]));
        assert_eq!(parse_source("http://img.example/x.raw").unwrap().1, None);
        assert!(
            parse_source("ftp://img.example/x")
                .unwrap_err()
                .contains("only http and https")
        );
        assert!(
            parse_source("https://img.example/x#md5=1")
                .unwrap_err()
                .contains("sha256=<64 hex digits>")
        );
        assert!(
            parse_source("https://img.example/x#sha256=zz")
                .unwrap_err()
                .contains("not 64 hex digits")
        );
    }
}
