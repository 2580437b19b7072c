//! The `wireguard` reconciler, after the network one (which makes the links):
//!
//! - plan: the tunnels of the document ([`crate::model`]), each compared with what the
//!   kernel holds (`wg show`); the ones that differ are set;
//! - apply: the tunnel's key (made on first use, [`crate::keys`]) and its whole
//!   configuration through `wg setconf` (a peer left out is removed);
//! - check: every tunnel holds what the document says.
//!
//! A generation that is reverted sets the tunnels of the one before it, the same way.
//! Whether a peer answers is not the check's business (a peer may be down for hours):
//! the watcher ([`crate::watch`]) shows it in `/status`.

use std::path::PathBuf;

use kowabunga_model::{Action, Document, Planned, ReconcileError, Reconciler};

use crate::keys::Keys;
use crate::model::{self, TunnelConfig, WireguardSection};
use crate::wg::{self, Wg};

/// Sets the node's WireGuard tunnels from the documents' `[wireguard]`.
pub struct WireguardReconciler {
    keys: Keys,
    wg: Wg,
}

/// The tunnels `apply` sets.
#[derive(Debug)]
pub struct WireguardPlan(Vec<TunnelConfig>);

impl WireguardReconciler {
    /// Keys under `keys_dir` (on `/var`).
    pub fn new(keys_dir: impl Into<PathBuf>) -> Self {
        Self {
            keys: Keys::new(keys_dir),
            wg: Wg::default(),
        }
    }
}

fn describe(t: &TunnelConfig) -> String {
    let port = t
        .listen_port
        .map_or_else(|| "any port".to_owned(), |p| format!("port {p}"));
    let peers: Vec<String> = t
        .peers
        .iter()
        .map(|p| {
            let ips: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
            format!("{} ({})", short(&p.public_key), ips.join(", "))
        })
        .collect();
    format!(
        "set wireguard {}: {port}, {} peer(s){}{}",
        t.link,
        t.peers.len(),
        if peers.is_empty() { "" } else { ": " },
        peers.join("; ")
    )
}

/// A public key's first characters, for messages (as `wg show` abbreviates none, but
/// a line per peer stays readable).
pub fn short(key: &str) -> &str {
    key.get(..8).unwrap_or(key)
}

impl Reconciler for WireguardReconciler {
    type Plan = WireguardPlan;

    fn name(&self) -> &'static str {
        model::SECTION
    }

    fn validate(&self, desired: &Document) -> Result<(), ReconcileError> {
        model::effective(desired)
            .map(drop)
            .map_err(ReconcileError::invalid)
    }

    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        vec![(model::SECTION, schemars::schema_for!(WireguardSection))]
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<WireguardPlan>, ReconcileError> {
        let tunnels = model::effective(desired).map_err(ReconcileError::invalid)?;
        if tunnels.is_empty() {
            return Ok(Planned::nothing(WireguardPlan(Vec::new())));
        }
        let observed = self.wg.show_all().await.map_err(ReconcileError::observe)?;
        let todo: Vec<TunnelConfig> = tunnels
            .into_iter()
            .filter(|t| observed.get(&t.link).is_none_or(|o| !wg::matches(t, o)))
            .collect();
        Ok(Planned {
            actions: todo.iter().map(|t| Action(describe(t))).collect(),
            artifacts: Vec::new(),
            payload: WireguardPlan(todo),
        })
    }

    async fn apply(&self, plan: WireguardPlan) -> Result<(), ReconcileError> {
        for tunnel in &plan.0 {
            let key = self
                .keys
                .private_key(&self.wg, &tunnel.link)
                .await
                .map_err(|e| {
                    ReconcileError::apply(format!("wireguard {}: key: {e}", tunnel.link))
                })?;
            self.wg
                .setconf(tunnel, &key)
                .await
                .map_err(|e| ReconcileError::apply(format!("wireguard {}: {e}", tunnel.link)))?;
            tracing::info!(link = %tunnel.link, peers = tunnel.peers.len(), "wireguard: tunnel set");
        }
        Ok(())
    }

    async fn check(&self, desired: &Document) -> Result<(), ReconcileError> {
        let tunnels = model::effective(desired).map_err(ReconcileError::invalid)?;
        if tunnels.is_empty() {
            return Ok(());
        }
        let observed = self
            .wg
            .show_all()
            .await
            .map_err(ReconcileError::unhealthy)?;
        for t in &tunnels {
            match observed.get(&t.link) {
                Some(o) if wg::matches(t, o) => {}
                Some(_) => {
                    return Err(ReconcileError::unhealthy(format!(
                        "wireguard {}: the kernel's peers or port differ from the document",
                        t.link
                    )));
                }
                None => {
                    return Err(ReconcileError::unhealthy(format!(
                        "wireguard {}: no such WireGuard interface",
                        t.link
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_model::Format;

    const KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn doc(body: &str) -> Document {
        Document::parse(
            format!("{}{body}", crate::model::tests_head()).as_bytes(),
            Format::Toml,
        )
        .unwrap()
    }

    /// Planned from the document against what the kernel holds (here: no WireGuard
    /// interface, as on the build host), refused at validate and plan alike.
    #[tokio::test]
    async fn plans_every_tunnel_the_kernel_lacks_and_refuses_a_bad_section() {
        let tmp = tempfile::tempdir().unwrap();
        let r = WireguardReconciler::new(tmp.path());
        assert_eq!(r.name(), "wireguard");
        let good = doc(&format!(
            "[wireguard.wg0]\nlisten_port = 51820\n[[wireguard.wg0.peer]]\npublic_key = \"{KEY}\"\nallowed_ips = [\"10.62.0.0/24\"]\n"
        ));
        let planned = r.plan(&good, None).await.unwrap();
        let actions: Vec<String> = planned.actions.iter().map(|a| a.0.clone()).collect();
        assert_eq!(
            actions,
            [
                "set wireguard wg0: port 51820, 1 peer(s): xTIBA5rb (10.62.0.0/24)",
                "set wireguard wg1: any port, 0 peer(s)"
            ]
        );
        let bad = doc("[wireguard.eth0]\n");
        assert!(r.validate(&bad).is_err());
        assert!(r.plan(&bad, None).await.is_err());
        // Nothing was written: keys are made at apply only.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        assert_eq!(r.section_schemas()[0].0, "wireguard");
    }
}
