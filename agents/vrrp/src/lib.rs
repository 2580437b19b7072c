//! Kiwi's active-passive failover (VRRP), from its signed desired state.
//!
//! The `[vrrp]` section ([`model`]) names, per link, a VRRP router id and the virtual
//! addresses it holds (upstream Kowabunga: one VRID per VLAN, the `.1` of its subnet as
//! the VIP), and this node's priority. It is checked against `[network]` at plan time,
//! rendered as a keepalived configuration ([`keepalived`]), and applied by the daemons
//! reconciler of `kowabunga-daemons` (checked with `keepalived --config-test`, written
//! when it changes, keepalived reloaded through systemd over D-Bus): [`VrrpReconciler`].

pub mod conntrackd;
pub mod keepalived;
pub mod model;
mod reconciler;

pub use reconciler::VrrpReconciler;
