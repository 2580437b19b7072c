//! `kiwi`: the Kowabunga network node agent. All behaviour lives in the libraries; this
//! binary names the role and lists its reconcilers and services.

use std::process::ExitCode;

use kowabunga_agent::cli::{self, Role};
use kowabunga_firewall::FirewallReconciler;
use kowabunga_model::{DynReconciler, erase};
use kowabunga_network::NetworkReconciler;

struct Kiwi;

impl Role for Kiwi {
    const NAME: &'static str = "kiwi";
    const KIND: &'static str = "Kiwi";

    /// Links and addresses first, so the firewall can name them.
    fn reconcilers(&self) -> Result<Vec<Box<dyn DynReconciler>>, String> {
        Ok(vec![
            erase(NetworkReconciler::new().map_err(|e| e.to_string())?),
            erase(FirewallReconciler::new().map_err(|e| e.to_string())?),
        ])
    }
}

fn main() -> ExitCode {
    cli::main(Kiwi)
}
