//! The DHCP server against ISC `dhclient` (Debian's isc-dhcp-client) across a veth pair
//! between two throwaway network namespaces (root only): a lease with its options, then
//! a release.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::{Lab, NsServer, suffix, wait_for};
use kowabunga_dhcp::engine::LeaseState;

/// dhclient's files for one run; its daemon is stopped on drop.
struct Dhclient<'a> {
    lab: &'a Lab,
    pid: PathBuf,
    leases: PathBuf,
    script: PathBuf,
    log: PathBuf,
}

impl<'a> Dhclient<'a> {
    fn new(lab: &'a Lab) -> Self {
        let dir = &lab.state.0;
        let tag = suffix();
        let log = dir.join(format!("dhclient-{tag}.log"));
        let script = dir.join(format!("dhclient-{tag}.sh"));
        // dhclient-script's variables: reason, new_ip_address, new_routers...
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"reason=$reason ip=$new_ip_address mask=$new_subnet_mask \
                 routers=$new_routers dns=$new_domain_name_servers domain=$new_domain_name \
                 lease=$new_dhcp_lease_time server=$new_dhcp_server_identifier \
                 mtu=$new_interface_mtu\" >> {}\n",
                log.display()
            ),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .args(["+x", &script.display().to_string()])
            .status()
            .unwrap();
        Dhclient {
            lab,
            pid: dir.join(format!("dhclient-{tag}.pid")),
            leases: dir.join(format!("dhclient-{tag}.leases")),
            script,
            log,
        }
    }

    fn run(&self, extra: &str) -> (bool, String) {
        self.lab.client.try_sh(&format!(
            "dhclient -4 {extra} -pf {} -lf {} -sf {} {}",
            self.pid.display(),
            self.leases.display(),
            self.script.display(),
            self.lab.client_if
        ))
    }

    fn events(&self) -> Vec<common::Event> {
        common::read_events(&self.log)
            .into_iter()
            .map(|e| {
                // Same key=value form as udhcpc's log, `reason` for `event`.
                common::Event(
                    e.0.into_iter()
                        .map(|(k, v)| {
                            if k == "reason" {
                                ("event".into(), v)
                            } else {
                                (k, v)
                            }
                        })
                        .collect(),
                )
            })
            .collect()
    }
}

impl Drop for Dhclient<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[test]
fn dhclient_gets_a_lease_and_releases_it() {
    let lab = Lab::new("isc");
    let server = NsServer::start(
        &lab.server,
        &lab.state.0.join("dhcp"),
        &lab.doc(
            "domain = \"acme.local\"",
            "pools = [{ first = \"10.0.0.10\", last = \"10.0.0.20\" }]\nlease_time = 300\nmtu = 1400",
        ),
    );
    let client = Dhclient::new(&lab);
    let (ok, out) = client.run("-1");
    assert!(ok, "{out}");
    let events = client.events();
    let bound = events
        .iter()
        .rfind(|e| e.get("event") == "BOUND")
        .unwrap_or_else(|| panic!("no BOUND: {events:?} {out}"));
    assert_eq!(bound.get("ip"), "10.0.0.10", "{bound:?}");
    assert_eq!(bound.get("mask"), "255.255.255.0", "{bound:?}");
    assert_eq!(bound.get("routers"), "10.0.0.1", "{bound:?}");
    assert_eq!(bound.get("dns"), "10.0.0.1", "{bound:?}");
    assert_eq!(bound.get("domain"), "acme.local", "{bound:?}");
    assert_eq!(bound.get("lease"), "300", "{bound:?}");
    assert_eq!(bound.get("server"), "10.0.0.1", "{bound:?}");
    assert_eq!(bound.get("mtu"), "1400", "{bound:?}");
    let state = |s: &NsServer| {
        s.server
            .leases()
            .links
            .get(&lab.server_if)
            .and_then(|l| l.leases.get(&"10.0.0.10".parse().unwrap()).map(|l| l.state))
    };
    assert_eq!(state(&server), Some(LeaseState::Bound));
    // dhclient's script does not configure the address here (ours only logs); the
    // release is unicast from it, so configure it as dhclient-script would.
    lab.client
        .sh(&format!("ip addr add 10.0.0.10/24 dev {}", lab.client_if));
    let (ok, out) = client.run("-r");
    assert!(ok, "{out}");
    wait_for("the release", || {
        state(&server) == Some(LeaseState::Released)
    });
}
