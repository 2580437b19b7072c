//! The `local` storage backend: a directory per pool, one file per volume, known to
//! libvirt as a `dir` pool (refreshed after every change, so `virsh vol-list` and the
//! sizes libvirt reports follow).
//!
//! Templates are raw files stored once; an OS volume is a qcow2 file whose backing file
//! is its template (created in constant time, whatever the template's size). Every
//! volume is first written under a hidden work name and linked to its final name only
//! when complete (a link never replaces an existing volume), so a failure leaves no
//! partial volume behind, and the work file is removed on every path.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kowabunga_process::Invocation;
use serde::Serialize;

use crate::instances::Instances;
use crate::inventory::{NodeInventory, Pool, PoolBackend, SharedInventory};
use crate::libvirt_protocol::{PoolInfo, Request};
use crate::storage_rbd::{self, RbdVolume};
use crate::volume_name;

/// `qemu-img` runs at most this long for quick steps (create, info, resize).
const QEMU_IMG_QUICK: Duration = Duration::from_secs(60);

/// Upstream's `KaktusGetStoragePoolStatsReply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoolStats {
    pub allocated: u64,
    pub available: u64,
    pub capacity: u64,
}

/// `qcow2` when the file starts with QCOW's magic, else `raw`.
pub fn format_of(path: &Path) -> &'static str {
    let mut magic = [0u8; 4];
    match File::open(path).and_then(|mut f| f.read_exact(&mut magic)) {
        Ok(()) if &magic == b"QFI\xfb" => "qcow2",
        _ => "raw",
    }
}

/// The backing file a qcow2 file names in its header, if any.
pub fn qcow2_backing_file(path: &Path) -> Option<String> {
    let mut header = [0u8; 20];
    let mut file = File::open(path).ok()?;
    file.read_exact(&mut header).ok()?;
    if &header[..4] != b"QFI\xfb" {
        return None;
    }
    let offset = u64::from_be_bytes(header[8..16].try_into().ok()?);
    let size = u32::from_be_bytes(header[16..20].try_into().ok()?);
    if offset == 0 || size == 0 || size > 1023 {
        return None;
    }
    let mut name = vec![0u8; usize::try_from(size).ok()?];
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(offset)).ok()?;
    file.read_exact(&mut name).ok()?;
    String::from_utf8(name).ok()
}

/// A hidden work file in a pool, removed on drop unless [`WorkFile::publish`]ed.
pub struct WorkFile {
    path: PathBuf,
    published: bool,
}

impl WorkFile {
    /// A fresh work file name for `volume` in `dir` (not created).
    pub fn new(dir: &Path, volume: &str) -> Self {
        let path = dir.join(format!(".kaktus-work-{volume}-{:016x}", fastrand::u64(..)));
        Self {
            path,
            published: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Give the work file its final name; refuses to replace an existing volume.
    pub fn publish(mut self, target: &Path) -> Result<(), String> {
        fs::hard_link(&self.path, target).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!("volume {} already exists", target.display())
            } else {
                format!("cannot create {}: {e}", target.display())
            }
        })?;
        let _ = fs::remove_file(&self.path);
        self.published = true;
        Ok(())
    }

    /// Replace `target` (which must exist) with the work file, atomically.
    pub fn replace(mut self, target: &Path) -> Result<(), String> {
        fs::rename(&self.path, target)
            .map_err(|e| format!("cannot replace {}: {e}", target.display()))?;
        self.published = true;
        Ok(())
    }
}

impl Drop for WorkFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Volumes of the node's local pools.
#[derive(Debug, Clone)]
pub struct Storage {
    inventory: SharedInventory,
    instances: Instances,
}

/// A volume of a `local` pool: its pool, the pool's directory and its file.
#[derive(Debug, Clone)]
pub struct Volume {
    pub pool: Pool,
    pub name: String,
    pub dir: PathBuf,
    pub path: PathBuf,
}

/// A volume of either backend.
pub enum Target {
    Local(Volume),
    Rbd(RbdVolume),
}

impl Storage {
    pub fn new(inventory: SharedInventory, instances: Instances) -> Self {
        Self {
            inventory,
            instances,
        }
    }

    pub fn inventory(&self) -> NodeInventory {
        self.inventory.get()
    }

    /// Resolve `pool`/`volume` to a file of a `local` pool (the name checked).
    pub fn volume(&self, pool: &str, volume: &str) -> Result<Volume, String> {
        match self.target(pool, volume)? {
            Target::Local(v) => Ok(v),
            Target::Rbd(v) => Err(format!(
                "pool {}: an rbd pool has no volume files",
                v.pool_name
            )),
        }
    }

    /// Resolve `pool`/`volume` for either backend (the name checked).
    pub fn target(&self, pool: &str, volume: &str) -> Result<Target, String> {
        let inventory = self.inventory.get();
        let pool = inventory.pool(pool)?.clone();
        volume_name::check(volume).map_err(|e| format!("pool {}: {e}", pool.name))?;
        Ok(match &pool.backend {
            PoolBackend::Local { path } => Target::Local(Volume {
                dir: path.clone(),
                path: path.join(volume),
                name: volume.to_owned(),
                pool,
            }),
            PoolBackend::Rbd(rbd) => Target::Rbd(RbdVolume::new(&pool.name, rbd, volume)),
        })
    }

    /// Capacity, allocation and free space of a pool, as libvirt (or Ceph) sees it.
    pub async fn pool_stats(&self, pool: &str) -> Result<PoolStats, String> {
        let pool = self.inventory.get().pool(pool)?.clone();
        if let PoolBackend::Rbd(rbd) = &pool.backend {
            return storage_rbd::pool_stats(&pool.name, rbd).await;
        }
        let info: PoolInfo = self
            .instances
            .libvirt()
            .request(Request::PoolInfo { pool: pool.name })
            .await?;
        Ok(PoolStats {
            allocated: info.allocation,
            available: info.available,
            capacity: info.capacity,
        })
    }

    /// A volume's virtual size in bytes, as libvirt (or Ceph) sees it.
    pub async fn volume_size(&self, pool: &str, volume: &str) -> Result<u64, String> {
        let v = match self.target(pool, volume)? {
            Target::Local(v) => v,
            Target::Rbd(v) => return v.size().await,
        };
        self.instances
            .libvirt()
            .request(Request::VolumeCapacity {
                pool: v.pool.name.clone(),
                volume: v.name.clone(),
            })
            .await
    }

    /// Have libvirt re-read the pool's directory (a failure is logged: the volume
    /// itself is in place).
    pub async fn refresh(&self, pool: &str) {
        let done: Result<(), String> = self
            .instances
            .libvirt()
            .request(Request::RefreshPool {
                pool: pool.to_owned(),
            })
            .await;
        if let Err(e) = done {
            tracing::warn!("{e}");
        }
    }

    /// A sparse raw volume of `size` bytes.
    pub async fn create_raw(&self, pool: &str, volume: &str, size: u64) -> Result<(), String> {
        let v = match self.target(pool, volume)? {
            Target::Local(v) => v,
            Target::Rbd(v) => return v.create_raw(size).await,
        };
        refuse_existing(&v)?;
        let work = WorkFile::new(&v.dir, &v.name);
        let path = work.path().to_owned();
        blocking(move || {
            let f = create_new(&path)?;
            f.set_len(size)
                .map_err(|e| format!("cannot size {}: {e}", path.display()))
        })
        .await?;
        work.publish(&v.path)
            .map_err(|e| format!("volume {pool}/{volume}: {e}"))?;
        self.refresh(&v.pool.name).await;
        Ok(())
    }

    /// A qcow2 copy-on-write clone of `template` (same pool), of `size` bytes (0: the
    /// template's size). Constant time: nothing of the template is copied.
    pub async fn create_os(
        &self,
        pool: &str,
        volume: &str,
        size: u64,
        template: &str,
    ) -> Result<(), String> {
        let v = match self.target(pool, volume)? {
            Target::Local(v) => v,
            Target::Rbd(v) => return v.create_os(size, template).await,
        };
        let t = self.volume(pool, template)?;
        refuse_existing(&v)?;
        if !t.path.exists() {
            return Err(format!("template {pool}/{template}: no such volume"));
        }
        let template_size = virtual_size(&t.path).await?;
        if size != 0 && size < template_size {
            return Err(format!(
                "volume {pool}/{volume}: size {size} is smaller than its template {template} ({template_size} bytes)"
            ));
        }
        let size = size.max(template_size);
        let work = WorkFile::new(&v.dir, &v.name);
        let backing_format = format_of(&t.path);
        let out = Invocation::new("qemu-img", QEMU_IMG_QUICK)
            .args(["create", "-q", "-f", "qcow2", "-F", backing_format, "-b"])
            .arg(t.path.as_os_str())
            .arg(work.path().as_os_str())
            .arg(size.to_string())
            .run()
            .await
            .map_err(|e| format!("volume {pool}/{volume}: {e}"))?;
        if !out.success() {
            return Err(format!(
                "volume {pool}/{volume}: qemu-img create failed: {}",
                out.stderr_lossy().trim()
            ));
        }
        work.publish(&v.path)
            .map_err(|e| format!("volume {pool}/{volume}: {e}"))?;
        self.refresh(&v.pool.name).await;
        Ok(())
    }

    /// A raw volume holding `content` (a cloud-init ISO), padded to `size` bytes.
    /// `replace`: the volume must exist and is replaced atomically; else it must not.
    pub async fn write_iso(
        &self,
        pool: &str,
        volume: &str,
        size: u64,
        content: Vec<u8>,
        replace: bool,
    ) -> Result<(), String> {
        let target = self.target(pool, volume)?;
        let len = content.len() as u64;
        if size != 0 && size < len {
            return Err(format!(
                "volume {pool}/{volume}: content is {len} bytes, more than its size {size}"
            ));
        }
        let v = match target {
            Target::Local(v) => v,
            Target::Rbd(v) => return v.write_iso(size, content, replace).await,
        };
        if replace {
            if !v.path.exists() {
                return Err(format!("volume {pool}/{volume}: no such volume"));
            }
        } else {
            refuse_existing(&v)?;
        }
        let work = WorkFile::new(&v.dir, &v.name);
        let path = work.path().to_owned();
        blocking(move || {
            let mut f = create_new(&path)?;
            let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
            f.write_all(&content).map_err(err)?;
            f.set_len(size.max(len)).map_err(err)?;
            f.sync_all().map_err(err)
        })
        .await?;
        let done = if replace {
            work.replace(&v.path)
        } else {
            work.publish(&v.path)
        };
        done.map_err(|e| format!("volume {pool}/{volume}: {e}"))?;
        self.refresh(&v.pool.name).await;
        Ok(())
    }

    /// Grow a volume to `size` bytes; smaller is refused. A volume in use by a running
    /// instance is grown through libvirt (the guest sees the new size).
    pub async fn resize(&self, pool: &str, volume: &str, size: u64) -> Result<(), String> {
        let v = match self.target(pool, volume)? {
            Target::Local(v) => v,
            Target::Rbd(v) => {
                let running = self.user_of(&v.disk_key(), true).await?;
                return v.resize(size, running, &self.instances).await;
            }
        };
        if !v.path.exists() {
            return Err(format!("volume {pool}/{volume}: no such volume"));
        }
        let current = virtual_size(&v.path).await?;
        if size < current {
            return Err(format!(
                "volume {pool}/{volume}: cannot shrink from {current} to {size} bytes"
            ));
        }
        if size == current {
            return Ok(());
        }
        let path = v.path.display().to_string();
        let running_user = self
            .instances
            .disks_in_use()
            .await?
            .into_iter()
            .find(|(p, _, running)| *p == path && *running);
        if let Some((_, instance, _)) = running_user {
            self.instances
                .libvirt()
                .request::<()>(Request::BlockResize {
                    instance,
                    disk: path.clone(),
                    size,
                })
                .await?;
        } else {
            let out = Invocation::new("qemu-img", QEMU_IMG_QUICK)
                .args(["resize", "-q", "-f", format_of(&v.path)])
                .arg(v.path.as_os_str())
                .arg(size.to_string())
                .run()
                .await
                .map_err(|e| format!("volume {pool}/{volume}: {e}"))?;
            if !out.success() {
                return Err(format!(
                    "volume {pool}/{volume}: qemu-img resize failed: {}",
                    out.stderr_lossy().trim()
                ));
            }
        }
        self.refresh(&v.pool.name).await;
        Ok(())
    }

    /// Delete a volume no instance uses and no clone is based on. Local volumes have
    /// no snapshots: `WithSnapshots` changes nothing.
    pub async fn delete(&self, pool: &str, volume: &str) -> Result<(), String> {
        let v = match self.target(pool, volume)? {
            Target::Local(v) => v,
            Target::Rbd(v) => {
                if let Some(instance) = self.user_of(&v.disk_key(), false).await? {
                    return Err(format!(
                        "volume {pool}/{volume} is in use by instance {instance}: delete the instance first"
                    ));
                }
                return v.delete().await;
            }
        };
        if !v.path.exists() {
            return Err(format!("volume {pool}/{volume}: no such volume"));
        }
        let path = v.path.display().to_string();
        if let Some((_, instance, _)) = self
            .instances
            .disks_in_use()
            .await?
            .into_iter()
            .find(|(p, _, _)| *p == path)
        {
            return Err(format!(
                "volume {pool}/{volume} is in use by instance {instance}: delete the instance first"
            ));
        }
        let dir = v.dir.clone();
        let target = v.path.clone();
        let clones = blocking(move || Ok(clones_of(&dir, &target))).await?;
        if let Some(clone) = clones.first() {
            return Err(format!(
                "volume {pool}/{volume} is the template of volume {clone}: delete that first"
            ));
        }
        fs::remove_file(&v.path)
            .map_err(|e| format!("volume {pool}/{volume}: cannot delete: {e}"))?;
        self.refresh(&v.pool.name).await;
        Ok(())
    }
}

impl Storage {
    /// The instance using the disk `key` (a file path, or `rbd:<ceph pool>/<image>`),
    /// among running instances only when `running`.
    async fn user_of(&self, key: &str, running: bool) -> Result<Option<String>, String> {
        Ok(self
            .instances
            .disks_in_use()
            .await?
            .into_iter()
            .find(|(k, _, up)| k == key && (*up || !running))
            .map(|(_, instance, _)| instance))
    }
}

/// Volumes of `dir` whose qcow2 backing file is `target`.
fn clones_of(dir: &Path, target: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut clones: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| {
            qcow2_backing_file(&e.path()).is_some_and(|b| {
                let b = Path::new(&b);
                let b = if b.is_absolute() {
                    b.to_owned()
                } else {
                    dir.join(b)
                };
                b == target
            })
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    clones.sort();
    clones
}

fn refuse_existing(v: &Volume) -> Result<(), String> {
    if v.path.exists() {
        return Err(format!("volume {}/{} already exists", v.pool.name, v.name));
    }
    if !v.dir.is_dir() {
        return Err(format!(
            "pool {}: directory {} does not exist",
            v.pool.name,
            v.dir.display()
        ));
    }
    Ok(())
}

fn create_new(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// A volume's virtual size (`qemu-img info`).
pub async fn virtual_size(path: &Path) -> Result<u64, String> {
    let info = image_info(path, format_of(path)).await?;
    info.get("virtual-size")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("{}: qemu-img info gave no virtual size", path.display()))
}

/// `qemu-img info --output=json` of `path` read as `format` (`-U`: also while a
/// running instance holds the image).
pub async fn image_info(path: &Path, format: &str) -> Result<serde_json::Value, String> {
    let out = Invocation::new("qemu-img", QEMU_IMG_QUICK)
        .args(["info", "--output=json", "-U", "-f", format])
        .arg(path.as_os_str())
        .run()
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!(
            "{}: qemu-img info failed: {}",
            path.display(),
            out.stderr_lossy().trim()
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{}: qemu-img info: {e}", path.display()))
}

async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| format!("file operation did not complete: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_files_vanish_unless_published_and_never_replace_a_volume() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkFile::new(dir.path(), "v");
        fs::write(work.path(), b"x").unwrap();
        let kept = work.path().to_owned();
        drop(work);
        assert!(!kept.exists());

        fs::write(dir.path().join("v"), b"old").unwrap();
        let work = WorkFile::new(dir.path(), "v");
        fs::write(work.path(), b"new").unwrap();
        let err = work.publish(&dir.path().join("v")).unwrap_err();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(fs::read(dir.path().join("v")).unwrap(), b"old");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "work file left behind"
        );
    }

    #[test]
    fn reads_formats_and_backing_files() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        fs::write(&raw, b"hello").unwrap();
        assert_eq!(format_of(&raw), "raw");
        assert_eq!(qcow2_backing_file(&raw), None);
        // A qcow2 header naming "base" at offset 72.
        let mut q = b"QFI\xfb".to_vec();
        q.extend_from_slice(&3u32.to_be_bytes());
        q.extend_from_slice(&72u64.to_be_bytes());
        q.extend_from_slice(&4u32.to_be_bytes());
        q.resize(72, 0);
        q.extend_from_slice(b"base");
        let qcow = dir.path().join("q");
        fs::write(&qcow, &q).unwrap();
        assert_eq!(format_of(&qcow), "qcow2");
        assert_eq!(qcow2_backing_file(&qcow).as_deref(), Some("base"));
        assert_eq!(clones_of(dir.path(), &dir.path().join("base")), ["q"]);
    }
}
