//! Kiwi's DHCPv4 server.
//!
//! - [`model`]: the `[dhcp]` section ([`model::DhcpSection`], named [`model::SECTION`],
//!   with its JSON Schema) and the configuration it compiles to with the document's
//!   `[network]` section ([`model::DhcpConfig`]). Pure.
//! - [`engine`]: the lease engine, what to answer to each client message (RFC 2131),
//!   time given by the caller. Pure.
//! - [`store`]: the leases on disk (`leases.json`, written atomically and durably).
//! - [`wire`]: DHCPv4 messages in and out, by `dhcproto`.
//! - [`DhcpServer`]: a socket and a thread per served link (and a raw ICMP socket for
//!   the ping check), the engine behind a lock, the store written before a reply that
//!   depends on it (once per batch of queued datagrams); its threads run as a
//!   [`kowabunga_model::Supervised`] service ([`DhcpServer::supervised`]).
//! - [`DhcpReconciler`]: the `dhcp` reconciler of the apply pipeline.
//! - [`report`]: what the server shows in the agent's `/status` and `/metrics` (per
//!   served link: pool size, bound leases, offers, ACKs, NAKs, declines; the lease
//!   store's last write error).

pub mod engine;
pub mod model;
mod reconciler;
pub mod report;
mod server;
pub mod store;
pub mod wire;

pub use reconciler::DhcpReconciler;
pub use server::{BootDirectory, Counters, DhcpServer, LinkCounters, SERVICE};
pub use wire::{BootClient, BootFile};
