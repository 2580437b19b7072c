//! Kiwi's DHCPv4 server.
//!
//! - [`model`]: the `[dhcp]` section ([`model::DhcpSection`], named [`model::SECTION`],
//!   with its JSON Schema) and the configuration it compiles to with the document's
//!   `[network]` section ([`model::DhcpConfig`]). Pure.
//! - [`engine`]: the lease engine, what to answer to each client message (RFC 2131),
//!   time given by the caller. Pure.
//! - [`store`]: the leases on disk (`leases.json`, written atomically and durably).

pub mod engine;
pub mod model;
pub mod store;
