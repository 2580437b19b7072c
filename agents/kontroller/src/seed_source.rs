//! Where this boot's NoCloud seed is, and fetching it when the kernel command line
//! names a seed URL (`ds=nocloud;s=http://host/path/`, a netbooted or lab VM).
//!
//! - no `ds=`, or `ds=nocloud` alone: the `cidata` volume, mounted at [`LOCAL_SEED_DIR`];
//! - `s=file:///path/` (or `s=/path/`): that directory;
//! - `s=http(s)://...`: `kontroller-firstboot` fetches `meta-data` (required),
//!   `user-data` and `network-config` (each optional: a 404 means absent) into
//!   [`FETCHED_SEED_DIR`] (0700, files 0600: meta-data holds the agent token) before
//!   anything else reads the seed; the agent reads that copy. The file names are
//!   appended to the URL as cloud-init does (a missing final `/` is added).
//!
//! `KOWABUNGA_SEED_DIR` overrides all of it (tests, an operator's own seed).

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kernel_cmdline::HttpUrl;

use crate::nocloud::{KernelSeed, MAX_FILE_BYTES, parse_kernel_seed};

/// Where the image mounts the `cidata` volume.
pub const LOCAL_SEED_DIR: &str = "/run/kowabunga/seed";
/// Where a seed fetched from a URL is kept for this boot.
pub const FETCHED_SEED_DIR: &str = "/run/kowabunga/seed-url";

/// The seed files, in the order they are fetched; only the first is required.
const FILES: [&str; 3] = ["meta-data", "user-data", "network-config"];
/// One HTTP request's bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Where this boot's seed comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedSource {
    /// A directory to read (the mounted volume, a `file://` seed, the override).
    Dir(PathBuf),
    /// A seed URL; once fetched, it is read from [`FETCHED_SEED_DIR`].
    Url(HttpUrl),
}

impl SeedSource {
    /// From `KOWABUNGA_SEED_DIR` (`override_dir`) or the kernel command line.
    pub fn resolve(override_dir: Option<PathBuf>, cmdline: &str) -> Result<Self, String> {
        if let Some(dir) = override_dir {
            return Ok(Self::Dir(dir));
        }
        Ok(
            match parse_kernel_seed(cmdline).map_err(|e| e.to_string())? {
                None | Some(KernelSeed::Local) => Self::Dir(PathBuf::from(LOCAL_SEED_DIR)),
                Some(KernelSeed::Path(path)) => Self::Dir(path),
                Some(KernelSeed::Url(url)) => Self::Url(url),
            },
        )
    }

    /// This boot's: `KOWABUNGA_SEED_DIR`, else `/proc/cmdline`.
    pub fn of_this_boot() -> Result<Self, String> {
        let override_dir = std::env::var_os("KOWABUNGA_SEED_DIR").map(PathBuf::from);
        if override_dir.is_some() {
            return Self::resolve(override_dir, "");
        }
        let cmdline = std::fs::read_to_string("/proc/cmdline")
            .map_err(|e| format!("reading /proc/cmdline: {e}"))?;
        Self::resolve(None, &cmdline)
    }

    /// The directory the seed is read from.
    pub fn dir(&self) -> PathBuf {
        match self {
            Self::Dir(dir) => dir.clone(),
            Self::Url(_) => PathBuf::from(FETCHED_SEED_DIR),
        }
    }
}

/// The seed files' URLs under `base` (a final `/` added when missing).
pub fn file_urls(base: &HttpUrl) -> Vec<(&'static str, String)> {
    let mut prefix = base.as_str().to_owned();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    FILES
        .iter()
        .map(|name| (*name, format!("{prefix}{name}")))
        .collect()
}

/// Fetch the seed at `base` into `dir`, retrying (the network may still be coming up)
/// until `within` has passed. Returns the names of the files fetched. No redirect is
/// followed: the seed carries the agent's token, and it goes nowhere it was not asked.
pub async fn fetch(base: &HttpUrl, dir: &Path, within: Duration) -> Result<Vec<String>, String> {
    let client = crate::http::client(REQUEST_TIMEOUT, "seed")?;
    let deadline = tokio::time::Instant::now() + within;
    let mut backoff =
        kowabunga_backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        match fetch_once(&client, base).await {
            Ok(files) => {
                write_dir(dir, &files)?;
                return Ok(files.into_iter().map(|(name, _)| name.to_owned()).collect());
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{e} (gave up after {within:?})"));
            }
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}

/// Every seed file once: meta-data must be there, the others may be absent (404).
async fn fetch_once(
    client: &reqwest::Client,
    base: &HttpUrl,
) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let mut files = Vec::new();
    for (name, url) in file_urls(base) {
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("seed {url}: {e}"))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND && name != FILES[0] {
            continue;
        }
        if !status.is_success() {
            return Err(format!("seed {url}: HTTP {status}"));
        }
        let body =
            crate::http::body_within(response, MAX_FILE_BYTES, &format!("seed {url}")).await?;
        files.push((name, body));
    }
    Ok(files)
}

/// `dir` (0700) holding exactly `files` (0600).
fn write_dir(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<(), String> {
    let io = |what: &str, path: &Path, e: std::io::Error| format!("{what} {}: {e}", path.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("creating", dir, e))?;
    for name in FILES {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing", &path, e)),
        }
    }
    for (name, body) in files {
        let path = dir.join(name);
        kowabunga_private_file::write_private(&path, body).map_err(|e| io("writing", &path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_the_seed() {
        let resolve = |cmdline: &str| SeedSource::resolve(None, cmdline).unwrap();
        assert_eq!(
            resolve("quiet console=ttyS0"),
            SeedSource::Dir(LOCAL_SEED_DIR.into())
        );
        assert_eq!(
            resolve("ds=nocloud"),
            SeedSource::Dir(LOCAL_SEED_DIR.into())
        );
        assert_eq!(
            resolve("ds=nocloud;s=file:///srv/seed/"),
            SeedSource::Dir("/srv/seed/".into())
        );
        let url = resolve("ds=nocloud\\;s=http://10.0.2.100/files/seed");
        assert_eq!(url.dir(), Path::new(FETCHED_SEED_DIR));
        let SeedSource::Url(base) = url else {
            panic!("{url:?}")
        };
        assert_eq!(
            file_urls(&base),
            [
                (
                    "meta-data",
                    "http://10.0.2.100/files/seed/meta-data".to_owned()
                ),
                (
                    "user-data",
                    "http://10.0.2.100/files/seed/user-data".to_owned()
                ),
                (
                    "network-config",
                    "http://10.0.2.100/files/seed/network-config".to_owned()
                ),
            ]
        );
        let override_dir = SeedSource::resolve(Some("/tmp/x".into()), "ds=nocloud;s=http://a/");
        assert_eq!(override_dir.unwrap(), SeedSource::Dir("/tmp/x".into()));
    }

    #[test]
    fn a_bad_seed_option_is_refused_by_name() {
        let err = SeedSource::resolve(None, "ds=nocloud;s=ftp://host/seed/").unwrap_err();
        assert!(err.contains("ftp://host/seed/"), "{err}");
    }
}
