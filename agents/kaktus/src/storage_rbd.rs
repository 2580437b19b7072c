//! The `rbd` storage backend: a pool's volumes are images of a Ceph pool, reached
//! through [`crate::rbd`] as the pool's cephx client.
//!
//! A template is an image with a protected snapshot ([`TEMPLATE_SNAPSHOT`]); an OS
//! volume is a copy-on-write clone of it (constant time, whatever the template's
//! size). New images are written under a hidden work name and renamed to their name
//! only when complete (`rbd rename` never replaces an image), and a work image is
//! removed on every failure path, as the `local` backend does with its work files.

use std::path::Path;
use std::time::Duration;

use crate::instances::Instances;
use crate::inventory::RbdPool;
use crate::libvirt_protocol::Request;
use crate::rbd::{Rbd, RbdError};
use crate::storage::PoolStats;

/// Where a template for an `rbd` pool is downloaded and converted before its import
/// (on `/var`, the node's disk: `/tmp` is memory).
pub const SCRATCH_DIR: &str = "/var/tmp";

/// The snapshot OS volumes are cloned from.
pub const TEMPLATE_SNAPSHOT: &str = "kaktus-template";

/// An image of an `rbd` pool.
#[derive(Debug, Clone)]
pub struct RbdVolume {
    /// The node's pool (Kahuna's `Pool`).
    pub pool_name: String,
    /// The Ceph pool holding the image.
    pub ceph_pool: String,
    pub name: String,
    rbd: Rbd,
}

/// A hidden work image, removed on drop unless published (best effort, in the
/// background: the runtime may be gone).
struct WorkImage {
    rbd: Rbd,
    ceph_pool: String,
    name: String,
    published: bool,
}

impl WorkImage {
    fn new(v: &RbdVolume) -> Self {
        Self {
            rbd: v.rbd.clone(),
            ceph_pool: v.ceph_pool.clone(),
            name: format!(".kaktus-work-{}-{:016x}", v.name, fastrand::u64(..)),
            published: false,
        }
    }

    /// Remove the work image now (its snapshot first, if any).
    async fn discard(mut self) {
        self.published = true;
        remove_quietly(&self.rbd, &self.ceph_pool, &self.name).await;
    }
}

impl Drop for WorkImage {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        let (rbd, pool, name) = (self.rbd.clone(), self.ceph_pool.clone(), self.name.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { remove_quietly(&rbd, &pool, &name).await });
        }
    }
}

async fn remove_quietly(rbd: &Rbd, pool: &str, name: &str) {
    let _ = rbd.remove_snapshot(pool, name, TEMPLATE_SNAPSHOT).await;
    if let Err(e) = rbd.remove(pool, name).await
        && !matches!(e, RbdError::NotFound { .. })
    {
        tracing::warn!("work image {pool}/{name} left behind: {e}");
    }
}

impl RbdVolume {
    pub fn new(pool_name: &str, pool: &RbdPool, name: &str) -> Self {
        Self {
            pool_name: pool_name.to_owned(),
            ceph_pool: pool.ceph_pool.clone(),
            name: name.to_owned(),
            rbd: Rbd::new(pool.cluster.clone()),
        }
    }

    /// How instances' disks name this image in `Instances::disks_in_use`.
    pub fn disk_key(&self) -> String {
        format!("rbd:{}/{}", self.ceph_pool, self.name)
    }

    fn err(&self, e: impl std::fmt::Display) -> String {
        format!("volume {}/{}: {e}", self.pool_name, self.name)
    }

    /// The image's virtual size; an error when it does not exist.
    pub async fn size(&self) -> Result<u64, String> {
        match self.rbd.info(&self.ceph_pool, &self.name).await {
            Ok(Some(info)) => Ok(info.size),
            Ok(None) => Err(self.err("no such volume")),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Whether the image exists.
    pub async fn exists(&self) -> Result<bool, String> {
        self.rbd
            .info(&self.ceph_pool, &self.name)
            .await
            .map(|info| info.is_some())
            .map_err(|e| self.err(e))
    }

    async fn refuse_existing(&self) -> Result<(), String> {
        match self.rbd.info(&self.ceph_pool, &self.name).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(format!(
                "volume {}/{} already exists",
                self.pool_name, self.name
            )),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Give `work` this volume's name; refused when the name is taken.
    async fn publish(&self, mut work: WorkImage) -> Result<(), String> {
        match self
            .rbd
            .rename(&self.ceph_pool, &work.name, &self.name)
            .await
        {
            Ok(()) => {
                work.published = true;
                Ok(())
            }
            Err(RbdError::Exists { .. }) => {
                work.discard().await;
                Err(format!(
                    "volume {}/{} already exists",
                    self.pool_name, self.name
                ))
            }
            Err(e) => {
                work.discard().await;
                Err(self.err(e))
            }
        }
    }

    /// A thin image of `size` bytes.
    pub async fn create_raw(&self, size: u64) -> Result<(), String> {
        self.refuse_existing().await?;
        match self.rbd.create(&self.ceph_pool, &self.name, size).await {
            Ok(()) => Ok(()),
            Err(RbdError::Exists { .. }) => Err(format!(
                "volume {}/{} already exists",
                self.pool_name, self.name
            )),
            Err(e) => Err(self.err(e)),
        }
    }

    /// A clone of `template`'s snapshot, grown to `size` bytes (0: the template's).
    pub async fn create_os(&self, size: u64, template: &str) -> Result<(), String> {
        self.refuse_existing().await?;
        let info = match self.rbd.info(&self.ceph_pool, template).await {
            Ok(Some(info)) => info,
            Ok(None) => {
                return Err(format!(
                    "template {}/{template}: no such volume",
                    self.pool_name
                ));
            }
            Err(e) => return Err(self.err(e)),
        };
        if size != 0 && size < info.size {
            return Err(self.err(format!(
                "size {size} is smaller than its template {template} ({} bytes)",
                info.size
            )));
        }
        let work = WorkImage::new(self);
        self.rbd
            .clone_from(&self.ceph_pool, template, TEMPLATE_SNAPSHOT, &work.name)
            .await
            .map_err(|e| match e {
                RbdError::NotFound { .. } => format!(
                    "template {}/{template}: not a template (no snapshot {TEMPLATE_SNAPSHOT}: import it with CreateTemplateVolume)",
                    self.pool_name
                ),
                e => self.err(e),
            })?;
        if size > info.size {
            self.rbd
                .resize(&self.ceph_pool, &work.name, size)
                .await
                .map_err(|e| self.err(e))?;
        }
        self.publish(work).await
    }

    /// Import the raw image `file` as this template: written under a work name,
    /// snapshotted and protected, then renamed.
    pub async fn import_template(&self, file: &Path, deadline: Duration) -> Result<u64, String> {
        self.refuse_existing().await?;
        let work = WorkImage::new(self);
        self.rbd
            .import(&self.ceph_pool, &work.name, file, deadline)
            .await
            .map_err(|e| self.err(e))?;
        self.rbd
            .snapshot_protected(&self.ceph_pool, &work.name, TEMPLATE_SNAPSHOT)
            .await
            .map_err(|e| self.err(e))?;
        self.publish(work).await?;
        self.size().await
    }

    /// An image holding `content` padded to `size` bytes; `replace`: it must exist and
    /// is replaced (refused while a running instance holds it), else it must not.
    pub async fn write_iso(
        &self,
        size: u64,
        content: Vec<u8>,
        replace: bool,
    ) -> Result<(), String> {
        let exists = self
            .rbd
            .info(&self.ceph_pool, &self.name)
            .await
            .map_err(|e| self.err(e))?
            .is_some();
        match (replace, exists) {
            (true, false) => return Err(self.err("no such volume")),
            (false, true) => {
                return Err(format!(
                    "volume {}/{} already exists",
                    self.pool_name, self.name
                ));
            }
            _ => {}
        }
        let len = content.len() as u64;
        let file = tokio::task::spawn_blocking(move || -> Result<_, String> {
            use std::io::Write;
            let mut f = tempfile::NamedTempFile::new()
                .map_err(|e| format!("cannot make a scratch file: {e}"))?;
            f.write_all(&content)
                .and_then(|()| f.as_file().set_len(size.max(len)))
                .map_err(|e| format!("cannot write a scratch file: {e}"))?;
            Ok(f)
        })
        .await
        .map_err(|e| self.err(format!("scratch file: {e}")))??;
        let work = WorkImage::new(self);
        self.rbd
            .import(
                &self.ceph_pool,
                &work.name,
                file.path(),
                Duration::from_secs(300),
            )
            .await
            .map_err(|e| self.err(e))?;
        if replace {
            self.rbd
                .remove(&self.ceph_pool, &self.name)
                .await
                .map_err(|e| self.err(format!("cannot replace it: {e}")))?;
        }
        self.publish(work).await
    }

    /// Grow to `size` bytes; smaller is refused. `running`: the running instance using
    /// it, grown through libvirt so that the guest sees the new size.
    pub async fn resize(
        &self,
        size: u64,
        running: Option<String>,
        instances: &Instances,
    ) -> Result<(), String> {
        let current = self.size().await?;
        if size < current {
            return Err(self.err(format!("cannot shrink from {current} to {size} bytes")));
        }
        if size == current {
            return Ok(());
        }
        match running {
            Some(instance) => {
                let image = format!("{}/{}", self.ceph_pool, self.name);
                // libvirt names a network disk by its target, not its source.
                let xml = instances.xml(&instance, false).await?;
                let target = rbd_disk_target(&xml, &image).ok_or_else(|| {
                    format!("instance {instance}: no disk on {image} in its live XML")
                })?;
                instances
                    .libvirt()
                    .request(Request::BlockResize {
                        instance,
                        disk: target,
                        size,
                    })
                    .await
            }
            None => self
                .rbd
                .resize(&self.ceph_pool, &self.name, size)
                .await
                .map_err(|e| self.err(e)),
        }
    }

    /// Delete the image (a template: its snapshot first); refused while clones of it
    /// exist. The caller has refused an image an instance uses.
    pub async fn delete(&self) -> Result<(), String> {
        let info = match self.rbd.info(&self.ceph_pool, &self.name).await {
            Ok(Some(info)) => info,
            Ok(None) => return Err(self.err("no such volume")),
            Err(e) => return Err(self.err(e)),
        };
        if info.snapshot_count > 0 {
            let clones = match self
                .rbd
                .children(&self.ceph_pool, &self.name, TEMPLATE_SNAPSHOT)
                .await
            {
                Ok(clones) => clones,
                Err(RbdError::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(self.err(e)),
            };
            if let Some(clone) = clones.first() {
                return Err(format!(
                    "volume {}/{} is the template of volume {}: delete that first",
                    self.pool_name, self.name, clone.image
                ));
            }
            match self
                .rbd
                .remove_snapshot(&self.ceph_pool, &self.name, TEMPLATE_SNAPSHOT)
                .await
            {
                Ok(()) | Err(RbdError::NotFound { .. }) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        self.rbd
            .remove(&self.ceph_pool, &self.name)
            .await
            .map_err(|e| self.err(format!("cannot delete: {e}")))
    }
}

/// The target (`vda`) of the RBD disk on `image` (`pool/name`) in a domain's XML.
fn rbd_disk_target(xml: &str, image: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    doc.descendants()
        .filter(|n| n.has_tag_name("disk"))
        .find(|d| {
            d.children().any(|s| {
                s.has_tag_name("source")
                    && s.attribute("protocol") == Some("rbd")
                    && s.attribute("name") == Some(image)
            })
        })?
        .children()
        .find(|n| n.has_tag_name("target"))?
        .attribute("dev")
        .map(str::to_owned)
}

/// Upstream's pool statistics for an `rbd` pool, as upstream's Kaktus computes them:
/// the bytes stored in the pool, and the cluster's free and total raw bytes.
pub async fn pool_stats(name: &str, pool: &RbdPool) -> Result<PoolStats, String> {
    let usage = Rbd::new(pool.cluster.clone())
        .usage(&pool.ceph_pool)
        .await
        .map_err(|e| format!("pool {name}: {e}"))?;
    Ok(PoolStats {
        allocated: usage.stored,
        available: usage.cluster_avail,
        capacity: usage.cluster_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_target_of_an_rbd_disk() {
        let xml = "<domain><devices><disk type='network' device='disk'><source protocol='rbd' name='rbd/vm-os'><host name='m'/></source><target dev='vda' bus='virtio'/></disk><disk type='network' device='cdrom'><source protocol='rbd' name='rbd/vm-ci'/><target dev='hda'/></disk></devices></domain>";
        assert_eq!(rbd_disk_target(xml, "rbd/vm-ci").as_deref(), Some("hda"));
        assert_eq!(rbd_disk_target(xml, "rbd/vm-os").as_deref(), Some("vda"));
        assert_eq!(rbd_disk_target(xml, "rbd/other"), None);
    }
}
