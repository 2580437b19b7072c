//! Kiwi's netboot server: one Kiwi boots the nodes of its zone from the network.
//!
//! - [`model`]: the `[netboot]` section (images by name, nodes by MAC with their
//!   `kowabunga.*` keys), checked with the same parser the booted node runs. Pure.
//! - [`store`]: the images kept on `/var`, each fetched against a signed `SHA256SUMS`
//!   (the A/B updates' checks) and renamed into place only once verified.
//! - [`script`]: the iPXE script a node is given. Pure.
//! - [`tftp`]: iPXE's boot loaders over TFTP, for firmware PXE ROMs to chainload.
//! - [`NetbootServer`]: the configuration in force, the store's filler, the HTTP
//!   listener (scripts, kernels, initrds), the TFTP one, and the boot files the DHCP
//!   server puts in its answers to network-boot clients
//!   ([`kowabunga_dhcp::BootDirectory`]); a supervised service.
//! - [`NetbootReconciler`]: the `netboot` reconciler of the apply pipeline.

pub mod model;
mod reconciler;
pub mod script;
mod server;
pub mod store;
pub mod tftp;

pub use reconciler::NetbootReconciler;
pub use server::{HTTP_PORT, NetbootServer, SERVICE};
