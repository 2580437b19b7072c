//! Golden-file tests of the nft rendering: each `golden/NAME.toml` (a document body)
//! renders to exactly `golden/NAME.nft`. Regenerate with `UPDATE_GOLDEN=1 cargo test`
//! and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::path::Path;

use kowabunga_firewall::{NetbootPorts, desired, render};
use kowabunga_model::{Document, Format};

pub fn document(body: &str) -> Document {
    let text = format!(
        "version = 1\nnode = \"kiwi-test\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n{body}"
    );
    Document::parse(text.as_bytes(), Format::Toml).expect("test document parses")
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for input in entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let doc = document(&std::fs::read_to_string(&input).unwrap());
        let fw = desired(&doc).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        let got = render(fw.as_ref()).script;
        let golden = input.with_extension("nft");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", golden.display()));
        assert_eq!(
            got,
            want,
            "{} differs from its golden file",
            input.display()
        );
        seen += 1;
    }
    assert_eq!(seen, 4, "golden inputs");
}

#[test]
fn digest_follows_contents_only() {
    let a = document("[firewall]\ninput = \"drop\"\n");
    let b = document("[firewall]\ninput = \"drop\"\n[dns]\nanything = 1\n");
    let c = document("[firewall]\ninput = \"accept\"\n");
    let r = |d: &Document| render(desired(d).unwrap().as_ref());
    assert_eq!(r(&a).digest, r(&b).digest);
    assert_ne!(r(&a).digest, r(&c).digest);
    assert_eq!(r(&a).digest.len(), 32);
}

#[test]
fn bad_input_is_refused_before_rendering() {
    let cases = [
        (
            "[firewall]\n[[firewall.rules]]\nchain = \"input\"\niif = \"eth9\"\naction = \"accept\"\n",
            "unknown interface eth9",
        ),
        (
            "[firewall]\n[[firewall.rules]]\nchain = \"input\"\nproto = \"tcp\"\ndport = \"90-80\"\naction = \"accept\"\n",
            "port range 90-80 is reversed",
        ),
        ("[firewall]\nfoo = 1\n", "unknown field `foo`"),
    ];
    for (body, want) in cases {
        let err = desired(&document(body)).unwrap_err();
        assert_eq!(err.kind, kowabunga_model::ErrorKind::Invalid);
        assert!(err.message.contains(want), "{body}: {err}");
    }
}

/// A Kiwi with an uplink (eth0: the default route's gateway is in its subnet), a
/// second uplink by `dev` (eth2), and two internal links (br0 and its port eth1).
const BASELINE_NETWORK: &str = r#"
[network]
[[network.links]]
name = "eth0"
addresses = ["192.0.2.10/24"]
[[network.links]]
name = "eth1"
[[network.links]]
name = "eth2"
[[network.links]]
name = "br0"
kind = "bridge"
ports = ["eth1"]
addresses = ["10.0.1.1/24"]
[[network.routes]]
to = "default"
via = "192.0.2.1"
[[network.routes]]
to = "default"
dev = "eth2"
metric = 100
"#;

/// Its DHCP server, serving br0.
const BASELINE_DHCP: &str = r#"
[dhcp.links.br0]
pools = [{ first = "10.0.1.100", last = "10.0.1.199" }]
"#;

/// The baseline (no `[firewall]` in the document) renders to `golden/baseline.nft`
/// (which the kernel test also feeds to `nft -c`): DNS on the internal links, DHCP on
/// the one link `[dhcp]` serves and nowhere else.
#[test]
fn baseline_golden_file() {
    use kowabunga_firewall::baseline::{Baseline, internal_links, uplinks};
    use kowabunga_model::Origin;
    use kowabunga_model::network::Network;

    let doc = document(&format!("{BASELINE_NETWORK}{BASELINE_DHCP}"));
    let net: Network = doc.section("network").unwrap().unwrap();
    assert_eq!(
        uplinks(&net).into_iter().collect::<Vec<_>>(),
        ["eth0", "eth2"]
    );
    assert_eq!(internal_links(&net), ["eth1", "br0"]);
    let baseline = Baseline::kiwi(
        kowabunga_dhcp::model::served_links,
        |_| Vec::new(),
        |_| Vec::new(),
        NetbootPorts {
            http: 9724,
            tftp: 69,
            links: |_| Vec::new(),
        },
    );
    let got = render(Some(&baseline.for_document(&doc, Origin::Section).unwrap())).script;
    let dhcp: Vec<&str> = got.lines().filter(|l| l.contains("dport 67")).collect();
    assert_eq!(
        dhcp,
        [
            "\t\tiifname \"br0\" udp sport 68 udp dport 67 accept comment \"baseline: dhcp server on served link br0\""
        ]
    );
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/baseline.nft");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", golden.display()));
    assert_eq!(got, want, "the baseline differs from its golden file");

    // Without [dhcp], or with one the dhcp reconciler refuses (a link [network] does
    // not declare, a pool off the link's subnet), DHCP is opened nowhere.
    for body in [
        String::new(),
        BASELINE_DHCP.replace("br0", "eth9"),
        BASELINE_DHCP.replace("10.0.1.199", "10.0.2.199"),
    ] {
        let doc = document(&format!("{BASELINE_NETWORK}{body}"));
        let fw = baseline.for_document(&doc, Origin::Section).unwrap();
        assert!(!render(Some(&fw)).script.contains("dport 67"), "{body}");
    }

    // VRRP adverts on the links the role's reader names (declared ones only).
    let vrrp = Baseline::kiwi(
        |_| Vec::new(),
        |_| vec!["br0".to_owned(), "eth9".to_owned()],
        |_| Vec::new(),
        NetbootPorts {
            http: 9724,
            tftp: 69,
            links: |_| Vec::new(),
        },
    );
    let got = render(Some(&vrrp.for_document(&doc, Origin::Section).unwrap())).script;
    let lines: Vec<&str> = got.lines().filter(|l| l.contains("l4proto 112")).collect();
    assert_eq!(
        lines,
        [
            "\t\tiifname \"br0\" meta l4proto 112 accept comment \"baseline: vrrp on served link br0\""
        ]
    );

    // conntrackd's sync (UDP 3780) on the link the role's reader names.
    let sync = Baseline::kiwi(
        |_| Vec::new(),
        |_| Vec::new(),
        |_| vec!["eth1".to_owned()],
        NetbootPorts {
            http: 9724,
            tftp: 69,
            links: |_| Vec::new(),
        },
    );
    let got = render(Some(&sync.for_document(&doc, Origin::Section).unwrap())).script;
    let lines: Vec<&str> = got.lines().filter(|l| l.contains("3780")).collect();
    assert_eq!(
        lines,
        [
            "\t\tiifname \"eth1\" udp dport 3780 accept comment \"baseline: conntrack sync on served link eth1\""
        ]
    );

    // The netboot server's HTTP port on the links the role's reader names.
    let netboot = Baseline::kiwi(
        |_| Vec::new(),
        |_| Vec::new(),
        |_| Vec::new(),
        NetbootPorts {
            http: 9724,
            tftp: 69,
            links: |_| vec!["br0".to_owned()],
        },
    );
    let got = render(Some(&netboot.for_document(&doc, Origin::Section).unwrap())).script;
    let lines: Vec<&str> = got.lines().filter(|l| l.contains("netboot")).collect();
    assert_eq!(
        lines,
        [
            "\t\tiifname \"br0\" tcp dport 9724 accept comment \"baseline: netboot http on served link br0\"",
            "\t\tiifname \"br0\" udp dport 69 accept comment \"baseline: netboot tftp on served link br0\"",
        ]
    );

    // Without a default route every declared link is internal.
    let flat = document("[network]\n[[network.links]]\nname = \"eth0\"\n");
    let net: Network = flat.section("network").unwrap().unwrap();
    assert_eq!(internal_links(&net), ["eth0"]);
}
