//! The keepalived configuration of a [`VrrpConfig`].
//!
//! Every instance starts as `BACKUP`, so that a node that boots or reloads never claims
//! the addresses before it has heard the others: the highest priority wins the
//! election (`nopreempt` when the section turns preemption off). Whole-second
//! intervals speak VRRPv2 (upstream's keepalived default); a sub-second one VRRPv3.
//!
//! With `[vrrp.conntrack_sync]`, the instances move together (one `vrrp_sync_group`:
//! a NAT gateway's inside and outside addresses must be on the same node) and each
//! transition runs [`FAILOVER_SCRIPT`], which tells conntrackd to commit the flows
//! the other node synced (becoming master) or to resync from the new master.

use std::fmt::Write as _;

use crate::model::VrrpConfig;

/// The image's transition script (overlays/kiwi): `primary`, `backup` or `fault`.
pub const FAILOVER_SCRIPT: &str = "/usr/lib/kowabunga/conntrack-failover";

/// The instance's name in keepalived (and in its logs): `<link>_<vrid>`.
pub fn instance_name(link: &str, vrid: u8) -> String {
    format!("{link}_{vrid}")
}

/// keepalived.conf for `config`.
pub fn render(config: &VrrpConfig) -> String {
    let mut out = String::from(
        "# Rendered by kiwi from the [vrrp] section of its desired state (agents/vrrp).\n\
         global_defs {\n    router_id kiwi\n",
    );
    if config.advert_interval.needs_vrrp3() {
        out.push_str("    vrrp_version 3\n");
    }
    let sync = config.conntrack_sync.is_some();
    if sync {
        // The script is root's, on the read-only root: keepalived runs it as root.
        out.push_str("    script_user root\n    enable_script_security\n");
    }
    out.push_str("}\n");
    let notify = |out: &mut String, indent: &str| {
        for (event, arg) in [
            ("notify_master", "primary"),
            ("notify_backup", "backup"),
            ("notify_fault", "fault"),
        ] {
            let _ = writeln!(out, "{indent}{event} \"{FAILOVER_SCRIPT} {arg}\"");
        }
    };
    // keepalived ignores a sync group of one instance: the notifications go on the
    // instance itself then.
    let grouped = sync && config.instances.len() > 1;
    if grouped {
        out.push_str("\nvrrp_sync_group kiwi {\n    group {\n");
        for inst in &config.instances {
            let _ = writeln!(out, "        {}", instance_name(&inst.link, inst.vrid));
        }
        out.push_str("    }\n");
        notify(&mut out, "    ");
        out.push_str("}\n");
    }
    for inst in &config.instances {
        let _ = write!(
            out,
            "\nvrrp_instance {} {{\n    state BACKUP\n    interface {}\n    virtual_router_id {}\n    priority {}\n    advert_int {}\n",
            instance_name(&inst.link, inst.vrid),
            inst.link,
            inst.vrid,
            inst.priority,
            config.advert_interval
        );
        if !config.preempt {
            out.push_str("    nopreempt\n");
        }
        if sync && !grouped {
            notify(&mut out, "    ");
        }
        if !inst.unicast_peers.is_empty() {
            out.push_str("    unicast_peer {\n");
            for peer in &inst.unicast_peers {
                let _ = writeln!(out, "        {peer}");
            }
            out.push_str("    }\n");
        }
        out.push_str("    virtual_ipaddress {\n");
        for vip in &inst.vips {
            let _ = writeln!(out, "        {vip} dev {}", inst.link);
        }
        out.push_str("    }\n}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::{Centiseconds, SyncConfig, VrrpInstance, effective};
    use kowabunga_model::{Document, Format};

    #[test]
    fn golden() {
        let doc = Document::parse(
            b"version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n\
              [[network.links]]\nname = \"eth1\"\naddresses = [\"10.0.0.2/24\"]\n\
              [[network.links]]\nname = \"vlan102\"\nkind = \"vlan\"\nparent = \"eth1\"\nid = 102\naddresses = [\"10.102.0.2/24\", \"fd02::2/64\"]\n\
              [vrrp]\npriority = 150\npreempt = false\n\
              [[vrrp.instance]]\nlink = \"vlan102\"\nvrid = 102\nvips = [\"10.102.0.1/24\"]\nunicast_peers = [\"10.102.0.3\"]\n\
              [[vrrp.instance]]\nlink = \"vlan102\"\nvrid = 103\nvips = [\"fd02::1/64\"]\npriority = 50\n",
            Format::Toml,
        )
        .unwrap();
        let text = render(&effective(&doc).unwrap().unwrap());
        assert_eq!(
            text,
            "# Rendered by kiwi from the [vrrp] section of its desired state (agents/vrrp).
global_defs {
    router_id kiwi
}

vrrp_instance vlan102_102 {
    state BACKUP
    interface vlan102
    virtual_router_id 102
    priority 150
    advert_int 1
    nopreempt
    unicast_peer {
        10.102.0.3
    }
    virtual_ipaddress {
        10.102.0.1/24 dev vlan102
    }
}

vrrp_instance vlan102_103 {
    state BACKUP
    interface vlan102
    virtual_router_id 103
    priority 50
    advert_int 1
    nopreempt
    virtual_ipaddress {
        fd02::1/64 dev vlan102
    }
}
"
        );
    }

    /// keepalived's own check accepts what is rendered (keepalived comes with
    /// `scripts/install-deps.sh --for test`; the daemons reconciler runs the same check
    /// on the node, after the network reconciler made the links). The check wants the
    /// interface to exist and not be loopback: it runs in a network namespace of its own
    /// holding a veth pair (root, as the fast tier runs).
    fn instance(link: &str, vrid: u8, vip: &str) -> VrrpInstance {
        VrrpInstance {
            link: link.into(),
            vrid,
            priority: 100,
            vips: vec![vip.parse().unwrap()],
            unicast_peers: vec![],
        }
    }

    fn synced(instances: Vec<VrrpInstance>) -> VrrpConfig {
        VrrpConfig {
            preempt: true,
            advert_interval: Centiseconds(50),
            conntrack_sync: Some(SyncConfig {
                link: "vk0".into(),
                local: "10.0.0.2".parse().unwrap(),
                peer: "10.0.0.3".parse().unwrap(),
                own_addresses: vec!["10.0.0.2".parse().unwrap()],
            }),
            instances,
        }
    }

    /// With conntrack sync, two instances move together and the group runs the
    /// transition script; a sub-second interval speaks VRRPv3.
    #[test]
    fn golden_with_conntrack_sync() {
        let text = render(&synced(vec![
            instance("vk0", 1, "10.0.0.1/24"),
            instance("vk1", 2, "10.1.0.1/24"),
        ]));
        assert_eq!(
            text,
            "# Rendered by kiwi from the [vrrp] section of its desired state (agents/vrrp).
global_defs {
    router_id kiwi
    vrrp_version 3
    script_user root
    enable_script_security
}

vrrp_sync_group kiwi {
    group {
        vk0_1
        vk1_2
    }
    notify_master \"/usr/lib/kowabunga/conntrack-failover primary\"
    notify_backup \"/usr/lib/kowabunga/conntrack-failover backup\"
    notify_fault \"/usr/lib/kowabunga/conntrack-failover fault\"
}

vrrp_instance vk0_1 {
    state BACKUP
    interface vk0
    virtual_router_id 1
    priority 100
    advert_int 0.5
    virtual_ipaddress {
        10.0.0.1/24 dev vk0
    }
}

vrrp_instance vk1_2 {
    state BACKUP
    interface vk1
    virtual_router_id 2
    priority 100
    advert_int 0.5
    virtual_ipaddress {
        10.1.0.1/24 dev vk1
    }
}
"
        );
        // One instance: no group (keepalived would drop it), the script on the instance.
        let one = render(&synced(vec![instance("vk0", 1, "10.0.0.1/24")]));
        assert!(!one.contains("vrrp_sync_group"), "{one}");
        assert!(
            one.contains("    advert_int 0.5\n    notify_master \"/usr/lib/kowabunga/conntrack-failover primary\"\n"),
            "{one}"
        );
    }

    /// keepalived's own check accepts what is rendered (keepalived comes with
    /// `scripts/install-deps.sh --for test`; the daemons reconciler runs the same check
    /// on the node, after the network reconciler made the links). The check wants the
    /// interface to exist and not be loopback: it runs in a network namespace of its own
    /// holding two veth pairs (root, as the fast tier runs).
    #[test]
    fn keepalived_accepts_the_rendered_files() {
        let plain = VrrpConfig {
            preempt: true,
            advert_interval: Centiseconds(100),
            conntrack_sync: None,
            instances: vec![VrrpInstance {
                unicast_peers: vec!["10.0.0.3".parse().unwrap()],
                ..instance("vk0", 7, "10.0.0.1/24")
            }],
        };
        let grouped = synced(vec![
            instance("vk0", 1, "10.0.0.1/24"),
            instance("vk2", 2, "10.1.0.1/24"),
        ]);
        let single = synced(vec![instance("vk0", 1, "10.0.0.1/24")]);
        for config in [plain, grouped, single] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("keepalived.conf");
            let text = render(&config);
            std::fs::write(&file, &text).unwrap();
            let out = std::process::Command::new("unshare")
                .args(["--net", "sh", "-c"])
                .arg("ip link add vk0 type veth peer name vk1 && ip link add vk2 type veth peer name vk3 && exec keepalived --config-test --use-file \"$0\"")
                .arg(&file)
                .output()
                .expect("unshare and keepalived (scripts/install-deps.sh --for test)");
            assert!(
                out.status.success(),
                "keepalived --config-test on\n{text}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
