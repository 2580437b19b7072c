//! Every read-only and instance method through a fake Kahuna over the real WebSocket
//! transport, against libvirt's `test:///default` driver. That driver keeps its state in
//! the process that opened it, the agent's `kaktus-libvirt` helper, so libvirt's view
//! is read back through the helper (`DomainStatus`: libvirt's numbers, not the agent's
//! words); tests/libvirtd.rs checks a real daemon with `virsh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, inventory_with};
use kaktus::Libvirt;
use kaktus::libvirt_protocol::{DomainStatus, PoolInfo, Request};
use serde_json::json;

const URI: &str = "test:///default";

fn test_domain(name: &str, devices: &str) -> String {
    format!(
        "<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory><os><type arch='i686'>hvm</type></os><devices>{devices}<graphics type='spice' port='5904' listen='127.0.0.1'/></devices></domain>"
    )
}

/// libvirt's own view of a domain: `(state, autostart)`.
async fn libvirt_view(libvirt: &Libvirt, name: &str) -> Option<(u32, bool)> {
    let status: Option<DomainStatus> = libvirt
        .request(Request::DomainStatus { name: name.into() })
        .await
        .unwrap();
    status.map(|s| (s.state, s.autostart))
}

#[tokio::test(flavor = "multi_thread")]
async fn kahuna_drives_kaktus_on_the_test_driver() {
    let pool = std::path::Path::new("/default-pool");
    let mut node = Node::start(
        URI,
        inventory_with(&[("default-pool", pool)], &["br0", "br102"]),
    )
    .await;
    let view = node.libvirt.clone();

    // Handshake: Capabilities lists the 18 served methods, never CephFS/NFS ones.
    let (version, methods) = node.conn.capabilities("Kaktus").await;
    assert_eq!(version, "0.1");
    let mut expected: Vec<&str> = kaktus::service::METHODS.to_vec();
    expected.push("Capabilities");
    expected.sort();
    assert_eq!(methods, expected);
    assert_eq!(methods.len(), 19);
    let err = node.err("ListFileSystems", json!({})).await;
    assert_eq!(err, "wsrpc: can't find method Kaktus.ListFileSystems");

    // NodeCapabilities from the test driver's host: 2 NUMA cells, 16 CPUs, 6 GiB.
    let caps = node.ok("NodeCapabilities", json!({})).await;
    assert_eq!(
        caps,
        json!({"Arch": "i686", "Vendor": "", "Model": "", "Sockets": 2, "Cores": 16, "Threads": 16,
               "Memory": 6u64 << 30, "GuestEmulator": "/usr/bin/test-hv", "GuestMachineName": ""})
    );

    // The driver's own running domain.
    let state = node.ok("GetInstanceState", json!({"Name": "test"})).await;
    assert_eq!(state["State"], "Running");
    assert_eq!(
        node.ok("InstanceIsRunning", json!({"Name": "test"})).await,
        json!({"Running": true})
    );
    let xml = node
        .ok("GetInstance", json!({"Name": "test", "Migratable": true}))
        .await;
    assert!(xml["XML"].as_str().unwrap().contains("<name>test</name>"));

    // Pool stats as libvirt reports them.
    let stats = node
        .ok("GetStoragePoolStats", json!({"Pool": "default-pool"}))
        .await;
    let info: PoolInfo = view
        .request(Request::PoolInfo {
            pool: "default-pool".into(),
        })
        .await
        .unwrap();
    assert!(info.capacity > 0 && info.allocation + info.available <= info.capacity);
    assert_eq!(
        stats,
        json!({"Allocated": info.allocation, "Available": info.available, "Capacity": info.capacity})
    );
    let err = node
        .err("GetStoragePoolStats", json!({"Pool": "ceph"}))
        .await;
    assert!(
        err.contains("pool \"ceph\" is not a storage pool of this node"),
        "{err}"
    );

    // Volume names and unknown volumes (sizes: tests/libvirtd.rs, on a real daemon).
    let err = node
        .err(
            "GetVolumeInfos",
            json!({"Pool": "default-pool", "Volume": "../etc"}),
        )
        .await;
    assert!(err.contains("volume name \"../etc\" contains `/`"), "{err}");
    let err = node
        .err(
            "GetVolumeInfos",
            json!({"Pool": "default-pool", "Volume": "ghost"}),
        )
        .await;
    assert!(
        err.contains("volume default-pool/ghost: no such volume"),
        "{err}"
    );

    // Create an instance: checked, defined, visible to libvirt.
    let name = common::unique("vm");
    let disk = "<disk type='file' device='disk'><source file='/default-pool/vm-os'/><target dev='vda' bus='virtio'/></disk>";
    let nic = "<interface type='bridge'><mac address='52:54:00:12:34:56'/><source bridge='br102'/></interface>";
    node.ok(
        "CreateInstance",
        json!({"Name": name, "XML": test_domain(&name, &format!("{disk}{nic}"))}),
    )
    .await;
    assert_eq!(
        libvirt_view(&view, &name).await,
        Some((5, false)),
        "defined, shut off"
    );
    assert_eq!(
        node.ok("GetInstanceState", json!({"Name": name})).await,
        json!({"State": "Shutoff", "Reason": "Unknown"})
    );
    assert_eq!(
        node.ok("InstanceIsRunning", json!({"Name": name})).await,
        json!({"Running": false})
    );

    // Refused XML leaves libvirt unchanged.
    let bad = node
        .err("CreateInstance", json!({"Name": "evil", "XML": test_domain("evil", "<disk type='file' device='disk'><source file='/etc/shadow'/><target dev='vda'/></disk>")}))
        .await;
    assert!(
        bad.contains("instance evil: disk vda: /etc/shadow is outside this node's storage pools"),
        "{bad}"
    );
    let bad = node
        .err("CreateInstance", json!({"Name": "evil", "XML": test_domain("evil", "<interface type='bridge'><source bridge='virbr9'/></interface>")}))
        .await;
    assert!(
        bad.contains("bridge \"virbr9\" is not a bridge declared on this node"),
        "{bad}"
    );
    let bad = node
        .err(
            "CreateInstance",
            json!({"Name": "evil", "XML": "<domain><name>evil"}),
        )
        .await;
    assert!(bad.contains("not well-formed"), "{bad}");
    // Well-formed and ours, but libvirt refuses it: its reason comes back.
    let bad = node
        .err("CreateInstance", json!({"Name": "evil", "XML": "<domain type='test'><name>evil</name><memory>x</memory></domain>"}))
        .await;
    assert!(
        bad.starts_with("instance evil: libvirt refused the domain XML: "),
        "{bad}"
    );
    assert!(libvirt_view(&view, "evil").await.is_none());

    // The eight operations, checked against libvirt.
    let op = |action: i64| json!({"Name": name, "Action": action});
    node.ok("InstanceOperation", op(1)).await; // Start
    assert_eq!(libvirt_view(&view, &name).await, Some((1, false)));
    let url = node
        .ok("GetInstanceRemoteConnectionUrl", json!({"Name": name}))
        .await;
    assert_eq!(url, json!({"URL": "spice://127.0.0.1:5904"}));
    node.ok("InstanceOperation", op(6)).await; // PmSuspend (libvirt: suspend = paused)
    assert_eq!(libvirt_view(&view, &name).await.unwrap().0, 3);
    assert_eq!(
        node.ok("InstanceIsRunning", json!({"Name": name})).await,
        json!({"Running": true})
    );
    node.ok("InstanceOperation", op(7)).await; // PmResume
    assert_eq!(libvirt_view(&view, &name).await.unwrap().0, 1);
    node.ok("InstanceOperation", op(2)).await; // SoftReboot
    node.ok("InstanceOperation", op(3)).await; // HardReboot
    assert_eq!(libvirt_view(&view, &name).await.unwrap().0, 1);
    node.ok("InstanceOperation", op(5)).await; // SoftShutdown
    assert_eq!(libvirt_view(&view, &name).await.unwrap().0, 5);
    node.ok("InstanceOperation", op(4)).await; // HardShutdown of a stopped one: nothing
    node.ok("InstanceOperation", op(0)).await; // AutoStart: flag + start
    assert_eq!(libvirt_view(&view, &name).await, Some((1, true)));
    node.ok("InstanceOperation", op(4)).await; // HardShutdown
    assert_eq!(libvirt_view(&view, &name).await.unwrap().0, 5);
    assert_eq!(
        node.ok("GetInstanceState", json!({"Name": name})).await,
        json!({"State": "Shutoff", "Reason": "Destroyed"})
    );
    let err = node.err("InstanceOperation", op(8)).await;
    assert!(
        err.starts_with("unsupported instance operation: 8"),
        "{err}"
    );
    let err = node
        .err("InstanceOperation", json!({"Name": "ghost", "Action": 1}))
        .await;
    assert_eq!(err, "instance ghost: no such instance on this node");

    // Update: the new XML is in force; unknown instances are refused.
    node.ok(
        "UpdateInstance",
        json!({"Name": name, "XML": test_domain(&name, disk).replace("<memory unit='MiB'>64<", "<memory unit='MiB'>128<")}),
    )
    .await;
    let xml = node
        .ok("GetInstance", json!({"Name": name, "Migratable": false}))
        .await;
    assert!(
        xml["XML"]
            .as_str()
            .unwrap()
            .contains("<memory unit='KiB'>131072</memory>"),
        "{xml}"
    );
    assert!(!xml["XML"].as_str().unwrap().contains("br102"));
    let err = node
        .err(
            "UpdateInstance",
            json!({"Name": "ghost", "XML": test_domain("ghost", "")}),
        )
        .await;
    assert_eq!(err, "instance ghost: no such instance on this node");

    // Unknown instances, everywhere.
    for method in [
        "GetInstanceState",
        "GetInstance",
        "DeleteInstance",
        "GetInstanceRemoteConnectionUrl",
    ] {
        let err = node.err(method, json!({"Name": "ghost"})).await;
        assert_eq!(
            err, "instance ghost: no such instance on this node",
            "{method}"
        );
    }
    assert_eq!(
        node.ok("InstanceIsRunning", json!({"Name": "ghost"})).await,
        json!({"Running": false})
    );

    // Delete (running: stopped first), gone from libvirt.
    node.ok("InstanceOperation", op(1)).await;
    node.ok("DeleteInstance", json!({"Name": name})).await;
    assert!(libvirt_view(&view, &name).await.is_none());

    node.stop().await;
}
