//! `kaktus`: the Kowabunga hypervisor agent. All behaviour lives in the library; this
//! binary names the role, lists its reconcilers in the order they apply and its Kahuna
//! RPC methods.

use std::process::ExitCode;

use kaktus::{KaktusReconciler, KaktusService, Libvirt, NodeInventory, SharedInventory};
use kowabunga_agent::push::PipelinePusher;
use kowabunga_agent::role::{Role, RoleContext};
use kowabunga_model::{DynReconciler, erase};
use kowabunga_network::NetworkReconciler;

struct Kaktus {
    libvirt: Libvirt,
    inventory: SharedInventory,
}

impl Role for Kaktus {
    const NAME: &'static str = "kaktus";
    const KIND: &'static str = "Kaktus";
    const STATUS_PORT: u16 = 9722;
    type Rpc = KaktusService;

    /// Bridges first (instances' NICs attach to them), then libvirt's pools.
    fn reconcilers(&self, context: &RoleContext) -> Result<Vec<Box<dyn DynReconciler>>, String> {
        let keys = context.state_dir.join("ceph");
        kaktus::ceph_secret::persist_keys(&keys, &context.boot.ceph_keys)?;
        let network = NetworkReconciler::with_state_dir(context.state_dir.join("network"))
            .map_err(|e| e.to_string())?;
        Ok(vec![
            erase(network),
            erase(
                KaktusReconciler::new(self.libvirt.clone(), self.inventory.clone())
                    .with_key_dir(keys),
            ),
        ])
    }

    /// `Kaktus.*`: instances and volumes, acted on directly (no pushed state).
    fn rpc(&self, context: &RoleContext, _pusher: PipelinePusher) -> Self::Rpc {
        kaktus::build(
            self.libvirt.clone(),
            self.inventory.clone(),
            context.progress.clone(),
        )
    }
}

fn main() -> ExitCode {
    kowabunga_agent::cli::main(Kaktus {
        libvirt: Libvirt::new(kaktus::libvirt::DEFAULT_URI),
        inventory: SharedInventory::new(NodeInventory::new()),
    })
}
