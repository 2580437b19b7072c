//! Instances (libvirt domains): define from Kahuna's checked XML, describe, state,
//! console URL, the eight power operations, delete.

use serde::{Deserialize, Serialize};

use crate::domain_state;
use crate::domain_xml;
use crate::inventory::SharedInventory;
use crate::libvirt::Libvirt;
use crate::libvirt_protocol::{DomainDefinition, DomainStatus, Request};
use crate::storage::format_of;

/// Upstream's `KaktusInstanceOperation`, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    AutoStart,
    Start,
    SoftReboot,
    HardReboot,
    HardShutdown,
    SoftShutdown,
    PmSuspend,
    PmResume,
}

impl Operation {
    /// The operation numbered `action` (0 AutoStart ... 7 PmResume).
    pub fn from_action(action: i64) -> Result<Self, String> {
        Ok(match action {
            0 => Operation::AutoStart,
            1 => Operation::Start,
            2 => Operation::SoftReboot,
            3 => Operation::HardReboot,
            4 => Operation::HardShutdown,
            5 => Operation::SoftShutdown,
            6 => Operation::PmSuspend,
            7 => Operation::PmResume,
            other => {
                return Err(format!(
                    "unsupported instance operation: {other} (0 AutoStart, 1 Start, 2 SoftReboot, 3 HardReboot, 4 HardShutdown, 5 SoftShutdown, 6 PmSuspend, 7 PmResume)"
                ));
            }
        })
    }
}

/// The node's instances.
#[derive(Debug, Clone)]
pub struct Instances {
    libvirt: Libvirt,
    inventory: SharedInventory,
}

impl Instances {
    pub fn new(libvirt: Libvirt, inventory: SharedInventory) -> Self {
        Self { libvirt, inventory }
    }

    /// Define (or redefine) `name` from Kahuna's XML, once checked.
    pub async fn create(&self, name: &str, xml: &str) -> Result<(), String> {
        check_name(name)?;
        let checked = domain_xml::check(name, xml, &self.inventory.get(), &format_of)?;
        self.libvirt
            .request(Request::DefineDomain {
                name: name.to_owned(),
                xml: checked.xml,
            })
            .await
    }

    /// Redefine an existing instance (keeping its UUID when the XML gives none).
    pub async fn update(&self, name: &str, xml: &str) -> Result<(), String> {
        check_name(name)?;
        let uuid: String = self
            .libvirt
            .request(Request::DomainUuid {
                name: name.to_owned(),
            })
            .await?;
        self.create(name, &domain_xml::with_uuid(xml, &uuid)).await
    }

    /// The domain XML (`Migratable`: without host-specific parts).
    pub async fn xml(&self, name: &str, migratable: bool) -> Result<String, String> {
        self.libvirt
            .request(Request::DomainXml {
                name: name.to_owned(),
                migratable,
            })
            .await
    }

    /// Stop (if running) and undefine, with its NVRAM, snapshot and checkpoint
    /// metadata and managed save.
    pub async fn delete(&self, name: &str) -> Result<(), String> {
        self.libvirt
            .request(Request::DeleteDomain {
                name: name.to_owned(),
            })
            .await
    }

    /// libvirt's state, reason and autostart; `None` for an unknown instance.
    pub async fn status(&self, name: &str) -> Result<Option<DomainStatus>, String> {
        self.libvirt
            .request(Request::DomainStatus {
                name: name.to_owned(),
            })
            .await
    }

    /// `(State, Reason)` in upstream's words.
    pub async fn state(&self, name: &str) -> Result<(String, String), String> {
        let status = self
            .status(name)
            .await?
            .ok_or_else(|| format!("instance {name}: no such instance on this node"))?;
        let (s, r) = domain_state::describe(status.state, status.reason);
        Ok((s.to_owned(), r.to_owned()))
    }

    /// Running or paused; `false` for an unknown instance (as upstream).
    pub async fn is_running(&self, name: &str) -> Result<bool, String> {
        Ok(self
            .status(name)
            .await?
            .is_some_and(|s| domain_state::is_running(s.state)))
    }

    /// `spice://<host>:<port>` (or `vnc://` for a VNC-only domain) of a running
    /// instance's console.
    pub async fn console_url(&self, name: &str) -> Result<String, String> {
        let xml = self.xml(name, false).await?;
        let address = self.inventory.get().console_address;
        console_url(name, &xml, address.as_deref())
    }

    pub async fn operate(&self, name: &str, op: Operation) -> Result<(), String> {
        self.libvirt
            .request(Request::Operate {
                name: name.to_owned(),
                operation: op,
            })
            .await
    }

    /// Every volume used by a defined instance (a file path, or `rbd:<pool>/<image>`),
    /// with the instance's name and whether it runs.
    pub async fn disks_in_use(&self) -> Result<Vec<(String, String, bool)>, String> {
        let pools: Vec<(String, std::path::PathBuf)> = self
            .inventory
            .get()
            .pools
            .into_values()
            .filter_map(|p| Some((p.name.clone(), p.dir()?.to_owned())))
            .collect();
        let domains: Vec<DomainDefinition> = self.libvirt.request(Request::Domains).await?;
        let mut used = Vec::new();
        for domain in domains {
            let paths: std::collections::BTreeSet<String> = domain
                .xmls
                .iter()
                .flat_map(|xml| disk_files(xml, &pools))
                .collect();
            used.extend(
                paths
                    .into_iter()
                    .map(|p| (p, domain.name.clone(), domain.running)),
            );
        }
        Ok(used)
    }

    pub fn libvirt(&self) -> &Libvirt {
        &self.libvirt
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
        return Err(format!(
            "instance name {name:?} is not a valid libvirt domain name"
        ));
    }
    Ok(())
}

/// The files of a domain's disks (file sources, and volume sources as named).
fn disk_files(xml: &str, pools: &[(String, std::path::PathBuf)]) -> Vec<String> {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return Vec::new();
    };
    doc.descendants()
        .filter(|n| n.has_tag_name("disk"))
        .filter_map(|d| d.children().find(|n| n.has_tag_name("source")))
        .filter_map(|s| {
            if let Some(file) = s.attribute("file") {
                return Some(file.to_owned());
            }
            // <source protocol='rbd' name='pool/image'>: the Ceph image.
            if s.attribute("protocol") == Some("rbd") {
                return s.attribute("name").map(|n| format!("rbd:{n}"));
            }
            // <source pool='local' volume='vm1-os'/>: the pool's file.
            let (pool, volume) = (s.attribute("pool")?, s.attribute("volume")?);
            pools
                .iter()
                .find(|(name, _)| name == pool)
                .map(|(_, dir)| dir.join(volume).display().to_string())
        })
        .collect()
}

/// Console URL from a domain's live XML: SPICE first (upstream's choice), else VNC.
fn console_url(name: &str, xml: &str, address: Option<&str>) -> Result<String, String> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| format!("instance {name}: libvirt's XML does not parse: {e}"))?;
    let graphics: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("graphics"))
        .collect();
    for scheme in ["spice", "vnc"] {
        let Some(g) = graphics
            .iter()
            .find(|g| g.attribute("type") == Some(scheme))
        else {
            continue;
        };
        let port: i64 = g
            .attribute("port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(-1);
        if port <= 0 {
            return Err(format!(
                "instance {name}: its {scheme} console has no port yet (is the instance running?)"
            ));
        }
        let host = address
            .map(str::to_owned)
            .or_else(|| {
                g.attribute("listen")
                    .filter(|l| *l != "0.0.0.0" && *l != "::")
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "localhost".to_owned());
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        return Ok(format!("{scheme}://{host}:{port}"));
    }
    Err(format!("instance {name}: it has no SPICE or VNC console"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_in_use_are_files_and_pool_volumes() {
        let xml = "<domain><devices><disk type='file'><source file='/p/a'/></disk><disk type='volume'><source pool='local' volume='b'/></disk><disk type='volume'><source pool='other' volume='c'/></disk><disk type='file' device='cdrom'/><disk type='network'><source protocol='rbd' name='rbd/vm-os'><host name='m' port='3300'/></source></disk></devices></domain>";
        let pools = [("local".to_owned(), std::path::PathBuf::from("/p"))];
        assert_eq!(disk_files(xml, &pools), ["/p/a", "/p/b", "rbd:rbd/vm-os"]);
    }

    #[test]
    fn actions_are_upstreams_numbers() {
        assert_eq!(Operation::from_action(0), Ok(Operation::AutoStart));
        assert_eq!(Operation::from_action(4), Ok(Operation::HardShutdown));
        assert_eq!(Operation::from_action(5), Ok(Operation::SoftShutdown));
        assert_eq!(Operation::from_action(7), Ok(Operation::PmResume));
        for bad in [-1, 8, 99] {
            let err = Operation::from_action(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("unsupported instance operation: {bad}")),
                "{err}"
            );
        }
    }

    #[test]
    fn console_url_prefers_spice_and_the_configured_address() {
        let xml = "<domain><devices><graphics type='vnc' port='5901' listen='127.0.0.1'/><graphics type='spice' port='5900' listen='0.0.0.0'/></devices></domain>";
        assert_eq!(
            console_url("vm", xml, None).unwrap(),
            "spice://localhost:5900"
        );
        assert_eq!(
            console_url("vm", xml, Some("10.0.0.5")).unwrap(),
            "spice://10.0.0.5:5900"
        );
        let vnc = "<domain><devices><graphics type='vnc' port='5901' listen='127.0.0.1'/></devices></domain>";
        assert_eq!(
            console_url("vm", vnc, None).unwrap(),
            "vnc://127.0.0.1:5901"
        );
        let off =
            "<domain><devices><graphics type='vnc' port='-1' autoport='yes'/></devices></domain>";
        assert!(
            console_url("vm", off, None)
                .unwrap_err()
                .contains("no port yet")
        );
        assert!(
            console_url("vm", "<domain/>", None)
                .unwrap_err()
                .contains("no SPICE or VNC console")
        );
    }
}
