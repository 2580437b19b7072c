//! Kaktus, the Kowabunga hypervisor agent: KVM instances through libvirt and the
//! node's storage pools, driven by Kahuna's `Kaktus.*` RPC methods and by the `[kaktus]`
//! section of the node's desired state.
//!
//! - [`libvirt`], [`libvirt_protocol`]: libvirt, through the `kaktus-libvirt` helper
//!   process (the only binary that links it) and the requests it answers.
//! - [`capabilities`]: `NodeCapabilities` from libvirt's capabilities XML.
//! - [`domain_xml`]: checks (and local-pool rewrites) of Kahuna's domain XML.
//! - [`domain_state`]: libvirt states and reasons in upstream's words.
//! - [`instances`]: define, describe, operate, delete instances.
//! - [`storage`], [`template`]: the `local` backend's volumes and template downloads.
//! - [`ceph_secret`]: the libvirt secret of an `rbd` pool, from the node's key file.
//! - [`storage_rbd`]: the `rbd` backend's volumes (templates, clones) on a Ceph pool.
//! - [`rbd`]: Ceph RBD images through the `rbd` and `rados` commands (the `rbd` backend).
//! - [`section`], [`reconciler`]: the `[kaktus]` section and its reconciler (pools).
//! - [`inventory`]: what the node offers instances (pools, bridges), shared by the two.
//! - [`service`]: the `Kaktus.*` RPC service.

pub mod capabilities;
pub mod ceph_secret;
pub mod domain_state;
pub mod domain_xml;
pub mod instances;
pub mod inventory;
pub mod libvirt;
pub mod libvirt_protocol;
pub mod rbd;
pub mod reconciler;
pub mod section;
pub mod service;
pub mod storage;
pub mod storage_rbd;
pub mod template;
pub mod volume_name;

pub use inventory::{NodeInventory, Pool, SharedInventory};
pub use libvirt::Libvirt;
pub use reconciler::KaktusReconciler;
pub use service::KaktusService;

/// Everything a Kaktus service needs, wired together.
pub fn build(
    libvirt: Libvirt,
    inventory: SharedInventory,
    progress: kowabunga_model::Progress,
) -> KaktusService {
    let instances = instances::Instances::new(libvirt, inventory.clone());
    let storage = storage::Storage::new(inventory, instances.clone());
    let templates = template::Templates::new(storage.clone(), progress);
    KaktusService::new(instances, storage, templates)
}
