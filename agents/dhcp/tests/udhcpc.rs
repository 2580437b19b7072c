//! The DHCP server against a real client, busybox `udhcpc`, across a veth pair between
//! two throwaway network namespaces (root only); and raw datagrams, well and badly
//! formed, to its socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use common::{Lab, NsServer, Udhcpc};
use dhcproto::Decodable;
use dhcproto::v4::{DhcpOption, Message, MessageType};
use kowabunga_dhcp::engine::LeaseState;
use kowabunga_dhcp::wire;
use kowabunga_model::network::MacAddr;
use nix::sys::signal::Signal;

const POOL: &str = "pools = [{ first = \"10.0.0.10\", last = \"10.0.0.20\" }]";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The state of the server's lease on `address`, if it has one (offers aside).
fn lease_state(server: &NsServer, lab: &Lab, address: &str) -> Option<LeaseState> {
    server
        .server
        .leases()
        .links
        .get(&lab.server_if)
        .and_then(|l| l.leases.get(&ip(address)))
        .map(|l| l.state)
}

#[test]
fn udhcpc_gets_an_address_and_the_options_renews_and_releases() {
    let lab = Lab::new("life");
    let server = NsServer::start(
        &lab.server,
        &lab.state.0.join("dhcp"),
        &lab.doc(
            "domain = \"acme.local\"\nntp = [\"10.0.0.3\"]",
            &format!(
                "{POOL}\nlease_time = 120\nmtu = 1400\nroutes = [{{ to = \"10.8.0.0/16\", via = \"10.0.0.254\" }}]"
            ),
        ),
    );
    let client = Udhcpc::start(&lab, "");
    let bound = client.wait_event("bound", 1);
    assert_eq!(bound.get("ip"), "10.0.0.10", "{bound:?}");
    assert_eq!(bound.get("mask"), "24", "{bound:?}");
    assert_eq!(bound.get("router"), "10.0.0.1", "{bound:?}");
    assert_eq!(bound.get("dns"), "10.0.0.1", "{bound:?}");
    assert_eq!(bound.get("domain"), "acme.local", "{bound:?}");
    assert_eq!(bound.get("ntpsrv"), "10.0.0.3", "{bound:?}");
    assert_eq!(bound.get("mtu"), "1400", "{bound:?}");
    assert_eq!(bound.get("lease"), "120", "{bound:?}");
    assert_eq!(bound.get("serverid"), "10.0.0.1", "{bound:?}");
    assert_eq!(
        bound.get("staticroutes"),
        "10.8.0.0/16 10.0.0.254 0.0.0.0/0 10.0.0.1",
        "{bound:?}"
    );
    assert_eq!(
        lease_state(&server, &lab, "10.0.0.10"),
        Some(LeaseState::Bound)
    );
    // What /status and /metrics show: the pool, one bound lease, the offer and the ACK
    // (more than one of each if the client retransmitted before the answer came).
    let report = server.server.report().links[&lab.server_if].clone();
    assert_eq!(report.pool_size, 11, "{report:?}");
    assert_eq!(report.static_hosts, 0, "{report:?}");
    assert_eq!(report.bound, 1, "{report:?}");
    assert!(report.offers >= 1 && report.acks >= 1, "{report:?}");
    assert_eq!((report.naks, report.declines), (0, 0), "{report:?}");
    // The address is configured by the script: the renewal is unicast from it.
    let addrs = lab
        .client
        .sh(&format!("ip -4 addr show dev {}", lab.client_if));
    assert!(addrs.contains("10.0.0.10/24"), "{addrs}");
    client.signal(Signal::SIGUSR1);
    let renewed = client.wait_event("renew", 1);
    assert_eq!(renewed.get("ip"), "10.0.0.10", "{renewed:?}");
    let acks = server.server.report().links[&lab.server_if].acks;
    assert!(acks > report.acks, "the renewal's ACK counted: {acks}");
    // Released: the server keeps the record, marked released.
    client.signal(Signal::SIGUSR2);
    common::wait_for("the release", || {
        lease_state(&server, &lab, "10.0.0.10") == Some(LeaseState::Released)
    });
    // The store on disk says so too.
    let file = std::fs::read_to_string(lab.state.0.join("dhcp/leases.json")).unwrap();
    assert!(file.contains("\"released\""), "{file}");
    let report = server.server.report();
    assert_eq!(report.links[&lab.server_if].bound, 0, "{report:?}");
    assert_eq!(report.lease_store_error, None, "{report:?}");
}

#[test]
fn static_lease_and_exhaustion_answered_by_silence() {
    let lab = Lab::new("full");
    let server = NsServer::start(
        &lab.server,
        &lab.state.0.join("dhcp"),
        &lab.doc(
            "",
            "pools = [{ first = \"10.0.0.10\", last = \"10.0.0.10\" }]\nhosts = [{ mac = \"52:54:00:00:00:99\", address = \"10.0.0.50\" }]",
        ),
    );
    let (ok, events) = lab.udhcpc_once("");
    assert!(ok, "{events:?}");
    assert_eq!(events.last().unwrap().get("ip"), "10.0.0.10");
    // Another client: the pool is empty, no answer, no lease.
    lab.set_mac("52:54:00:00:00:02");
    let silent_before = server
        .server
        .counters()
        .silent
        .load(std::sync::atomic::Ordering::Relaxed);
    let (ok, events) = lab.udhcpc_once("");
    assert!(!ok, "{events:?}");
    assert!(
        events.iter().all(|e| e.get("event") != "bound"),
        "{events:?}"
    );
    assert!(
        server
            .server
            .counters()
            .silent
            .load(std::sync::atomic::Ordering::Relaxed)
            > silent_before
    );
    // The static host gets its address, pool full or not.
    lab.set_mac("52:54:00:00:00:99");
    let (ok, events) = lab.udhcpc_once("");
    assert!(ok, "{events:?}");
    assert_eq!(events.last().unwrap().get("ip"), "10.0.0.50");
    assert_eq!(
        lease_state(&server, &lab, "10.0.0.50"),
        Some(LeaseState::Bound)
    );
}

#[test]
fn a_restarted_server_keeps_its_leases() {
    let lab = Lab::new("restart");
    let state = lab.state.0.join("dhcp");
    let doc = lab.doc("", POOL);
    let server = NsServer::start(&lab.server, &state, &doc);
    let (ok, events) = lab.udhcpc_once("");
    assert!(ok, "{events:?}");
    assert_eq!(events.last().unwrap().get("ip"), "10.0.0.10");
    server.stop();
    // A new server (a new agent process, or after a reboot) on the same state.
    let server = NsServer::start(&lab.server, &state, &doc);
    assert_eq!(
        lease_state(&server, &lab, "10.0.0.10"),
        Some(LeaseState::Bound)
    );
    lab.set_mac("52:54:00:00:00:02");
    let (ok, events) = lab.udhcpc_once("");
    assert!(ok, "{events:?}");
    assert_eq!(events.last().unwrap().get("ip"), "10.0.0.11", "{events:?}");
    lab.set_mac("52:54:00:00:00:01");
    let (ok, events) = lab.udhcpc_once("");
    assert!(ok, "{events:?}");
    assert_eq!(events.last().unwrap().get("ip"), "10.0.0.10", "{events:?}");
    // A new generation that shrinks the pool keeps what still fits.
    server
        .apply(&lab.doc(
            "",
            "pools = [{ first = \"10.0.0.11\", last = \"10.0.0.20\" }]",
        ))
        .unwrap();
    assert_eq!(lease_state(&server, &lab, "10.0.0.10"), None);
    assert_eq!(
        lease_state(&server, &lab, "10.0.0.11"),
        Some(LeaseState::Bound)
    );
}

#[test]
fn an_address_in_use_is_declined_and_quarantined() {
    let lab = Lab::new("decline");
    // No ping check: the conflict is for the client to find.
    let server = NsServer::start(
        &lab.server,
        &lab.state.0.join("dhcp"),
        &lab.doc("ping_check = false", POOL),
    );
    // Someone on the link already uses the first pool address: udhcpc's ARP check
    // (-a) sees it answer and sends DHCPDECLINE.
    lab.server
        .sh(&format!("ip addr add 10.0.0.10/24 dev {}", lab.server_if));
    let (ok, events) = lab.udhcpc_once("-a");
    assert!(ok, "{events:?}");
    assert_eq!(events.last().unwrap().get("ip"), "10.0.0.11", "{events:?}");
    let leases = server.server.leases();
    let link = &leases.links[&lab.server_if];
    assert!(link.declined.contains_key(&ip("10.0.0.10")), "{link:?}");
    let probes = server
        .server
        .counters()
        .probes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(probes, 0);
    assert!(!link.leases.contains_key(&ip("10.0.0.10")), "{link:?}");
    let report = &server.server.report().links[&lab.server_if];
    assert_eq!(report.declines, 1, "{report:?}");
    assert_eq!(report.bound, 1, "{report:?}");
}

#[test]
fn malformed_datagrams_are_dropped_without_effect() {
    let lab = Lab::new("junk");
    // No ping check: the first DISCOVER gets its offer at once.
    let server = NsServer::start(
        &lab.server,
        &lab.state.0.join("dhcp"),
        &lab.doc("ping_check = false", POOL),
    );
    lab.client
        .sh(&format!("ip addr add 10.0.0.200/24 dev {}", lab.client_if));
    let mac = MacAddr([0x52, 0x54, 0, 0, 0, 7]);
    let good = wire::client_message(
        MessageType::Discover,
        0xfeed,
        &mac,
        Ipv4Addr::UNSPECIFIED,
        vec![],
    );
    let header = good[..240].to_vec();
    let with = |tail: &[u8]| {
        let mut v = header.clone();
        v.extend_from_slice(tail);
        v
    };
    let bad: Vec<Vec<u8>> = vec![
        Vec::new(),
        good[..100].to_vec(),
        good[..239].to_vec(),
        // A message type, then an option running past the end.
        with(&[53, 1, 1, 50, 200, 10, 0]),
        // Options without an End.
        with(&[53, 1, 1]),
        // A requested address of 3 bytes.
        with(&[53, 1, 1, 50, 3, 10, 0, 0, 255]),
        // Bad magic cookie.
        {
            let mut v = good.clone();
            v[236] = 0;
            v
        },
        // Hardware address length 200.
        {
            let mut v = good.clone();
            v[2] = 200;
            v
        },
        // A client network interface option of the wrong length (a debug_assert in
        // dhcproto).
        with(&[53, 1, 1, 94, 1, 1, 255]),
        vec![0xff; 1400],
    ];
    let counters = server.server.counters();
    let seen = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let reply = lab.client.run(|| {
        let socket = UdpSocket::bind("0.0.0.0:68").unwrap();
        socket.set_broadcast(true).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        for datagram in &bad {
            socket.send_to(datagram, "10.0.0.1:67").unwrap();
        }
        // Every bad one is handled before the good one (one thread, in order).
        socket.send_to(&good, "10.0.0.1:67").unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        Message::from_bytes(&buf[..n]).unwrap()
    });
    assert_eq!(reply.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(reply.xid(), 0xfeed);
    assert_eq!(reply.yiaddr(), ip("10.0.0.10"));
    assert!(matches!(
        reply.opts().get(dhcproto::v4::OptionCode::ServerIdentifier),
        Some(DhcpOption::ServerIdentifier(id)) if *id == ip("10.0.0.1")
    ));
    assert_eq!(seen(&counters.received), bad.len() as u64 + 1);
    assert_eq!(
        seen(&counters.dropped_malformed) + seen(&counters.dropped_unserved),
        bad.len() as u64
    );
    assert_eq!(seen(&counters.replies), 1);
    // Nothing bound, nothing written.
    let leases = server.server.leases();
    assert!(
        leases.links[&lab.server_if]
            .leases
            .values()
            .all(|l| l.state == LeaseState::Offered)
    );
    assert!(!lab.state.0.join("dhcp/leases.json").exists());
}

#[test]
fn ping_check_skips_an_address_someone_uses() {
    let lab = Lab::new("ping");
    let server = NsServer::start(&lab.server, &lab.state.0.join("dhcp"), &lab.doc("", POOL));
    // A host that took 10.0.0.10 by hand (the client link itself); udhcpc runs on a
    // macvlan beside it, with its own MAC.
    lab.client
        .sh(&format!("ip addr add 10.0.0.10/24 dev {}", lab.client_if));
    let mv = format!("dhm{}", common::suffix());
    lab.client.sh(&format!(
        "ip link add {mv} link {} address 52:54:00:00:00:42 type macvlan mode bridge \
         && ip link set {mv} up",
        lab.client_if
    ));
    let log = lab.state.0.join("ping.log");
    let script = lab.script(&log);
    let (ok, out) = lab.client.try_sh(&format!(
        "busybox udhcpc -f -q -n -t 6 -T 1 -A 1 -i {mv} -s {}",
        script.display()
    ));
    let events = common::read_events(&log);
    assert!(ok, "{out} {events:?}");
    assert_eq!(events.last().unwrap().get("ip"), "10.0.0.11", "{events:?}");
    let counters = server.server.counters();
    assert!(
        counters
            .conflicts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    let leases = server.server.leases();
    assert!(
        leases.links[&lab.server_if]
            .declined
            .contains_key(&ip("10.0.0.10"))
    );
    // Quarantined on disk too.
    let file = std::fs::read_to_string(lab.state.0.join("dhcp/leases.json")).unwrap();
    assert!(file.contains("10.0.0.10"), "{file}");
}
