//! A/B OS updates, the agent's half (docs/images.md, "A/B updates"):
//!
//! - [`section`]: `[os]` of the desired state (version, artifacts URL, reboot policy);
//! - [`OsReconciler`]: `[os]` through the apply pipeline (validated, refused and
//!   reverted with the document), recording the target;
//! - [`Updater`]: the service that stages, installs (systemd-sysupdate) and reboots
//!   toward the target, and settles the outcome of the reboot on the next start;
//! - [`staging`]: download and verify one version's artifacts;
//! - [`unpack`]: their zstd streams into sparse files, while they download;
//! - [`state`]: what the node keeps in `<state root>/os-update/`.

mod reconciler;
pub mod section;
pub mod staging;
pub mod state;
pub mod unpack;
mod updater;

pub use reconciler::OsReconciler;
pub use section::{OsSection, RebootPolicy, SECTION, Window};
pub use staging::*;
pub use state::{Phase, UpdateDir, UpdateState};
pub use updater::{Installer, Next, SystemdInstaller, Updater, systemd_arch, utc_minute};
