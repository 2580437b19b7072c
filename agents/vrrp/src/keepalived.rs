//! The keepalived configuration of a [`VrrpConfig`].
//!
//! Every instance starts as `BACKUP`, so that a node that boots or reloads never claims
//! the addresses before it has heard the others: the highest priority wins the
//! election (`nopreempt` when the section turns preemption off).

use std::fmt::Write as _;

use crate::model::VrrpConfig;

/// The instance's name in keepalived (and in its logs): `<link>_<vrid>`.
pub fn instance_name(link: &str, vrid: u8) -> String {
    format!("{link}_{vrid}")
}

/// keepalived.conf for `config`.
pub fn render(config: &VrrpConfig) -> String {
    let mut out = String::from(
        "# Rendered by kiwi from the [vrrp] section of its desired state (agents/vrrp).\n\
         global_defs {\n    router_id kiwi\n}\n",
    );
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
    use crate::model::{VrrpInstance, effective};
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
    #[test]
    fn keepalived_accepts_the_rendered_file() {
        let config = VrrpConfig {
            preempt: true,
            advert_interval: 1,
            instances: vec![VrrpInstance {
                link: "vk0".into(),
                vrid: 7,
                priority: 100,
                vips: vec!["10.0.0.1/24".parse().unwrap()],
                unicast_peers: vec!["10.0.0.3".parse().unwrap()],
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keepalived.conf");
        std::fs::write(&file, render(&config)).unwrap();
        let out = std::process::Command::new("unshare")
            .args(["--net", "sh", "-c"])
            .arg("ip link add vk0 type veth peer name vk1 && exec keepalived --config-test --use-file \"$0\"")
            .arg(&file)
            .output()
            .expect("unshare and keepalived (scripts/install-deps.sh --for test)");
        assert!(
            out.status.success(),
            "keepalived --config-test: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
