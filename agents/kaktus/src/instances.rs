//! Instances (libvirt domains): define from Kahuna's checked XML, describe, state,
//! console URL, the eight power operations, delete.

use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

use crate::domain_state;
use crate::domain_xml;
use crate::inventory::SharedInventory;
use crate::libvirt::{Libvirt, context};
use crate::storage::format_of;

/// Upstream's `KaktusInstanceOperation`, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        let name = name.to_owned();
        self.libvirt
            .call(move |c| {
                Domain::define_xml(c, &checked.xml)
                    .map(drop)
                    .map_err(context(format!(
                        "instance {name}: libvirt refused the domain XML"
                    )))
            })
            .await?;
        Ok(())
    }

    /// Redefine an existing instance (keeping its UUID when the XML gives none).
    pub async fn update(&self, name: &str, xml: &str) -> Result<(), String> {
        check_name(name)?;
        let owned = name.to_owned();
        let uuid = self
            .libvirt
            .call(move |c| {
                lookup(c, &owned)?
                    .get_uuid_string()
                    .map_err(context(format!("instance {owned}: reading its UUID")))
            })
            .await?;
        self.create(name, &domain_xml::with_uuid(xml, &uuid)).await
    }

    /// The domain XML (`Migratable`: without host-specific parts).
    pub async fn xml(&self, name: &str, migratable: bool) -> Result<String, String> {
        let name = name.to_owned();
        self.libvirt
            .call(move |c| {
                let flags = if migratable {
                    sys::VIR_DOMAIN_XML_MIGRATABLE
                } else {
                    0
                };
                lookup(c, &name)?
                    .get_xml_desc(flags)
                    .map_err(context(format!("instance {name}: reading its XML")))
            })
            .await
    }

    /// Stop (if running) and undefine, with its NVRAM, snapshot and checkpoint
    /// metadata and managed save.
    pub async fn delete(&self, name: &str) -> Result<(), String> {
        let name = name.to_owned();
        self.libvirt
            .call(move |c| {
                let dom = lookup(c, &name)?;
                if dom.is_active().unwrap_or(false) {
                    dom.destroy()
                        .map_err(context(format!("instance {name}: stopping it")))?;
                }
                let flags = sys::VIR_DOMAIN_UNDEFINE_NVRAM
                    | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA;
                match dom.undefine_flags(flags) {
                    Ok(()) => Ok(()),
                    // Drivers without those flags (test driver, old QEMU): plain undefine.
                    Err(e)
                        if matches!(
                            e.code(),
                            virt::error::ErrorNumber::NoSupport
                                | virt::error::ErrorNumber::InvalidArg
                        ) =>
                    {
                        dom.undefine()
                            .map_err(context(format!("instance {name}: undefining it")))
                    }
                    Err(e) => Err(format!("instance {name}: undefining it: {}", e.message())),
                }
            })
            .await
    }

    /// `(State, Reason)` in upstream's words.
    pub async fn state(&self, name: &str) -> Result<(String, String), String> {
        let name = name.to_owned();
        self.libvirt
            .call(move |c| {
                let (state, reason) = lookup(c, &name)?
                    .get_state()
                    .map_err(context(format!("instance {name}: reading its state")))?;
                let (s, r) = domain_state::describe(state, reason);
                Ok((s.to_owned(), r.to_owned()))
            })
            .await
    }

    /// Running or paused; `false` for an unknown instance (as upstream).
    pub async fn is_running(&self, name: &str) -> Result<bool, String> {
        let name = name.to_owned();
        self.libvirt
            .call(move |c| {
                Ok(Domain::lookup_by_name(c, &name)
                    .ok()
                    .and_then(|d| d.get_state().ok())
                    .is_some_and(|(state, _)| domain_state::is_running(state)))
            })
            .await
    }

    /// `spice://<host>:<port>` (or `vnc://` for a VNC-only domain) of a running
    /// instance's console.
    pub async fn console_url(&self, name: &str) -> Result<String, String> {
        let xml = self.xml(name, false).await?;
        let address = self.inventory.get().console_address;
        console_url(name, &xml, address.as_deref())
    }

    pub async fn operate(&self, name: &str, op: Operation) -> Result<(), String> {
        let name = name.to_owned();
        self.libvirt
            .call(move |c| {
                let dom = lookup(c, &name)?;
                let what = |verb: &str| context(format!("instance {name}: {verb}"));
                let running = || {
                    dom.get_state()
                        .map(|(s, _)| domain_state::is_running(s))
                        .unwrap_or(false)
                };
                match op {
                    Operation::AutoStart => {
                        dom.set_autostart(true).map_err(what("setting autostart"))?;
                        if !dom.is_active().unwrap_or(false) {
                            dom.create().map_err(what("starting it"))?;
                        }
                    }
                    Operation::Start => {
                        dom.create().map_err(what("starting it"))?;
                    }
                    Operation::SoftReboot => dom
                        .reboot(sys::VIR_DOMAIN_REBOOT_DEFAULT)
                        .map_err(what("rebooting it"))?,
                    Operation::HardReboot => {
                        dom.reset().map_err(what("resetting it"))?;
                    }
                    Operation::HardShutdown => {
                        if running() {
                            dom.destroy().map_err(what("stopping it"))?;
                        }
                    }
                    Operation::SoftShutdown => {
                        if running() {
                            dom.shutdown().map_err(what("shutting it down"))?;
                        }
                    }
                    Operation::PmSuspend => {
                        dom.suspend().map_err(what("suspending it"))?;
                    }
                    Operation::PmResume => {
                        dom.resume().map_err(what("resuming it"))?;
                    }
                }
                Ok(())
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
        self.libvirt
            .call(move |c| {
                let domains = c
                    .list_all_domains(0)
                    .map_err(context("listing instances"))?;
                let mut used = Vec::new();
                for dom in domains {
                    let name = dom.get_name().unwrap_or_default();
                    let running = dom.is_active().unwrap_or(false);
                    // The persistent definition, and for a running instance what it
                    // runs with (a disk attached live is only there).
                    let mut flags = vec![sys::VIR_DOMAIN_XML_INACTIVE];
                    if running {
                        flags.push(0);
                    }
                    let mut paths = std::collections::BTreeSet::new();
                    for flag in flags {
                        let xml = match dom.get_xml_desc(flag) {
                            Ok(xml) => xml,
                            // Deleted since it was listed: it uses nothing any more.
                            Err(e) if e.code() == virt::error::ErrorNumber::NoDomain => {
                                continue;
                            }
                            Err(e) => {
                                return Err(format!(
                                    "instance {name}: reading its XML: {}",
                                    e.message()
                                ));
                            }
                        };
                        paths.extend(disk_files(&xml, &pools));
                    }
                    used.extend(paths.into_iter().map(|p| (p, name.clone(), running)));
                }
                Ok(used)
            })
            .await
    }

    pub fn libvirt(&self) -> &Libvirt {
        &self.libvirt
    }
}

/// The domain `name`, or "no such instance".
fn lookup(c: &Connect, name: &str) -> Result<Domain, String> {
    Domain::lookup_by_name(c, name).map_err(|e| match e.code() {
        virt::error::ErrorNumber::NoDomain => {
            format!("instance {name}: no such instance on this node")
        }
        _ => format!("instance {name}: {}", e.message()),
    })
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
