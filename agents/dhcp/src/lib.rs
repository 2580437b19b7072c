//! Kiwi's DHCPv4 server.
//!
//! - [`model`]: the `[dhcp]` section ([`model::DhcpSection`], named [`model::SECTION`],
//!   with its JSON Schema) and the configuration it compiles to with the document's
//!   `[network]` section ([`model::DhcpConfig`]). Pure.

pub mod model;
