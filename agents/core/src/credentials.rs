//! Who the agent is and how it reaches Kahuna.
//!
//! Three sources, field by field, first found wins:
//! 1. the kernel command line (`kowabunga.kahuna`, `kowabunga.agent_id`,
//!    `kowabunga.api_key` or `kowabunga.api_key_file`, `kowabunga.config_url`,
//!    `kowabunga.ca_file`);
//! 2. what an earlier boot persisted in `/var/lib/kowabunga/credentials.toml` (mode 0600);
//! 3. upstream's `/etc/kowabunga/<agent>.yml` (`global: {id, endpoint, apiKey}`), so the
//!    same binary runs on an Ansible-installed host.
//!
//! When the command line brought anything, the merged result is persisted so that later
//! boots work even if the command line no longer carries it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kernel_cmdline::{ApiKey, BootParams, HttpUrl, Secret};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error(
        "no {missing} for this agent: put kowabunga.{key} on the kernel command line (or `{yaml_key}` under `global:` in {upstream})"
    )]
    Missing {
        missing: &'static str,
        key: &'static str,
        yaml_key: &'static str,
        upstream: String,
    },
}

/// Everything the agent needs to reach Kahuna.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Kahuna's base URL (`https://kahuna.example`).
    pub kahuna: HttpUrl,
    pub agent_id: String,
    pub api_key: Secret,
    /// Explicit config URL (may hold `{id}`); default:
    /// [`kernel_cmdline::boot_params::DEFAULT_CONFIG_PATH`] on Kahuna.
    pub config_url: Option<String>,
    pub ca_file: Option<PathBuf>,
}

impl Credentials {
    /// The document's URL, `{id}` replaced by the (percent-encoded) agent id.
    pub fn config_url(&self) -> Result<String, kernel_cmdline::CmdlineError> {
        kernel_cmdline::resolve_config_url(
            self.config_url.as_deref(),
            Some(&self.kahuna),
            Some(&self.agent_id),
        )
    }
}

/// Where the sources live (injectable for tests).
#[derive(Debug, Clone)]
pub struct Sources {
    /// `/var/lib/kowabunga/credentials.toml`
    pub persisted: PathBuf,
    /// `/etc/kowabunga/<agent>.yml`
    pub upstream: PathBuf,
}

impl Sources {
    pub fn for_agent(agent: &str) -> Self {
        Self {
            persisted: PathBuf::from("/var/lib/kowabunga/credentials.toml"),
            upstream: PathBuf::from(format!("/etc/kowabunga/{agent}.yml")),
        }
    }
}

/// On-disk form of the persisted credentials.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    kahuna: Option<String>,
    agent_id: Option<String>,
    api_key: Option<String>,
    config_url: Option<String>,
    ca_file: Option<PathBuf>,
}

impl Persisted {
    /// Each field of `self`, or else of `fallback`.
    fn or(self, fallback: Persisted) -> Persisted {
        Persisted {
            kahuna: self.kahuna.or(fallback.kahuna),
            agent_id: self.agent_id.or(fallback.agent_id),
            api_key: self.api_key.or(fallback.api_key),
            config_url: self.config_url.or(fallback.config_url),
            ca_file: self.ca_file.or(fallback.ca_file),
        }
    }
}

/// Upstream's `/etc/kowabunga/<agent>.yml`; only `global` matters here.
#[derive(Debug, Deserialize)]
struct Upstream {
    global: Option<UpstreamGlobal>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpstreamGlobal {
    id: Option<String>,
    endpoint: Option<String>,
    api_key: Option<String>,
}

/// Merge the sources for `boot` and persist what the command line brought.
pub fn resolve(boot: &BootParams, sources: &Sources) -> Result<Credentials, CredentialsError> {
    let from_cmdline = from_boot(boot)?;
    let persisted = read_persisted(&sources.persisted)?.unwrap_or_default();
    let upstream = read_upstream(&sources.upstream)?.unwrap_or_default();
    let merged = from_cmdline.clone().or(persisted.clone()).or(Persisted {
        // Upstream's YAML has no config URL nor CA file.
        config_url: None,
        ca_file: None,
        ..upstream
    });
    let missing = |missing, key, yaml_key| CredentialsError::Missing {
        missing,
        key,
        yaml_key,
        upstream: sources.upstream.display().to_string(),
    };
    let kahuna = merged
        .kahuna
        .clone()
        .ok_or_else(|| missing("Kahuna URL", "kahuna=URL", "endpoint"))?;
    let credentials = Credentials {
        kahuna: HttpUrl::parse_base(&kahuna).map_err(|e| CredentialsError::Parse {
            path: sources.persisted.clone(),
            detail: format!("Kahuna URL: {e}"),
        })?,
        agent_id: merged
            .agent_id
            .clone()
            .ok_or_else(|| missing("agent id", "agent_id=ID", "id"))?,
        api_key: Secret::new(
            merged
                .api_key
                .clone()
                .ok_or_else(|| missing("API key", "api_key_file=PATH", "apiKey"))?,
        ),
        config_url: merged.config_url.clone(),
        ca_file: merged.ca_file.clone(),
    };
    if from_cmdline != Persisted::default() && merged != persisted {
        write_persisted(&sources.persisted, &merged)?;
        tracing::info!(
            "credentials from the kernel command line persisted to {}",
            sources.persisted.display()
        );
    }
    Ok(credentials)
}

/// Just the agent id, from the same sources as [`resolve`] (for local mode, where
/// Kahuna's URL and key are not needed).
pub fn agent_id(boot: &BootParams, sources: &Sources) -> Result<Option<String>, CredentialsError> {
    if let Some(id) = &boot.agent_id {
        return Ok(Some(id.clone()));
    }
    if let Some(id) = read_persisted(&sources.persisted)?.and_then(|p| p.agent_id) {
        return Ok(Some(id));
    }
    Ok(read_upstream(&sources.upstream)?.and_then(|u| u.agent_id))
}

fn from_boot(boot: &BootParams) -> Result<Persisted, CredentialsError> {
    let api_key = match &boot.api_key {
        Some(ApiKey::Inline(key)) => Some(key.expose().to_owned()),
        Some(ApiKey::File(path)) => {
            let text = fs::read_to_string(path).map_err(|source| CredentialsError::Io {
                path: path.clone(),
                source,
            })?;
            Some(text.trim().to_owned())
        }
        None => None,
    };
    Ok(Persisted {
        kahuna: boot.kahuna.as_ref().map(|u| u.as_str().to_owned()),
        agent_id: boot.agent_id.clone(),
        api_key,
        config_url: boot.config_url_template.clone(),
        ca_file: boot.ca_file.clone(),
    })
}

fn read_persisted(path: &Path) -> Result<Option<Persisted>, CredentialsError> {
    let Some(text) = read_if_present(path)? else {
        return Ok(None);
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| CredentialsError::Parse {
            path: path.to_owned(),
            detail: e.message().to_owned(),
        })
}

/// The file's text, or `None` when it does not exist.
fn read_if_present(path: &Path) -> Result<Option<String>, CredentialsError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredentialsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_upstream(path: &Path) -> Result<Option<Persisted>, CredentialsError> {
    let Some(text) = read_if_present(path)? else {
        return Ok(None);
    };
    let upstream: Upstream =
        serde_saphyr::from_str(&text).map_err(|e| CredentialsError::Parse {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    let global = upstream.global;
    Ok(global.map(|g| Persisted {
        kahuna: g.endpoint,
        agent_id: g.id,
        api_key: g.api_key,
        ..Persisted::default()
    }))
}

/// Write with mode 0600 from the start (never world-readable, even briefly), then
/// rename into place.
fn write_persisted(path: &Path, persisted: &Persisted) -> Result<(), CredentialsError> {
    let io_err = |source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    };
    let text = toml::to_string(persisted).map_err(|e| CredentialsError::Parse {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    kowabunga_private_file::write_private(path, text.as_bytes()).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sources(dir: &Path) -> Sources {
        Sources {
            persisted: dir.join("var/credentials.toml"),
            upstream: dir.join("etc/kiwi.yml"),
        }
    }

    fn boot(cmdline: &str) -> BootParams {
        BootParams::from_cmdline(cmdline).unwrap().0
    }

    #[test]
    fn cmdline_credentials_are_persisted_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(dir.path());
        let key_file = dir.path().join("key");
        fs::write(&key_file, "s3cret\n").unwrap();
        let cmdline = format!(
            "quiet kowabunga.kahuna=https://kahuna.test kowabunga.agent_id=a1 kowabunga.api_key_file={}",
            key_file.display()
        );
        let first = resolve(&boot(&cmdline), &src).unwrap();
        assert_eq!(first.api_key.expose(), "s3cret");
        assert_eq!(
            first.config_url().unwrap(),
            "https://kahuna.test/api/v1/agents/a1/config"
        );
        let mode = fs::metadata(&src.persisted).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Next boot: nothing on the command line, the key file is gone.
        fs::remove_file(&key_file).unwrap();
        let again = resolve(&boot("quiet"), &src).unwrap();
        assert_eq!(again, first);
    }

    #[test]
    fn cmdline_overrides_persisted_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(dir.path());
        resolve(
            &boot("kowabunga.kahuna=https://old kowabunga.agent_id=a1 kowabunga.api_key=k1"),
            &src,
        )
        .unwrap();
        let c = resolve(&boot("kowabunga.kahuna=https://new"), &src).unwrap();
        assert_eq!(
            (c.kahuna.as_str(), c.agent_id.as_str()),
            ("https://new", "a1")
        );
        assert_eq!(
            resolve(&boot(""), &src).unwrap().kahuna.as_str(),
            "https://new"
        );
    }

    #[test]
    fn upstream_yaml_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(dir.path());
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(
            &src.upstream,
            "global:\n  logLevel: INFO\n  id: abc123\n  endpoint: https://kowabunga.acme.com\n  apiKey: deadbeef\ndns:\n  port: 53\n",
        )
        .unwrap();
        let c = resolve(&boot(""), &src).unwrap();
        assert_eq!(c.agent_id, "abc123");
        assert_eq!(c.api_key.expose(), "deadbeef");
        assert!(
            !src.persisted.exists(),
            "nothing from the command line: nothing persisted"
        );
    }

    #[test]
    fn missing_pieces_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(&boot("kowabunga.kahuna=https://k"), &sources(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agent id") && err.contains("kowabunga.agent_id"),
            "{err}"
        );
    }

    #[test]
    fn api_key_never_shows_in_debug() {
        let c = Credentials {
            kahuna: HttpUrl::parse_base("https://k").unwrap(),
            agent_id: "a".into(),
            api_key: Secret::new("topsecret"),
            config_url: Some("https://s3/{id}/doc.toml".into()),
            ca_file: None,
        };
        assert!(!format!("{c:?}").contains("topsecret"));
        assert_eq!(c.config_url().unwrap(), "https://s3/a/doc.toml");
    }
}
