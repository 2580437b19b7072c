//! Kiwi's DNS service.
//!
//! - [`DnsServer`]: UDP + TCP listeners answering A/AAAA of the managed zones
//!   authoritatively (NXDOMAIN for unknown names inside them) and forwarding the rest
//!   to the recursors, SERVFAIL when all fail. Wire format by `hickory-proto`.
//! - [`DnsReconciler`]: the `dns` reconciler of the apply pipeline. Its plan merges the
//!   signed `[dns]` section with the pushed `dns` table (rules in
//!   `kowabunga_model::dns` and `docs/dns.md`); its apply swaps the record set
//!   atomically.
//! - [`KiwiService`]: Kahuna's `Kiwi.*` RPC methods. Each computes the new pushed table
//!   and hands it to a [`Pusher`] (the agent core), which runs it through the pipeline.

mod forward;
mod kiwi;
mod reconciler;
mod server;
mod zones;

pub use kiwi::{KiwiService, Pusher};
pub use reconciler::DnsReconciler;
pub use server::{DnsServer, State};
pub use zones::Zones;
