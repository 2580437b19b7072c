//! A/B OS updates, the agent's half: download one image version's update artifacts
//! (`scripts/make-update.sh` lays them out) into a staging directory and verify them,
//! so that `systemd-sysupdate --transfer-source=DIR update VERSION` installs only what
//! a trusted key signed (sysupdate does no checks on local `regular-file` sources).
//!
//! Order, each step refusing before the next one runs (docs/images.md, "A/B updates"):
//! the requested version parses and is not a downgrade (unless allowed); `SHA256SUMS`
//! and `SHA256SUMS.minisig` are fetched (size-capped) and the signature verified with
//! the keys that sign desired-state documents ([`TrustPolicy`]; an update is never
//! accepted unsigned, insecure mode included); every line of `SHA256SUMS` names an
//! artifact of this role, version and architecture, one root, one verity and one UKI;
//! each file (zstd) is unpacked to disk while it downloads ([`super::unpack`]), both
//! sizes capped, and checked against its length and sha256 once complete. On any
//! refusal the staging directory is emptied: nothing unverified is left for sysupdate
//! to find. What sysupdate then copies is the unpacked files, named as in `SHA256SUMS`
//! without `.zst`.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Client;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::unpack::{UnpackError, unpack_zstd};
use crate::fetch::{FetchError, client_builder, transport};
use crate::signed_files::{hex, parse_sums, signed_sums};
use crate::trust::{TrustError, TrustPolicy};

/// GPT partition labels hold 36 characters; the longest the update writes is
/// `kowabunga-ROLE_VERSION_verity`.
pub const LABEL_MAX: usize = 36;

#[derive(Debug, Error)]
pub enum UpdateError {
    #[error("version {0:?} does not parse (letters, digits, '.' and '-', starting with a digit)")]
    InvalidVersion(String),
    #[error(
        "version {version:?} is too long for role {role}: partition label {label:?} exceeds {LABEL_MAX} characters"
    )]
    VersionTooLong {
        role: String,
        version: String,
        label: String,
    },
    #[error(
        "version {requested} is older than the running {running}: a downgrade must be allowed explicitly"
    )]
    Downgrade { running: String, requested: String },
    #[error("version {0} is the one running: nothing to install")]
    AlreadyRunning(String),
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error(
        "SHA256SUMS is not signed (no SHA256SUMS.minisig): OS updates are only installed signed"
    )]
    Unsigned,
    #[error("SHA256SUMS: {0}")]
    Signature(TrustError),
    #[error("SHA256SUMS line {line}: {detail}")]
    Manifest { line: usize, detail: String },
    #[error("{name}: an artifact of role {found}, this node is {expected}")]
    ForeignRole {
        name: String,
        found: String,
        expected: String,
    },
    #[error("{name}: an artifact for architecture {found}, this node is {expected}")]
    ForeignArch {
        name: String,
        found: String,
        expected: String,
    },
    #[error("{name}: an artifact of version {found}, the update asked for {expected}")]
    OtherVersion {
        name: String,
        found: String,
        expected: String,
    },
    #[error("SHA256SUMS lists no {0} artifact")]
    MissingArtifact(&'static str),
    #[error("SHA256SUMS lists more than one {0} artifact")]
    DuplicateArtifact(&'static str),
    #[error("{name}: larger than {limit} bytes")]
    TooLarge { name: String, limit: u64 },
    #[error("{name}: truncated download ({received} of {expected} bytes)")]
    Truncated {
        name: String,
        expected: u64,
        received: u64,
    },
    #[error("{name}: {source}")]
    Unpack { name: String, source: UnpackError },
    #[error("{name}: sha256 {actual} does not match SHA256SUMS ({expected})")]
    HashMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to download, for which node.
#[derive(Debug, Clone)]
pub struct UpdateConfig {
    /// The directory URL of one version's artifacts (`.../SHA256SUMS` is under it).
    pub base_url: String,
    /// The node's role (`kiwi`): artifacts are named `kowabunga-ROLE_...`.
    pub role: String,
    /// systemd's architecture name (`x86-64`), as in the artifacts' names.
    pub arch: String,
    /// IMAGE_VERSION of the running image.
    pub running_version: String,
    /// The version asked for.
    pub version: String,
    pub allow_downgrade: bool,
    /// Emptied first, then holds the verified files and nothing else.
    pub staging: PathBuf,
    /// Cap on each artifact's size, downloaded and unpacked.
    pub max_file: u64,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a download (large files: no whole-request cap).
    pub read_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// Allows plain http (the signature is still required).
    pub insecure: bool,
}

impl UpdateConfig {
    /// Defaults: 1 GiB per file (a root slot is 640 MiB), 10 s to connect, 60 s idle.
    pub fn new(
        base_url: &str,
        role: &str,
        arch: &str,
        running_version: &str,
        version: &str,
        staging: &Path,
    ) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            role: role.to_owned(),
            arch: arch.to_owned(),
            running_version: running_version.to_owned(),
            version: version.to_owned(),
            allow_downgrade: false,
            staging: staging.to_owned(),
            max_file: 1024 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            ca_file: None,
            insecure: false,
        }
    }
}

/// Which slot file an artifact is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The root (erofs) image; its partition UUID (first half of the root hash).
    Root { uuid: String },
    /// The verity hash image; its partition UUID (second half of the root hash).
    Verity { uuid: String },
    /// The UKI.
    Uki,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Root { .. } => "root",
            Kind::Verity { .. } => "verity",
            Kind::Uki => "UKI",
        }
    }
}

/// One line of `SHA256SUMS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// As downloaded (`....zst`).
    pub name: String,
    pub kind: Kind,
    /// Lower-case hex, of the downloaded (compressed) file.
    pub sha256: String,
}

impl Artifact {
    /// The unpacked file's name in the staging directory: what the image's
    /// sysupdate.d transfer files match.
    pub fn staged_name(&self) -> &str {
        self.name.strip_suffix(".zst").unwrap_or(&self.name)
    }
}

/// A verified version in the staging directory, ready for
/// `systemd-sysupdate --transfer-source=DIR update VERSION`.
#[derive(Debug, Clone)]
pub struct Staged {
    pub dir: PathBuf,
    pub version: String,
    pub artifacts: Vec<Artifact>,
    /// Downloaded (compressed).
    pub bytes: u64,
    /// Unpacked into the staging directory.
    pub unpacked_bytes: u64,
}

/// A version as sysupdate reads it from labels and file names, restricted to what
/// cannot be confused with the names' separators (`_`) or boot counting (`+`).
pub fn parse_version(version: &str) -> Result<(), UpdateError> {
    let mut bytes = version.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(UpdateError::InvalidVersion(version.to_owned()))
    }
}

/// systemd's version order (`strverscmp_improved()`, which sysupdate and systemd-boot
/// use), for the characters [`parse_version`] accepts: numeric segments compare as
/// numbers and are newer than alphabetic ones, a segment after `-` or `.` is older than
/// one without, and a version with more segments is newer (`1.0-rc1` > `1.0`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let valid = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.');
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let at = |s: &[u8]| s.first().copied().unwrap_or(0);
    loop {
        while !a.is_empty() && !valid(a[0]) {
            a = &a[1..];
        }
        while !b.is_empty() && !valid(b[0]) {
            b = &b[1..];
        }
        if a.is_empty() || b.is_empty() {
            return a.cmp(b);
        }
        let before = (a.len(), b.len());
        for sep in [b'-', b'.'] {
            if at(a) == sep || at(b) == sep {
                let r = (at(a) != sep).cmp(&(at(b) != sep));
                if r != Ordering::Equal {
                    return r;
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
        if at(a).is_ascii_digit() || at(b).is_ascii_digit() {
            let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
            let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
            let r = (na > 0).cmp(&(nb > 0));
            if r != Ordering::Equal {
                return r;
            }
            let strip = |s: &[u8]| {
                let zeros = s.iter().take_while(|c| **c == b'0').count();
                s[zeros..].to_vec()
            };
            let (da, db) = (strip(&a[..na]), strip(&b[..nb]));
            let r = da.len().cmp(&db.len()).then_with(|| da.cmp(&db));
            if r != Ordering::Equal {
                return r;
            }
            a = &a[na..];
            b = &b[nb..];
        } else {
            let la = a.iter().take_while(|c| c.is_ascii_alphabetic()).count();
            let lb = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
            let n = la.min(lb);
            let r = a[..n].cmp(&b[..n]).then(la.cmp(&lb));
            if r != Ordering::Equal {
                return r;
            }
            a = &a[la..];
            b = &b[lb..];
        }
        if (a.len(), b.len()) == before {
            // Only characters no branch consumes (none of ours): compare the rest.
            return a.cmp(b);
        }
    }
}

/// Whether `requested` may replace `running` on a node of `role`.
pub fn check_request(
    role: &str,
    running: &str,
    requested: &str,
    allow_downgrade: bool,
) -> Result<(), UpdateError> {
    parse_version(requested)?;
    let label = format!("kowabunga-{role}_{requested}_verity");
    if label.len() > LABEL_MAX {
        return Err(UpdateError::VersionTooLong {
            role: role.to_owned(),
            version: requested.to_owned(),
            label,
        });
    }
    match compare_versions(requested, running) {
        Ordering::Equal => Err(UpdateError::AlreadyRunning(requested.to_owned())),
        Ordering::Less if !allow_downgrade => Err(UpdateError::Downgrade {
            running: running.to_owned(),
            requested: requested.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// Parses `SHA256SUMS` (sha256sum's format: `HASH  NAME` or `HASH *NAME`): every line
/// must name an artifact of `role`, `version` and `arch`, and there must be exactly one
/// root, one verity and one UKI.
pub fn parse_manifest(
    text: &str,
    role: &str,
    version: &str,
    arch: &str,
) -> Result<Vec<Artifact>, UpdateError> {
    let mut artifacts: Vec<Artifact> = Vec::new();
    for line in parse_sums(text)? {
        let artifact = Artifact {
            kind: artifact_kind(&line.name, role, version, arch).map_err(|e| match e {
                UpdateError::Manifest { detail, .. } => UpdateError::Manifest {
                    line: line.line,
                    detail,
                },
                other => other,
            })?,
            name: line.name,
            sha256: line.sha256,
        };
        if artifacts
            .iter()
            .any(|a| a.kind.name() == artifact.kind.name())
        {
            return Err(UpdateError::DuplicateArtifact(artifact.kind.name()));
        }
        artifacts.push(artifact);
    }
    for kind in ["root", "verity", "UKI"] {
        if !artifacts.iter().any(|a| a.kind.name() == kind) {
            return Err(UpdateError::MissingArtifact(kind));
        }
    }
    Ok(artifacts)
}

/// `kowabunga-ROLE_VERSION_ARCH.{root.UUID.raw.zst,verity.UUID.raw.zst,efi.zst}`.
fn artifact_kind(name: &str, role: &str, version: &str, arch: &str) -> Result<Kind, UpdateError> {
    let unknown = || UpdateError::Manifest {
        line: 0,
        detail: format!(
            "{name:?} is not an update artifact (kowabunga-ROLE_VERSION_ARCH.root.UUID.raw.zst, .verity.UUID.raw.zst or .efi.zst)"
        ),
    };
    let rest = name.strip_prefix("kowabunga-").ok_or_else(unknown)?;
    let mut fields = rest.splitn(3, '_');
    let (Some(found_role), Some(found_version), Some(tail)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(unknown());
    };
    let (found_arch, suffix) = tail.split_once('.').ok_or_else(unknown)?;
    let kind = if suffix == "efi.zst" {
        Kind::Uki
    } else if let Some(uuid) = suffix
        .strip_prefix("root.")
        .and_then(|s| s.strip_suffix(".raw.zst"))
    {
        if !is_uuid(uuid) {
            return Err(unknown());
        }
        Kind::Root {
            uuid: uuid.to_owned(),
        }
    } else if let Some(uuid) = suffix
        .strip_prefix("verity.")
        .and_then(|s| s.strip_suffix(".raw.zst"))
    {
        if !is_uuid(uuid) {
            return Err(unknown());
        }
        Kind::Verity {
            uuid: uuid.to_owned(),
        }
    } else {
        return Err(unknown());
    };
    if found_role != role {
        return Err(UpdateError::ForeignRole {
            name: name.to_owned(),
            found: found_role.to_owned(),
            expected: role.to_owned(),
        });
    }
    if found_arch != arch {
        return Err(UpdateError::ForeignArch {
            name: name.to_owned(),
            found: found_arch.to_owned(),
            expected: arch.to_owned(),
        });
    }
    if found_version != version {
        return Err(UpdateError::OtherVersion {
            name: name.to_owned(),
            found: found_version.to_owned(),
            expected: version.to_owned(),
        });
    }
    Ok(kind)
}

/// Downloads and verifies `config.version` into `config.staging`. On a refusal the
/// staging directory is left empty.
pub async fn stage(config: &UpdateConfig, trust: &TrustPolicy) -> Result<Staged, UpdateError> {
    check_request(
        &config.role,
        &config.running_version,
        &config.version,
        config.allow_downgrade,
    )?;
    if config.base_url.starts_with("http://") && !config.insecure {
        return Err(FetchError::PlainHttp(config.base_url.clone()).into());
    }
    empty_dir(&config.staging).await?;
    let result = stage_into(config, trust).await;
    if result.is_err() {
        // Best effort: the error being reported matters more than a failed cleanup.
        let _ = empty_dir(&config.staging).await;
    }
    result
}

async fn stage_into(config: &UpdateConfig, trust: &TrustPolicy) -> Result<Staged, UpdateError> {
    let client = client_builder(
        config.ca_file.as_deref(),
        config.connect_timeout,
        config.insecure,
    )?
    .read_timeout(config.read_timeout)
    .build()
    .map_err(|e| FetchError::Client(e.to_string()))?;
    let (sums, signature) = signed_sums(&client, &config.base_url, trust).await?;
    let text = std::str::from_utf8(&sums).map_err(|_| UpdateError::Manifest {
        line: 0,
        detail: "not UTF-8".into(),
    })?;
    let artifacts = parse_manifest(text, &config.role, &config.version, &config.arch)?;
    let (mut bytes, mut unpacked_bytes) = (0, 0);
    for artifact in &artifacts {
        let (downloaded, unpacked) = download(&client, config, artifact).await?;
        bytes += downloaded;
        unpacked_bytes += unpacked;
    }
    for (name, content) in [("SHA256SUMS", &sums), ("SHA256SUMS.minisig", &signature)] {
        let path = config.staging.join(name);
        tokio::fs::write(&path, content)
            .await
            .map_err(|source| UpdateError::Io {
                what: "writing",
                path,
                source,
            })?;
    }
    Ok(Staged {
        dir: config.staging.clone(),
        version: config.version.clone(),
        artifacts,
        bytes,
        unpacked_bytes,
    })
}

/// Streams one artifact through its unpacker into `staging/.STAGED.partial`, checks
/// the download's length and sha256, then the unpacking, and renames the file to
/// `staging/STAGED` ([`Artifact::staged_name`]). Returns the downloaded and unpacked
/// sizes.
///
/// Not synced: sysupdate reads the files in this boot, and an agent that restarts
/// before the install is done stages again from an empty directory (the updater);
/// sysupdate syncs what it writes to the slot.
async fn download(
    client: &Client,
    config: &UpdateConfig,
    artifact: &Artifact,
) -> Result<(u64, u64), UpdateError> {
    let name = &artifact.name;
    let url = format!("{}/{name}", config.base_url);
    let partial = config
        .staging
        .join(format!(".{}.partial", artifact.staged_name()));
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
    let expected_len = response.content_length();
    let too_large = || UpdateError::TooLarge {
        name: name.clone(),
        limit: config.max_file,
    };
    if expected_len.is_some_and(|n| n > config.max_file) {
        return Err(too_large());
    }
    // Unpacking runs on a blocking thread while the download goes on (two cores: the
    // network and sha256 on one, zstd and the writes on the other).
    let (chunks, unpacker_input) = tokio::sync::mpsc::channel(16);
    let unpacker = {
        let (path, limit) = (partial.clone(), config.max_file);
        tokio::task::spawn_blocking(move || unpack_zstd(unpacker_input, &path, limit))
    };
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let downloaded = async {
        // Once the unpacker has stopped (an error it reports below), the rest is still
        // read and hashed: a file that does not match SHA256SUMS is refused for that,
        // whatever its unpacking made of it.
        let mut chunks = Some(chunks);
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(match expected_len {
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
            if received > config.max_file {
                return Err(too_large());
            }
            hasher.update(&chunk);
            if let Some(sender) = &chunks
                && sender.send(chunk).await.is_err()
            {
                chunks = None;
            }
        }
    }
    .await;
    // The unpacker ends when its input does: waited for on every path, so that no file
    // appears in the staging directory after the caller has emptied it.
    let unpacked = unpacker.await.map_err(|e| UpdateError::Unpack {
        name: name.clone(),
        source: UnpackError::Thread(e.to_string()),
    })?;
    downloaded?;
    if let Some(expected) = expected_len
        && received != expected
    {
        return Err(UpdateError::Truncated {
            name: name.clone(),
            expected,
            received,
        });
    }
    let actual = hex(&hasher.finalize());
    if actual != artifact.sha256 {
        return Err(UpdateError::HashMismatch {
            name: name.clone(),
            expected: artifact.sha256.clone(),
            actual,
        });
    }
    let unpacked = unpacked.map_err(|source| UpdateError::Unpack {
        name: name.clone(),
        source,
    })?;
    let target = config.staging.join(artifact.staged_name());
    tokio::fs::rename(&partial, &target)
        .await
        .map_err(|source| UpdateError::Io {
            what: "renaming",
            path: partial,
            source,
        })?;
    Ok((received, unpacked))
}

/// Removes what a staged version left in `dir` once it is installed (best effort: the
/// next staging empties it too).
pub async fn clear_staging(dir: &Path) {
    if let Err(e) = empty_dir(dir).await {
        tracing::warn!("os update: clearing the staging directory: {e}");
    }
}

/// Creates `dir` (0700) if needed and removes everything in it.
async fn empty_dir(dir: &Path) -> Result<(), UpdateError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| UpdateError::Io { what, path, source }
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(io("creating", dir))?;
    let mut entries = tokio::fs::read_dir(dir).await.map_err(io("reading", dir))?;
    while let Some(entry) = entries.next_entry().await.map_err(io("reading", dir))? {
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .await
            .map_err(io("inspecting", &path))?
            .is_dir();
        if is_dir {
            tokio::fs::remove_dir_all(&path).await
        } else {
            tokio::fs::remove_file(&path).await
        }
        .map_err(io("removing", &path))?;
    }
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(io("securing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_as_systemd_does() {
        // systemd's own test list (src/test/test-string-util.c), minus the '~' and '^'
        // entries our versions cannot contain: each is older than every later one.
        let ordered = [
            "", "ab", "abb", "abc", "0001", "002", "12", "122", "122.9", "123", "123-a", "123-a.1",
            "123-a1", "123-a1.1", "123-3", "123-3.1", "123.a-1", "123.1-1", "123a-1", "124",
        ];
        for (i, older) in ordered.iter().enumerate() {
            assert_eq!(compare_versions(older, older), Ordering::Equal, "{older}");
            for newer in &ordered[i + 1..] {
                assert_eq!(
                    compare_versions(newer, older),
                    Ordering::Greater,
                    "{newer} > {older}"
                );
                assert_eq!(
                    compare_versions(older, newer),
                    Ordering::Less,
                    "{older} < {newer}"
                );
            }
        }
        assert_eq!(
            compare_versions("123.45-67.89", "123.45-67.88"),
            Ordering::Greater
        );
        assert_eq!(
            compare_versions("123.45-67.89a", "123.45-67.89"),
            Ordering::Greater
        );
        assert_eq!(compare_versions("0.1.10", "0.1.9"), Ordering::Greater);
        assert_eq!(compare_versions("0.2.0", "0.10.0"), Ordering::Less);
    }

    #[test]
    fn versions_parse_only_in_the_names_charset() {
        for ok in ["0.1.0", "1", "2026.12.3", "1.0.0-rc1"] {
            assert!(parse_version(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "v1.0", "1.0+b1", "1_0", "1.0~rc1", "1 0", "1/0", "../1", "1.0\n",
        ] {
            assert!(
                matches!(parse_version(bad), Err(UpdateError::InvalidVersion(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn downgrades_need_permission() {
        assert!(check_request("kiwi", "0.1.0", "0.1.1", false).is_ok());
        let e = check_request("kiwi", "0.1.1", "0.1.0", false).map(|_| ());
        assert!(
            matches!(&e, Err(UpdateError::Downgrade { running, requested }) if running == "0.1.1" && requested == "0.1.0"),
            "{e:?}"
        );
        assert!(check_request("kiwi", "0.1.1", "0.1.0", true).is_ok());
        assert!(matches!(
            check_request("kiwi", "0.1.0", "0.1.0", true),
            Err(UpdateError::AlreadyRunning(_))
        ));
        assert!(matches!(
            check_request("kiwi", "0.1.0", "x", true),
            Err(UpdateError::InvalidVersion(_))
        ));
        // kowabunga-kontroller_0.1.0-rc.12_verity: 37 characters.
        assert!(matches!(
            check_request("kontroller", "0.1.0", "0.1.0-rc.12", false),
            Err(UpdateError::VersionTooLong { .. })
        ));
    }

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const U1: &str = "01234567-89ab-cdef-0123-456789abcdef";
    const U2: &str = "fedcba98-7654-3210-fedc-ba9876543210";

    fn sums(role: &str, version: &str, arch: &str) -> String {
        let base = format!("kowabunga-{role}_{version}_{arch}");
        format!(
            "{H}  {base}.efi.zst\n{H}  {base}.root.{U1}.raw.zst\n{H} *{base}.verity.{U2}.raw.zst\n"
        )
    }

    #[test]
    fn the_manifest_names_one_root_one_verity_one_uki() {
        let artifacts = parse_manifest(&sums("kiwi", "0.1.1", "x86-64"), "kiwi", "0.1.1", "x86-64")
            .unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<Kind> = artifacts.into_iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Uki,
                Kind::Root { uuid: U1.into() },
                Kind::Verity { uuid: U2.into() }
            ]
        );
    }

    #[test]
    fn the_manifest_refuses_other_roles_arches_versions_and_strays() {
        let e = parse_manifest(
            &sums("kaktus", "0.1.1", "x86-64"),
            "kiwi",
            "0.1.1",
            "x86-64",
        );
        assert!(
            matches!(&e, Err(UpdateError::ForeignRole { found, .. }) if found == "kaktus"),
            "{e:?}"
        );
        let e = parse_manifest(&sums("kiwi", "0.1.1", "arm64"), "kiwi", "0.1.1", "x86-64");
        assert!(
            matches!(&e, Err(UpdateError::ForeignArch { found, .. }) if found == "arm64"),
            "{e:?}"
        );
        let e = parse_manifest(&sums("kiwi", "0.1.2", "x86-64"), "kiwi", "0.1.1", "x86-64");
        assert!(matches!(e, Err(UpdateError::OtherVersion { .. })), "{e:?}");
        for stray in [
            format!("{H}  ../etc/passwd\n"),
            format!("{H}  kowabunga-kiwi_0.1.1_x86-64.root.not-a-uuid.raw.zst\n"),
            format!("{H}  kowabunga-kiwi_0.1.1_x86-64.efi\n"),
            format!("{}  kowabunga-kiwi_0.1.1_x86-64.efi.zst\n", &H[1..]),
            "garbage\n".to_owned(),
        ] {
            let text = format!("{}{stray}", sums("kiwi", "0.1.1", "x86-64"));
            let e = parse_manifest(&text, "kiwi", "0.1.1", "x86-64");
            assert!(
                matches!(&e, Err(UpdateError::Manifest { line: 4, .. })),
                "{stray}: {e:?}"
            );
        }
        let only_two: String = sums("kiwi", "0.1.1", "x86-64")
            .lines()
            .take(2)
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(matches!(
            parse_manifest(&only_two, "kiwi", "0.1.1", "x86-64"),
            Err(UpdateError::MissingArtifact("verity"))
        ));
        let twice = format!(
            "{}{H}  kowabunga-kiwi_0.1.1_x86-64.efi.zst\n",
            sums("kiwi", "0.1.1", "x86-64")
        );
        assert!(matches!(
            parse_manifest(&twice, "kiwi", "0.1.1", "x86-64"),
            Err(UpdateError::DuplicateArtifact("UKI"))
        ));
    }
}
