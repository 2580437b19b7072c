//! The RFC 8906 probe set against our server and against dnsmasq serving the same
//! records and forwarding to the same recursor, in the same network namespace and the
//! same run; prints both results side by side (a Markdown table, copied into
//! `docs/dns.md`). Run with `--nocapture` to see it. Needs dnsmasq (dnsmasq-base).
//!
//! Assertions: our column is what the other tests require, and dnsmasq answered the
//! plain query (so the comparison really ran).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::netns::{Netns, NsServer, doc};
use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};

const OURS: u16 = 53;
const THEIRS: u16 = 5300;
const NAME: &str = "kahuna.infra.acme.local";
const ZONE: &str = "infra.acme.local";

/// dnsmasq as Kiwi's role would configure it: the managed names as host records (with
/// their PTR, dnsmasq's default), the zone local (never forwarded), the rest forwarded.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(ns: &Netns, recursor: SocketAddr) -> Self {
        let dir = common::tempdir("dnsmasq");
        let conf = dir.join("dnsmasq.conf");
        std::fs::write(
            &conf,
            format!(
                "no-resolv\nno-hosts\nlocal=/{ZONE}/\nserver={}#{}\n\
                 host-record={ZONE},10.0.0.1\nhost-record={NAME},10.0.0.2,fd00::2\n\
                 host-record=ntp.{ZONE},10.0.0.3\n",
                recursor.ip(),
                recursor.port()
            ),
        )
        .unwrap();
        let program = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("dnsmasq not found: install dnsmasq-base");
        let dnsmasq = Self(
            Command::new("ip")
                .args(["netns", "exec", &ns.name, program, "--keep-in-foreground"])
                .arg(format!("--conf-file={}", conf.display()))
                .arg(format!("--port={THEIRS}"))
                .args([
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--pid-file=",
                    "--user=root",
                    "--cache-size=0",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq"),
        );
        for _ in 0..50 {
            if ns
                .dig_port("127.0.0.1", THEIRS, NAME, "A", &["+time=1"])
                .status
                == "NOERROR"
            {
                return dnsmasq;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("dnsmasq does not answer");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Probe {
    Dig(&'static str, &'static str, &'static [&'static str]),
    /// A query `dig` cannot send over UDP or does not summarise: (qtype, name, tcp).
    Raw(RecordType, &'static str, bool),
}

const PROBES: &[(&str, Probe)] = &[
    ("A, managed name", Probe::Dig(NAME, "A", &[])),
    (
        "NXDOMAIN in the zone",
        Probe::Dig("nope.infra.acme.local", "A", &[]),
    ),
    ("A, forwarded", Probe::Dig("example.com", "A", &[])),
    (
        "EDNS version 1",
        Probe::Dig(NAME, "A", &["+edns=1", "+noednsneg"]),
    ),
    (
        "EDNS 1 + unknown option",
        Probe::Dig(NAME, "A", &["+edns=1", "+noednsneg", "+ednsopt=65001:abcd"]),
    ),
    (
        "unknown option",
        Probe::Dig(NAME, "A", &["+ednsopt=65001:abcd"]),
    ),
    (
        "unknown EDNS flag",
        Probe::Dig(NAME, "A", &["+ednsflags=0x40"]),
    ),
    ("DO bit", Probe::Dig(NAME, "A", &["+dnssec"])),
    ("TCP with EDNS", Probe::Dig(NAME, "A", &["+tcp"])),
    ("client cookie", Probe::Dig(NAME, "A", &["+cookie"])),
    (
        "cookie, forwarded",
        Probe::Dig(
            "example.com",
            "A",
            &["+cookie=0102030405060708a1a2a3a4a5a6a7a8"],
        ),
    ),
    ("AXFR over UDP", Probe::Raw(RecordType::AXFR, ZONE, false)),
    ("AXFR over TCP", Probe::Raw(RecordType::AXFR, ZONE, true)),
    ("IXFR over UDP", Probe::Raw(RecordType::IXFR, ZONE, false)),
    (
        "AXFR of a foreign zone",
        Probe::Raw(RecordType::AXFR, "example.com", true),
    ),
    ("NOTIFY", Probe::Dig(ZONE, "SOA", &["+opcode=notify"])),
    ("UPDATE", Probe::Dig(ZONE, "SOA", &["+opcode=update"])),
    (
        "CH TXT version.bind",
        Probe::Dig("version.bind", "TXT", &["-c", "CH"]),
    ),
    (
        "CH TXT hostname.bind",
        Probe::Dig("hostname.bind", "TXT", &["-c", "CH"]),
    ),
    ("class HS", Probe::Dig("example.com", "A", &["-c", "HS"])),
    ("SOA at the apex", Probe::Dig(ZONE, "SOA", &[])),
    ("NS at the apex", Probe::Dig(ZONE, "NS", &[])),
    ("PTR, managed address", Probe::Dig("-x", "10.0.0.2", &[])),
    ("PTR, v6 managed address", Probe::Dig("-x", "fd00::2", &[])),
];

fn run(ns: &Netns, port: u16, probe: &Probe) -> String {
    match probe {
        Probe::Dig(name, qtype, extra) => {
            ns.dig_port("127.0.0.1", port, name, qtype, extra).summary()
        }
        Probe::Raw(qtype, name, tcp) => {
            let mut m = Message::query();
            m.add_query(hickory_proto::op::Query::query(
                Name::from_ascii(format!("{name}.")).unwrap(),
                *qtype,
            ));
            let to = SocketAddr::from(([127, 0, 0, 1], port));
            match ns.try_query(to, *tcp, &m) {
                Ok(reply) => format!(
                    "{} an={}",
                    format!("{:?}", reply.metadata.response_code).to_uppercase(),
                    reply.answers.len()
                ),
                Err(err) => format!("no reply ({err})"),
            }
        }
    }
}

#[test]
fn probe_set_side_by_side_with_dnsmasq() {
    let ns = Netns::new("cmp");
    let server = NsServer::start(&ns, |recursor| {
        doc(recursor, "nameserver_addresses = [\"10.0.0.53\"]")
    });
    let _dnsmasq = Dnsmasq::start(&ns, server.recursor);
    let mut table = String::from("| probe | kiwi-dns | dnsmasq |\n|---|---|---|\n");
    let mut ours = Vec::new();
    for (label, probe) in PROBES {
        let (a, b) = (run(&ns, OURS, probe), run(&ns, THEIRS, probe));
        table.push_str(&format!("| {label} | {a} | {b} |\n"));
        ours.push((*label, a, b));
    }
    println!("{table}");
    let get = |label: &str| ours.iter().find(|(l, _, _)| *l == label).unwrap();
    assert!(get("A, managed name").2.starts_with("NOERROR"), "{table}");
    for (label, want) in [
        ("A, managed name", "NOERROR [qr aa rd ra] an=1"),
        ("EDNS version 1", "BADVERS"),
        ("AXFR over UDP", "REFUSED an=0"),
        ("AXFR over TCP", "REFUSED an=0"),
        ("NOTIFY", "NOTIMP"),
        ("UPDATE", "NOTIMP"),
        ("CH TXT version.bind", "REFUSED"),
        ("class HS", "REFUSED"),
        ("NS at the apex", "NOERROR [qr aa rd ra] an=1 ad=1"),
        ("PTR, managed address", "NOERROR [qr aa rd ra] an=1"),
    ] {
        assert!(get(label).1.starts_with(want), "{label}: {table}");
    }
}
