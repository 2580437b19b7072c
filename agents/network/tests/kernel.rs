//! The network reconciler against a real kernel, each test in throwaway network
//! namespaces (root only). "Physical" links are stood in for by veth ends whose peer
//! lives in another namespace: to the reconciler they are links it did not create.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod netns;

use std::collections::BTreeMap;

use kowabunga_model::network::Prefix;
use kowabunga_model::{Document, ErrorKind, Format, Reconciler};
use kowabunga_network::NetworkReconciler;
use kowabunga_network::observe::observe;
use netns::{Netns, veth};

fn document(version: u64, body: &str) -> Document {
    let text = format!(
        "version = {version}\nnode = \"kiwi-test\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n{body}"
    );
    Document::parse(text.as_bytes(), Format::Toml).expect("test document parses")
}

fn plan(
    ns: &Netns,
    net: &NetworkReconciler,
    desired: &Document,
    in_force: Option<&Document>,
) -> Vec<String> {
    ns.block_on(|| async {
        let p = net
            .plan(desired, in_force)
            .await
            .unwrap_or_else(|e| panic!("plan: {e}"));
        p.actions.iter().map(ToString::to_string).collect()
    })
}

/// Plan, apply and check; returns the actions.
fn converge(
    ns: &Netns,
    net: &NetworkReconciler,
    desired: &Document,
    in_force: Option<&Document>,
) -> Vec<String> {
    ns.block_on(|| async {
        let p = net
            .plan(desired, in_force)
            .await
            .unwrap_or_else(|e| panic!("plan: {e}"));
        let actions = p.actions.iter().map(ToString::to_string).collect();
        net.apply(p.payload)
            .await
            .unwrap_or_else(|e| panic!("apply: {e}"));
        net.check(desired)
            .await
            .unwrap_or_else(|e| panic!("check: {e}"));
        actions
    })
}

/// The namespace's links, addresses and routes by name, without what the kernel
/// derives on its own (indexes, MACs, IPv6 link-local addresses and routes).
fn snapshot(ns: &Netns) -> String {
    let obs = ns.block_on(|| async {
        let (conn, mut handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(conn);
        observe(&mut handle).await.unwrap()
    });
    let name = |i: Option<u32>| {
        i.and_then(|i| obs.link_by_index(i))
            .map(|l| l.name.clone())
            .unwrap_or_default()
    };
    let link_local = |p: &Prefix| p.addr.to_string().starts_with("fe80");
    let mut out = BTreeMap::new();
    for l in &obs.links {
        let mut addrs: Vec<String> = obs
            .addrs
            .iter()
            .filter(|a| a.index == l.index && !link_local(&a.addr))
            .map(|a| a.addr.to_string())
            .collect();
        addrs.sort();
        out.insert(
            format!("link {}", l.name),
            format!(
                "{:?} mtu {:?} up {} master {} addrs {addrs:?}",
                l.kind,
                l.mtu,
                l.up,
                name(l.master)
            ),
        );
    }
    for r in obs.routes.iter().filter(|r| !link_local(&r.key.dst)) {
        out.insert(
            format!("route {} {}", r.key, name(r.oif)),
            format!("via {:?}", r.gateway),
        );
    }
    out.into_iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect()
}

fn sysctl(ns: &Netns, key: &str) -> String {
    ns.sh(&format!("cat /proc/sys/{key}")).trim().to_string()
}

/// A router namespace with one "physical" link `eth0` (its peer in `outside`), a
/// foreign bridge `docker0` with an address, and a foreign address and route on eth0.
fn router() -> (Netns, Netns) {
    let r = Netns::new("net-r");
    let outside = Netns::new("net-o");
    veth(&r, "eth0", &outside, "uplink");
    r.sh("ip link add docker0 type bridge && ip addr add 172.17.0.1/16 dev docker0 && ip link set docker0 up");
    r.sh("ip addr add 192.168.7.1/24 dev eth0 && ip route add 192.168.99.0/24 via 192.168.7.254");
    (r, outside)
}

const A: &str = r#"
[network]
ip_forward = true
[[network.links]]
name = "eth0"
mtu = 1400
rp_filter = "loose"
accept_ra = false
addresses = ["10.0.0.1/24", "fd00::1/64"]
[[network.links]]
name = "br0"
kind = "bridge"
ports = ["ve0"]
addresses = ["10.1.0.1/24"]
[[network.links]]
name = "ve0"
kind = "veth"
peer = "ve1"
[[network.links]]
name = "ve1"
kind = "veth"
peer = "ve0"
mtu = 1300
addresses = ["10.1.0.2/24"]
[[network.routes]]
to = "10.9.0.0/16"
via = "10.0.0.254"
[[network.routes]]
to = "default"
via = "10.0.0.254"
metric = 100
table = 100
[[network.routes]]
to = "fd01::/64"
via = "fd00::fe"
dev = "eth0"
"#;

const B: &str = r#"
[network]
[[network.links]]
name = "eth0"
mtu = 1500
addresses = ["10.0.0.2/24"]
[[network.links]]
name = "br1"
kind = "bridge"
addresses = ["10.2.0.1/24"]
[[network.routes]]
to = "10.9.0.0/16"
via = "10.2.0.254"
dev = "br1"
"#;

/// Create from scratch, re-apply with zero changes, modify, remove what the previous
/// generation created; foreign links, addresses and routes survive throughout.
#[test]
fn create_modify_delete_idempotent_and_ownership() {
    let (r, _outside) = router();
    let net = NetworkReconciler::new().unwrap();
    let a = document(1, A);

    let actions = converge(&r, &net, &a, None);
    assert!(
        actions.contains(&"create bridge br0".to_string()),
        "{actions:#?}"
    );
    assert!(
        actions.contains(&"create veth pair ve0 <-> ve1".to_string()),
        "{actions:#?}"
    );
    assert!(r.sh("ip -o link show ve0").contains("master br0"));
    assert!(r.sh("ip -o link show eth0").contains("mtu 1400"));
    assert!(r.sh("ip -o link show ve1").contains("mtu 1300"));
    assert!(
        r.sh("ip -o link show br0").contains("state UP")
            || r.sh("ip -o link show br0").contains(",UP")
    );
    let addrs = r.sh("ip -o addr show dev eth0");
    assert!(
        addrs.contains("10.0.0.1/24")
            && addrs.contains("fd00::1/64")
            && addrs.contains("192.168.7.1/24"),
        "{addrs}"
    );
    assert_eq!(
        r.sh("ip route show 10.9.0.0/16").trim(),
        "10.9.0.0/16 via 10.0.0.254 dev eth0 proto static"
    );
    assert_eq!(
        r.sh("ip route show table 100").trim(),
        "default via 10.0.0.254 dev eth0 proto static metric 100"
    );
    assert!(
        r.sh("ip -6 route show fd01::/64")
            .starts_with("fd01::/64 via fd00::fe dev eth0 proto static metric 1024")
    );
    assert_eq!(sysctl(&r, "net/ipv4/ip_forward"), "1");
    assert_eq!(sysctl(&r, "net/ipv6/conf/all/forwarding"), "1");
    assert_eq!(sysctl(&r, "net/ipv4/conf/eth0/rp_filter"), "2");
    assert_eq!(sysctl(&r, "net/ipv6/conf/eth0/accept_ra"), "0");

    // Idempotent: nothing planned, no change request sent.
    let sent = (net.netlink_requests(), net.sysctl_writes());
    assert_eq!(plan(&r, &net, &a, Some(&a)), Vec::<String>::new());
    converge(&r, &net, &a, Some(&a));
    assert_eq!(
        (net.netlink_requests(), net.sysctl_writes()),
        sent,
        "re-apply changed something"
    );

    // Modify and remove.
    let b = document(2, B);
    converge(&r, &net, &b, Some(&a));
    let links = r.sh("ip -o link show");
    for gone in ["br0", "ve0", "ve1"] {
        assert!(
            !links.contains(&format!(": {gone}")),
            "{gone} survived: {links}"
        );
    }
    assert!(
        links.contains(": br1:") && links.contains(": docker0:"),
        "{links}"
    );
    assert!(r.sh("ip -o link show eth0").contains("mtu 1500"));
    let addrs = r.sh("ip -o addr show dev eth0");
    assert!(
        addrs.contains("10.0.0.2/24")
            && !addrs.contains("10.0.0.1/")
            && !addrs.contains("fd00::1/"),
        "{addrs}"
    );
    assert!(
        addrs.contains("192.168.7.1/24"),
        "foreign address removed: {addrs}"
    );
    assert!(
        r.sh("ip -o addr show dev docker0")
            .contains("172.17.0.1/16")
    );
    assert_eq!(
        r.sh("ip route show 10.9.0.0/16").trim(),
        "10.9.0.0/16 via 10.2.0.254 dev br1 proto static"
    );
    assert_eq!(r.sh("ip route show table 100").trim(), "");
    assert_eq!(r.sh("ip -6 route show fd01::/64").trim(), "");
    assert!(
        r.sh("ip route show 192.168.99.0/24")
            .contains("via 192.168.7.254"),
        "foreign route removed"
    );
    assert_eq!(sysctl(&r, "net/ipv4/ip_forward"), "0");
    assert_eq!(sysctl(&r, "net/ipv4/conf/eth0/rp_filter"), "0");
    assert_eq!(sysctl(&r, "net/ipv6/conf/eth0/accept_ra"), "1");
    assert_eq!(plan(&r, &net, &b, Some(&b)), Vec::<String>::new());

    // A document without [network]: everything B created goes, eth0 loses B's address.
    let empty = document(3, "");
    converge(&r, &net, &empty, Some(&b));
    let links = r.sh("ip -o link show");
    assert!(
        !links.contains(": br1:") && links.contains(": docker0:") && links.contains(": eth0@"),
        "{links}"
    );
    let addrs = r.sh("ip -o addr show dev eth0");
    assert!(
        !addrs.contains("10.0.0.2/") && addrs.contains("192.168.7.1/24"),
        "{addrs}"
    );
}

/// Revert: apply A, apply B, then plan A with B in force and apply: the kernel holds
/// exactly what it held after A (links, addresses, routes).
#[test]
fn revert_restores_the_previous_generation_exactly() {
    let (r, _outside) = router();
    let net = NetworkReconciler::new().unwrap();
    let (a, b) = (document(1, A), document(2, B));
    let before = snapshot(&r);
    converge(&r, &net, &a, None);
    let after_a = snapshot(&r);
    assert_ne!(before, after_a);
    converge(&r, &net, &b, Some(&a));
    assert_ne!(snapshot(&r), after_a);
    converge(&r, &net, &a, Some(&b));
    assert_eq!(snapshot(&r), after_a);
    // Undoing the first generation (A, with nothing before it) restores the start,
    // except for settings of a physical link that nothing declares any more: its
    // MTU before A is unknown, so it stays (see docs/network.md).
    converge(&r, &net, &document(3, ""), Some(&a));
    let eth0 = "link eth0: Some(\"veth\") mtu Some(";
    assert_eq!(
        snapshot(&r),
        before.replace(&format!("{eth0}1500)"), &format!("{eth0}1400)"))
    );
}

/// Bad input is refused at plan, naming the problem, and nothing changes.
#[test]
fn bad_input_is_refused_at_plan_and_changes_nothing() {
    let (r, _outside) = router();
    let net = NetworkReconciler::new().unwrap();
    let before = snapshot(&r);
    let cases = [
        (
            "[[network.links]]\nname = \"eth0\"\n[[network.links]]\nname = \"eth0\"\n",
            "eth0: duplicate interface name",
        ),
        (
            "[[network.links]]\nname = \"eth0\"\n[[network.links]]\nname = \"vlan5000\"\nkind = \"vlan\"\nparent = \"eth0\"\nid = 5000\n",
            "vlan5000: VLAN id 5000 is out of range (1 to 4094)",
        ),
        (
            "[[network.links]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/33\"]\n",
            "prefix length 33 exceeds 32",
        ),
        (
            "[[network.links]]\nname = \"eth0\"\naddresses = [\"10.0.0.1\"]\n",
            "is not a prefix",
        ),
        (
            "[[network.links]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/24\"]\n[[network.routes]]\nto = \"default\"\nvia = \"10.5.5.5\"\n",
            "route default: gateway 10.5.5.5 is unreachable",
        ),
        (
            "[[network.links]]\nname = \"eth9\"\n",
            "eth9: does not exist",
        ),
        (
            "[[network.links]]\nname = \"vlan101\"\nkind = \"vlan\"\nparent = \"eth9\"\nid = 101\n",
            "vlan101: parent eth9 is not declared",
        ),
        (
            "[[network.links]]\nname = \"eth0\"\nmtuu = 1500\n",
            "unknown field `mtuu`",
        ),
        (
            "[[network.links]]\nname = \"br0\"\nkind = \"bridge\"\nports = [\"br1\"]\n[[network.links]]\nname = \"br1\"\nkind = \"bridge\"\nports = [\"br0\"]\n",
            "links stacked in a cycle: br0 -> br1 -> br0",
        ),
        (
            "[[network.links]]\nname = \"br0\"\nkind = \"bridge\"\nports = [\"ve0\"]\n[[network.links]]\nname = \"ve0\"\nkind = \"veth\"\npeer = \"ve1\"\n[[network.links]]\nname = \"br1\"\nkind = \"bridge\"\nports = [\"br0\"]\n[[network.links]]\nname = \"br2\"\nkind = \"bridge\"\nports = [\"br1\"]\n[[network.links]]\nname = \"br3\"\nkind = \"bridge\"\nports = [\"br2\", \"br4\"]\n[[network.links]]\nname = \"br4\"\nkind = \"bridge\"\nports = [\"br3\"]\n",
            "links stacked in a cycle: br3 -> br4 -> br3",
        ),
    ];
    for (body, want) in cases {
        let doc = document(1, &format!("[network]\n{body}"));
        let err = r.block_on(|| async { net.plan(&doc, None).await.map(drop).unwrap_err() });
        assert_eq!(err.kind, ErrorKind::Invalid, "{body}: {err}");
        assert!(err.message.contains(want), "{body}: {err}");
        // What validation refuses offline, it refuses with plan's words.
        if let Err(offline) = net.validate(&doc) {
            assert_eq!(offline, err, "{body}");
        } else {
            assert!(
                want.contains("unreachable") || want.contains("does not exist"),
                "{body}: only the system can refuse this"
            );
        }
    }
    assert_eq!(net.netlink_requests(), 0);
    assert_eq!(snapshot(&r), before);
}

/// A refusal by the kernel during apply names the object and the errno's meaning.
#[test]
fn apply_errors_name_the_object_and_the_errno() {
    let (r, _outside) = router();
    let net = NetworkReconciler::new().unwrap();
    let doc = document(
        1,
        "[network]\n[[network.links]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/24\"]\n[[network.routes]]\nto = \"10.9.0.0/16\"\nvia = \"10.0.0.254\"\ndev = \"eth0\"\n",
    );
    let err = r.block_on(|| async {
        let p = net.plan(&doc, None).await.unwrap();
        // The world changes between plan and apply: the link goes down.
        std::process::Command::new("ip")
            .args(["link", "set", "eth0", "down"])
            .status()
            .unwrap();
        net.apply(p.payload).await.unwrap_err()
    });
    assert_eq!(err.kind, ErrorKind::Apply);
    assert_eq!(
        err.message,
        "route 10.9.0.0/16: gateway 10.0.0.254 is unreachable (ENETUNREACH)"
    );
    // A link that vanished between plan and apply.
    let doc = document(
        2,
        "[network]\n[[network.links]]\nname = \"eth0\"\nmtu = 1280\n",
    );
    let err = r.block_on(|| async {
        let p = net.plan(&doc, None).await.unwrap();
        std::process::Command::new("ip")
            .args(["link", "del", "eth0"])
            .status()
            .unwrap();
        net.apply(p.payload).await.unwrap_err()
    });
    assert_eq!(err.message, "eth0: does not exist");
}

/// A physical link declared by MAC is found and renamed, then configured.
#[test]
fn physical_link_matched_by_mac_is_renamed() {
    let (r, _outside) = router();
    let net = NetworkReconciler::new().unwrap();
    let mac = r.sh("cat /sys/class/net/eth0/address").trim().to_string();
    let doc = document(
        1,
        &format!(
            "[network]\n[[network.links]]\nname = \"wan\"\nmac = \"{mac}\"\naddresses = [\"10.0.0.1/24\"]\n"
        ),
    );
    let actions = converge(&r, &net, &doc, None);
    assert_eq!(
        actions,
        [
            "set eth0 down (to rename it)",
            "rename eth0 to wan",
            "add address 10.0.0.1/24 to wan",
            "set wan up"
        ]
    );
    let wan = r.sh("ip -o addr show dev wan");
    assert!(
        wan.contains("10.0.0.1/24") && wan.contains("192.168.7.1/24"),
        "{wan}"
    );
    assert!(r.sh("ip -o link show wan").contains(",UP"));
    assert_eq!(plan(&r, &net, &doc, Some(&doc)), Vec::<String>::new());
}

fn link_mac(ns: &Netns, name: &str) -> String {
    ns.sh(&format!("cat /sys/class/net/{name}/address"))
        .trim()
        .to_string()
}

/// Plan and apply, expecting apply to fail; returns the error.
fn failing_apply(
    ns: &Netns,
    net: &NetworkReconciler,
    desired: &Document,
    in_force: Option<&Document>,
) -> String {
    ns.block_on(|| async {
        let p = net
            .plan(desired, in_force)
            .await
            .unwrap_or_else(|e| panic!("plan: {e}"));
        net.apply(p.payload).await.unwrap_err().message
    })
}

/// v1 has a bridge; v2 turns it into a veth and fails; the revert (v1 with v2 in
/// force) re-creates the bridge with the MAC it had under v1, not a random one.
#[test]
fn a_bridge_recreated_by_a_revert_keeps_its_mac() {
    let (r, _outside) = router();
    let net = NetworkReconciler::new().unwrap();
    let v1 = document(
        1,
        "[network]\n[[network.links]]\nname = \"br0\"\nkind = \"bridge\"\naddresses = [\"10.3.0.1/24\"]\n",
    );
    let v2 = document(
        2,
        "[network]\n[[network.links]]\nname = \"br0\"\nkind = \"veth\"\npeer = \"br0p\"\n",
    );
    converge(&r, &net, &v1, None);
    let under_v1 = link_mac(&r, "br0");
    net.inject_failures(&["set br0 up"]);
    let err = failing_apply(&r, &net, &v2, Some(&v1));
    assert_eq!(err, "br0: set br0 up: injected failure (test)");
    assert!(r.sh("ip -d -o link show br0").contains("veth"));
    net.inject_failures(&[]);
    let actions = converge(&r, &net, &v1, Some(&v2));
    assert!(
        actions.contains(&format!("create bridge br0 (mac {under_v1})")),
        "{actions:#?}"
    );
    assert_eq!(link_mac(&r, "br0"), under_v1);
    assert!(r.sh("ip -o addr show dev br0").contains("10.3.0.1/24"));
    // A MAC declared in the document is set, and kept.
    let v3 = document(
        3,
        "[network]\n[[network.links]]\nname = \"br0\"\nkind = \"bridge\"\nmac = \"02:00:00:00:00:33\"\n",
    );
    converge(&r, &net, &v3, Some(&v1));
    assert_eq!(link_mac(&r, "br0"), "02:00:00:00:00:33");
    assert_eq!(plan(&r, &net, &v3, Some(&v3)), Vec::<String>::new());
}

/// v2 creates a bridge, an address and a route, then fails; its revert cannot remove
/// them (refused). The agent restarts; v3, planned with v1 (still committed) in
/// force, does not mention them: the ledger written before they were created makes
/// them the agent's, and they are removed.
#[test]
fn what_a_failed_generation_leaves_behind_is_removed_later() {
    let (r, _outside) = router();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("network");
    let v1 = document(
        1,
        "[network]\n[[network.links]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/24\"]\n",
    );
    let v2 = document(
        2,
        "[network]\nip_forward = true\n[[network.links]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/24\", \"10.0.1.1/24\"]\n[[network.links]]\nname = \"brx\"\nkind = \"bridge\"\naddresses = [\"10.4.0.1/24\"]\n[[network.routes]]\nto = \"10.8.0.0/16\"\nvia = \"10.0.0.254\"\n",
    );
    let v3 = document(
        3,
        "[network]\n[[network.links]]\nname = \"eth0\"\nmtu = 1400\naddresses = [\"10.0.0.1/24\"]\n",
    );
    {
        let net = r.run(|| NetworkReconciler::with_state_dir(&dir).unwrap());
        converge(&r, &net, &v1, None);
        // v2 fails at its last step, after everything else was created.
        net.inject_failures(&["set net.ipv4.ip_forward = 1"]);
        failing_apply(&r, &net, &v2, Some(&v1));
        assert!(r.sh("ip -o link show").contains(": brx:"));
        let on_disk = std::fs::read_to_string(dir.join("ledger.json")).unwrap();
        assert!(
            on_disk.contains("\"brx\"") && on_disk.contains("10.0.1.1/24"),
            "{on_disk}"
        );
        // The revert's removals are refused.
        net.inject_failures(&[
            "delete route 10.8.0.0/16",
            "delete address 10.0.1.1/24 from eth0",
            "delete bridge brx",
        ]);
        failing_apply(&r, &net, &v1, Some(&v2));
    }
    assert!(r.sh("ip -o link show").contains(": brx:"));
    // A new process on the same state directory.
    let net = r.run(|| NetworkReconciler::with_state_dir(&dir).unwrap());
    let actions = converge(&r, &net, &v3, Some(&v1));
    for want in [
        "delete route 10.8.0.0/16",
        "delete address 10.0.1.1/24 from eth0",
        "delete bridge brx",
    ] {
        assert!(actions.contains(&want.to_string()), "{want}: {actions:#?}");
    }
    assert!(!r.sh("ip -o link show").contains(": brx:"));
    let addrs = r.sh("ip -o addr show dev eth0");
    assert!(
        !addrs.contains("10.0.1.1/")
            && addrs.contains("10.0.0.1/24")
            && addrs.contains("192.168.7.1/24"),
        "{addrs}"
    );
    assert_eq!(r.sh("ip route show 10.8.0.0/16").trim(), "");
    assert!(r.sh("ip -o link show").contains(": docker0:"));
    let ledger = net.ledger();
    assert!(
        ledger.links.is_empty() && ledger.routes.is_empty(),
        "{ledger:?}"
    );
    assert_eq!(plan(&r, &net, &v3, Some(&v3)), Vec::<String>::new());
}
