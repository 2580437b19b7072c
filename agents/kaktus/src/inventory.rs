//! What this node offers to instances: its storage pools and its bridges. Set by the
//! `[kaktus]` reconciler from the generation in force (pools from `[kaktus]`, bridges
//! from `[network]`), read by the RPC methods: Kahuna's domain XML and volume calls may
//! only use what is listed here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

/// A storage pool of this node, as the RPC methods see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Name in Kahuna's calls (`Pool`) and in libvirt.
    pub name: String,
    pub backend: PoolBackend,
}

/// Where a pool's volumes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolBackend {
    /// Files in a directory (a libvirt `dir` pool).
    Local { path: PathBuf },
    /// Images of a Ceph pool.
    Rbd(RbdPool),
}

/// An `rbd` pool: the Ceph pool, how to reach it, and the libvirt secret instances
/// authenticate with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdPool {
    pub ceph_pool: String,
    pub cluster: crate::rbd::Cluster,
    pub secret_uuid: String,
}

impl Pool {
    /// A `local` pool.
    pub fn local(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            backend: PoolBackend::Local { path: path.into() },
        }
    }

    /// The directory of a `local` pool; `None` for an `rbd` pool.
    pub fn dir(&self) -> Option<&Path> {
        match &self.backend {
            PoolBackend::Local { path } => Some(path),
            PoolBackend::Rbd(_) => None,
        }
    }

    /// The directory of a `local` pool, or an error naming what needs one.
    pub fn local_dir(&self, what: &str) -> Result<&Path, String> {
        self.dir().ok_or_else(|| {
            format!(
                "pool {}: {what} is not available on an rbd pool yet",
                self.name
            )
        })
    }
}

/// The node's pools and bridges, and the knobs of its RPC methods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInventory {
    pub pools: BTreeMap<String, Pool>,
    pub bridges: BTreeSet<String>,
    /// Host named in console URLs (`spice://<host>:<port>`); `None`: the graphics
    /// listen address.
    pub console_address: Option<String>,
    /// Largest template download accepted, in bytes.
    pub template_max_bytes: u64,
}

/// Default cap on a template download: 64 GiB.
pub const DEFAULT_TEMPLATE_MAX_BYTES: u64 = 64 << 30;

impl NodeInventory {
    pub fn new() -> Self {
        Self {
            template_max_bytes: DEFAULT_TEMPLATE_MAX_BYTES,
            ..Self::default()
        }
    }

    /// The pool named `name`, or an error saying this node has no such pool.
    pub fn pool(&self, name: &str) -> Result<&Pool, String> {
        self.pools.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.pools.keys().map(String::as_str).collect();
            format!("pool {name:?} is not a storage pool of this node (pools: {known:?})")
        })
    }
}

/// The inventory shared by the reconciler (writer) and the RPC service (readers).
#[derive(Debug, Clone, Default)]
pub struct SharedInventory(Arc<RwLock<NodeInventory>>);

impl SharedInventory {
    pub fn new(inventory: NodeInventory) -> Self {
        Self(Arc::new(RwLock::new(inventory)))
    }

    pub fn get(&self) -> NodeInventory {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, inventory: NodeInventory) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = inventory;
    }
}
