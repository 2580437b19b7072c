//! `kiwi`: the Kowabunga network node agent. All behaviour lives in the libraries; this
//! binary names the role, lists its reconcilers in the order they apply, and starts its
//! services (the DNS server is driven by its reconciler; Kahuna's RPC by `kowabunga-rpc`).

use std::process::ExitCode;
use std::sync::Arc;

use kowabunga_agent::cli::{self, Role, Service, ServiceContext};
use kowabunga_dns::{DnsReconciler, DnsServer, KiwiService};
use kowabunga_firewall::FirewallReconciler;
use kowabunga_model::{DynReconciler, erase};
use kowabunga_network::NetworkReconciler;

struct Kiwi {
    dns: DnsServer,
}

impl Role for Kiwi {
    const NAME: &'static str = "kiwi";
    const KIND: &'static str = "Kiwi";

    /// Links and addresses first, so the firewall can name them and DNS can bind them.
    fn reconcilers(&self) -> Result<Vec<Box<dyn DynReconciler>>, String> {
        Ok(vec![
            erase(NetworkReconciler::new().map_err(|e| e.to_string())?),
            erase(FirewallReconciler::new().map_err(|e| e.to_string())?),
            erase(DnsReconciler::new(self.dns.clone())),
        ])
    }

    /// Kahuna's RPC: `Kiwi.*` DNS methods become pushed `dns` state, applied through
    /// the same pipeline as pulled documents.
    fn services(&self, context: ServiceContext) -> Vec<Service> {
        let pipeline = Arc::clone(&context.pipeline);
        let board = context.board.clone();
        let pusher = move |table: toml::Table| {
            let pipeline = Arc::clone(&pipeline);
            let board = board.clone();
            async move {
                let outcome = pipeline
                    .lock()
                    .await
                    .push(kowabunga_model::dns::SECTION, table)
                    .await;
                kowabunga_agent::daemon::log_outcome(&outcome);
                board.attempt(&outcome);
                if outcome.is_failure() {
                    Err(outcome.to_string())
                } else {
                    Ok(())
                }
            }
        };
        let service = Arc::new(KiwiService::new(self.dns.clone(), pusher));
        let credentials = kowabunga_rpc::Credentials {
            kahuna_url: context.credentials.kahuna.as_str().to_owned(),
            agent_id: context.credentials.agent_id.clone(),
            api_key: context.credentials.api_key.expose().to_owned(),
        };
        let options = kowabunga_rpc::Options {
            insecure: context.insecure,
            ca_file: context.credentials.ca_file.clone(),
            ..kowabunga_rpc::Options::default()
        };
        match kowabunga_rpc::Agent::new(credentials, options, service) {
            Ok(agent) => vec![Box::pin(agent.run(std::future::pending::<()>()))],
            Err(e) => {
                tracing::error!("Kahuna RPC disabled: {e}");
                Vec::new()
            }
        }
    }
}

fn main() -> ExitCode {
    cli::main(Kiwi {
        dns: DnsServer::new(),
    })
}
