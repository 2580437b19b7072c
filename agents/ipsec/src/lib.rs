//! Site-to-site IPsec with strongSwan (IKEv2, pre-shared keys, SAs bound to XFRM
//! interfaces).
//!
//! [`swanctl`] renders strongSwan's file from checked connections; both roles that run
//! tunnels use it: Kiwi from its `[ipsec]` section ([`model`], applied by
//! [`IpsecReconciler`]), the kontroller from the Kawaii gateway's metadata. The file is
//! written, charon (re)loaded and checked by the daemons reconciler of
//! `kowabunga-daemons`.

pub mod model;
mod reconciler;
pub mod swanctl;

pub use reconciler::IpsecReconciler;
