//! Configuration files of the system daemons a role runs beside its agent (keepalived
//! for VRRP and IPVS today), as one reconciler of the apply pipeline.
//!
//! A role renders each daemon's file and pushes it in the table `daemons`; the
//! [`DaemonsReconciler`] checks it with the daemon's own check mode, writes it only
//! when its content changes, and reloads the daemon's unit through systemd over D-Bus
//! ([`systemd`]), never by restarting it when a reload does.

pub mod reconciler;
pub mod rendered;
pub mod systemd;

pub use reconciler::{
    CONNTRACKD, Daemon, DaemonsPlan, DaemonsReconciler, KEEPALIVED, SECTION, STRONGSWAN,
};
pub use rendered::{Render, RenderedReconciler};
pub use systemd::{ActiveState, Bus, Systemd, SystemdError};
