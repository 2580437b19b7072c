//! The `[firewall]` reconciler: nftables through one `nft -f` transaction.
//!
//! The agent owns exactly two tables, `table inet kowabunga` (filter) and
//! `table ip kowabunga_nat` (NAT). Each generation renders both whole ([`render`])
//! and swaps them in with one `nft -f` when applying: one transaction, taken whole or
//! refused whole by the kernel. Ownership is by table name, so `in_force` is not needed:
//! whatever the previous generation loaded lives in those tables and nowhere else, and
//! other owners' tables (libvirt, docker) are never named.
//!
//! A document without `[firewall]` removes the agent's tables (if present), or, for a
//! reconciler built [`with_baseline`](FirewallReconciler::with_baseline), loads the
//! [`baseline`] ruleset: closed but for loopback, ICMP, DHCP replies, outbound, the
//! role's services on internal links and those it serves on named links (Kiwi: DHCP
//! on the links `[dhcp]` serves).
//!
//! Plan says "nothing to do" when the loaded tables carry the digest of the rendering,
//! have its shape (rules per chain), and, once this process has observed them after
//! loading, their listing is still what it was then (so a rule deleted or edited by
//! hand is put back on the next pass).
//!
//! Cost ([`memory`] has the reasons): plan lists the tables; apply is one `nft -f` and
//! no read-back (the confirm window's check reads the tables anyway). The kernel's
//! check of a ruleset, `nft -c`, is the [precheck](Reconciler::precheck): the pipeline
//! runs it only when another reconciler changes the node before the firewall would,
//! and only for a ruleset this process has not loaded before. Otherwise the load is
//! the check: a ruleset the kernel refuses changes nothing and is rejected
//! ([`ErrorKind::Invalid`](kowabunga_model::ErrorKind::Invalid)).

pub mod baseline;
pub mod memory;
pub mod nft;
pub mod render;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kowabunga_model::firewall::{self, Firewall};
use kowabunga_model::network::{self, Network};
use kowabunga_model::{Action, Artifact, Document, Origin, Planned, ReconcileError, Reconciler};

pub use baseline::{Baseline, NetbootPorts};
use memory::{Accepted, Loaded, Shape};
pub use nft::{Nft, NftError, OwnTables};
pub use render::{FILTER_TABLE, NAT_TABLE, Rendered, render};

/// Where `nft` is looked for when no path is given.
const NFT_CANDIDATES: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// How long one apply (one `nft -f` transaction, and what follows) may take before the
/// pipeline counts it failed and reverts.
pub const APPLY_DEADLINE: Duration = Duration::from_secs(30);

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
    /// What the tables hold when the document has no `[firewall]`; `None`: no tables.
    baseline: Option<Baseline>,
    /// What this process last loaded, to notice changes made behind its back.
    loaded: Mutex<Option<Loaded>>,
    /// Rulesets the kernel accepted from this process: no `nft -c` for them.
    accepted: Mutex<Accepted>,
    loads: AtomicU64,
    checks: AtomicU64,
    /// Where `firewall` and `network` are read: the document's sections (default) or
    /// the pushed tables.
    origin: Origin,
}

/// What [`FirewallReconciler::plan`] hands to apply: the script to load, if any.
#[derive(Debug)]
pub struct FirewallPlan {
    load: Option<Rendered>,
    /// The kernel took this very ruleset from this process before: no `nft -c`.
    known: bool,
}

impl FirewallPlan {
    /// The script apply will load, `None` when nothing changes.
    pub fn script(&self) -> Option<&str> {
        self.load.as_ref().map(|r| r.script.as_str())
    }
}

impl FirewallReconciler {
    /// A reconciler using the system's `nft`. Building it needs no `nft`: `<agent>
    /// check` validates documents on machines without nftables; where `nft` is
    /// missing, the first plan fails naming the command it could not run.
    pub fn new() -> Result<Self, SetupError> {
        let path_dirs = std::env::var_os("PATH").unwrap_or_default();
        let found = NFT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .chain(std::env::split_paths(&path_dirs).map(|d| d.join("nft")))
            .find(|p| p.is_file());
        Ok(Self::with_nft(
            found.unwrap_or_else(|| PathBuf::from("nft")),
        ))
    }

    /// A reconciler running the given `nft` binary.
    pub fn with_nft(bin: impl AsRef<Path>) -> Self {
        Self {
            nft: Nft::new(bin.as_ref()),
            baseline: None,
            loaded: Mutex::new(None),
            accepted: Mutex::new(Accepted::default()),
            loads: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            origin: Origin::Section,
        }
    }

    /// Reads `firewall` and `network` from the tables the role pushes instead of the
    /// document's sections (see [`Origin`]).
    pub fn reading_pushed(mut self) -> Self {
        self.origin = Origin::Pushed;
        self
    }

    /// Closed until the document opens it: a document without `[firewall]` gets the
    /// [`Baseline`] ruleset instead of no tables at all.
    pub fn with_baseline(mut self, baseline: Baseline) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// The ruleset `doc` asks for: its `[firewall]`, else the baseline (if any).
    fn effective(&self, doc: &Document) -> Result<Effective, ReconcileError> {
        if let Some(fw) = desired_from(doc, self.origin)? {
            return Ok(Effective {
                firewall: Some(fw),
                baseline: false,
            });
        }
        let Some(baseline) = &self.baseline else {
            return Ok(Effective {
                firewall: None,
                baseline: false,
            });
        };
        Ok(Effective {
            firewall: Some(baseline.for_document(doc, self.origin)?),
            baseline: true,
        })
    }

    /// Each `nft` run is killed, and its step fails, after `deadline`
    /// ([`nft::DEFAULT_NFT_DEADLINE`] unless set).
    pub fn with_nft_deadline(mut self, deadline: Duration) -> Self {
        self.nft = self.nft.with_deadline(deadline);
        self
    }

    /// How many rulesets this reconciler has loaded into the kernel (`nft -f` runs).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// The `nft` binary this reconciler runs.
    pub fn nft_bin(&self) -> &Path {
        self.nft.bin()
    }

    /// How many kernel checks (`nft -c`) this reconciler has run.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    fn was_accepted(&self, digest: &str) -> bool {
        self.accepted.lock().is_ok_and(|a| a.contains(digest))
    }

    /// Whether the kernel holds exactly `rendered`. The first observation after a load
    /// (or after a restart: tables loaded by an earlier process) becomes the listing
    /// later observations are compared with.
    fn in_sync(&self, rendered: &Rendered, current: &OwnTables) -> bool {
        if rendered.tables.is_empty() {
            return current.is_empty();
        }
        let want = render::marker(&rendered.digest);
        let present = [current.filter.is_some(), current.nat.is_some()];
        let wanted = [true, rendered.tables.contains(&NAT_TABLE)];
        if present != wanted || !current.markers().iter().all(|m| *m == Some(want.as_str())) {
            return false;
        }
        let Ok(mut loaded) = self.loaded.lock() else {
            return false;
        };
        match loaded.as_mut() {
            Some(mem) if mem.digest == rendered.digest => match &mem.listing {
                Some(listing) => listing == current,
                None if Shape::of(current) == mem.shape => {
                    mem.listing = Some(current.clone());
                    true
                }
                None => false,
            },
            // This process loaded another ruleset since: someone else put this one.
            Some(_) => false,
            None => {
                let shape = Shape::of_script(&rendered.script);
                if Shape::of(current) != shape {
                    return false;
                }
                *loaded = Some(Loaded {
                    digest: rendered.digest.clone(),
                    shape,
                    listing: Some(current.clone()),
                });
                true
            }
        }
    }

    /// `nft -c` of `script`, counted.
    async fn kernel_check(&self, script: &str) -> Result<(), NftError> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        self.nft.check(script).await
    }
}

fn refused(e: NftError) -> ReconcileError {
    match e {
        NftError::Refused { message } => ReconcileError::invalid(format!(
            "firewall: the kernel refuses the ruleset: {message}"
        )),
        other => ReconcileError::observe(format!("firewall: {other}")),
    }
}

/// The ruleset a document asks for, and whether it is the baseline.
struct Effective {
    firewall: Option<Firewall>,
    baseline: bool,
}

/// Read and validate the `[firewall]` section of `doc` (interfaces are checked
/// against the document's `[network]` section).
pub fn desired(doc: &Document) -> Result<Option<Firewall>, ReconcileError> {
    desired_from(doc, Origin::Section)
}

/// [`desired`], reading `firewall` and `network` from `origin`.
pub fn desired_from(doc: &Document, origin: Origin) -> Result<Option<Firewall>, ReconcileError> {
    let Some(fw) = doc.read::<Firewall>(origin, firewall::SECTION)? else {
        return Ok(None);
    };
    let net = doc
        .read::<Network>(origin, network::SECTION)?
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

    /// The document part of plan: `[firewall]` parses strictly and names only
    /// interfaces `[network]` declares. The kernel's own check is `precheck`.
    fn validate(&self, desired_doc: &Document) -> Result<(), ReconcileError> {
        self.effective(desired_doc).map(drop)
    }

    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        vec![(firewall::SECTION, schemars::schema_for!(Firewall))]
    }

    fn apply_deadline(&self) -> Duration {
        APPLY_DEADLINE
    }

    async fn plan(
        &self,
        desired_doc: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<FirewallPlan>, ReconcileError> {
        let Effective {
            firewall: fw,
            baseline,
        } = self.effective(desired_doc)?;
        let rendered = render(fw.as_ref());
        let current = self
            .nft
            .list_own()
            .await
            .map_err(|e| ReconcileError::observe(format!("firewall: {e}")))?;
        let known = self.was_accepted(&rendered.digest);
        if self.in_sync(&rendered, &current) {
            return Ok(Planned::nothing(FirewallPlan { load: None, known }));
        }
        let mut actions = describe(&rendered, &current, fw.as_ref());
        if baseline && let Some(first) = actions.first_mut() {
            first
                .0
                .push_str(" (baseline: the document has no [firewall])");
        }
        Ok(Planned {
            actions,
            artifacts: vec![Artifact {
                name: "ruleset.nft".into(),
                contents: rendered.script.clone().into_bytes(),
            }],
            payload: FirewallPlan {
                load: Some(rendered),
                known,
            },
        })
    }

    /// `nft -c` of the ruleset: the kernel runs the whole transaction and aborts it.
    /// Not needed for a ruleset the kernel took from this process before.
    async fn precheck(&self, plan: &FirewallPlan) -> Result<(), ReconcileError> {
        match &plan.load {
            Some(rendered) if !plan.known => {
                self.kernel_check(&rendered.script).await.map_err(refused)
            }
            _ => Ok(()),
        }
    }

    async fn apply(&self, plan: FirewallPlan) -> Result<(), ReconcileError> {
        let Some(rendered) = plan.load else {
            return Ok(());
        };
        self.loads.fetch_add(1, Ordering::Relaxed);
        // Whatever happens next, what this process remembered no longer holds.
        if let Ok(mut g) = self.loaded.lock() {
            *g = None;
        }
        // A refusal is the kernel's check (see `precheck`): one transaction, nothing
        // changed, the ruleset is invalid. Anything else failed the apply.
        self.nft.load(&rendered.script).await.map_err(|e| match e {
            NftError::Refused { .. } => refused(e),
            other => ReconcileError::apply(format!("firewall: {other}")),
        })?;
        // One transaction, accepted: the kernel holds exactly this script. Its listing
        // is read at the next observation (the confirm window's check).
        if let Ok(mut a) = self.accepted.lock() {
            a.insert(&rendered.digest);
        }
        if !rendered.tables.is_empty()
            && let Ok(mut g) = self.loaded.lock()
        {
            *g = Some(Loaded {
                digest: rendered.digest.clone(),
                shape: Shape::of_script(&rendered.script),
                listing: None,
            });
        }
        Ok(())
    }

    async fn check(&self, desired_doc: &Document) -> Result<(), ReconcileError> {
        let rendered = render(self.effective(desired_doc)?.firewall.as_ref());
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

    fn doc(body: &str) -> Document {
        let text = format!(
            "version = 1\nnode = \"n\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n[network]\n[[network.links]]\nname = \"eth0\"\n{body}"
        );
        Document::parse(text.as_bytes(), kowabunga_model::Format::Toml).unwrap()
    }

    /// `<agent> check` runs only validate: it must refuse every document plan refuses
    /// for document reasons, with the same error.
    #[tokio::test]
    async fn validate_refuses_what_plan_refuses_with_the_same_error() {
        // No nft at all: plan can only get past the document if it is valid.
        let fw = FirewallReconciler::with_nft("/nonexistent/nft");
        let bad = [
            ("[firewall]\npolcy = \"drop\"\n", "unknown field `polcy`"),
            (
                "[firewall]\ninput = \"reject\"\n",
                "unknown variant `reject`",
            ),
            (
                "[[firewall.rules]]\nchain = \"input\"\niif = \"eth9\"\naction = \"accept\"\n",
                "unknown interface eth9",
            ),
            (
                "[[firewall.rules]]\nchain = \"input\"\ndport = 22\naction = \"accept\"\n",
                "ports need proto",
            ),
            (
                "[[firewall.rules]]\nchain = \"input\"\nproto = \"tcp\"\ndport = \"9-1\"\naction = \"accept\"\n",
                "reversed",
            ),
            (
                "[[firewall.rules]]\nchain = \"input\"\naction = \"accept\"\ncomment = \"a\\\"; flush ruleset\"\n",
                "comment contains",
            ),
            (
                "[[firewall.nat.masquerade]]\noif = \"wan\"\n",
                "unknown interface wan",
            ),
            (
                "[[firewall.nat.dnat]]\nproto = \"tcp\"\ndport = 1\nto = \"10.0.0.1:x\"\n",
                "not an IPv4 address",
            ),
        ];
        for (body, want) in bad {
            let desired = doc(body);
            let by_validate = fw.validate(&desired).unwrap_err();
            let by_plan = fw.plan(&desired, None).await.map(drop).unwrap_err();
            assert_eq!(by_validate, by_plan, "{body}");
            assert_eq!(
                by_validate.kind,
                kowabunga_model::ErrorKind::Invalid,
                "{body}"
            );
            assert!(by_validate.message.contains(want), "{body}: {by_validate}");
        }
        // A valid document passes validate; plan then goes on to the system (and
        // fails here only because there is no nft).
        let good = doc(
            "[firewall]\ninput = \"drop\"\n[[firewall.rules]]\nchain = \"input\"\niif = \"eth0\"\nproto = \"tcp\"\ndport = 22\naction = \"accept\"\n",
        );
        fw.validate(&good).unwrap();
        fw.validate(&doc("")).unwrap();
        let err = fw.plan(&good, None).await.map(drop).unwrap_err();
        assert_eq!(err.kind, kowabunga_model::ErrorKind::Observe, "{err}");
    }

    #[test]
    fn publishes_the_firewall_section_schema() {
        let fw = FirewallReconciler::with_nft("/nonexistent/nft");
        let schemas = fw.section_schemas();
        assert_eq!(schemas.len(), 1);
        let (name, schema) = &schemas[0];
        assert_eq!(*name, "firewall");
        assert_eq!(schema.as_value()["additionalProperties"], false);
        assert!(schema.as_value()["properties"]["rules"].is_object());
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
        assert!(
            err.message
                .contains("cannot run `/nonexistent/nft list ruleset`"),
            "{err}"
        );
    }
}
