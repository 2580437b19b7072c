//! Two Kiwis on one link, each serving its own half of the range (split pools,
//! `docs/dhcp.md`): clients get distinct addresses, each bound at exactly one server,
//! and when one server is gone its clients get addresses from the other. Root only:
//! three throwaway namespaces (two servers, and a bridge with the clients' macvlans).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use common::{Netns, NsServer, TempDir, read_events, suffix};
use kowabunga_dhcp::engine::LeaseState;

fn doc(link: &str, address: &str, first: &str, last: &str) -> String {
    format!(
        r#"version = 1
node = "kiwi-pair"
issued_at = "2026-01-01T00:00:00Z"
expires_at = "2099-01-01T00:00:00Z"

[[network.links]]
name = "{link}"
addresses = ["{address}/24"]

[dhcp]
ping_check = false

[dhcp.links.{link}]
pools = [{{ first = "{first}", last = "{last}" }}]
"#
    )
}

/// The addresses `server` has bound on `link`.
fn bound(server: &NsServer, link: &str) -> BTreeSet<Ipv4Addr> {
    server
        .server
        .leases()
        .links
        .get(link)
        .map(|l| {
            l.leases
                .values()
                .filter(|l| l.state == LeaseState::Bound)
                .map(|l| l.address)
                .collect()
        })
        .unwrap_or_default()
}

/// One `udhcpc -q` run on `link` of `ns`: the address it got, if any.
fn lease(ns: &Netns, state: &TempDir, link: &str) -> Option<String> {
    let log = state.0.join(format!("log-{}", suffix()));
    let script = state.0.join(format!("script-{}", suffix()));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"event=$1 ip=$ip serverid=$serverid\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", &script.display().to_string()])
        .status()
        .unwrap();
    let (ok, _) = ns.try_sh(&format!(
        "busybox udhcpc -f -q -n -t 4 -T 1 -A 1 -i {link} -s {}",
        script.display()
    ));
    let events = read_events(&log);
    ok.then(|| events.last().map(|e| e.get("ip").to_owned()))
        .flatten()
}

#[test]
fn split_pools_never_give_an_address_twice_and_survive_a_server() {
    let a = Netns::new("pa");
    let b = Netns::new("pb");
    let sw = Netns::new("psw");
    let state = TempDir::new("pair");
    let sfx = suffix();
    let (a_if, b_if) = (format!("dpa{sfx}"), format!("dpb{sfx}"));
    let br = format!("dbr{sfx}");
    sw.sh(&format!(
        "ip link add {br} type bridge && ip link set {br} up"
    ));
    for (ns, link, port) in [(&a, &a_if, "pa"), (&b, &b_if, "pb")] {
        ns.sh(&format!(
            "ip link add {link} type veth peer name {port}{sfx} netns {}",
            sw.name
        ));
        ns.sh(&format!("ip link set {link} up"));
        sw.sh(&format!(
            "ip link set {port}{sfx} master {br} && ip link set {port}{sfx} up"
        ));
    }
    a.sh(&format!("ip addr add 10.0.0.1/24 dev {a_if}"));
    b.sh(&format!("ip addr add 10.0.0.2/24 dev {b_if}"));
    let server_a = NsServer::start(
        &a,
        &state.0.join("a"),
        &doc(&a_if, "10.0.0.1", "10.0.0.10", "10.0.0.19"),
    );
    // Six clients, each its own MAC (macvlans on the bridge).
    let clients: Vec<String> = (1..=6).map(|i| format!("dm{i}{sfx}")).collect();
    for (i, c) in clients.iter().enumerate() {
        sw.sh(&format!(
            "ip link add {c} link {br} address 52:54:00:00:01:{:02x} type macvlan mode bridge \
             && ip link set {c} up",
            i + 1
        ));
    }
    // The first three while only A serves (so that A surely has clients), the others
    // with both serving (each takes whichever offer comes first).
    let mut got = Vec::new();
    for c in &clients[..3] {
        got.push(lease(&sw, &state, c).expect("a lease"));
    }
    let server_b = NsServer::start(
        &b,
        &state.0.join("b"),
        &doc(&b_if, "10.0.0.2", "10.0.0.20", "10.0.0.29"),
    );
    for c in &clients[3..] {
        got.push(lease(&sw, &state, c).expect("a lease"));
    }
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "{got:?}");
    let (from_a, from_b) = (bound(&server_a, &a_if), bound(&server_b, &b_if));
    assert_eq!(
        from_a.len() + from_b.len(),
        got.len(),
        "{from_a:?} {from_b:?}"
    );
    let a_half = |ip: &Ipv4Addr| (10..=19).contains(&ip.octets()[3]);
    assert!(from_a.iter().all(a_half), "{from_a:?}");
    assert!(!from_b.iter().any(a_half), "{from_b:?}");
    for ip in from_a.iter().chain(&from_b) {
        assert!(
            got.contains(&ip.to_string()),
            "{ip} bound but not given: {got:?}"
        );
    }
    // Server A goes; its clients come back (asking for their old address) and get
    // one from B's half.
    let a_clients: Vec<&String> = clients
        .iter()
        .zip(&got)
        .filter(|(_, ip)| a_half(&ip.parse().unwrap()))
        .map(|(c, _)| c)
        .collect();
    assert!(a_clients.len() >= 3, "{got:?}");
    server_a.stop();
    for c in a_clients {
        let ip: Ipv4Addr = lease(&sw, &state, c)
            .expect("a lease from the other server")
            .parse()
            .unwrap();
        assert!(!a_half(&ip), "{ip}");
    }
    // Every client is now bound at B, in B's half.
    let from_b = bound(&server_b, &b_if);
    assert_eq!(from_b.len(), clients.len(), "{from_b:?}");
    assert!(!from_b.iter().any(a_half), "{from_b:?}");
}
