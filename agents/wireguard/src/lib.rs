//! Kiwi's WireGuard tunnels (VPN), from its signed desired state.
//!
//! A tunnel is a `[network]` link of kind `wireguard` (made by the network reconciler,
//! with its addresses, MTU and routes); the `[wireguard.<link>]` table ([`model`])
//! gives it a port and its peers. The node's private key is made on the node and kept
//! on `/var` ([`keys`]); the kernel is set with wg(8) ([`wg`]) by the reconciler
//! ([`WireguardReconciler`]); a watcher ([`watch`]) shows each peer's last handshake
//! in `/status` and `/metrics` and logs when a peer comes up or goes down.

pub mod keys;
pub mod model;
mod reconciler;
pub mod watch;
pub mod wg;

pub use reconciler::{WireguardPlan, WireguardReconciler, short};
pub use watch::TunnelWatch;
