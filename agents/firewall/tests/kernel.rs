//! The firewall reconciler against a real kernel, in throwaway network namespaces
//! (root only). Traffic stays between namespaces these tests create.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

#[path = "../../network/tests/netns/mod.rs"]
mod netns;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use kowabunga_firewall::{FirewallReconciler, NetbootPorts};
use kowabunga_model::{Document, ErrorKind as Kind, Format, Reconciler};
use netns::{Netns, veth};

fn document(version: u64, body: &str) -> Document {
    let text = format!(
        "version = {version}\nnode = \"kiwi-test\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n{body}"
    );
    Document::parse(text.as_bytes(), Format::Toml).expect("test document parses")
}

/// Plan and apply `desired` in `ns`; returns the planned actions.
fn converge(
    ns: &Netns,
    fw: &FirewallReconciler,
    desired: &Document,
    in_force: Option<&Document>,
) -> Vec<String> {
    ns.block_on(|| async {
        let planned = fw
            .plan(desired, in_force)
            .await
            .unwrap_or_else(|e| panic!("plan: {e}"));
        let actions = planned.actions.iter().map(ToString::to_string).collect();
        fw.apply(planned.payload)
            .await
            .unwrap_or_else(|e| panic!("apply: {e}"));
        fw.check(desired)
            .await
            .unwrap_or_else(|e| panic!("check: {e}"));
        actions
    })
}

fn plan_actions(ns: &Netns, fw: &FirewallReconciler, desired: &Document) -> Vec<String> {
    ns.block_on(|| async {
        let planned = fw
            .plan(desired, None)
            .await
            .unwrap_or_else(|e| panic!("plan: {e}"));
        planned.actions.iter().map(ToString::to_string).collect()
    })
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Connected,
    Refused,
    TimedOut,
}

fn connect(from: &Netns, to: SocketAddr) -> Outcome {
    from.run(
        || match TcpStream::connect_timeout(&to, Duration::from_millis(1000)) {
            Ok(_) => Outcome::Connected,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Outcome::Refused,
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
                Outcome::TimedOut
            }
            Err(e) => panic!("connect {to}: unexpected {e}"),
        },
    )
}

fn listen(ns: &Netns, port: u16) -> TcpListener {
    ns.run(|| TcpListener::bind(("0.0.0.0", port)).expect("bind"))
}

const NET: &str = "[network]\n[[network.links]]\nname = \"r0\"\n";

/// Rules decide which TCP connections get through, a foreign table survives every
/// generation, re-planning is empty, and dropping the section removes our tables.
#[test]
fn rules_are_effective_and_foreign_tables_survive() {
    let router = Netns::new("fw-r");
    let client = Netns::new("fw-c");
    veth(&router, "r0", &client, "c0");
    router.sh("ip addr add 10.9.0.1/24 dev r0");
    client.sh("ip addr add 10.9.0.2/24 dev c0");
    router.sh("nft add table inet foreign && nft add chain inet foreign keep '{ type filter hook input priority 10; }' && nft add rule inet foreign keep counter");
    let _l: Vec<TcpListener> = [22, 80, 81]
        .into_iter()
        .map(|p| listen(&router, p))
        .collect();
    let at = |p: u16| SocketAddr::from(([10, 9, 0, 1], p));
    assert_eq!(
        connect(&client, at(80)),
        Outcome::Connected,
        "before any firewall"
    );

    let fw = FirewallReconciler::new().expect("nft installed");
    let a = document(
        1,
        &format!(
            "{NET}[firewall]\ninput = \"drop\"\n[[firewall.rules]]\nchain = \"input\"\niif = \"r0\"\nproto = \"tcp\"\ndport = 22\naction = \"accept\"\ncomment = \"ssh\"\n[[firewall.rules]]\nchain = \"input\"\nproto = \"tcp\"\ndport = \"81-81\"\naction = \"reject\"\n"
        ),
    );
    let actions = converge(&router, &fw, &a, None);
    assert_eq!(
        actions,
        ["create table inet kowabunga: policy input drop, forward accept, output accept; 2 rules"]
    );
    assert_eq!(
        connect(&client, at(22)),
        Outcome::Connected,
        "accepted by rule"
    );
    assert_eq!(
        connect(&client, at(80)),
        Outcome::TimedOut,
        "dropped by policy"
    );
    assert_eq!(
        connect(&client, at(81)),
        Outcome::Refused,
        "rejected by rule"
    );

    // Idempotent: nothing to do, nothing loaded.
    let loads = fw.loads();
    assert!(plan_actions(&router, &fw, &a).is_empty());
    converge(&router, &fw, &a, Some(&a));
    assert_eq!(fw.loads(), loads, "second apply loaded a ruleset");

    // Drift: a rule deleted by hand is noticed and put back.
    router.sh("nft flush chain inet kowabunga input");
    assert_eq!(plan_actions(&router, &fw, &a).len(), 1);

    // Modify.
    let b = document(
        2,
        &format!(
            "{NET}[firewall]\ninput = \"drop\"\n[[firewall.rules]]\nchain = \"input\"\nproto = \"tcp\"\ndport = 80\naction = \"accept\"\n"
        ),
    );
    converge(&router, &fw, &b, Some(&a));
    assert_eq!(connect(&client, at(80)), Outcome::Connected);
    assert_eq!(connect(&client, at(22)), Outcome::TimedOut);
    assert!(router.sh("nft list tables").contains("table inet foreign"));

    // Removal: the section is gone, so are our tables; the foreign one stays.
    let c = document(3, NET);
    let actions = converge(&router, &fw, &c, Some(&b));
    assert_eq!(actions, ["delete table inet kowabunga"]);
    let tables = router.sh("nft list tables");
    assert_eq!(tables.trim(), "table inet foreign", "{tables}");
    assert!(
        router
            .sh("nft list chain inet foreign keep")
            .contains("counter")
    );
    assert_eq!(connect(&client, at(22)), Outcome::Connected);
    assert!(plan_actions(&router, &fw, &c).is_empty());
}

/// Masquerade and a port forward through a router namespace: the server sees the
/// router's address, and cannot reach the client without NAT.
#[test]
fn masquerade_and_dnat_are_effective() {
    let client = Netns::new("nat-c");
    let router = Netns::new("nat-r");
    let server = Netns::new("nat-s");
    veth(&client, "c0", &router, "rin");
    veth(&router, "rout", &server, "s0");
    client.sh("ip addr add 10.1.0.2/24 dev c0 && ip route add default via 10.1.0.1");
    router.sh("ip addr add 10.1.0.1/24 dev rin && ip addr add 10.2.0.1/24 dev rout && echo 1 > /proc/sys/net/ipv4/ip_forward");
    server.sh("ip addr add 10.2.0.2/24 dev s0"); // no route back to 10.1.0.0/24
    let listener = listen(&server, 8080);
    let target = SocketAddr::from(([10, 2, 0, 2], 8080));
    assert_eq!(
        connect(&client, target),
        Outcome::TimedOut,
        "without NAT the server cannot answer"
    );

    let fw = FirewallReconciler::new().expect("nft installed");
    let doc = document(
        1,
        "[network]\n[[network.links]]\nname = \"rin\"\n[[network.links]]\nname = \"rout\"\n[firewall]\n[[firewall.nat.masquerade]]\noif = \"rout\"\nsaddr = \"10.1.0.0/24\"\n[[firewall.nat.dnat]]\niif = \"rin\"\nproto = \"tcp\"\ndport = 2222\nto = \"10.2.0.2:8080\"\n",
    );
    let actions = converge(&router, &fw, &doc, None);
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(
        actions[1].starts_with("create table ip kowabunga_nat: 1 masquerade, 1 dnat"),
        "{actions:?}"
    );

    assert_eq!(connect(&client, target), Outcome::Connected, "masqueraded");
    let (_, peer) = listener.accept().expect("accept");
    assert_eq!(
        peer.ip().to_string(),
        "10.2.0.1",
        "server sees the router's address"
    );

    assert_eq!(
        connect(&client, SocketAddr::from(([10, 1, 0, 1], 2222))),
        Outcome::Connected,
        "port forward"
    );
    let (_, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip().to_string(), "10.2.0.1");
}

/// Bad input is refused at plan, nothing is loaded; the previous generation stays.
#[test]
fn bad_input_changes_nothing() {
    let ns = Netns::new("fw-bad");
    let fw = FirewallReconciler::new().expect("nft installed");
    let good = document(1, "[firewall]\ninput = \"drop\"\n");
    converge(&ns, &fw, &good, None);
    let before = ns.sh("nft list ruleset");
    for (body, want) in [
        (
            "[firewall]\n[[firewall.rules]]\nchain = \"input\"\niif = \"eth9\"\naction = \"accept\"\n",
            "unknown interface eth9",
        ),
        (
            "[firewall]\n[[firewall.rules]]\nchain = \"input\"\nproto = \"tcp\"\ndport = \"9000-8000\"\naction = \"accept\"\n",
            "port range 9000-8000 is reversed",
        ),
        (
            "[firewall]\n[[firewall.rules]]\nchain = \"input\"\nsaddr = \"10.0.0.0/33\"\naction = \"accept\"\n",
            "prefix length 33 exceeds 32",
        ),
    ] {
        let err = ns.block_on(|| async {
            fw.plan(&document(2, body), Some(&good))
                .await
                .map(drop)
                .unwrap_err()
        });
        assert_eq!(err.kind, Kind::Invalid, "{err}");
        assert!(err.message.contains(want), "{body}: {err}");
    }
    assert_eq!(ns.sh("nft list ruleset"), before);
}

/// Revert: apply A, then B, then A again with B in force: the kernel holds A again.
#[test]
fn revert_restores_the_previous_ruleset() {
    let ns = Netns::new("fw-rev");
    let fw = FirewallReconciler::new().expect("nft installed");
    let a = document(
        1,
        &format!(
            "{NET}[firewall]\ninput = \"drop\"\n[[firewall.rules]]\nchain = \"input\"\niif = \"r*\"\nproto = \"tcp\"\ndport = 22\naction = \"accept\"\n[[firewall.nat.masquerade]]\noif = \"r0\"\n"
        ),
    );
    let b = document(2, &format!("{NET}[firewall]\nforward = \"drop\"\n"));
    converge(&ns, &fw, &a, None);
    let after_a = ns.sh("nft list ruleset");
    converge(&ns, &fw, &b, Some(&a));
    assert_ne!(ns.sh("nft list ruleset"), after_a);
    converge(&ns, &fw, &a, Some(&b));
    assert_eq!(ns.sh("nft list ruleset"), after_a);
}

/// Every golden rendering is accepted by the kernel (`nft -c`).
#[test]
fn golden_scripts_pass_nft_check() {
    let ns = Netns::new("fw-gold");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "nft") {
            let (ok, out) = ns.try_sh(&format!("nft -c -f {}", path.display()));
            assert!(ok, "{}: {out}", path.display());
        }
    }
}

/// Closed until the document opens it: with no `[firewall]`, the baseline drops what
/// no service needs, opens DNS on the internal link only, and lets outbound through;
/// a document with its own `[firewall]` takes over.
#[test]
fn the_baseline_closes_the_node_but_its_services_and_outbound() {
    use kowabunga_firewall::Baseline;

    let router = Netns::new("bl-r");
    let inside = Netns::new("bl-i");
    let outside = Netns::new("bl-u");
    veth(&router, "r1", &inside, "i0");
    veth(&router, "r0", &outside, "u0");
    router.sh("ip addr add 10.8.1.1/24 dev r1 && ip addr add 10.8.0.1/24 dev r0");
    inside.sh("ip addr add 10.8.1.2/24 dev i0");
    outside.sh("ip addr add 10.8.0.2/24 dev u0");
    let _l: Vec<TcpListener> = [53, 8080].into_iter().map(|p| listen(&router, p)).collect();
    let _kahuna = listen(&outside, 9000);
    let router_at = |last: u8, p: u16| SocketAddr::from(([10, 8, last, 1], p));

    let fw = FirewallReconciler::new()
        .expect("nft installed")
        // VRRP opened on r1 whatever the document: the kernel takes `meta l4proto 112`.
        .with_baseline(Baseline::kiwi(
            kowabunga_dhcp::model::served_links,
            |_| vec!["r1".to_owned()],
            |_| Vec::new(),
            NetbootPorts {
                http: 9724,
                tftp: 69,
                links: |_| Vec::new(),
            },
        ));
    // r0 is the uplink (the default route's gateway is in its subnet); r1 is internal.
    let net = "[network]\n[[network.links]]\nname = \"r0\"\naddresses = [\"10.8.0.1/24\"]\n[[network.links]]\nname = \"r1\"\naddresses = [\"10.8.1.1/24\"]\n[[network.routes]]\nto = \"default\"\nvia = \"10.8.0.2\"\n";
    let closed = document(1, net);
    let actions = converge(&router, &fw, &closed, None);
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(
        actions[0].ends_with("(baseline: the document has no [firewall])"),
        "{actions:?}"
    );
    assert_eq!(
        connect(&inside, router_at(1, 53)),
        Outcome::Connected,
        "DNS on the internal link"
    );
    assert_eq!(
        connect(&inside, router_at(1, 8080)),
        Outcome::TimedOut,
        "a port no service declares"
    );
    assert_eq!(
        connect(&outside, router_at(0, 53)),
        Outcome::TimedOut,
        "DNS on the uplink"
    );
    assert_eq!(
        connect(&router, SocketAddr::from(([10, 8, 0, 2], 9000))),
        Outcome::Connected,
        "outbound (the management path) and its replies"
    );
    // Forwarding between two links is not open either.
    router.sh("echo 1 > /proc/sys/net/ipv4/ip_forward");
    inside.sh("ip route add default via 10.8.1.1");
    outside.sh("ip route add 10.8.1.0/24 via 10.8.0.1");
    let through_router = SocketAddr::from(([10, 8, 0, 2], 9000));
    assert_eq!(
        connect(&inside, through_router),
        Outcome::TimedOut,
        "forwarding from the internal link to the uplink"
    );
    assert!(plan_actions(&router, &fw, &closed).is_empty(), "idempotent");

    // The document's own [firewall] takes over: 8080 opens, DNS is no longer special.
    let open = document(
        2,
        &format!(
            "{net}[firewall]\ninput = \"drop\"\n[[firewall.rules]]\nchain = \"input\"\nproto = \"tcp\"\ndport = 8080\naction = \"accept\"\n"
        ),
    );
    converge(&router, &fw, &open, Some(&closed));
    assert_eq!(connect(&outside, router_at(0, 8080)), Outcome::Connected);
    assert_eq!(connect(&inside, router_at(1, 53)), Outcome::TimedOut);
    // Its forward policy (accept by default) is the document's to choose.
    assert_eq!(connect(&inside, through_router), Outcome::Connected);
}

/// Packets counted by the rule of `chain` in the probe table that matches `link`.
fn probe_count(ns: &Netns, chain: &str, link: &str) -> u64 {
    let listing = ns.sh(&format!("nft list chain inet probe {chain}"));
    let line = listing
        .lines()
        .find(|l| l.contains(&format!("iifname \"{link}\"")))
        .unwrap_or_else(|| panic!("no {link} rule in {listing}"));
    let after = line.split("packets ").nth(1).expect("a counter");
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a packet count")
}

/// Wait (a hang guard, not a timing assertion) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kiwi's baseline with a `[dhcp]` section: a DHCP client on the served link gets an
/// address through the closed firewall (broadcast DISCOVER and REQUEST, then a unicast
/// datagram from its new address to the server), while DHCP requests arriving on the
/// other link (an uplink: broadcast from busybox `udhcpc`, and unicast to the served
/// link's address) are dropped by it. A foreign table counts UDP 67 before our input
/// chain (priority -10) and after it (priority 10): what ours drops never reaches the
/// second count.
#[test]
fn the_baseline_lets_dhcp_clients_in_on_served_links_only() {
    use std::net::UdpSocket;

    use kowabunga_dhcp::DhcpServer;
    use kowabunga_firewall::Baseline;

    let router = Netns::new("dh-r");
    let inside = Netns::new("dh-i");
    let outside = Netns::new("dh-u");
    veth(&router, "r1", &inside, "i0");
    veth(&router, "r0", &outside, "u0");
    router.sh("ip addr add 10.8.1.1/24 dev r1 && ip addr add 10.8.0.1/24 dev r0");
    outside.sh("ip addr add 10.8.0.2/24 dev u0 && ip route add 10.8.1.0/24 via 10.8.0.1");
    router.sh("nft add table inet probe \
         && nft add chain inet probe before '{ type filter hook input priority -10; }' \
         && nft add chain inet probe after '{ type filter hook input priority 10; }' \
         && for c in before after; do for l in r0 r1; do \
              nft add rule inet probe $c iifname $l udp dport 67 counter; done; done");
    // r0 is the uplink, r1 internal; only r1 is served.
    let doc = document(
        1,
        "[network]\n[[network.links]]\nname = \"r0\"\naddresses = [\"10.8.0.1/24\"]\n\
         [[network.links]]\nname = \"r1\"\naddresses = [\"10.8.1.1/24\"]\n\
         [[network.routes]]\nto = \"default\"\nvia = \"10.8.0.2\"\n\
         [dhcp]\nping_check = false\n\
         [dhcp.links.r1]\npools = [{ first = \"10.8.1.100\", last = \"10.8.1.110\" }]\n",
    );
    let fw = FirewallReconciler::new()
        .expect("nft installed")
        .with_baseline(Baseline::kiwi(
            kowabunga_dhcp::model::served_links,
            |_| Vec::new(),
            |_| Vec::new(),
            NetbootPorts {
                http: 9724,
                tftp: 69,
                links: |_| Vec::new(),
            },
        ));
    converge(&router, &fw, &doc, None);
    let ruleset = router.sh("nft list chain inet kowabunga input");
    assert_eq!(
        ruleset.matches("dport 67").count(),
        1,
        "DHCP opened once, on r1: {ruleset}"
    );
    let server = DhcpServer::new();
    let config = kowabunga_dhcp::model::effective(&doc).expect("the dhcp section compiles");
    router.block_on(|| async { server.apply(config).await.expect("the server serves r1") });

    // The served link: a lease through the firewall.
    let (ok, out) = inside.try_sh("busybox udhcpc -f -q -n -t 5 -T 1 -A 1 -s /bin/true -i i0");
    assert!(ok, "no lease on the served link: {out}");
    assert!(
        out.contains("lease of 10.8.1.100 obtained from 10.8.1.1"),
        "{out}"
    );
    let passed = probe_count(&router, "after", "r1");
    assert!(passed >= 2, "DISCOVER and REQUEST passed: {passed}");
    // A renewal is unicast from the client's address: accepted too.
    inside.sh("ip addr add 10.8.1.100/24 dev i0");
    inside.run(|| {
        let socket = UdpSocket::bind("10.8.1.100:68").expect("bind 68");
        socket.send_to(b"renew", "10.8.1.1:67").expect("send");
    });
    wait_for("the unicast datagram on r1", || {
        probe_count(&router, "after", "r1") > passed
    });

    // The other link: a client there gets nothing, its requests never get past our
    // input chain, broadcast or unicast to the served link's address.
    let (ok, out) = outside.try_sh("busybox udhcpc -f -q -n -t 2 -T 1 -A 1 -s /bin/true -i u0");
    assert!(!ok, "a lease on the uplink: {out}");
    outside.run(|| {
        let socket = UdpSocket::bind("10.8.0.2:68").expect("bind 68");
        socket.send_to(b"request", "10.8.1.1:67").expect("send");
    });
    wait_for(
        "udhcpc's two DISCOVERs and the unicast datagram on r0",
        || probe_count(&router, "before", "r0") >= 3,
    );
    assert_eq!(
        probe_count(&router, "after", "r0"),
        0,
        "DHCP on the unserved link got through"
    );
    router.block_on(|| async { server.shutdown().await });
}
