//! `kontroller`: the Kowabunga agent inside service VMs (Kawaii, Konvey). All behaviour
//! lives in the library; this binary names the role, its reconcilers, its Kahuna RPC
//! methods and its services. Its state is pushed, not pulled: the NoCloud seed and the
//! instance metadata, fetched at start and on every `Kontroller.Reload`.

use std::process::ExitCode;
use std::sync::Arc;

use kontroller::nocloud::Seed;
use kontroller::seed_source::SeedSource;
use kontroller::{KontrollerService, Reloader};
use kowabunga_agent::credentials::Credentials;
use kowabunga_agent::push::PipelinePusher;
use kowabunga_agent::role::{KahunaLink, Role, RoleContext, StateSource};
use kowabunga_daemons::{DaemonsReconciler, KEEPALIVED, STRONGSWAN};
use kowabunga_firewall::FirewallReconciler;
use kowabunga_model::{DynReconciler, Supervised, erase};
use kowabunga_network::NetworkReconciler;

struct Kontroller {
    /// The seed, or why it could not be read (reported by `run`; `check` and `schema`
    /// need none).
    seed: Result<Arc<Seed>, String>,
}

impl Kontroller {
    fn seed(&self) -> Result<Arc<Seed>, String> {
        self.seed.clone()
    }
}

impl Role for Kontroller {
    const NAME: &'static str = "kontroller";
    const KIND: &'static str = "Kontroller";
    const STATUS_PORT: u16 = 9723;
    const STATE_SOURCE: StateSource = StateSource::Push;
    type Rpc = KontrollerService;

    /// Links and addresses first, so the firewall and keepalived can name them.
    fn reconcilers(&self, context: &RoleContext) -> Result<Vec<Box<dyn DynReconciler>>, String> {
        let network = NetworkReconciler::with_state_dir(context.state_dir.join("network"))
            .map_err(|e| e.to_string())?
            .reading_pushed();
        let firewall = FirewallReconciler::new()
            .map_err(|e| e.to_string())?
            .reading_pushed();
        // The image's keepalived.service reads its file there (overlays/kontroller).
        let daemons = DaemonsReconciler::new(
            context.state_dir.join("daemons"),
            vec![KEEPALIVED, STRONGSWAN],
        );
        Ok(vec![erase(network), erase(firewall), erase(daemons)])
    }

    fn rpc(&self, _context: &RoleContext, pusher: PipelinePusher) -> Self::Rpc {
        KontrollerService::new(Reloader::new(self.seed(), pusher))
    }

    /// At start: the seed's network, then the first Reload (retried with back-off until
    /// it goes through).
    fn services(&self, _context: &RoleContext, pusher: PipelinePusher) -> Vec<Supervised> {
        let reloader = Reloader::new(self.seed(), pusher);
        vec![Supervised::new("metadata", move || {
            let reloader = reloader.clone();
            async move {
                reloader.start().await?;
                tracing::info!("instance metadata in force; next on Kontroller.Reload");
                std::future::pending::<Result<(), String>>().await
            }
        })]
    }

    /// Kahuna's address and this agent's id and token, from the seed's meta-data.
    fn kahuna_link(&self) -> Option<Result<KahunaLink, String>> {
        Some(self.seed().and_then(|seed| {
            let controller = seed.meta_data.controller.clone().ok_or(
                "meta-data has no kowabunga_controller_uri/agent_id/agent_token: \
                 this VM is not a Kahuna service VM",
            )?;
            let insecure = !controller.uri.is_https();
            if insecure {
                tracing::warn!(
                    "Kahuna link over plain ws:// ({}), as the seed asks",
                    controller.uri.as_str()
                );
            }
            Ok(KahunaLink {
                credentials: Credentials {
                    kahuna: controller.uri,
                    agent_id: controller.agent_id,
                    api_key: controller.agent_token,
                    config_url: None,
                    ca_file: None,
                },
                insecure,
            })
        }))
    }
}

fn main() -> ExitCode {
    // The cidata volume, or the copy first boot fetched from a seed URL
    // (`kontroller::seed_source`); `KOWABUNGA_SEED_DIR` overrides both.
    let seed = SeedSource::of_this_boot().and_then(|source| {
        let dir = source.dir();
        Seed::from_dir(&dir)
            .map(Arc::new)
            .map_err(|e| format!("NoCloud seed {}: {e}", dir.display()))
    });
    kowabunga_agent::cli::main(Kontroller { seed })
}
