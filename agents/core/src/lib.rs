//! The agent core shared by every Kowabunga role (`kiwi`, `kaktus`, `kontroller`).
//!
//! Data flow of one document (see `docs/ARCHITECTURE.md`):
//! [`credentials`] (who am I, where is Kahuna) -> [`fetch`] (pull document + signature)
//! -> [`trust`] (minisign) -> [`pipeline`] (admit, plan, stage in [`generations`], apply,
//! confirm, commit or revert) -> [`outcome`] reported by [`fetch`] and shown by
//! [`status`]. [`daemon`] is the loop around it; [`cli`] the shared command line.
//!
//! A role binary provides a [`role::Role`]: names, reconcilers, RPC methods, services.
//! State Kahuna pushes over RPC enters through [`push::PipelinePusher`]; every outcome,
//! pulled or pushed, goes through [`record::Recorder`]; role services run under
//! [`supervise`].

mod check;
pub mod cli;
pub mod credentials;
pub mod daemon;
pub mod failpoint;
pub mod fetch;
pub mod generations;
pub mod health_gate;
pub mod logging;
pub mod os_image;
pub mod outcome;
pub mod pipeline;
pub mod push;
pub mod record;
pub mod role;
mod run;
pub mod schedule;
pub mod schema;
pub mod signed_files;
pub mod status;
pub mod supervise;
pub mod trust;
pub mod update;
