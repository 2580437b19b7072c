//! The conntrackd configuration of a [`SyncConfig`]: the connection tracking table
//! replicated to the other Kiwi of the pair, so that established flows (NAT ones
//! included) survive a failover.
//!
//! FT-FW mode (reliable, acknowledged), over UDP unicast to the peer on the sync link:
//! the pair's tables are kept in each other's external cache, and keepalived's
//! transition script ([`crate::keepalived::FAILOVER_SCRIPT`]) commits that cache
//! into the kernel when the node becomes master. Flows from or to the node's own
//! addresses are its own (DNS, Kahuna, SSH) and are not synced; flows to a virtual
//! address are, since a NAT flow's reply goes to the outside VIP it was translated to.
//! Every protocol is synced: conntrackd resolves a `Protocol` filter's names through
//! `/etc/protocols`, which the images do not carry.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::model::SyncConfig;

/// conntrackd's UDP port (the one of its documentation's examples).
pub const PORT: u16 = 3780;

/// The UNIX socket the transition script's `conntrackd -C <file> -c` and the daemon
/// meet on, and the daemon's lock: under /run (the root is read-only).
const CONTROL_SOCKET: &str = "/run/conntrackd.ctl";
const LOCK_FILE: &str = "/run/conntrackd.lock";

fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// conntrackd.conf for `sync`.
pub fn render(sync: &SyncConfig) -> String {
    let mut out = String::from(
        "# Rendered by kiwi from [vrrp.conntrack_sync] of its desired state (agents/vrrp).\n\
         Sync {\n    Mode FTFW {\n        StartupResync on\n    }\n    UDP {\n",
    );
    let _ = write!(
        out,
        "        {fam}_address {local}\n        {fam}_Destination_Address {peer}\n        Port {PORT}\n        Interface {link}\n        SndSocketBuffer 1249280\n        RcvSocketBuffer 1249280\n        Checksum on\n    }}\n}}\n",
        fam = family(sync.local),
        local = sync.local,
        peer = sync.peer,
        link = sync.link,
    );
    let _ = write!(
        out,
        "General {{\n    Systemd on\n    HashSize 32768\n    HashLimit 131072\n    LogFile off\n    Syslog on\n    LockFile {LOCK_FILE}\n    UNIX {{\n        Path {CONTROL_SOCKET}\n    }}\n    NetlinkBufferSize 2097152\n    NetlinkBufferSizeMaxGrowth 8388608\n    Filter From Userspace {{\n        Address Ignore {{\n            IPv4_address 127.0.0.1\n            IPv6_address ::1\n"
    );
    for addr in &sync.own_addresses {
        let _ = writeln!(out, "            {}_address {addr}", family(*addr));
    }
    out.push_str("        }\n    }\n}\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn golden() {
        let sync = SyncConfig {
            link: "eth2".into(),
            local: "10.0.0.2".parse().unwrap(),
            peer: "10.0.0.3".parse().unwrap(),
            own_addresses: vec![
                "10.0.0.2".parse().unwrap(),
                "10.102.0.2".parse().unwrap(),
                "fd00::2".parse().unwrap(),
            ],
        };
        assert_eq!(
            render(&sync),
            "# Rendered by kiwi from [vrrp.conntrack_sync] of its desired state (agents/vrrp).
Sync {
    Mode FTFW {
        StartupResync on
    }
    UDP {
        IPv4_address 10.0.0.2
        IPv4_Destination_Address 10.0.0.3
        Port 3780
        Interface eth2
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }
}
General {
    Systemd on
    HashSize 32768
    HashLimit 131072
    LogFile off
    Syslog on
    LockFile /run/conntrackd.lock
    UNIX {
        Path /run/conntrackd.ctl
    }
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {
        Address Ignore {
            IPv4_address 127.0.0.1
            IPv6_address ::1
            IPv4_address 10.0.0.2
            IPv4_address 10.102.0.2
            IPv6_address fd00::2
        }
    }
}
"
        );
        let v6 = SyncConfig {
            local: "fd00::2".parse().unwrap(),
            peer: "fd00::3".parse().unwrap(),
            ..sync
        };
        let text = render(&v6);
        assert!(
            text.contains(
                "        IPv6_address fd00::2\n        IPv6_Destination_Address fd00::3\n"
            ),
            "{text}"
        );
    }

    /// conntrackd itself reads the rendered file and serves its control socket
    /// (conntrackd comes with `scripts/install-deps.sh --for test`). It has no check
    /// mode: it runs, in a network and mount namespace of its own (a veth pair for the
    /// sync link, a private /run), until it answers `-s` or the attempts run out.
    #[test]
    fn conntrackd_runs_on_the_rendered_file() {
        let sync = SyncConfig {
            link: "vk0".into(),
            local: "10.0.0.2".parse().unwrap(),
            peer: "10.0.0.3".parse().unwrap(),
            own_addresses: vec!["10.0.0.2".parse().unwrap()],
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conntrackd.conf");
        std::fs::write(&file, render(&sync)).unwrap();
        let script = r#"
mount -t tmpfs tmpfs /run
ip link add vk0 type veth peer name vk1 && ip addr add 10.0.0.2/24 dev vk0 && ip link set vk0 up && ip link set vk1 up || exit 2
conntrackd -C "$0" > "$0.log" 2>&1 &
for i in $(seq 1 100); do
  if conntrackd -C "$0" -s network > "$0.stats" 2>&1; then conntrackd -C "$0" -k; exit 0; fi
  sleep 0.2
done
cat "$0.log"; exit 1
"#;
        let out = std::process::Command::new("unshare")
            .args(["--net", "--mount", "sh", "-c", script])
            .arg(&file)
            .output()
            .expect("unshare and conntrackd (scripts/install-deps.sh --for test)");
        assert!(
            out.status.success(),
            "conntrackd on the rendered file: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stats = std::fs::read_to_string(dir.path().join("conntrackd.conf.stats")).unwrap();
        assert!(stats.contains("active device=vk0"), "{stats}");
    }
}
