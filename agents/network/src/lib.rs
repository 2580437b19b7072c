//! The `[network]` reconciler: links, addresses, routes and router sysctls, through
//! the kernel's rtnetlink API.
//!
//! Level-triggered, in the manner of Talos' network controllers: every pass lists the
//! kernel's links, addresses and routes in full ([`observe`]), diffs them against the
//! desired section and the one in force ([`plan`]), and applies the smallest list of
//! changes ([`ops`]). Applying a document twice sends no change request the second
//! time. Refusals are explained in one place ([`errno`]).
//!
//! Apply runs the changes stage by stage (removals, creations, settings, addresses,
//! up, routes); the requests of one stage are independent and are pipelined on one
//! netlink socket, which is what makes a large apply fast. Before a stage creates
//! anything, it is written to the [`ledger`], so that what a failed generation leaves
//! behind is still the agent's to remove.

pub mod errno;
pub mod ledger;
pub mod observe;
pub mod ops;
pub mod plan;
pub mod sysctl;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use kowabunga_model::network::{self, Network};
use kowabunga_model::{Action, Document, Origin, Planned, ReconcileError, Reconciler};
use rtnetlink::Handle;
use rtnetlink::packet_core::NetlinkPayload;

pub use ledger::Ledger;
pub use ops::Op;
pub use sysctl::Sysctl;

/// Requests in flight at once during apply. Each answer is small; 64 of them stay well
/// inside a netlink socket's default receive buffer.
const IN_FLIGHT: usize = 64;

/// Why the reconciler cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0} is missing: is /proc mounted?")]
    NoProcSys(PathBuf),
    #[error("network: state directory {}: {detail}", .dir.display())]
    StateDir { dir: PathBuf, detail: String },
}

/// The network reconciler. See the crate documentation.
#[derive(Debug)]
pub struct NetworkReconciler {
    sysctl: Sysctl,
    /// Where the ledger is kept; `None`: in memory only (tests, tools).
    state_dir: Option<PathBuf>,
    /// `None` until first read from `state_dir` (at the first plan or apply), so that
    /// building the reconciler touches no file: `<agent> check` builds it offline.
    ledger: Mutex<Option<Ledger>>,
    /// Test hook: actions (as displayed) that fail instead of being sent.
    injected_failures: Mutex<BTreeSet<String>>,
    netlink_requests: AtomicU64,
    sysctl_writes: AtomicU64,
    /// Where `network` is read: the document's section (default) or the pushed table.
    origin: Origin,
}

/// What [`NetworkReconciler::plan`] hands to apply.
#[derive(Debug)]
pub struct NetworkPlan {
    ops: Vec<Op>,
    /// Ledger entries whose objects are gone: forgotten by apply.
    stale: ledger::Stale,
}

impl NetworkPlan {
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
}

impl NetworkReconciler {
    /// A reconciler for this system (`/proc/sys` for sysctls), keeping its ledger in
    /// memory only: what a failed generation leaves behind is forgotten when the
    /// process ends. Agents use [`with_state_dir`](Self::with_state_dir).
    pub fn new() -> Result<Self, SetupError> {
        let root = PathBuf::from("/proc/sys");
        if !root.join("net").is_dir() {
            return Err(SetupError::NoProcSys(root.join("net")));
        }
        Ok(Self::with_sysctl_root(root))
    }

    /// The reconciler an agent runs: `/proc/sys` for sysctls, and its ledger in
    /// `dir/ledger.json` (the role passes `<state dir>/network`; created 0700 if
    /// missing, at the first plan or apply). A ledger that cannot be parsed is set
    /// aside (`ledger.json.bad`) with a warning, and a new one started.
    pub fn with_state_dir(dir: impl AsRef<Path>) -> Result<Self, SetupError> {
        let mut me = Self::new()?;
        me.state_dir = Some(dir.as_ref().to_path_buf());
        me.ledger = Mutex::new(None);
        Ok(me)
    }

    /// Read the ledger from the state directory, once.
    fn load_ledger(&self) -> Result<(), ReconcileError> {
        let mut guard = self.lock_ledger();
        if guard.is_some() {
            return Ok(());
        }
        let Some(dir) = &self.state_dir else {
            *guard = Some(Ledger::default());
            return Ok(());
        };
        let err = |detail: String| {
            ReconcileError::observe(SetupError::StateDir {
                dir: dir.clone(),
                detail,
            })
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(format!("cannot create it: {e}")))?;
        let loaded = match ledger::load(dir) {
            Ok(l) => l,
            Err(e) if dir.join(ledger::FILE).is_file() => {
                tracing::warn!("network: {e}; starting a new ledger");
                let bad = dir.join(format!("{}.bad", ledger::FILE));
                std::fs::rename(dir.join(ledger::FILE), &bad)
                    .map_err(|e| err(format!("cannot set the ledger aside: {e}")))?;
                Ledger::default()
            }
            Err(e) => return Err(err(e)),
        };
        *guard = Some(loaded);
        Ok(())
    }

    /// Reads `network` from the table the role pushes instead of the document's
    /// `[network]` section (see [`Origin`]).
    pub fn reading_pushed(mut self) -> Self {
        self.origin = Origin::Pushed;
        self
    }

    /// A reconciler writing sysctls under `root` instead of `/proc/sys`.
    pub fn with_sysctl_root(root: impl Into<PathBuf>) -> Self {
        Self {
            sysctl: Sysctl::new(root),
            state_dir: None,
            ledger: Mutex::new(Some(Ledger::default())),
            injected_failures: Mutex::new(BTreeSet::new()),
            netlink_requests: AtomicU64::new(0),
            sysctl_writes: AtomicU64::new(0),
            origin: Origin::Section,
        }
    }

    /// What the agent created and still owns (a copy).
    pub fn ledger(&self) -> Ledger {
        self.lock_ledger().clone().unwrap_or_default()
    }

    /// Test hook: the actions listed (as a plan displays them, `delete bridge br0`)
    /// fail at apply without being sent, until the next call; an empty list clears.
    /// Lets tests stand for a kernel that refuses a change half-way through.
    #[doc(hidden)]
    pub fn inject_failures(&self, actions: &[&str]) {
        let mut f = self
            .injected_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *f = actions.iter().map(ToString::to_string).collect();
    }

    fn lock_ledger(&self) -> std::sync::MutexGuard<'_, Option<Ledger>> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Change the ledger with `edit`; when it changed, write it (durably) before
    /// returning. On a write failure the change is kept in memory and reported.
    fn update_ledger(&self, edit: impl FnOnce(&mut Ledger) -> bool) -> Result<(), ReconcileError> {
        self.load_ledger()?;
        let mut guard = self.lock_ledger();
        let ledger = guard.get_or_insert_with(Ledger::default);
        if !edit(ledger) {
            return Ok(());
        }
        match &self.state_dir {
            Some(dir) => ledger::save(dir, ledger)
                .map_err(|e| ReconcileError::apply(format!("network: ledger: {e}"))),
            None => Ok(()),
        }
    }

    /// Netlink change requests sent so far (dumps not counted).
    pub fn netlink_requests(&self) -> u64 {
        self.netlink_requests.load(Ordering::Relaxed)
    }

    /// Sysctl writes made so far.
    pub fn sysctl_writes(&self) -> u64 {
        self.sysctl_writes.load(Ordering::Relaxed)
    }

    async fn execute(&self, mut handle: Handle, ops: Vec<Op>) -> Result<(), ReconcileError> {
        let mut index = link_index(&mut handle).await?;
        let mut stale = false;
        let mut rest = ops.as_slice();
        while let Some(first) = rest.first() {
            let stage = first.stage();
            let len = rest.iter().take_while(|o| o.stage() == stage).count();
            let (group, tail) = rest.split_at(len);
            rest = tail;
            if stale
                || group
                    .iter()
                    .flat_map(Op::needs)
                    .any(|n| !index.contains_key(n))
            {
                index = link_index(&mut handle).await?;
            }
            stale = group.iter().any(Op::changes_names);
            // Recorded before anything of the stage is created.
            self.update_ledger(|l| l.record(group))?;
            let mut errors = Vec::new();
            let mut removed = Vec::new();
            let mut todo = group.iter();
            let mut in_flight = FuturesUnordered::new();
            loop {
                while in_flight.len() < IN_FLIGHT {
                    match todo.next() {
                        Some(op) => {
                            let (handle, index) = (handle.clone(), &index);
                            in_flight.push(async move { (op, self.run(handle, op, index).await) })
                        }
                        None => break,
                    }
                }
                match in_flight.next().await {
                    Some((_, Err(e))) => errors.push(e),
                    Some((op, Ok(()))) => removed.push(op),
                    None => break,
                }
            }
            self.update_ledger(|l| removed.iter().fold(false, |c, op| l.removed(op) | c))?;
            if !errors.is_empty() {
                return Err(ReconcileError::apply(errors.join("; ")));
            }
        }
        Ok(())
    }

    async fn run(
        &self,
        mut handle: Handle,
        op: &Op,
        index: &BTreeMap<String, u32>,
    ) -> Result<(), String> {
        {
            let injected = self
                .injected_failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !injected.is_empty() && injected.contains(&op.to_string()) {
                return Err(format!("{}: {op}: injected failure (test)", op.object()));
            }
        }
        let Some(msg) = op.message(&|n| index.get(n).copied())? else {
            if let Op::Sysctl { key, value, .. } = op {
                self.sysctl_writes.fetch_add(1, Ordering::Relaxed);
                return self.sysctl.write(key, value);
            }
            return Ok(());
        };
        self.netlink_requests.fetch_add(1, Ordering::Relaxed);
        let mut answers = handle
            .request(msg)
            .map_err(|e| format!("{}: {op}: netlink request failed: {e}", op.object()))?;
        while let Some(m) = answers.next().await {
            if let NetlinkPayload::Error(e) = m.payload
                && let Some(code) = e.code
            {
                let errno = code.get().abs();
                if errno::already_gone(op, errno) {
                    return Ok(());
                }
                return Err(errno::explain(op, errno));
            }
        }
        Ok(())
    }
}

/// Run `work` with a fresh rtnetlink connection, driven in the same task (no spawn:
/// works on any runtime, and the socket lives in the caller's network namespace).
async fn with_netlink<T, Fut>(work: impl FnOnce(Handle) -> Fut) -> Result<T, ReconcileError>
where
    Fut: Future<Output = Result<T, ReconcileError>>,
{
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| {
        ReconcileError::observe(format!("network: cannot open a netlink socket: {e}"))
    })?;
    tokio::select! {
        r = work(handle) => r,
        () = conn => Err(ReconcileError::observe("network: the netlink connection closed")),
    }
}

async fn link_index(handle: &mut Handle) -> Result<BTreeMap<String, u32>, ReconcileError> {
    let links = observe::links(handle)
        .await
        .map_err(|e| ReconcileError::observe(format!("network: {e}")))?;
    Ok(links.into_iter().map(|l| (l.name, l.index)).collect())
}

/// Read and validate the `[network]` section of `doc` (absent = declares nothing).
pub fn desired(doc: &Document) -> Result<Network, ReconcileError> {
    desired_from(doc, Origin::Section)
}

/// [`desired`], reading `network` from `origin`.
pub fn desired_from(doc: &Document, origin: Origin) -> Result<Network, ReconcileError> {
    let net = doc
        .read::<Network>(origin, network::SECTION)?
        .unwrap_or_default();
    net.validate()
        .map_err(|e| ReconcileError::invalid(format!("[network] {e}")))?;
    Ok(net)
}

impl Reconciler for NetworkReconciler {
    type Plan = NetworkPlan;

    fn name(&self) -> &'static str {
        "network"
    }

    /// The pure part of [`plan`](Self::plan): the section parses strictly and passes
    /// [`Network::validate`]. Plan runs the same function first, so both refuse a bad
    /// document with the same message.
    fn validate(&self, desired_doc: &Document) -> Result<(), ReconcileError> {
        desired_from(desired_doc, self.origin).map(drop)
    }

    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        vec![(network::SECTION, schemars::schema_for!(Network))]
    }

    async fn plan(
        &self,
        desired_doc: &Document,
        in_force: Option<&Document>,
    ) -> Result<Planned<NetworkPlan>, ReconcileError> {
        let want = desired_from(desired_doc, self.origin)?;
        // The document in force was valid when applied. If it cannot be read now (a
        // newer agent with a stricter model), own nothing of it rather than refuse
        // every future document.
        let before = match in_force.map(|d| d.read::<Network>(self.origin, network::SECTION)) {
            Some(Ok(Some(n))) => n,
            Some(Err(e)) => {
                tracing::warn!("network: ignoring the [network] section in force: {e}");
                Network::default()
            }
            _ => Network::default(),
        };
        let obs = with_netlink(|mut h| async move {
            observe::observe(&mut h)
                .await
                .map_err(|e| ReconcileError::observe(format!("network: {e}")))
        })
        .await?;
        let read = |k: &str| self.sysctl.read(k);
        self.load_ledger()?;
        let owned = self.ledger();
        let ops = plan::diff(&want, &before, &obs, &read, &owned)
            .map_err(|errs| ReconcileError::invalid(format!("[network] {}", errs.join("; "))))?;
        Ok(Planned {
            actions: ops.iter().map(|o| Action(o.to_string())).collect(),
            artifacts: Vec::new(),
            payload: NetworkPlan {
                ops,
                stale: owned.stale(&obs),
            },
        })
    }

    async fn apply(&self, plan: NetworkPlan) -> Result<(), ReconcileError> {
        if !plan.stale.is_empty() {
            self.update_ledger(|l| l.forget(&plan.stale))?;
        }
        if plan.ops.is_empty() {
            return Ok(());
        }
        with_netlink(|h| self.execute(h, plan.ops)).await
    }

    /// Healthy when the kernel holds everything `desired` declares: a fresh plan
    /// against it has nothing left to do.
    async fn check(&self, desired_doc: &Document) -> Result<(), ReconcileError> {
        let planned = self.plan(desired_doc, Some(desired_doc)).await?;
        if planned.actions.is_empty() {
            return Ok(());
        }
        let pending: Vec<String> = planned
            .actions
            .iter()
            .take(3)
            .map(ToString::to_string)
            .collect();
        Err(ReconcileError::unhealthy(format!(
            "network: {} change(s) still pending: {}",
            planned.actions.len(),
            pending.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kowabunga_model::{ErrorKind, Format};

    fn document(body: &str) -> Document {
        let text = format!(
            "version = 1\nnode = \"kiwi-test\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n[network]\n{body}"
        );
        Document::parse(text.as_bytes(), Format::Toml).unwrap()
    }

    /// The documents the kernel tests refuse without looking at the system: `validate`
    /// (offline, `<agent> check`) and `plan` give the same error.
    #[tokio::test(flavor = "current_thread")]
    async fn validate_and_plan_refuse_bad_documents_alike() {
        let dir = tempfile::tempdir().unwrap();
        let net = NetworkReconciler::with_sysctl_root(dir.path());
        let cases = [
            (
                "[[network.links]]\nname = \"eth0\"\n[[network.links]]\nname = \"eth0\"\n",
                "eth0: duplicate interface name",
            ),
            (
                "[[network.links]]\nname = \"eth0\"\n[[network.links]]\nname = \"vlan5000\"\nkind = \"vlan\"\nparent = \"eth0\"\nid = 5000\n",
                "vlan5000: VLAN id 5000 is out of range (1 to 4094)",
            ),
            (
                "[[network.links]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/33\"]\n",
                "prefix length 33 exceeds 32",
            ),
            (
                "[[network.links]]\nname = \"eth0\"\naddresses = [\"10.0.0.1\"]\n",
                "is not a prefix",
            ),
            (
                "[[network.links]]\nname = \"vlan101\"\nkind = \"vlan\"\nparent = \"eth9\"\nid = 101\n",
                "vlan101: parent eth9 is not declared",
            ),
            (
                "[[network.links]]\nname = \"eth0\"\nmtuu = 1500\n",
                "unknown field `mtuu`",
            ),
            (
                "[[network.links]]\nname = \"br0\"\nkind = \"bridge\"\nports = [\"br1\"]\n[[network.links]]\nname = \"br1\"\nkind = \"bridge\"\nports = [\"br0\"]\n",
                "links stacked in a cycle: br0 -> br1 -> br0",
            ),
        ];
        for (body, want) in cases {
            let doc = document(body);
            let validated = net.validate(&doc).unwrap_err();
            let planned = net.plan(&doc, None).await.map(drop).unwrap_err();
            assert_eq!(validated, planned, "{body}");
            assert_eq!(validated.kind, ErrorKind::Invalid, "{body}");
            assert!(validated.message.contains(want), "{body}: {validated}");
        }
        // What only the system can refuse passes validation.
        net.validate(&document("[[network.links]]\nname = \"eth9\"\n"))
            .unwrap();
        assert_eq!(net.netlink_requests(), 0);
    }

    #[test]
    fn boxes_for_the_pipeline_with_an_injected_sysctl_root() {
        let dir = tempfile::tempdir().unwrap();
        let net = NetworkReconciler::with_sysctl_root(dir.path());
        assert_eq!(net.sysctl.root(), dir.path());
        let boxed = kowabunga_model::erase(net);
        assert_eq!(boxed.name(), "network");
        assert!(
            NetworkReconciler::new().is_ok(),
            "/proc/sys/net exists on Linux"
        );
    }
}
