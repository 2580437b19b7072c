//! Ceph RBD through the `rbd` and `rados` commands of `ceph-common`, with `--format json`
//! replies read into typed values (docs/kaktus.md, "the `rbd` backend", says why not
//! librbd). Every run goes through `kowabunga-process` with a deadline. The cephx key
//! is read by the command from a file (`--keyfile`), never passed on a command line.
//!
//! The commands exit with the errno of the failed operation, which [`RbdError`] keeps
//! apart where a caller decides on it: no such image (2), already exists (17), busy
//! or has snapshots or clones (16, 39).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kowabunga_process::Invocation;
use serde::Deserialize;

/// Quick calls (info, create, clone, snapshots, resize, remove).
pub const QUICK: Duration = Duration::from_secs(60);

/// How long a run waits for the monitors before it fails ("connection timed out").
const MOUNT_TIMEOUT_SECS: u64 = 20;

/// Where and as whom the commands reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Monitors, `host:port` (msgr v2), in the order given.
    pub monitors: Vec<String>,
    /// The cephx client id (`libvirt` for `client.libvirt`).
    pub client: String,
    /// A file holding the client's key (base64, as `ceph auth get-key` prints it).
    pub key_file: PathBuf,
}

/// Why an `rbd` or `rados` run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RbdError {
    #[error("{what}: no such image or snapshot")]
    NotFound { what: String },
    #[error("{what}: already exists")]
    Exists { what: String },
    #[error("{what}: in use (it has snapshots or clones, or an instance holds it): {detail}")]
    Busy { what: String, detail: String },
    #[error("{what}: {detail}")]
    Failed { what: String, detail: String },
}

/// `rbd info --format json`: what the backend reads of an image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageInfo {
    pub name: String,
    /// Virtual size in bytes.
    pub size: u64,
    #[serde(default)]
    pub snapshot_count: u64,
    /// The snapshot this image is a clone of.
    #[serde(default)]
    pub parent: Option<Parent>,
}

/// A clone's parent snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Parent {
    pub pool: String,
    pub image: String,
    pub snapshot: String,
}

/// One clone of a snapshot (`rbd children --format json`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Child {
    pub pool: String,
    pub image: String,
}

/// A pool's usage and the cluster's space (`rados df --format json`): the figures
/// upstream's Kaktus reads through librados (`rados_ioctx_pool_stat`,
/// `rados_cluster_stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Bytes stored in the pool (before replication).
    pub stored: u64,
    /// Raw bytes free in the cluster.
    pub cluster_avail: u64,
    /// Raw bytes of the cluster.
    pub cluster_size: u64,
}

/// Parse `rbd info --format json`.
pub fn parse_info(json: &[u8]) -> Result<ImageInfo, String> {
    serde_json::from_slice(json).map_err(|e| format!("rbd info: unexpected reply: {e}"))
}

/// Parse `rbd ls --format json` (image names).
pub fn parse_ls(json: &[u8]) -> Result<Vec<String>, String> {
    serde_json::from_slice(json).map_err(|e| format!("rbd ls: unexpected reply: {e}"))
}

/// Parse `rbd children --format json`.
pub fn parse_children(json: &[u8]) -> Result<Vec<Child>, String> {
    serde_json::from_slice(json).map_err(|e| format!("rbd children: unexpected reply: {e}"))
}

/// The usage of `pool` in `rados df --format json` (cluster totals in KiB).
pub fn parse_df(json: &[u8], pool: &str) -> Result<PoolUsage, String> {
    #[derive(Deserialize)]
    struct Df {
        pools: Vec<DfPool>,
        total_avail: u64,
        total_space: u64,
    }
    #[derive(Deserialize)]
    struct DfPool {
        name: String,
        size_bytes: u64,
    }
    let df: Df =
        serde_json::from_slice(json).map_err(|e| format!("rados df: unexpected reply: {e}"))?;
    let kib = |k: u64| k.saturating_mul(1024);
    df.pools
        .into_iter()
        .find(|p| p.name == pool)
        .map(|p| PoolUsage {
            stored: p.size_bytes,
            cluster_avail: kib(df.total_avail),
            cluster_size: kib(df.total_space),
        })
        .ok_or_else(|| format!("rados df: the cluster has no pool {pool:?}"))
}

/// The error a failed run means: by the errno it exits with, else its stderr.
pub fn classify(what: &str, code: Option<i32>, stderr: &str) -> RbdError {
    let what = what.to_owned();
    let detail = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.contains("% complete"))
        .unwrap_or("failed")
        .to_owned();
    match code {
        Some(2) => RbdError::NotFound { what },
        Some(17) => RbdError::Exists { what },
        Some(16 | 39) => RbdError::Busy { what, detail },
        _ => RbdError::Failed { what, detail },
    }
}

/// The `rbd` and `rados` commands for one cluster.
#[derive(Debug, Clone)]
pub struct Rbd {
    cluster: Cluster,
    rbd: PathBuf,
    rados: PathBuf,
}

impl Rbd {
    /// The commands found in `$PATH`.
    pub fn new(cluster: Cluster) -> Self {
        Self {
            cluster,
            rbd: PathBuf::from("rbd"),
            rados: PathBuf::from("rados"),
        }
    }

    /// The arguments every run starts with: no configuration file, the monitors, the
    /// client and its key file, and a bounded wait for the monitors (librados waits
    /// 300 s by default; the run's deadline would kill it first without saying why).
    fn connection(&self) -> Vec<OsString> {
        vec![
            "--conf".into(),
            "/dev/null".into(),
            "--client_mount_timeout".into(),
            MOUNT_TIMEOUT_SECS.to_string().into(),
            "--mon_host".into(),
            self.cluster.monitors.join(",").into(),
            "--id".into(),
            self.cluster.client.clone().into(),
            "--keyfile".into(),
            self.cluster.key_file.clone().into_os_string(),
        ]
    }

    async fn run(
        &self,
        program: &Path,
        what: &str,
        args: &[&str],
        deadline: Duration,
    ) -> Result<Vec<u8>, RbdError> {
        let out = Invocation::new(program, deadline)
            .args(self.connection())
            .args(args)
            .run()
            .await
            .map_err(|e| RbdError::Failed {
                what: what.to_owned(),
                detail: e.to_string(),
            })?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(classify(what, out.status.code(), &out.stderr_lossy()))
        }
    }

    async fn rbd(&self, what: &str, args: &[&str]) -> Result<Vec<u8>, RbdError> {
        self.run(&self.rbd, what, args, QUICK).await
    }

    /// The image `pool/image`, `None` when it does not exist.
    pub async fn info(&self, pool: &str, image: &str) -> Result<Option<ImageInfo>, RbdError> {
        let spec = format!("{pool}/{image}");
        match self.rbd(&spec, &["info", "--format", "json", &spec]).await {
            Ok(json) => parse_info(&json)
                .map(Some)
                .map_err(|detail| RbdError::Failed { what: spec, detail }),
            Err(RbdError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The images of `pool`.
    pub async fn list(&self, pool: &str) -> Result<Vec<String>, RbdError> {
        let json = self.rbd(pool, &["ls", "--format", "json", pool]).await?;
        parse_ls(&json).map_err(|detail| RbdError::Failed {
            what: pool.to_owned(),
            detail,
        })
    }

    /// A new image of `size` bytes (thin: nothing is written).
    pub async fn create(&self, pool: &str, image: &str, size: u64) -> Result<(), RbdError> {
        let spec = format!("{pool}/{image}");
        let size = format!("{size}B");
        self.rbd(&spec, &["create", "--size", &size, &spec])
            .await
            .map(drop)
    }

    /// Write the raw image in `file` as a new image `pool/image`.
    pub async fn import(
        &self,
        pool: &str,
        image: &str,
        file: &Path,
        deadline: Duration,
    ) -> Result<(), RbdError> {
        let spec = format!("{pool}/{image}");
        let file = file.to_string_lossy();
        self.run(
            &self.rbd,
            &spec,
            &["import", "--no-progress", &file, &spec],
            deadline,
        )
        .await
        .map(drop)
    }

    /// Grow (or, with `allow_shrink`, shrink) `pool/image` to `size` bytes.
    pub async fn resize(&self, pool: &str, image: &str, size: u64) -> Result<(), RbdError> {
        let spec = format!("{pool}/{image}");
        let size = format!("{size}B");
        self.rbd(&spec, &["resize", "--no-progress", "--size", &size, &spec])
            .await
            .map(drop)
    }

    /// Rename within a pool; refused when `to` exists.
    pub async fn rename(&self, pool: &str, from: &str, to: &str) -> Result<(), RbdError> {
        let (src, dst) = (format!("{pool}/{from}"), format!("{pool}/{to}"));
        self.rbd(&dst, &["rename", &src, &dst]).await.map(drop)
    }

    /// Remove `pool/image`; refused while it has snapshots.
    pub async fn remove(&self, pool: &str, image: &str) -> Result<(), RbdError> {
        let spec = format!("{pool}/{image}");
        self.rbd(&spec, &["rm", "--no-progress", &spec])
            .await
            .map(drop)
    }

    /// Create and protect `pool/image@snap` (a template's clone source).
    pub async fn snapshot_protected(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<(), RbdError> {
        let spec = format!("{pool}/{image}@{snap}");
        self.rbd(&spec, &["snap", "create", "--no-progress", &spec])
            .await?;
        self.rbd(&spec, &["snap", "protect", &spec]).await.map(drop)
    }

    /// Unprotect and remove `pool/image@snap`; refused while it has clones.
    pub async fn remove_snapshot(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<(), RbdError> {
        let spec = format!("{pool}/{image}@{snap}");
        match self.rbd(&spec, &["snap", "unprotect", &spec]).await {
            // Never protected, or already unprotected: remove it all the same.
            Ok(_) | Err(RbdError::Failed { .. }) => {}
            Err(e) => return Err(e),
        }
        self.rbd(&spec, &["snap", "rm", "--no-progress", &spec])
            .await
            .map(drop)
    }

    /// Clones of `pool/image@snap`.
    pub async fn children(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<Vec<Child>, RbdError> {
        let spec = format!("{pool}/{image}@{snap}");
        let json = self
            .rbd(&spec, &["children", "--format", "json", &spec])
            .await?;
        parse_children(&json).map_err(|detail| RbdError::Failed { what: spec, detail })
    }

    /// A copy-on-write clone `pool/image` of `pool/parent@snap`.
    pub async fn clone_from(
        &self,
        pool: &str,
        parent: &str,
        snap: &str,
        image: &str,
    ) -> Result<(), RbdError> {
        let (src, dst) = (format!("{pool}/{parent}@{snap}"), format!("{pool}/{image}"));
        self.rbd(&dst, &["clone", &src, &dst]).await.map(drop)
    }

    /// The usage of `pool` and the cluster's space. `rados df` rather than `ceph df`:
    /// the `ceph` command is a Python program, and without it the image carries no
    /// Python (docs/images.md).
    pub async fn usage(&self, pool: &str) -> Result<PoolUsage, RbdError> {
        let json = self
            .run(
                &self.rados,
                pool,
                &["--pool", pool, "df", "--format", "json"],
                QUICK,
            )
            .await?;
        parse_df(&json, pool).map_err(|detail| RbdError::Failed {
            what: pool.to_owned(),
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Replies of Ceph 16.2's `rbd` and `rados` (scripts/ceph-single-node.sh).
    const INFO_CLONE: &str = r#"{"name":"vm-os","id":"1029beac5b78","size":67108864,"objects":16,"order":22,"object_size":4194304,"snapshot_count":0,"block_name_prefix":"rbd_data.1029beac5b78","format":2,"features":["layering","exclusive-lock","object-map","fast-diff","deep-flatten"],"op_features":[],"flags":[],"create_timestamp":"Thu Dec  3 07:32:04 2026","access_timestamp":"Thu Dec  3 07:32:04 2026","modify_timestamp":"Thu Dec  3 07:32:04 2026","parent":{"pool":"kowabunga","pool_namespace":"","image":"tpl","id":"1023489f4587","snapshot":"kaktus-template","trash":false,"overlap":67108864}}"#;
    const INFO_TEMPLATE: &str = r#"{"name":"tpl","id":"1023489f4587","size":67108864,"objects":16,"order":22,"object_size":4194304,"snapshot_count":1,"block_name_prefix":"rbd_data.1023489f4587","format":2,"features":["layering","exclusive-lock","object-map","fast-diff","deep-flatten"],"op_features":[],"flags":[],"create_timestamp":"Thu Dec  3 07:32:04 2026","access_timestamp":"Thu Dec  3 07:32:04 2026","modify_timestamp":"Thu Dec  3 07:32:04 2026"}"#;
    const CHILDREN: &str = r#"[{"pool":"kowabunga","pool_namespace":"","image":"vm-os"}]"#;
    const DF: &str = r#"{"pools":[{"name":"kowabunga","id":2,"size_bytes":4096,"size_kb":4,"num_objects":1,"num_object_clones":0,"num_object_copies":1,"num_objects_missing_on_primary":0,"num_objects_unfound":0,"num_objects_degraded":0,"read_ops":0,"read_bytes":0,"write_ops":2,"write_bytes":2048,"compress_bytes_used":0,"compress_under_bytes":0}],"total_objects":1,"total_used":297180,"total_avail":3897124,"total_space":4194304}"#;

    #[test]
    fn reads_an_image_and_its_parent() {
        let clone = parse_info(INFO_CLONE.as_bytes()).unwrap();
        assert_eq!(clone.size, 64 << 20);
        assert_eq!(
            clone.parent,
            Some(Parent {
                pool: "kowabunga".into(),
                image: "tpl".into(),
                snapshot: "kaktus-template".into()
            })
        );
        let template = parse_info(INFO_TEMPLATE.as_bytes()).unwrap();
        assert_eq!((template.parent, template.snapshot_count), (None, 1));
        assert!(parse_info(b"rbd: error").unwrap_err().contains("rbd info"));
    }

    #[test]
    fn reads_clones_and_pool_usage() {
        let children = parse_children(CHILDREN.as_bytes()).unwrap();
        assert_eq!(children[0].image, "vm-os");
        assert!(parse_children(b"[]").unwrap().is_empty());
        assert_eq!(parse_ls(br#"["tpl","vm-os"]"#).unwrap(), ["tpl", "vm-os"]);
        assert_eq!(
            parse_df(DF.as_bytes(), "kowabunga").unwrap(),
            PoolUsage {
                stored: 4096,
                cluster_avail: 3_990_654_976,
                cluster_size: 4 << 30
            }
        );
        let missing = parse_df(DF.as_bytes(), "other").unwrap_err();
        assert!(missing.contains("no pool \"other\""), "{missing}");
    }

    #[test]
    fn failures_are_told_apart_by_errno() {
        assert_eq!(
            classify(
                "kowabunga/nope",
                Some(2),
                "rbd: error opening image nope: (2) No such file or directory\n"
            ),
            RbdError::NotFound {
                what: "kowabunga/nope".into()
            }
        );
        assert!(matches!(
            classify(
                "p/tpl",
                Some(17),
                "librbd::Operations: rbd image tpl already exists\nrbd: rename error: (17) File exists"
            ),
            RbdError::Exists { .. }
        ));
        let busy = classify(
            "p/tpl",
            Some(39),
            "Removing image: 0% complete...failed.\nrbd: image has snapshots - these must be deleted with 'rbd snap purge' before the image can be removed.\n",
        );
        assert!(busy.to_string().contains("image has snapshots"), "{busy}");
        let other = classify(
            "p/vm",
            Some(22),
            "rbd: shrinking an image is only allowed with the --allow-shrink flag",
        );
        assert_eq!(
            other.to_string(),
            "p/vm: rbd: shrinking an image is only allowed with the --allow-shrink flag"
        );
    }

    #[test]
    fn the_key_never_appears_on_a_command_line() {
        let rbd = Rbd::new(Cluster {
            monitors: vec!["10.0.0.1:3300".into(), "10.0.0.2:3300".into()],
            client: "libvirt".into(),
            key_file: "/var/lib/kowabunga/kaktus/ceph/libvirt.key".into(),
        });
        let args: Vec<String> = rbd
            .connection()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--conf",
                "/dev/null",
                "--client_mount_timeout",
                "20",
                "--mon_host",
                "10.0.0.1:3300,10.0.0.2:3300",
                "--id",
                "libvirt",
                "--keyfile",
                "/var/lib/kowabunga/kaktus/ceph/libvirt.key"
            ]
        );
    }
}
