//! What a role is: everything a role binary (`kiwi`, `kaktus`, `kontroller`) gives the
//! agent core, and nothing more.
//!
//! A role declares its names, its reconcilers in the order they apply, its Kahuna RPC
//! methods and its background services. The core owns the rest: credentials, the pull
//! loop, the apply pipeline, pushing RPC state through it and reporting it, status and
//! metrics, the link to Kahuna, supervision of services, the watchdog.
//!
//! ```text
//! struct Kiwi { .. }
//! impl Role for Kiwi {
//!     const NAME = "kiwi"; const KIND = "Kiwi"; const STATUS_PORT = 9721;
//!     fn reconcilers(..) -> [network, firewall, dns]
//!     fn rpc(.., pusher) -> KiwiService (Kiwi.Reload, Kiwi.CreateDnsRecord, ...)
//!     fn services(..) -> [dns server]
//! }
//! fn main() -> ExitCode { kowabunga_agent::cli::main(Kiwi::new()) }
//! ```
//!
//! RPC methods come in two kinds, and the locking says which: methods that change
//! desired state call the [`Pusher`](kowabunga_model::Pusher) handed to [`Role::rpc`],
//! which takes the pipeline's lock and waits for a whole generation (plan, apply,
//! confirm, commit or revert); read-only and imperative methods (instance state, start,
//! stop) do not get the pipeline at all, so they never wait behind a confirm window.

use std::path::PathBuf;

use kowabunga_model::{DynReconciler, Progress, Supervised, erase};
use tokio::sync::watch;

use crate::credentials::Credentials;
use crate::os_image::OsSource;
use crate::push::PipelinePusher;
use crate::signed_files::SignedSource;
use crate::update::{OsReconciler, OsSection, UpdateDir};

/// Where a role's desired state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    /// Signed documents pulled from Kahuna's config endpoint, plus state pushed over RPC
    /// (kiwi, kaktus).
    Pull,
    /// Only the state the role pushes itself, through the pusher handed to
    /// [`Role::rpc`] and [`Role::services`] (the kontroller: the NoCloud seed and the
    /// instance metadata). No document is pulled, so no trusted key is needed and
    /// nothing is reported to the config API; the loop still restores the generation
    /// in force, corrects drift and feeds the watchdog.
    Push,
}

/// How a role that brings its own credentials reaches Kahuna's RPC.
#[derive(Debug, Clone)]
pub struct KahunaLink {
    pub credentials: Credentials,
    /// Plain `ws://` allowed (the role's own source asked for it).
    pub insecure: bool,
}

/// One kind of agent.
pub trait Role: Send + Sync + 'static {
    /// Binary name, state directory (`/var/lib/kowabunga/<NAME>`), upstream config file
    /// (`/etc/kowabunga/<NAME>.yml`): `kiwi`.
    const NAME: &'static str;
    /// Agent kind in Kahuna's protocol: the `X-WS-Kowabunga-Agent` header and the RPC
    /// method prefix (`Kiwi`).
    const KIND: &'static str;
    /// Default loopback port of `/status` and `/metrics`, distinct per role so that
    /// two agents on one host (a lab box running kiwi and kaktus) never collide.
    const STATUS_PORT: u16;
    /// Where the desired state comes from.
    const STATE_SOURCE: StateSource = StateSource::Pull;

    /// Kahuna's `<KIND>.*` methods (besides `Capabilities`, which the transport answers).
    type Rpc: kowabunga_rpc::Service;

    /// Reconcilers, in the order they apply.
    fn reconcilers(&self, context: &RoleContext) -> Result<Vec<Box<dyn DynReconciler>>, String>;

    /// The RPC methods. `pusher` brings state pushed over RPC into force through the
    /// pipeline (and reports it to Kahuna); methods that only read or act do not use it.
    fn rpc(&self, context: &RoleContext, pusher: PipelinePusher) -> Self::Rpc;

    /// Background services `run` starts and supervises beside the poll loop. `pusher`
    /// as in [`Role::rpc`].
    fn services(&self, _context: &RoleContext, _pusher: PipelinePusher) -> Vec<Supervised> {
        Vec::new()
    }

    /// The role's own Kahuna credentials, read from where the role is configured (the
    /// kontroller: the NoCloud seed's meta-data). `None`: the core's sources (kernel
    /// command line, persisted credentials, upstream's YAML file).
    fn kahuna_link(&self) -> Option<Result<KahunaLink, String>> {
        None
    }
}

/// What the core gives a role to build its parts with.
#[derive(Debug, Clone)]
pub struct RoleContext {
    /// The role's own state directory (`<state root>/<NAME>`): reconcilers keep their
    /// records under it (in a subdirectory named after themselves).
    pub state_dir: PathBuf,
    /// The node's kernel command line (`kowabunga.*`); roles read their own keys from
    /// it (Kaktus: `kowabunga.ceph_key`). Empty for offline checks.
    pub boot: kernel_cmdline::BootParams,
    /// Progress of long tasks (downloads, clones), shown in `/status`.
    pub progress: Progress,
    /// The node's A/B update records (`<state root>/os-update`): one per node, whatever
    /// its role (a node runs one image).
    pub os_update_dir: PathBuf,
    /// How the role fetches signed files (Kiwi's netboot images): the keys documents
    /// are verified with and the link's CA and insecure setting.
    pub signed: SignedSource,
}

/// Every reconciler of a role's pipeline: the role's own, in its order, then the core's
/// `os` (for roles that pull documents: `[os]`, the node's image version), which only
/// records a target and so comes last. `os_target` is the [`Updater`]'s end.
pub(crate) fn pipeline_reconcilers<R: Role>(
    role: &R,
    context: &RoleContext,
    os: OsSource,
    os_target: watch::Sender<Option<OsSection>>,
) -> Result<Vec<Box<dyn DynReconciler>>, String> {
    let mut reconcilers = role.reconcilers(context)?;
    if R::STATE_SOURCE == StateSource::Pull {
        reconcilers.push(erase(OsReconciler::new(
            R::NAME,
            UpdateDir::new(&context.os_update_dir),
            os,
            os_target,
        )));
    }
    Ok(reconcilers)
}
