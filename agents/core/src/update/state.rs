//! What the node keeps about OS updates, in one directory for the whole node
//! (`<state root>/os-update/`, not per role: a node runs one image):
//!
//! - `target.json`: the `[os]` section of the generation in force (written by
//!   [`super::OsReconciler`] when a generation applies, so a reverted generation
//!   restores the previous target), absent when no update is asked;
//! - `state.json`: where the updater is ([`Phase`]) and the versions that failed their
//!   health gate on this node (never tried again);
//! - `staging/`: the verified artifacts systemd-sysupdate installs from.
//!
//! Both files are replaced atomically (write, fsync, rename, fsync the directory), so a
//! power cut leaves the old or the new record, never a torn one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::section::OsSection;
use crate::generations::replace_file;

/// Where the updater is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    /// No update asked, or the running version is the one asked for.
    #[default]
    Idle,
    /// Downloading and verifying `version`'s artifacts.
    Staging { version: String },
    /// systemd-sysupdate is writing `version` into the other slot.
    Installing { version: String },
    /// `version` was not installed (nothing written to the other slot), and is not
    /// tried again until the document asks for another version or URL.
    Refused {
        version: String,
        url: String,
        reason: String,
    },
    /// `version` is in the other slot, booted at the next reboot the policy allows.
    Installed { version: String, reboot: String },
    /// The node was rebooted from `from` into `version`.
    Rebooting { version: String, from: String },
    /// Running `version` after an update; systemd-bless-boot marks it good once the
    /// health gate passes, else its tries run out and the previous version boots.
    Booted { version: String },
    /// `version` was booted and did not pass its health gate (or never came up):
    /// the node came back on `running` by itself.
    RolledBack { version: String, running: String },
}

impl Phase {
    /// The phase's name, as in the JSON (`installed`) and the metric's label.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Staging { .. } => "staging",
            Phase::Installing { .. } => "installing",
            Phase::Refused { .. } => "refused",
            Phase::Installed { .. } => "installed",
            Phase::Rebooting { .. } => "rebooting",
            Phase::Booted { .. } => "booted",
            Phase::RolledBack { .. } => "rolled_back",
        }
    }

    /// The version the phase is about, if any.
    pub fn version(&self) -> Option<&str> {
        match self {
            Phase::Idle => None,
            Phase::Staging { version }
            | Phase::Installing { version }
            | Phase::Refused { version, .. }
            | Phase::Installed { version, .. }
            | Phase::Rebooting { version, .. }
            | Phase::Booted { version }
            | Phase::RolledBack { version, .. } => Some(version),
        }
    }
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpdateState {
    #[serde(flatten)]
    pub phase: Phase,
    /// Versions that were booted here and rolled back: refused from then on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// The files of `<state root>/os-update/`.
#[derive(Debug, Clone)]
pub struct UpdateDir {
    dir: PathBuf,
}

impl UpdateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where verified artifacts wait for systemd-sysupdate.
    pub fn staging(&self) -> PathBuf {
        self.dir.join("staging")
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn target_path(&self) -> PathBuf {
        self.dir.join("target.json")
    }

    /// The recorded state; the default (idle, nothing failed) when there is none yet.
    pub fn state(&self) -> Result<UpdateState, String> {
        read_json(&self.state_path()).map(Option::unwrap_or_default)
    }

    pub fn set_state(&self, state: &UpdateState) -> Result<(), String> {
        write_json(&self.dir, &self.state_path(), state)
    }

    /// The `[os]` of the generation in force.
    pub fn target(&self) -> Result<Option<OsSection>, String> {
        read_json(&self.target_path())
    }

    pub fn set_target(&self, target: Option<&OsSection>) -> Result<(), String> {
        match target {
            Some(target) => write_json(&self.dir, &self.target_path(), target),
            None => match std::fs::remove_file(self.target_path()) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("removing {}: {e}", self.target_path().display())),
            },
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

fn write_json<T: Serialize>(dir: &Path, path: &Path, value: &T) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    replace_file(path, &bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::update::RebootPolicy;

    #[test]
    fn state_and_target_round_trip_and_default_when_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = UpdateDir::new(tmp.path().join("os-update"));
        assert_eq!(dir.state().unwrap(), UpdateState::default());
        assert_eq!(dir.target().unwrap(), None);
        let state = UpdateState {
            phase: Phase::RolledBack {
                version: "0.3.0".into(),
                running: "0.2.0".into(),
            },
            failed: vec!["0.3.0".into()],
        };
        dir.set_state(&state).unwrap();
        assert_eq!(dir.state().unwrap(), state);
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(tmp.path().join("os-update/state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["state"], "rolled_back");
        assert_eq!(json["version"], "0.3.0");
        let target = OsSection {
            version: "0.2.0".into(),
            url: "https://k.example/".into(),
            reboot: RebootPolicy::Now,
            window: None,
            allow_downgrade: false,
        };
        dir.set_target(Some(&target)).unwrap();
        assert_eq!(dir.target().unwrap(), Some(target));
        dir.set_target(None).unwrap();
        dir.set_target(None).unwrap();
        assert_eq!(dir.target().unwrap(), None);
    }

    #[test]
    fn a_torn_record_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("state.json"), b"{\"state\": \"insta").unwrap();
        let err = UpdateDir::new(tmp.path()).state().unwrap_err();
        assert!(err.contains("state.json"), "{err}");
    }
}
