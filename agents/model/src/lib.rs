//! The desired state of a Kowabunga agent, and the contract its reconcilers implement.
//!
//! This crate does no I/O. It holds:
//! - [`document`]: the signed, versioned desired-state document (header + sections),
//! - [`reconcile`]: the [`Reconciler`] trait each role implements (plan, apply, check),
//!   and its type-erased form used by the apply pipeline.

pub mod dns;
pub mod document;
pub mod firewall;
pub mod network;
pub mod reconcile;
mod timestamp;

pub use document::{Document, DocumentError, Format, Header};
pub use reconcile::{
    Action, Artifact, DynReconciler, ErrorKind, Planned, ReconcileError, Reconciler, erase,
};
pub use timestamp::Timestamp;
