//! What the server answers to the queries of RFC 8906 ("A Common Operational Problem in
//! DNS Servers: Failure to Communicate") and its neighbours, one test per behaviour,
//! with the real `dig` from inside the server's network namespace (root only).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::netns::{Netns, NsServer, doc};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

const SERVER: &str = "127.0.0.1";
const ZONE: &str = "infra.acme.local";
const NAME: &str = "kahuna.infra.acme.local";

fn start(extra: &'static str) -> (Netns, NsServer) {
    let ns = Netns::new("rfc");
    let server = NsServer::start(&ns, move |recursor| doc(recursor, extra));
    (ns, server)
}

fn started() -> (Netns, NsServer) {
    start("nameserver_addresses = [\"10.0.0.53\"]")
}

#[test]
fn edns_version_above_zero_gets_badvers_with_an_opt_of_version_zero() {
    let (ns, _server) = started();
    for extra in [
        &["+edns=1", "+noednsneg"][..],
        &["+edns=1", "+noednsneg", "+ednsopt=65001:abcd"][..],
        &["+edns=1", "+noednsneg", "+tcp"][..],
        &["+edns=7", "+noednsneg", "+ednsopt=65001:abcd", "+tcp"][..],
    ] {
        let d = ns.dig(SERVER, NAME, "A", extra);
        assert_eq!(d.status, "BADVERS", "{extra:?}: {}", d.raw);
        let edns = d.edns.as_deref().expect("an OPT in a BADVERS reply");
        assert!(edns.contains("version: 0,"), "{extra:?}: {}", d.raw);
        assert!(d.answers.is_empty(), "{}", d.raw);
        assert!(d.options.is_empty(), "option echoed: {}", d.raw);
    }
    // With negotiation (dig's default), the client falls back to version 0 and gets
    // its answer.
    let d = ns.dig(SERVER, NAME, "A", &["+edns=1"]);
    assert_eq!(d.answers, ["A 10.0.0.2"], "{}", d.raw);
}

#[test]
fn unknown_edns_options_and_flags_are_ignored_and_not_echoed() {
    let (ns, _server) = started();
    for extra in [&[][..], &["+tcp"][..]] {
        let mut args = vec!["+ednsopt=65001:abcd", "+ednsopt=100", "+ednsflags=0x40"];
        args.extend_from_slice(extra);
        let d = ns.dig(SERVER, NAME, "A", &args);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert_eq!(d.answers, ["A 10.0.0.2"], "{}", d.raw);
        let edns = d.edns.as_deref().expect("OPT");
        assert!(edns.contains("version: 0,"), "{}", d.raw);
        assert!(!edns.contains("MBZ"), "unknown flag echoed: {}", d.raw);
        assert!(d.options.is_empty(), "unknown option echoed: {}", d.raw);
    }
}

#[test]
fn do_bit_gets_no_dnssec_records_and_is_left_clear() {
    let (ns, _server) = started();
    for qtype in ["A", "DNSKEY"] {
        let d = ns.dig(SERVER, NAME, qtype, &["+dnssec"]);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert!(!d.raw.contains("RRSIG"), "{}", d.raw);
        let edns = d.edns.as_deref().expect("OPT");
        assert!(!edns.contains("flags: do"), "{}", d.raw);
        assert!(!d.has_flag("ad"), "{}", d.raw);
    }
}

#[test]
fn answers_over_tcp_carry_edns_when_asked_with_it() {
    let (ns, _server) = started();
    let d = ns.dig(SERVER, NAME, "A", &["+tcp"]);
    assert_eq!(d.answers, ["A 10.0.0.2"], "{}", d.raw);
    let edns = d.edns.as_deref().expect("OPT over TCP");
    assert!(edns.contains("udp: 1232"), "{}", d.raw);
    // Without EDNS in the query, none in the reply.
    let d = ns.dig(SERVER, NAME, "A", &["+tcp", "+noedns"]);
    assert_eq!(d.answers, ["A 10.0.0.2"], "{}", d.raw);
    assert!(d.edns.is_none(), "{}", d.raw);
}

#[test]
fn cookies_are_ignored_never_answered_badcookie_nor_passed_to_the_recursor() {
    let (ns, server) = started();
    // A client cookie alone, then with a (made-up) server cookie: plain answers, no
    // COOKIE option back (a server without cookies, RFC 7873 5.2).
    for cookie in ["+cookie", "+cookie=0102030405060708a1a2a3a4a5a6a7a8"] {
        for transport in ["+notcp", "+tcp"] {
            let d = ns.dig(SERVER, NAME, "A", &[cookie, transport]);
            assert_eq!(d.status, "NOERROR", "{}", d.raw);
            assert_eq!(d.answers, ["A 10.0.0.2"], "{}", d.raw);
            assert!(!d.raw.contains("COOKIE"), "{}", d.raw);
        }
    }
    // Forwarded: the fake recursor echoes every option it gets, so a COOKIE in the
    // reply would mean we passed the client's on (or the recursor's back).
    let d = ns.dig(
        SERVER,
        "example.com",
        "A",
        &["+cookie=0102030405060708a1a2a3a4a5a6a7a8"],
    );
    assert_eq!(
        d.answers,
        [format!("A {}", common::RECURSOR_ANSWER)],
        "{}",
        d.raw
    );
    assert!(!d.raw.contains("COOKIE"), "{}", d.raw);
    assert_eq!(server.forwarded(), 1);
}

fn transfer(qtype: RecordType, zone: &str) -> Message {
    let mut m = Message::query();
    m.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(format!("{zone}.")).unwrap(),
        qtype,
    ));
    m
}

#[test]
fn zone_transfers_are_refused_with_no_records_over_udp_and_tcp() {
    let (ns, server) = started();
    let to = format!("{SERVER}:53").parse().unwrap();
    for zone in [ZONE, "example.com"] {
        for qtype in [RecordType::AXFR, RecordType::IXFR] {
            for tcp in [false, true] {
                let reply = ns.query(to, tcp, &transfer(qtype, zone));
                assert_eq!(
                    reply.metadata.response_code,
                    ResponseCode::Refused,
                    "{qtype} {zone} tcp={tcp}"
                );
                assert!(
                    reply.answers.is_empty()
                        && reply.authorities.is_empty()
                        && reply.additionals.is_empty()
                );
            }
        }
    }
    // And as dig tells an operator.
    let d = ns.dig(SERVER, ZONE, "AXFR", &[]);
    assert!(d.raw.contains("Transfer failed"), "{}", d.raw);
    assert_eq!(server.forwarded(), 0, "never forwarded");
}

#[test]
fn notify_and_update_are_not_implemented() {
    let (ns, server) = started();
    for opcode in ["notify", "update"] {
        for transport in ["+notcp", "+tcp"] {
            let d = ns.dig(
                SERVER,
                ZONE,
                "SOA",
                &[&format!("+opcode={opcode}"), transport],
            );
            assert_eq!(d.status, "NOTIMP", "{opcode}: {}", d.raw);
            assert!(d.answers.is_empty(), "{}", d.raw);
        }
    }
    assert_eq!(server.forwarded(), 0);
}

#[test]
fn classes_other_than_in_are_refused_never_forwarded() {
    let (ns, server) = started();
    for (class, name, qtype) in [
        ("CH", "version.bind", "TXT"),
        ("CH", "hostname.bind", "TXT"),
        ("CH", "id.server", "TXT"),
        ("HS", "example.com", "A"),
        ("ANY", NAME, "A"),
        ("CLASS42", "example.com", "A"),
    ] {
        for transport in ["+notcp", "+tcp"] {
            let d = ns.dig(SERVER, name, qtype, &["-c", class, transport]);
            assert_eq!(d.status, "REFUSED", "{class} {name}: {}", d.raw);
            assert!(d.answers.is_empty(), "{}", d.raw);
        }
    }
    assert_eq!(server.forwarded(), 0, "never forwarded");
}

#[test]
fn every_managed_zone_answers_soa_and_ns_at_its_apex_with_glue() {
    let (ns, _server) = started();
    for transport in ["+notcp", "+tcp"] {
        let d = ns.dig(SERVER, ZONE, "SOA", &[transport]);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
        assert!(d.has_flag("aa"), "{}", d.raw);
        assert_eq!(d.answers.len(), 1, "{}", d.raw);
        assert!(
            d.answers[0].starts_with("SOA ns.infra.acme.local. hostmaster.infra.acme.local."),
            "{}",
            d.raw
        );
        let d = ns.dig(SERVER, ZONE, "NS", &[transport]);
        assert!(d.has_flag("aa"), "{}", d.raw);
        assert_eq!(d.answers, ["NS ns.infra.acme.local."], "{}", d.raw);
        assert_eq!(d.additional, ["A 10.0.0.53"], "glue: {}", d.raw);
    }
    // The glue name resolves too; the derived reverse zones have their apex records.
    let d = ns.dig(SERVER, "ns.infra.acme.local", "A", &[]);
    assert_eq!(d.answers, ["A 10.0.0.53"], "{}", d.raw);
    let d = ns.dig(SERVER, "0.0.10.in-addr.arpa", "NS", &[]);
    assert_eq!(d.answers, ["NS ns.0.0.10.in-addr.arpa."], "{}", d.raw);
    let d = ns.dig(SERVER, "0.0.10.in-addr.arpa", "SOA", &[]);
    assert_eq!(d.answers.len(), 1, "{}", d.raw);
}

#[test]
fn a_nameserver_name_and_its_addresses_come_from_the_document() {
    let (ns, _server) = start(
        "nameserver = \"kiwi-1.infra.acme.local\"\nnameserver_addresses = [\"10.0.0.7\", \"fd00::7\"]",
    );
    let d = ns.dig(SERVER, ZONE, "NS", &[]);
    assert_eq!(d.answers, ["NS kiwi-1.infra.acme.local."], "{}", d.raw);
    assert_eq!(d.additional, ["A 10.0.0.7", "AAAA fd00::7"], "{}", d.raw);
    // Without addresses (listening on a wildcard): the NS, no glue.
    let (ns, _server) = start("");
    let d = ns.dig(SERVER, ZONE, "NS", &[]);
    assert_eq!(d.answers, ["NS ns.infra.acme.local."], "{}", d.raw);
    assert!(d.additional.is_empty(), "{}", d.raw);
}

#[test]
fn ptr_for_managed_addresses_follows_the_merged_records() {
    let (ns, server) = started();
    let d = ns.dig(SERVER, "-x", "10.0.0.2", &[]);
    assert!(d.has_flag("aa"), "{}", d.raw);
    assert_eq!(d.answers, ["PTR kahuna.infra.acme.local."], "{}", d.raw);
    let d = ns.dig(SERVER, "-x", "fd00::2", &["+tcp"]);
    assert_eq!(d.answers, ["PTR kahuna.infra.acme.local."], "{}", d.raw);
    // Pushed wins per name: Kahuna moves `ntp`; its old address stops pointing back.
    let table: toml::Table =
        toml::from_str("[zones.\"infra.acme.local\".records]\nntp = [\"10.0.0.33\"]\n").unwrap();
    server.push(table).unwrap();
    let d = ns.dig(SERVER, "-x", "10.0.0.33", &[]);
    assert_eq!(d.answers, ["PTR ntp.infra.acme.local."], "{}", d.raw);
    let d = ns.dig(SERVER, "-x", "10.0.0.3", &[]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert!(d.has_flag("aa"), "{}", d.raw);
    // A tombstone hides the signed name and its PTR.
    let table: toml::Table =
        toml::from_str("[zones.\"infra.acme.local\".records]\nkahuna = []\n").unwrap();
    server.push(table).unwrap();
    let d = ns.dig(SERVER, "-x", "10.0.0.2", &[]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert_eq!(server.forwarded(), 0);
}

#[test]
fn reverse_zones_switched_off_leave_ptr_to_the_recursors() {
    let (ns, server) = start("reverse_zones = false");
    let d = ns.dig(SERVER, "-x", "10.0.0.2", &[]);
    assert!(!d.has_flag("aa"), "{}", d.raw);
    assert_eq!(server.forwarded(), 1, "{}", d.raw);
}
