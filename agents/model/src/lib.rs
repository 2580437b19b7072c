//! The desired state of a Kowabunga agent, and the contract its reconcilers implement.
//!
//! This crate does no I/O. It holds:
//! - [`document`]: the signed, versioned desired-state document (header + sections),
//! - [`reconcile`]: the [`Reconciler`] trait each role implements (validate, plan,
//!   apply, check), and its type-erased form used by the apply pipeline,
//! - the rest of the contract between the agent core and a role: [`Pusher`] (state
//!   pushed over RPC enters the pipeline), [`Supervised`] (a background service the core
//!   restarts), [`Progress`] (long tasks shown in `/status`), [`Report`] (a service's
//!   own figures in `/status` and `/metrics`).

pub mod document;
pub mod firewall;
pub mod network;
pub mod progress;
pub mod push;
pub mod reconcile;
pub mod report;
#[cfg(test)]
mod round_trip;
pub mod supervised;
mod timestamp;

pub use document::{Document, DocumentError, Format, Header, Origin};
pub use progress::Progress;
pub use push::Pusher;
pub use reconcile::{
    Action, Artifact, DEFAULT_APPLY_DEADLINE, DynReconciler, ErrorKind, Planned, ReconcileError,
    Reconciler, erase,
};
pub use report::{Metric, MetricKind, Report, Sample};
pub use supervised::Supervised;
pub use timestamp::Timestamp;
