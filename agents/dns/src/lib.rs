//! Kiwi's DNS service.
//!
//! - [`model`]: the `[dns]` section ([`model::DnsSection`], named [`model::SECTION`],
//!   with its JSON Schema), the pushed `dns` table and how they merge. Pure.
//! - [`DnsServer`]: UDP + TCP listeners answering the managed zones authoritatively
//!   (A, AAAA, SOA and NS at each apex, PTR from derived reverse zones; NXDOMAIN for
//!   unknown names inside them) and forwarding the rest to the recursors for local
//!   clients only (REFUSED for others), SERVFAIL when all recursors fail. Wire format by
//!   `hickory-proto`. Its listeners run as a [`kowabunga_model::Supervised`] service
//!   ([`DnsServer::supervised`]).
//! - [`DnsReconciler`]: the `dns` reconciler of the apply pipeline. Its validate/plan
//!   merge the signed `[dns]` section with the pushed `dns` table (rules in [`model`] and
//!   `docs/dns.md`); its apply swaps the record set atomically.
//! - [`KiwiService`]: Kahuna's `Kiwi.*` RPC methods. Each computes the new pushed table
//!   and hands it to a [`kowabunga_model::Pusher`] (the agent core), which runs it
//!   through the pipeline.

mod forward;
mod kiwi;
pub mod model;
mod reconciler;
mod recursion;
mod reply_source;
mod server;
mod zones;

pub use kiwi::KiwiService;
pub use reconciler::DnsReconciler;
pub use server::{DnsServer, State};
pub use zones::{Answer, Zones};
