//! Recursion for local clients only (issue 15): forwarded answers go to clients in a
//! subnet of the node's own links or in `recursion_clients`; others get REFUSED, over
//! UDP and TCP, while the managed zones answer everyone. Three namespaces (root only):
//!
//! ```text
//!   srv (Kiwi, 10.99.1.1/24) ---- rtr (10.99.1.2/24 | 10.99.2.1/24) ---- far (10.99.2.2/24)
//! ```
//!
//! `rtr` sits on the server's link: local. `far` reaches the server routed through
//! `rtr`, from a subnet that is on none of the server's links.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::RECURSOR_ANSWER;
use common::netns::{Netns, NsServer, doc, link};

const SERVER: &str = "10.99.1.1";

struct Topology {
    srv: Netns,
    rtr: Netns,
    far: Netns,
}

fn topology() -> Topology {
    let (srv, rtr, far) = (Netns::new("srv"), Netns::new("rtr"), Netns::new("far"));
    link(&srv, "lan0", "10.99.1.1/24", &rtr, "up0", "10.99.1.2/24");
    link(&rtr, "down0", "10.99.2.1/24", &far, "lan0", "10.99.2.2/24");
    rtr.sh("sysctl -qw net.ipv4.ip_forward=1");
    srv.sh("ip route add 10.99.2.0/24 via 10.99.1.2");
    far.sh("ip route add default via 10.99.2.1");
    Topology { srv, rtr, far }
}

#[test]
fn recursion_is_refused_to_a_routed_non_local_subnet_and_answered_on_a_local_one() {
    let t = topology();
    let server = NsServer::start(&t.srv, |recursor| doc(recursor, ""));
    for transport in ["+notcp", "+tcp"] {
        // On the server's link: forwarded and answered.
        let d = t.rtr.dig(SERVER, "example.com", "A", &[transport]);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(d.answers, [format!("A {RECURSOR_ANSWER}")], "{}", d.raw);
        assert!(d.has_flag("ra"), "{}", d.raw);
        // Routed from elsewhere: REFUSED, no records, recursion not available.
        let d = t.far.dig(SERVER, "example.com", "A", &[transport]);
        assert_eq!(d.status, "REFUSED", "{}", d.raw);
        assert!(d.answers.is_empty(), "{}", d.raw);
        assert!(!d.has_flag("ra"), "{}", d.raw);
        // The managed zones answer everyone.
        let d = t
            .far
            .dig(SERVER, "kahuna.infra.acme.local", "A", &[transport]);
        assert_eq!(d.answers, ["A 10.0.0.2"], "{}", d.raw);
        assert!(d.has_flag("aa"), "{}", d.raw);
    }
    assert_eq!(
        server.forwarded(),
        2,
        "only the local client's queries went out"
    );
    // The server's own loopback is local too.
    let d = t.srv.dig("127.0.0.1", "example.org", "A", &[]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
}

#[test]
fn a_listed_network_gets_recursion_and_only_it() {
    let t = topology();
    let server = NsServer::start(&t.srv, |recursor| {
        doc(recursor, "recursion_clients = [\"10.99.2.0/25\"]")
    });
    let d = t.far.dig(SERVER, "example.com", "A", &["+tcp"]);
    assert_eq!(d.answers, [format!("A {RECURSOR_ANSWER}")], "{}", d.raw);
    assert_eq!(server.forwarded(), 1);
    // Managed zones as before; recursion for the rest of 10.99.2.0/24 is not listed.
    let d = t.far.dig(SERVER, "kahuna.infra.acme.local", "A", &[]);
    assert_eq!(d.answers, ["A 10.0.0.2"], "{}", d.raw);
    t.far.sh("ip addr add 10.99.2.200/24 dev lan0");
    let d = t
        .far
        .dig(SERVER, "example.com", "A", &["-b", "10.99.2.200"]);
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    assert_eq!(server.forwarded(), 1);
}
