//! Each request of `kaktus::libvirt_protocol`, carried out with libvirt's C API.

use std::collections::BTreeMap;

use kaktus::ceph_secret::CephKey;
use kaktus::instances::Operation;
use kaktus::libvirt_protocol::{
    DomainDefinition, DomainStatus, NodeFacts, PoolInfo, PoolState, PoolStep, Request,
};
use serde::Serialize;
use serde_json::Value;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::secret::Secret;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::sys;

/// `what: message` for a libvirt error (`instance vm1: domain not found ...`).
fn context(what: impl std::fmt::Display) -> impl FnOnce(virt::error::Error) -> String {
    move |e| format!("{what}: {}", e.message())
}

fn json(value: impl Serialize) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| format!("encoding the answer: {e}"))
}

pub fn handle(c: &Connect, request: Request) -> Result<Value, String> {
    match request {
        Request::Hostname => json(c.get_hostname().map_err(context("hostname"))?),
        Request::NodeFacts => {
            let capabilities = c
                .get_capabilities()
                .map_err(context("libvirt capabilities"))?;
            // virNodeGetInfo reports KiB.
            let memory = c.get_node_info().map(|i| i.memory * 1024).unwrap_or(0);
            json(NodeFacts {
                capabilities,
                memory,
            })
        }
        Request::DefineDomain { name, xml } => json(
            Domain::define_xml(c, &xml)
                .map(drop)
                .map_err(context(format!(
                    "instance {name}: libvirt refused the domain XML"
                )))?,
        ),
        Request::DomainUuid { name } => json(
            lookup(c, &name)?
                .get_uuid_string()
                .map_err(context(format!("instance {name}: reading its UUID")))?,
        ),
        Request::DomainXml { name, migratable } => {
            let flags = if migratable {
                sys::VIR_DOMAIN_XML_MIGRATABLE
            } else {
                0
            };
            json(
                lookup(c, &name)?
                    .get_xml_desc(flags)
                    .map_err(context(format!("instance {name}: reading its XML")))?,
            )
        }
        Request::DeleteDomain { name } => json(delete(c, &name)?),
        Request::DomainStatus { name } => {
            let status = Domain::lookup_by_name(c, &name).ok().and_then(|d| {
                let (state, reason) = d.get_state().ok()?;
                Some(DomainStatus {
                    state,
                    reason,
                    autostart: d.get_autostart().unwrap_or(false),
                })
            });
            json(status)
        }
        Request::Operate { name, operation } => json(operate(c, &name, operation)?),
        Request::Domains => json(domains(c)?),
        Request::BlockResize {
            instance,
            disk,
            size,
        } => {
            let dom = Domain::lookup_by_name(c, &instance)
                .map_err(context(format!("instance {instance}")))?;
            dom.block_resize(&disk, size, sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                .map_err(context(format!("instance {instance}: resizing {disk}")))?;
            json(())
        }
        Request::Pools { names } => {
            let mut seen = BTreeMap::new();
            for name in names {
                let Ok(p) = StoragePool::lookup_by_name(c, &name) else {
                    continue;
                };
                let xml = p.get_xml_desc(0).map_err(context(format!("pool {name}")))?;
                seen.insert(
                    name,
                    PoolState {
                        xml,
                        active: p.is_active().unwrap_or(false),
                        autostart: p.get_autostart().unwrap_or(false),
                    },
                );
            }
            json(seen)
        }
        Request::Secrets { uuids } => {
            let mut seen = BTreeMap::new();
            for uuid in uuids {
                let Ok(secret) = Secret::lookup_by_uuid_string(c, &uuid) else {
                    continue;
                };
                let xml = secret
                    .get_xml_desc(0)
                    .map_err(context(format!("secret {uuid}")))?;
                seen.insert(uuid, xml);
            }
            json(seen)
        }
        Request::PoolSteps { steps } => {
            for step in steps {
                pool_step(c, step)?;
            }
            json(())
        }
        Request::CheckPools { secrets, pools } => {
            for uuid in secrets {
                Secret::lookup_by_uuid_string(c, &uuid)
                    .map_err(context(format!("secret {uuid}")))?;
            }
            for name in pools {
                let p = StoragePool::lookup_by_name(c, &name)
                    .map_err(context(format!("pool {name}")))?;
                if !p.is_active().unwrap_or(false) {
                    return Err(format!("pool {name}: not running in libvirt"));
                }
            }
            json(())
        }
        Request::PoolInfo { pool } => {
            let p = StoragePool::lookup_by_name(c, &pool)
                .map_err(context(format!("pool {pool}: not known to libvirt")))?;
            let _ = p.refresh(0);
            let info = p.get_info().map_err(context(format!("pool {pool}")))?;
            json(PoolInfo {
                capacity: info.capacity,
                allocation: info.allocation,
                available: info.available,
            })
        }
        Request::VolumeCapacity { pool, volume } => {
            let p = StoragePool::lookup_by_name(c, &pool)
                .map_err(context(format!("pool {pool}: not known to libvirt")))?;
            let _ = p.refresh(0);
            let vol = StorageVol::lookup_by_name(&p, &volume)
                .map_err(|e| format!("volume {pool}/{volume}: no such volume ({})", e.message()))?;
            let info = vol
                .get_info()
                .map_err(context(format!("volume {pool}/{volume}")))?;
            json(info.capacity)
        }
        Request::RefreshPool { pool } => {
            StoragePool::lookup_by_name(c, &pool)
                .and_then(|p| p.refresh(0).map(drop))
                .map_err(context(format!("pool {pool}: refresh")))?;
            json(())
        }
    }
}

/// The domain `name`, or "no such instance".
fn lookup(c: &Connect, name: &str) -> Result<Domain, String> {
    Domain::lookup_by_name(c, name).map_err(|e| match e.code() {
        ErrorNumber::NoDomain => format!("instance {name}: no such instance on this node"),
        _ => format!("instance {name}: {}", e.message()),
    })
}

fn delete(c: &Connect, name: &str) -> Result<(), String> {
    let dom = lookup(c, name)?;
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
        Err(e) if matches!(e.code(), ErrorNumber::NoSupport | ErrorNumber::InvalidArg) => dom
            .undefine()
            .map_err(context(format!("instance {name}: undefining it"))),
        Err(e) => Err(format!("instance {name}: undefining it: {}", e.message())),
    }
}

fn operate(c: &Connect, name: &str, op: Operation) -> Result<(), String> {
    let dom = lookup(c, name)?;
    let what = |verb: &str| context(format!("instance {name}: {verb}"));
    // Running or paused (upstream's InstanceIsRunning).
    let running = || {
        dom.get_state()
            .map(|(s, _)| kaktus::domain_state::is_running(s))
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
}

fn domains(c: &Connect) -> Result<Vec<DomainDefinition>, String> {
    let listed = c
        .list_all_domains(0)
        .map_err(context("listing instances"))?;
    let mut domains = Vec::new();
    for dom in listed {
        let name = dom.get_name().unwrap_or_default();
        let running = dom.is_active().unwrap_or(false);
        // The persistent definition, and for a running instance what it runs with (a
        // disk attached live is only there).
        let mut flags = vec![sys::VIR_DOMAIN_XML_INACTIVE];
        if running {
            flags.push(0);
        }
        let mut xmls = Vec::new();
        for flag in flags {
            match dom.get_xml_desc(flag) {
                Ok(xml) => xmls.push(xml),
                // Deleted since it was listed: it uses nothing any more.
                Err(e) if e.code() == ErrorNumber::NoDomain => {}
                Err(e) => {
                    return Err(format!("instance {name}: reading its XML: {}", e.message()));
                }
            }
        }
        domains.push(DomainDefinition {
            name,
            running,
            xmls,
        });
    }
    Ok(domains)
}

fn pool_step(c: &Connect, step: PoolStep) -> Result<(), String> {
    match step {
        PoolStep::Define { name, xml } => {
            StoragePool::define_xml(c, &xml, 0).map_err(context(format!("pool {name}: define")))?;
        }
        PoolStep::Start { name } => {
            let p =
                StoragePool::lookup_by_name(c, &name).map_err(context(format!("pool {name}")))?;
            if !p.is_active().unwrap_or(false) {
                p.create(0)
                    .map_err(context(format!("pool {name}: start")))?;
            }
        }
        PoolStep::Autostart { name } => {
            StoragePool::lookup_by_name(c, &name)
                .and_then(|p| p.set_autostart(true))
                .map_err(context(format!("pool {name}: autostart")))?;
        }
        PoolStep::Undefine { name } => {
            let p =
                StoragePool::lookup_by_name(c, &name).map_err(context(format!("pool {name}")))?;
            if p.is_active().unwrap_or(false) {
                p.destroy().map_err(context(format!("pool {name}: stop")))?;
            }
            p.undefine()
                .map_err(context(format!("pool {name}: undefine")))?;
        }
        PoolStep::Secret {
            uuid,
            xml,
            key_file,
            digest,
        } => {
            let key = CephKey::read(&key_file)?;
            if key.digest != digest {
                return Err(format!(
                    "ceph key file {} changed since the plan: apply again",
                    key_file.display()
                ));
            }
            let secret = Secret::define_xml(c, &xml, 0)
                .map_err(context(format!("secret {uuid}: define")))?;
            secret
                .set_value(&key.bytes(), 0)
                .map_err(context(format!("secret {uuid}: set its value")))?;
        }
    }
    Ok(())
}
