//! `Kaktus.NodeCapabilities`: the host's CPU, memory and default guest, from libvirt's
//! capabilities XML (as upstream: sockets, cores and threads counted over the NUMA
//! cells' CPUs, memory summed over the cells).

use std::collections::BTreeSet;

use serde::Serialize;

/// Upstream's `KaktusNodeCapabilitiesReply`, Go field names and widths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeCapabilities {
    pub arch: String,
    pub vendor: String,
    pub model: String,
    pub sockets: u8,
    pub cores: u16,
    pub threads: u16,
    pub memory: u64,
    pub guest_emulator: String,
    pub guest_machine_name: String,
}

/// Read the capabilities XML. `node_memory` (bytes, from `virNodeGetInfo`) stands in
/// when no NUMA cell reports memory.
pub fn parse(xml: &str, node_memory: u64) -> Result<NodeCapabilities, String> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| format!("libvirt capabilities are not valid XML: {e}"))?;
    let root = doc.root_element();
    let host = child(root, "host").ok_or("libvirt capabilities have no <host>")?;
    let cpu = child(host, "cpu").ok_or("libvirt capabilities have no <host><cpu>")?;
    let text =
        |n: Option<roxmltree::Node>| n.and_then(|n| n.text()).unwrap_or("").trim().to_owned();
    let arch = text(child(cpu, "arch"));
    let mut caps = NodeCapabilities {
        vendor: text(child(cpu, "vendor")),
        model: text(child(cpu, "model")),
        ..NodeCapabilities::default()
    };

    let mut sockets = BTreeSet::new();
    let mut cores = BTreeSet::new();
    let mut threads = BTreeSet::new();
    let mut memory: u64 = 0;
    let cells = child(host, "topology")
        .and_then(|t| child(t, "cells"))
        .map(|c| {
            c.children()
                .filter(|n| n.has_tag_name("cell"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for cell in &cells {
        if let Some(mem) = child(*cell, "memory") {
            let size: u64 = mem.text().unwrap_or("0").trim().parse().map_err(|_| {
                "libvirt capabilities: a NUMA cell's <memory> is not a number".to_owned()
            })?;
            let unit = match mem.attribute("unit").unwrap_or("KiB") {
                "b" | "bytes" => 1,
                "KiB" | "k" => 1 << 10,
                "MiB" | "M" => 1 << 20,
                "GiB" | "G" => 1 << 30,
                other => {
                    return Err(format!(
                        "libvirt capabilities: unknown memory unit {other:?}"
                    ));
                }
            };
            memory = memory.saturating_add(size.saturating_mul(unit));
        }
        for c in child(*cell, "cpus")
            .into_iter()
            .flat_map(|c| c.children())
            .filter(|n| n.has_tag_name("cpu"))
        {
            let cell_id = cell.attribute("id").unwrap_or("0");
            if let Some(s) = c.attribute("socket_id") {
                sockets.insert(s.to_owned());
            }
            if let Some(core) = c.attribute("core_id") {
                // Core ids repeat across sockets (and cells): count each once per socket.
                cores.insert(format!(
                    "{}/{cell_id}/{core}",
                    c.attribute("socket_id").unwrap_or("0")
                ));
            }
            if let Some(t) = c.attribute("id") {
                threads.insert(t.to_owned());
            }
        }
    }
    if cells.is_empty() {
        // No NUMA topology (some drivers): fall back on <cpu><topology>.
        if let Some(t) = child(cpu, "topology") {
            let n = |a: &str| {
                t.attribute(a)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1)
            };
            let (s, c, th) = (n("sockets"), n("cores"), n("threads"));
            caps.sockets = u8::try_from(s).unwrap_or(u8::MAX);
            caps.cores = u16::try_from(s * c).unwrap_or(u16::MAX);
            caps.threads = u16::try_from(s * c * th).unwrap_or(u16::MAX);
        }
    } else {
        caps.sockets = u8::try_from(sockets.len()).unwrap_or(u8::MAX);
        caps.cores = u16::try_from(cores.len()).unwrap_or(u16::MAX);
        caps.threads = u16::try_from(threads.len()).unwrap_or(u16::MAX);
    }
    caps.memory = if memory > 0 { memory } else { node_memory };

    // The guest: hvm on the host's architecture; its machine type is the first
    // listed, in its canonical name when it has one.
    let guest = root
        .children()
        .filter(|n| n.has_tag_name("guest"))
        .find(|g| {
            text(child(*g, "os_type")) == "hvm"
                && child(*g, "arch").and_then(|a| a.attribute("name")) == Some(arch.as_str())
        })
        .ok_or_else(|| format!("libvirt offers no hvm guest for the host architecture {arch:?}"))?;
    let garch = child(guest, "arch").ok_or("libvirt capabilities: guest without <arch>")?;
    caps.guest_emulator = text(child(garch, "emulator"));
    // No machine listed (libvirt's test driver): empty, libvirt's default then.
    caps.guest_machine_name = child(garch, "machine")
        .map(|m| {
            m.attribute("canonical")
                .map(str::to_owned)
                .unwrap_or_else(|| text(Some(m)))
        })
        .unwrap_or_default();
    caps.arch = arch;
    Ok(caps)
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SOCKETS: &str = r#"<capabilities><host>
      <cpu><arch>x86_64</arch><model>EPYC</model><vendor>AMD</vendor>
        <topology sockets='2' dies='1' cores='2' threads='2'/></cpu>
      <topology><cells num='2'>
        <cell id='0'><memory unit='KiB'>1048576</memory><cpus num='4'>
          <cpu id='0' socket_id='0' core_id='0'/><cpu id='1' socket_id='0' core_id='0'/>
          <cpu id='2' socket_id='0' core_id='1'/><cpu id='3' socket_id='0' core_id='1'/></cpus></cell>
        <cell id='1'><memory unit='KiB'>1048576</memory><cpus num='4'>
          <cpu id='4' socket_id='1' core_id='0'/><cpu id='5' socket_id='1' core_id='0'/>
          <cpu id='6' socket_id='1' core_id='1'/><cpu id='7' socket_id='1' core_id='1'/></cpus></cell>
      </cells></topology></host>
      <guest><os_type>hvm</os_type><arch name='i686'><emulator>/usr/bin/qemu-system-i386</emulator><machine>pc</machine></arch></guest>
      <guest><os_type>hvm</os_type><arch name='x86_64'><wordsize>64</wordsize>
        <emulator>/usr/bin/qemu-system-x86_64</emulator>
        <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
        <machine maxCpus='255'>pc-i440fx-7.2</machine></arch></guest>
    </capabilities>"#;

    #[test]
    fn counts_sockets_cores_threads_and_memory_over_numa_cells() {
        let caps = parse(TWO_SOCKETS, 0).unwrap();
        assert_eq!(
            caps,
            NodeCapabilities {
                arch: "x86_64".into(),
                vendor: "AMD".into(),
                model: "EPYC".into(),
                sockets: 2,
                cores: 4,
                threads: 8,
                memory: 2 << 30,
                guest_emulator: "/usr/bin/qemu-system-x86_64".into(),
                guest_machine_name: "pc-i440fx-7.2".into(),
            }
        );
        let json = serde_json::to_value(&caps).unwrap();
        assert_eq!(json["GuestMachineName"], "pc-i440fx-7.2");
        assert_eq!(json["Sockets"], 2);
    }

    #[test]
    fn refuses_a_host_without_an_hvm_guest() {
        let xml = TWO_SOCKETS.replace(
            "<os_type>hvm</os_type><arch name='x86_64'",
            "<os_type>xen</os_type><arch name='x86_64'",
        );
        let err = parse(&xml, 0).unwrap_err();
        assert!(
            err.contains("no hvm guest for the host architecture \"x86_64\""),
            "{err}"
        );
    }
}
