//! Checks on the domain XML Kahuna sends (`CreateInstance`, `UpdateInstance`) before
//! libvirt sees it: well-formed, named as the call says, disks only from this node's
//! pools, NICs only on this node's declared bridges, no host passthrough. Anything else
//! is refused with an error naming the element and why.
//!
//! Upstream Kahuna describes every disk as an RBD network disk (`<source
//! protocol='rbd' name='<pool>/<volume>'>`). When `<pool>` is a `local` pool of this
//! node, the disk is rewritten into a file disk on that pool's directory (with the
//! volume's own format: qcow2 for OS clones, raw otherwise), so an unmodified Kahuna
//! drives the local backend. The rest of the XML is passed through byte for byte.

use std::path::{Component, Path};

use crate::inventory::{NodeInventory, PoolBackend, RbdPool};
use crate::volume_name;

/// What the checked XML becomes: the document libvirt gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub xml: String,
    /// Volume files the domain uses (for "volume in use" checks and logs).
    pub disks: Vec<String>,
}

/// Check `xml` for the instance `name`. `format_of` says a local volume's format
/// (`qcow2` or `raw`) from its path.
pub fn check(
    name: &str,
    xml: &str,
    inventory: &NodeInventory,
    format_of: &dyn Fn(&Path) -> &'static str,
) -> Result<Checked, String> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| format!("instance {name}: domain XML is not well-formed: {e}"))?;
    let root = doc.root_element();
    if !root.has_tag_name("domain") {
        return Err(format!(
            "instance {name}: domain XML: root element is <{}>, not <domain>",
            root.tag_name().name()
        ));
    }
    let declared = child(root, "name").and_then(|n| n.text()).map(str::trim);
    if declared != Some(name) {
        return Err(format!(
            "instance {name}: domain XML names the domain {:?}, not {name:?}",
            declared.unwrap_or("")
        ));
    }
    for node in root.children().filter(|n| n.is_element()) {
        if node.tag_name().namespace().is_some() {
            return Err(format!(
                "instance {name}: domain XML: <{}:{}> (hypervisor pass-through) is not accepted",
                node.tag_name().namespace().unwrap_or(""),
                node.tag_name().name()
            ));
        }
    }
    if let Some(os) = child(root, "os") {
        check_os(name, os)?;
    }
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut disks = Vec::new();
    let Some(devices) = child(root, "devices") else {
        return Ok(Checked {
            xml: xml.to_owned(),
            disks,
        });
    };
    for dev in devices.children().filter(|n| n.is_element()) {
        match dev.tag_name().name() {
            "disk" => {
                if let Some((path, edit)) = check_disk(name, xml, dev, inventory, format_of)? {
                    disks.push(path);
                    if let Some(edit) = edit {
                        edits.push(edit);
                    }
                }
            }
            "interface" => check_interface(name, dev, inventory)?,
            "serial" | "console" | "parallel" | "channel" => check_chardev(name, dev)?,
            "hostdev" | "filesystem" | "smartcard" | "shmem" => {
                return Err(format!(
                    "instance {name}: domain XML: <{}> gives the guest host resources and is not accepted",
                    dev.tag_name().name()
                ));
            }
            _ => {}
        }
    }
    let mut out = xml.to_owned();
    // Back to front, so earlier ranges stay valid.
    edits.sort_by_key(|(range, _)| std::cmp::Reverse(range.start));
    for (range, text) in edits {
        out.replace_range(range, &text);
    }
    Ok(Checked { xml: out, disks })
}

type Edit = (std::ops::Range<usize>, String);

/// A disk's volume path, and the rewrite of an RBD disk on a local pool.
fn check_disk(
    name: &str,
    xml: &str,
    disk: roxmltree::Node,
    inventory: &NodeInventory,
    format_of: &dyn Fn(&Path) -> &'static str,
) -> Result<Option<(String, Option<Edit>)>, String> {
    let target = child(disk, "target")
        .and_then(|t| t.attribute("dev"))
        .unwrap_or("?");
    let what = format!("instance {name}: disk {target}");
    let kind = disk.attribute("type").unwrap_or("file");
    let source = child(disk, "source");
    match kind {
        "file" => {
            if let Some(b) = child(disk, "backingStore")
                && b.children().any(|n| n.is_element())
            {
                return Err(format!(
                    "{what}: a <backingStore> in the domain XML is not accepted (backing files come from the volume itself)"
                ));
            }
            let Some(file) = source.and_then(|s| s.attribute("file")) else {
                // An empty drive (a cdrom without media) uses nothing.
                return Ok(None);
            };
            pool_file(&what, Path::new(file), inventory)?;
            Ok(Some((file.to_owned(), None)))
        }
        "volume" => {
            let source = source.ok_or_else(|| format!("{what}: volume disk without <source>"))?;
            let pool = source.attribute("pool").unwrap_or("");
            let volume = source.attribute("volume").unwrap_or("");
            let pool = inventory.pool(pool).map_err(|e| format!("{what}: {e}"))?;
            volume_name::check(volume).map_err(|e| format!("{what}: {e}"))?;
            let dir = pool.local_dir(&format!("{what}: a volume disk"))?;
            Ok(Some((dir.join(volume).display().to_string(), None)))
        }
        "network" => {
            let source = source.ok_or_else(|| format!("{what}: network disk without <source>"))?;
            let protocol = source.attribute("protocol").unwrap_or("");
            if protocol != "rbd" {
                return Err(format!(
                    "{what}: network disks over {protocol:?} are not accepted (only rbd volumes of this node's pools)"
                ));
            }
            let full = source.attribute("name").unwrap_or("");
            let (pool, volume) = full
                .split_once('/')
                .ok_or_else(|| format!("{what}: rbd source {full:?} is not <pool>/<volume>"))?;
            let pool = inventory.pool(pool).map_err(|e| format!("{what}: {e}"))?;
            volume_name::check(volume).map_err(|e| format!("{what}: {e}"))?;
            match &pool.backend {
                PoolBackend::Local { path: dir } => {
                    let path = dir.join(volume);
                    let format = format_of(&path);
                    let rewritten = file_disk(xml, disk, &path, format);
                    Ok(Some((
                        path.display().to_string(),
                        Some((disk.range(), rewritten)),
                    )))
                }
                PoolBackend::Rbd(rbd) => Ok(Some((
                    format!("rbd:{}/{volume}", rbd.ceph_pool),
                    Some((disk.range(), rbd_disk(xml, disk, rbd, volume))),
                ))),
            }
        }
        other => Err(format!(
            "{what}: {other:?} disks are not accepted (only volumes of this node's pools)"
        )),
    }
}

/// `xml` with `<uuid>uuid</uuid>` after its `<name>` when it has no `<uuid>` (a
/// redefinition without one would otherwise get a new UUID, which libvirt refuses).
pub fn with_uuid(xml: &str, uuid: &str) -> String {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return xml.to_owned();
    };
    let root = doc.root_element();
    if child(root, "uuid").is_some() {
        return xml.to_owned();
    }
    let Some(name) = child(root, "name") else {
        return xml.to_owned();
    };
    let mut out = xml.to_owned();
    out.insert_str(name.range().end, &format!("<uuid>{}</uuid>", escape(uuid)));
    out
}

/// Firmware only from the distribution's firmware directories, NVRAM only in
/// libvirt's; no host kernel, initrd or device tree.
fn check_os(name: &str, os: roxmltree::Node) -> Result<(), String> {
    const FIRMWARE: &[&str] = &["/usr/share/OVMF/", "/usr/share/qemu/", "/usr/share/AAVMF/"];
    const NVRAM: &[&str] = &["/var/lib/libvirt/qemu/nvram/"];
    for node in os.children().filter(|n| n.is_element()) {
        let tag = node.tag_name().name();
        let allowed: &[&str] = match tag {
            "kernel" | "initrd" | "dtb" => &[],
            "loader" => FIRMWARE,
            "nvram" => NVRAM,
            _ => continue,
        };
        // An empty <loader type='pflash'/> or <nvram/> lets libvirt pick its own; an
        // NVRAM template is firmware.
        let paths = [
            (node.text().unwrap_or("").trim(), allowed),
            (node.attribute("template").unwrap_or(""), FIRMWARE),
        ];
        for (p, dirs) in paths.iter().filter(|(p, _)| !p.is_empty()) {
            let clean = Path::new(p)
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !clean || !dirs.iter().any(|dir| p.starts_with(dir)) {
                return Err(format!(
                    "instance {name}: <os><{tag}> {p} is a host file this node does not give guests"
                ));
            }
        }
    }
    Ok(())
}

/// Serial ports, consoles and channels: pseudo-terminals, libvirt-managed sockets and
/// SPICE channels only; never a host file, device, pipe or network socket.
fn check_chardev(name: &str, dev: roxmltree::Node) -> Result<(), String> {
    let tag = dev.tag_name().name();
    let kind = dev.attribute("type").unwrap_or("pty");
    let ok = match kind {
        "pty" | "null" | "vc" | "spicevmc" | "spiceport" | "qemu-vdagent" => true,
        // A UNIX socket libvirt names and places itself (the guest agent channel).
        "unix" => child(dev, "source")
            .and_then(|s| s.attribute("path"))
            .is_none(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "instance {name}: <{tag} type='{kind}'> reaches host files or sockets and is not accepted (pty, unix without a path, spicevmc only)"
        ))
    }
}

/// `path` must be a volume directly inside one of the node's pools.
fn pool_file(what: &str, path: &Path, inventory: &NodeInventory) -> Result<(), String> {
    let clean = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !clean {
        return Err(format!(
            "{what}: {} is not an absolute path without `.` or `..`",
            path.display()
        ));
    }
    let in_pool = inventory
        .pools
        .values()
        .any(|p| p.dir().is_some() && path.parent() == p.dir());
    if !in_pool {
        return Err(format!(
            "{what}: {} is outside this node's storage pools",
            path.display()
        ));
    }
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    volume_name::check(file).map_err(|e| format!("{what}: {e}"))
}

fn check_interface(
    name: &str,
    nic: roxmltree::Node,
    inventory: &NodeInventory,
) -> Result<(), String> {
    let mac = child(nic, "mac")
        .and_then(|m| m.attribute("address"))
        .unwrap_or("?");
    let what = format!("instance {name}: interface {mac}");
    match nic.attribute("type").unwrap_or("") {
        "bridge" => {
            let bridge = child(nic, "source")
                .and_then(|s| s.attribute("bridge"))
                .unwrap_or("");
            if inventory.bridges.contains(bridge) {
                Ok(())
            } else {
                let known: Vec<&str> = inventory.bridges.iter().map(String::as_str).collect();
                Err(format!(
                    "{what}: bridge {bridge:?} is not a bridge declared on this node (bridges: {known:?})"
                ))
            }
        }
        other => Err(format!(
            "{what}: {other:?} interfaces are not accepted (only type='bridge' on this node's bridges)"
        )),
    }
}

/// The `<disk>` element as a file disk on `path`: same device, driver options (with
/// the volume's format), target and every other child; no RBD source, hosts or auth.
fn file_disk(xml: &str, disk: roxmltree::Node, path: &Path, format: &str) -> String {
    let source = format!("<source file='{}'/>", escape(&path.display().to_string()));
    rewritten_disk(xml, disk, "file", format, &source)
}

/// The `<disk>` element as an RBD disk of the node's `rbd` pool: the Ceph pool's
/// image, the node's monitors and the pool's secret (Kahuna's hosts and auth are the
/// region's); same device, driver options (raw), target and every other child.
fn rbd_disk(xml: &str, disk: roxmltree::Node, pool: &RbdPool, volume: &str) -> String {
    let mut inner = format!(
        "<auth username='{}'><secret type='ceph' uuid='{}'/></auth><source protocol='rbd' name='{}/{}'>",
        escape(&pool.cluster.client),
        escape(&pool.secret_uuid),
        escape(&pool.ceph_pool),
        escape(volume)
    );
    for monitor in &pool.cluster.monitors {
        let (host, port) = monitor.rsplit_once(':').unwrap_or((monitor, "3300"));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        inner.push_str(&format!(
            "<host name='{}' port='{}'/>",
            escape(host),
            escape(port)
        ));
    }
    inner.push_str("</source>");
    rewritten_disk(xml, disk, "network", "raw", &inner)
}

/// `disk` as a `<disk type='{kind}'>` of the same device: a qemu driver of `format`
/// with the other driver options kept, then `source` (the new `<source>`, and
/// `<auth>` if any), then every other child as it was.
fn rewritten_disk(
    xml: &str,
    disk: roxmltree::Node,
    kind: &str,
    format: &str,
    source: &str,
) -> String {
    let device = disk.attribute("device").unwrap_or("disk");
    let mut out = format!(
        "<disk type='{kind}' device='{}'><driver name='qemu' type='{format}'",
        escape(device)
    );
    if let Some(d) = child(disk, "driver") {
        for a in d.attributes() {
            if a.name() != "name" && a.name() != "type" {
                out.push_str(&format!(" {}='{}'", a.name(), escape(a.value())));
            }
        }
    }
    out.push_str("/>");
    out.push_str(source);
    for c in disk.children().filter(|n| n.is_element()) {
        if !matches!(c.tag_name().name(), "driver" | "source" | "auth") {
            out.push_str(&xml[c.range()]);
        }
    }
    out.push_str("</disk>");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Pool;

    fn inventory() -> NodeInventory {
        let mut inv = NodeInventory::new();
        inv.pools.insert(
            "local".into(),
            Pool::local("local", "/var/lib/kaktus/pools/local"),
        );
        inv.bridges.insert("br0".into());
        inv.bridges.insert("br102".into());
        inv
    }

    fn qcow2_for_os(path: &Path) -> &'static str {
        if path.to_string_lossy().ends_with("-os") {
            "qcow2"
        } else {
            "raw"
        }
    }

    fn domain(devices: &str) -> String {
        format!(
            "<domain type='kvm'><name>vm1</name><memory unit='MiB'>64</memory><devices>{devices}</devices></domain>"
        )
    }

    /// What upstream Kahuna sends (virtxml.go): RBD disks, cdrom, bridge NICs.
    const KAHUNA_DEVICES: &str = "<disk type='network' device='disk'><driver name='qemu' type='raw' cache='writeback'/><auth username='libvirt'><secret type='ceph' uuid='1b3c'/></auth><source protocol='rbd' name='local/vm1-os'><host name='10.0.0.1' port='3300'/></source><target dev='vda' bus='virtio'/></disk>\
        <disk type='network' device='cdrom'><driver name='qemu' type='raw'/><source protocol='rbd' name='local/vm1-ci'/><target dev='hda' bus='ide'/><readonly/><serial>cloudinit</serial></disk>\
        <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br102'/><model type='virtio'/></interface>";

    #[test]
    fn rewrites_kahunas_rbd_disks_on_a_local_pool_into_file_disks() {
        let checked = check("vm1", &domain(KAHUNA_DEVICES), &inventory(), &qcow2_for_os).unwrap();
        assert_eq!(
            checked.disks,
            [
                "/var/lib/kaktus/pools/local/vm1-os",
                "/var/lib/kaktus/pools/local/vm1-ci"
            ]
        );
        let doc = roxmltree::Document::parse(&checked.xml).unwrap();
        let disks: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("disk"))
            .collect();
        assert_eq!(disks[0].attribute("type"), Some("file"));
        let driver = child(disks[0], "driver").unwrap();
        assert_eq!(
            (driver.attribute("type"), driver.attribute("cache")),
            (Some("qcow2"), Some("writeback"))
        );
        assert_eq!(
            child(disks[0], "source").unwrap().attribute("file"),
            Some("/var/lib/kaktus/pools/local/vm1-os")
        );
        assert!(child(disks[0], "auth").is_none());
        assert_eq!(child(disks[1], "serial").unwrap().text(), Some("cloudinit"));
        assert!(child(disks[1], "readonly").is_some());
        assert_eq!(child(child(disks[1], "driver").unwrap(), "x"), None);
        assert_eq!(
            child(disks[1], "driver").unwrap().attribute("type"),
            Some("raw")
        );
        // The NIC is passed through untouched.
        assert!(checked.xml.contains("<source bridge='br102'/>"));
    }

    #[test]
    fn keeps_kahunas_rbd_disks_on_an_rbd_pool_with_the_nodes_monitors_and_secret() {
        let mut inv = inventory();
        inv.pools.remove("local");
        inv.pools.insert(
            "local".into(),
            Pool {
                name: "local".into(),
                backend: PoolBackend::Rbd(RbdPool {
                    ceph_pool: "rbd".into(),
                    cluster: crate::rbd::Cluster {
                        monitors: vec!["10.50.0.21:3300".into(), "[fd00::22]:3300".into()],
                        client: "kaktus".into(),
                        key_file: "/var/lib/kowabunga/kaktus/ceph/kaktus.key".into(),
                    },
                    secret_uuid: "6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10".into(),
                }),
            },
        );
        let checked = check("vm1", &domain(KAHUNA_DEVICES), &inv, &qcow2_for_os).unwrap();
        assert_eq!(checked.disks, ["rbd:rbd/vm1-os", "rbd:rbd/vm1-ci"]);
        let doc = roxmltree::Document::parse(&checked.xml).unwrap();
        let disks: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("disk"))
            .collect();
        assert_eq!(disks[0].attribute("type"), Some("network"));
        let source = child(disks[0], "source").unwrap();
        assert_eq!(
            (source.attribute("protocol"), source.attribute("name")),
            (Some("rbd"), Some("rbd/vm1-os"))
        );
        let hosts: Vec<_> = source
            .children()
            .filter(|n| n.has_tag_name("host"))
            .map(|h| {
                format!(
                    "{}|{}",
                    h.attribute("name").unwrap(),
                    h.attribute("port").unwrap()
                )
            })
            .collect();
        assert_eq!(
            hosts,
            ["10.50.0.21|3300", "fd00::22|3300"],
            "Kahuna's host replaced"
        );
        let auth = child(disks[0], "auth").unwrap();
        assert_eq!(auth.attribute("username"), Some("kaktus"));
        assert_eq!(
            child(auth, "secret").unwrap().attribute("uuid"),
            Some("6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10")
        );
        let driver = child(disks[0], "driver").unwrap();
        assert_eq!(
            (driver.attribute("type"), driver.attribute("cache")),
            (Some("raw"), Some("writeback"))
        );
        // The cdrom keeps its target, serial and read-only flag.
        assert_eq!(child(disks[1], "serial").unwrap().text(), Some("cloudinit"));
        assert!(child(disks[1], "readonly").is_some());
        assert_eq!(
            child(disks[1], "source").unwrap().attribute("name"),
            Some("rbd/vm1-ci")
        );
        // A volume disk names no Ceph image: refused on an rbd pool.
        let err = check(
            "vm1",
            &domain("<disk type='volume' device='disk'><source pool='local' volume='b'/><target dev='vdb'/></disk>"),
            &inv,
            &qcow2_for_os,
        )
        .unwrap_err();
        assert!(err.contains("not available on an rbd pool"), "{err}");
    }

    #[test]
    fn accepts_file_and_volume_disks_of_the_pools() {
        let devices = "<disk type='file' device='disk'><source file='/var/lib/kaktus/pools/local/a'/><target dev='vda'/></disk>\
            <disk type='volume' device='disk'><source pool='local' volume='b'/><target dev='vdb'/></disk>\
            <disk type='file' device='cdrom'><target dev='hda'/></disk>";
        let checked = check("vm1", &domain(devices), &inventory(), &qcow2_for_os).unwrap();
        assert_eq!(checked.xml, domain(devices));
        assert_eq!(checked.disks.len(), 2);
    }

    #[test]
    fn refuses_what_the_node_does_not_offer() {
        let refused = [
            (
                "<disk type='file' device='disk'><source file='/etc/shadow'/><target dev='vda'/></disk>",
                "disk vda: /etc/shadow is outside this node's storage pools",
            ),
            (
                "<disk type='file' device='disk'><source file='/var/lib/kaktus/pools/local/../../x'/><target dev='vda'/></disk>",
                "without `.` or `..`",
            ),
            (
                "<disk type='block' device='disk'><source dev='/dev/sda'/><target dev='vda'/></disk>",
                "\"block\" disks are not accepted",
            ),
            (
                "<disk type='network' device='disk'><source protocol='rbd' name='ceph/x'/><target dev='vda'/></disk>",
                "pool \"ceph\" is not a storage pool of this node",
            ),
            (
                "<disk type='network' device='disk'><source protocol='nbd' name='x'/><target dev='vda'/></disk>",
                "over \"nbd\" are not accepted",
            ),
            (
                "<disk type='volume' device='disk'><source pool='local' volume='../x'/><target dev='vda'/></disk>",
                "volume name \"../x\"",
            ),
            (
                "<interface type='bridge'><mac address='52:54:00:00:00:09'/><source bridge='br999'/></interface>",
                "interface 52:54:00:00:00:09: bridge \"br999\" is not a bridge declared on this node",
            ),
            (
                "<interface type='network'><source network='default'/></interface>",
                "\"network\" interfaces are not accepted",
            ),
            (
                "<hostdev mode='subsystem' type='pci'/>",
                "<hostdev> gives the guest host resources",
            ),
        ];
        for (devices, expected) in refused {
            let err = check("vm1", &domain(devices), &inventory(), &qcow2_for_os).unwrap_err();
            assert!(err.contains(expected), "{devices}: {err}");
        }
    }

    #[test]
    fn no_host_files_through_firmware_chardevs_or_backing_stores() {
        let with = |os: &str, devices: &str| {
            format!(
                "<domain type='kvm'><name>vm1</name><os><type>hvm</type>{os}</os><devices>{devices}</devices></domain>"
            )
        };
        let uefi = "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader><nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/vm1_VARS.fd</nvram>";
        let kahuna_chardevs = "<serial type='pty'><target port='0'/></serial><console type='pty'/><channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel><channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>";
        assert!(
            check(
                "vm1",
                &with(uefi, kahuna_chardevs),
                &inventory(),
                &qcow2_for_os
            )
            .is_ok()
        );
        for (os, devices, bad) in [
            (
                "<kernel>/boot/vmlinuz</kernel>",
                "",
                "<os><kernel> /boot/vmlinuz",
            ),
            (
                "<loader>/etc/shadow</loader>",
                "",
                "<os><loader> /etc/shadow",
            ),
            (
                "<loader>/usr/share/OVMF/../../../etc/shadow</loader>",
                "",
                "<os><loader>",
            ),
            ("<nvram>/root/x</nvram>", "", "<os><nvram> /root/x"),
            (
                "",
                "<disk type='file' device='disk'><source file='/var/lib/kaktus/pools/local/a'/><backingStore type='file'><format type='raw'/><source file='/etc/shadow'/></backingStore><target dev='vda'/></disk>",
                "<backingStore> in the domain XML is not accepted",
            ),
            (
                "",
                "<serial type='file'><source path='/etc/cron.d/x'/><target port='0'/></serial>",
                "<serial type='file'> reaches host files",
            ),
            (
                "",
                "<channel type='unix'><source mode='bind' path='/run/x.sock'/><target type='virtio' name='x'/></channel>",
                "<channel type='unix'> reaches host files",
            ),
            (
                "",
                "<console type='tcp'><source mode='bind' host='0.0.0.0' service='23'/></console>",
                "<console type='tcp'>",
            ),
        ] {
            let err = check("vm1", &with(os, devices), &inventory(), &qcow2_for_os).unwrap_err();
            assert!(err.contains(bad), "{os}{devices}: {err}");
        }
    }

    #[test]
    fn keeps_the_uuid_of_a_redefined_domain() {
        let xml = domain("");
        let with = with_uuid(&xml, "ace9980b-59de-4f89-9264-91660a29e665");
        assert!(
            with.contains("<name>vm1</name><uuid>ace9980b-59de-4f89-9264-91660a29e665</uuid>"),
            "{with}"
        );
        assert_eq!(with_uuid(&with, "other"), with);
    }

    #[test]
    fn refuses_malformed_or_misnamed_documents() {
        let err = check(
            "vm1",
            "<domain><name>vm1</name>",
            &inventory(),
            &qcow2_for_os,
        )
        .unwrap_err();
        assert!(
            err.contains("instance vm1: domain XML is not well-formed"),
            "{err}"
        );
        let err = check(
            "vm1",
            &domain("").replace("vm1", "vm2"),
            &inventory(),
            &qcow2_for_os,
        )
        .unwrap_err();
        assert!(
            err.contains("names the domain \"vm2\", not \"vm1\""),
            "{err}"
        );
        let err = check(
            "vm1",
            "<network><name>vm1</name></network>",
            &inventory(),
            &qcow2_for_os,
        )
        .unwrap_err();
        assert!(err.contains("root element is <network>"), "{err}");
        let qemu = "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>vm1</name><qemu:commandline><qemu:arg value='-x'/></qemu:commandline></domain>";
        let err = check("vm1", qemu, &inventory(), &qcow2_for_os).unwrap_err();
        assert!(err.contains("hypervisor pass-through"), "{err}");
    }
}
