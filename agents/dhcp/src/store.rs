//! The lease store: one JSON file (`leases.json`) in the server's state directory
//! (`/var/lib/kowabunga/kiwi/dhcp/` on a Kiwi), read at start and written whole after
//! every change a client was told about (an ACK, a release, a decline): written to a
//! temporary file, fsynced, renamed over the old one, the directory fsynced. A crash
//! leaves the old file or the new one, never a mix. Leases survive agent restarts,
//! reboots (`/var` is persistent) and generations (the engine keeps those that fit).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::engine::Leases;

/// File name inside the state directory.
pub const FILE: &str = "leases.json";
/// Format version written in the file.
const VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a lease file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    #[serde(default)]
    leases: Leases,
}

/// Where the leases are kept.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The leases kept, or none when there is no file yet.
    pub fn load(&self) -> Result<Leases, StoreError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Leases::default()),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if disk.version != VERSION {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("version {} (this agent reads {VERSION})", disk.version),
            });
        }
        Ok(disk.leases)
    }

    /// [`load`](Self::load), but a file that does not parse is moved aside
    /// (`leases.json.bad`) and the server starts with no leases: a node must keep
    /// serving. Returns the leases and, if one was set aside, why.
    pub fn load_or_reset(&self) -> Result<(Leases, Option<String>), StoreError> {
        match self.load() {
            Ok(leases) => Ok((leases, None)),
            Err(StoreError::Corrupt { path, reason }) => {
                let aside = path.with_extension("json.bad");
                fs::rename(&path, &aside).map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })?;
                Ok((
                    Leases::default(),
                    Some(format!(
                        "{}: {reason}; moved to {}",
                        path.display(),
                        aside.display()
                    )),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Write `leases` atomically and durably (blocking: call off the async runtime).
    pub fn save(&self, leases: &Leases) -> Result<(), StoreError> {
        let path = self.path();
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let bytes = serde_json::to_vec(&OnDisk {
            version: VERSION,
            leases: leases.clone(),
        })
        .map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self.dir.join(format!(".{FILE}.tmp"));
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(&bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::engine::{ClientId, Lease, LeaseState, LinkLeases};
    use kowabunga_model::network::MacAddr;

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kdhcp-store-{}-{tag}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn fastrand_suffix() -> u64 {
        use std::time::{SystemTime, UNIX_EPOCH};
        u64::from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        )
    }

    fn sample() -> Leases {
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let address = "10.0.0.10".parse().unwrap();
        let mut link = LinkLeases::default();
        link.leases.insert(
            address,
            Lease {
                address,
                client: ClientId::from_mac(&mac),
                mac,
                state: LeaseState::Bound,
                expires: 1_800_000_600,
            },
        );
        link.declined
            .insert("10.0.0.11".parse().unwrap(), 1_800_003_600);
        let mut leases = Leases::default();
        leases.links.insert("eth1".into(), link);
        leases
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempdir("rt");
        let store = Store::new(dir.join("dhcp"));
        assert_eq!(store.load().unwrap(), Leases::default());
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), sample());
        // Overwritten whole; no temporary file left behind.
        store.save(&Leases::default()).unwrap();
        assert_eq!(store.load().unwrap(), Leases::default());
        let names: Vec<String> = fs::read_dir(dir.join("dhcp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [FILE]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bad_file_is_set_aside() {
        let dir = tempdir("bad");
        let store = Store::new(&dir);
        fs::write(store.path(), b"{\"version\":1,\"leases\":{\"links\":{\"eth1\":{\"leases\":[{\"address\":\"nope\"}]}}}}").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("not a lease file"), "{err}");
        let (leases, why) = store.load_or_reset().unwrap();
        assert_eq!(leases, Leases::default());
        assert!(why.unwrap().contains("leases.json.bad"));
        assert!(dir.join("leases.json.bad").exists());
        assert_eq!(store.load().unwrap(), Leases::default());
        fs::write(store.path(), b"{\"version\":7}").unwrap();
        assert!(store.load().unwrap_err().to_string().contains("version 7"));
        fs::remove_dir_all(dir).unwrap();
    }
}
