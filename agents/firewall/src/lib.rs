//! The `[firewall]` reconciler: nftables through one `nft -f` transaction.
//!
//! The agent owns exactly two tables, `table inet kowabunga` (filter) and
//! `table ip kowabunga_nat` (NAT). Each generation renders both whole ([`render`]),
//! checks the script with `nft -c -f` while planning, and swaps them in with one
//! `nft -f` when applying. Ownership is by table name, so `in_force` is not needed:
//! whatever the previous generation loaded lives in those tables and nowhere else, and
//! other owners' tables (libvirt, docker) are never named.
//!
//! A document without `[firewall]` removes the agent's tables (if present).
//!
//! Plan says "nothing to do" when the loaded tables carry the digest of the rendering
//! and, if this process loaded them, their listing is still what it was right after
//! loading (so a rule deleted by hand is put back on the next pass).

pub mod nft;
pub mod render;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kowabunga_model::firewall::{self, Firewall};
use kowabunga_model::network::{self, Network};
use kowabunga_model::{Action, Artifact, Document, Planned, ReconcileError, Reconciler};

pub use nft::{Nft, NftError, OwnTables};
pub use render::{FILTER_TABLE, NAT_TABLE, Rendered, render};

/// Where `nft` is looked for when no path is given.
const NFT_CANDIDATES: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// Why the reconciler cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("nft not found (looked in {0}); install the nftables package")]
    NftMissing(String),
}

/// The firewall reconciler. See the crate documentation.
#[derive(Debug)]
pub struct FirewallReconciler {
    nft: Nft,
    /// What this process last loaded, to notice changes made behind its back.
    loaded: Mutex<Option<OwnTables>>,
    loads: AtomicU64,
}

/// What [`FirewallReconciler::plan`] hands to apply: the script to load, if any.
#[derive(Debug)]
pub struct FirewallPlan {
    load: Option<Rendered>,
}

impl FirewallPlan {
    /// The script apply will load, `None` when nothing changes.
    pub fn script(&self) -> Option<&str> {
        self.load.as_ref().map(|r| r.script.as_str())
    }
}

impl FirewallReconciler {
    /// A reconciler using the system's `nft`.
    pub fn new() -> Result<Self, SetupError> {
        let path_dirs = std::env::var_os("PATH").unwrap_or_default();
        let found = NFT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .chain(std::env::split_paths(&path_dirs).map(|d| d.join("nft")))
            .find(|p| p.is_file());
        match found {
            Some(p) => Ok(Self::with_nft(p)),
            None => Err(SetupError::NftMissing(
                NFT_CANDIDATES.join(", ") + " and $PATH",
            )),
        }
    }

    /// A reconciler running the given `nft` binary.
    pub fn with_nft(bin: impl AsRef<Path>) -> Self {
        Self {
            nft: Nft::new(bin.as_ref()),
            loaded: Mutex::new(None),
            loads: AtomicU64::new(0),
        }
    }

    /// How many rulesets this reconciler has loaded into the kernel (`nft -f` runs).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    fn remembered(&self) -> Option<OwnTables> {
        self.loaded.lock().map(|g| g.clone()).unwrap_or(None)
    }

    /// Whether the kernel holds exactly `rendered`.
    fn in_sync(&self, rendered: &Rendered, current: &OwnTables) -> bool {
        if rendered.tables.is_empty() {
            return current.is_empty();
        }
        let want = render::marker(&rendered.digest);
        let present = [current.filter.is_some(), current.nat.is_some()];
        let wanted = [true, rendered.tables.contains(&NAT_TABLE)];
        present == wanted
            && current.markers().iter().all(|m| *m == Some(want.as_str()))
            && self.remembered().is_none_or(|mem| &mem == current)
    }
}

/// Read and validate the `[firewall]` section of `doc` (interfaces are checked
/// against the document's `[network]` section).
pub fn desired(doc: &Document) -> Result<Option<Firewall>, ReconcileError> {
    let Some(fw) = doc.section::<Firewall>(firewall::SECTION)? else {
        return Ok(None);
    };
    let net = doc
        .section::<Network>(network::SECTION)?
        .unwrap_or_default();
    let known: BTreeSet<&str> = net.interface_names();
    fw.validate(&known)
        .map_err(|e| ReconcileError::invalid(format!("[firewall] {e}")))?;
    Ok(Some(fw))
}

fn describe(rendered: &Rendered, current: &OwnTables, fw: Option<&Firewall>) -> Vec<Action> {
    let mut actions = Vec::new();
    let verb = |present: bool| if present { "replace" } else { "create" };
    match fw {
        None => {
            if current.filter.is_some() {
                actions.push(Action(format!("delete table {FILTER_TABLE}")));
            }
            if current.nat.is_some() {
                actions.push(Action(format!("delete table {NAT_TABLE}")));
            }
        }
        Some(fw) => {
            actions.push(Action(format!(
                "{} table {FILTER_TABLE}: policy input {}, forward {}, output {}; {} rules",
                verb(current.filter.is_some()),
                fw.input.as_str(),
                fw.forward.as_str(),
                fw.output.as_str(),
                fw.rules.len()
            )));
            if rendered.tables.contains(&NAT_TABLE) {
                let n = &fw.nat;
                actions.push(Action(format!(
                    "{} table {NAT_TABLE}: {} masquerade, {} dnat, {} snat",
                    verb(current.nat.is_some()),
                    n.masquerade.len(),
                    n.dnat.len(),
                    n.snat.len()
                )));
            } else if current.nat.is_some() {
                actions.push(Action(format!("delete table {NAT_TABLE}")));
            }
        }
    }
    actions
}

impl Reconciler for FirewallReconciler {
    type Plan = FirewallPlan;

    fn name(&self) -> &'static str {
        "firewall"
    }

    async fn plan(
        &self,
        desired_doc: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<FirewallPlan>, ReconcileError> {
        let fw = desired(desired_doc)?;
        let rendered = render(fw.as_ref());
        let current = self
            .nft
            .list_own()
            .await
            .map_err(|e| ReconcileError::observe(format!("firewall: {e}")))?;
        if self.in_sync(&rendered, &current) {
            return Ok(Planned::nothing(FirewallPlan { load: None }));
        }
        self.nft
            .check(&rendered.script)
            .await
            .map_err(|e| match e {
                NftError::Refused { message } => ReconcileError::invalid(format!(
                    "firewall: the kernel refuses the ruleset: {message}"
                )),
                other => ReconcileError::observe(format!("firewall: {other}")),
            })?;
        Ok(Planned {
            actions: describe(&rendered, &current, fw.as_ref()),
            artifacts: vec![Artifact {
                name: "ruleset.nft".into(),
                contents: rendered.script.clone().into_bytes(),
            }],
            payload: FirewallPlan {
                load: Some(rendered),
            },
        })
    }

    async fn apply(&self, plan: FirewallPlan) -> Result<(), ReconcileError> {
        let Some(rendered) = plan.load else {
            return Ok(());
        };
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.nft
            .load(&rendered.script)
            .await
            .map_err(|e| ReconcileError::apply(format!("firewall: {e}")))?;
        let now = self
            .nft
            .list_own()
            .await
            .map_err(|e| ReconcileError::observe(format!("firewall: {e}")))?;
        if let Ok(mut g) = self.loaded.lock() {
            *g = Some(now);
        }
        Ok(())
    }

    async fn check(&self, desired_doc: &Document) -> Result<(), ReconcileError> {
        let fw = desired(desired_doc)?;
        let rendered = render(fw.as_ref());
        let current = self
            .nft
            .list_own()
            .await
            .map_err(|e| ReconcileError::observe(format!("firewall: {e}")))?;
        if self.in_sync(&rendered, &current) {
            Ok(())
        } else {
            Err(ReconcileError::unhealthy(
                "firewall: the agent's nftables tables do not hold the rendered ruleset",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_for_the_pipeline() {
        let boxed = kowabunga_model::erase(FirewallReconciler::with_nft("/nonexistent/nft"));
        assert_eq!(boxed.name(), "firewall");
    }

    #[tokio::test]
    async fn a_missing_nft_is_an_observe_error_naming_it() {
        let fw = FirewallReconciler::with_nft("/nonexistent/nft");
        let doc = Document::parse(
            b"version = 1\nnode = \"n\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n[firewall]\n",
            kowabunga_model::Format::Toml,
        )
        .unwrap();
        let err = fw.plan(&doc, None).await.map(drop).unwrap_err();
        assert_eq!(err.kind, kowabunga_model::ErrorKind::Observe);
        assert!(err.message.contains("cannot run /nonexistent/nft"), "{err}");
    }
}
