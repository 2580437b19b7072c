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
//! netlink socket, which is what makes a large apply fast.

pub mod errno;
pub mod observe;
pub mod ops;
pub mod plan;
pub mod sysctl;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use kowabunga_model::network::{self, Network};
use kowabunga_model::{Action, Document, Planned, ReconcileError, Reconciler};
use rtnetlink::Handle;
use rtnetlink::packet_core::NetlinkPayload;

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
}

/// The network reconciler. See the crate documentation.
#[derive(Debug)]
pub struct NetworkReconciler {
    sysctl: Sysctl,
    netlink_requests: AtomicU64,
    sysctl_writes: AtomicU64,
}

/// What [`NetworkReconciler::plan`] hands to apply.
#[derive(Debug)]
pub struct NetworkPlan {
    ops: Vec<Op>,
}

impl NetworkPlan {
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
}

impl NetworkReconciler {
    /// A reconciler for this system (`/proc/sys` for sysctls).
    pub fn new() -> Result<Self, SetupError> {
        let root = PathBuf::from("/proc/sys");
        if !root.join("net").is_dir() {
            return Err(SetupError::NoProcSys(root.join("net")));
        }
        Ok(Self::with_sysctl_root(root))
    }

    /// A reconciler writing sysctls under `root` instead of `/proc/sys`.
    pub fn with_sysctl_root(root: impl Into<PathBuf>) -> Self {
        Self {
            sysctl: Sysctl::new(root),
            netlink_requests: AtomicU64::new(0),
            sysctl_writes: AtomicU64::new(0),
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
            let mut errors = Vec::new();
            let mut todo = group.iter();
            let mut in_flight = FuturesUnordered::new();
            loop {
                while in_flight.len() < IN_FLIGHT {
                    match todo.next() {
                        Some(op) => in_flight.push(self.run(handle.clone(), op, &index)),
                        None => break,
                    }
                }
                match in_flight.next().await {
                    Some(Err(e)) => errors.push(e),
                    Some(Ok(())) => {}
                    None => break,
                }
            }
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
    let net = doc
        .section::<Network>(network::SECTION)?
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

    async fn plan(
        &self,
        desired_doc: &Document,
        in_force: Option<&Document>,
    ) -> Result<Planned<NetworkPlan>, ReconcileError> {
        let want = desired(desired_doc)?;
        // The document in force was valid when applied. If it cannot be read now (a
        // newer agent with a stricter model), own nothing of it rather than refuse
        // every future document.
        let before = match in_force.map(|d| d.section::<Network>(network::SECTION)) {
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
        let ops = plan::diff(&want, &before, &obs, &read)
            .map_err(|errs| ReconcileError::invalid(format!("[network] {}", errs.join("; "))))?;
        Ok(Planned {
            actions: ops.iter().map(|o| Action(o.to_string())).collect(),
            artifacts: Vec::new(),
            payload: NetworkPlan { ops },
        })
    }

    async fn apply(&self, plan: NetworkPlan) -> Result<(), ReconcileError> {
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
