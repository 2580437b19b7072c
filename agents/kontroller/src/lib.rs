//! The kontroller: the Kowabunga agent inside service VMs — Kawaii (internet gateway:
//! firewall, NAT, VRRP VIPs, IPsec) and Konvey (L4 load balancer: VRRP VIPs and IPVS).
//!
//! The pure parts (no I/O beyond reading a seed directory):
//! - [`nocloud`]: the NoCloud seed Kahuna attaches (`meta-data`, `user-data`,
//!   `network-config`, ISO 9660 names accepted) and `ds=nocloud;s=URL` on the kernel
//!   command line;
//! - [`netplan`]: Kahuna's Netplan v2 `network-config` as the shared network model
//!   ([`kowabunga_model::network::Network`]), plus name servers and search domains;
//! - [`metadata`]: the instance metadata JSON (`kowabunga_metadata_uri`), typed;
//! - [`kawaii`]: Kawaii metadata -> the shared firewall model
//!   ([`kowabunga_model::firewall::Firewall`]), keepalived.conf, swanctl.conf;
//! - [`konvey`]: Konvey metadata -> keepalived.conf (VRRP + IPVS) and the masquerade
//!   IPVS NAT needs.
//!
//! Every conversion checks everything first and produces nothing on a refusal
//! ([`Refused`], [`nocloud::SeedError`], [`netplan::NetplanError`],
//! [`metadata::MetadataError`], each naming the key path and the value).
//!
//! Wired on the agent core: [`desired`] (the pushed tables), [`reload`] (the metadata
//! fetched and pushed through the generation pipeline, at start and on
//! `Kontroller.Reload`), [`service`] (the RPC methods); the role itself is `main.rs`.
//!
//! [`first_boot`]: hostname, name servers, users and SSH keys, `write_files` (the
//! `kontroller-firstboot` binary, a oneshot unit before the agent).
//!
//! keepalived.conf travels in the pushed table `daemons`, written and reloaded by the
//! shared daemons reconciler (`kowabunga-daemons`). Not wired yet (issue 11):
//! strongSwan, the XFRM interfaces. See `docs/kontroller.md`.

pub mod desired;
pub mod first_boot;
mod http;
pub mod kawaii;
pub mod konvey;
pub mod metadata;
pub mod netplan;
pub mod nocloud;
pub mod reload;
pub mod seed_source;
pub mod service;

mod ipsec;
mod refused;
mod vrrp;

pub use kawaii::{KawaiiConfig, XfrmInterface};
pub use konvey::KonveyConfig;
pub use metadata::{InstanceMetadata, MetadataError};
pub use netplan::{NetplanConfig, NetplanError};
pub use nocloud::{KernelSeed, MetaData, Seed, SeedError, UserData, parse_kernel_seed};
pub use refused::Refused;
pub use reload::Reloader;
pub use service::KontrollerService;
