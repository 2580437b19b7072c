//! The `rbd` backend against a real Ceph cluster: `scripts/ceph-single-node.sh start
//! DIR`, then `KOWABUNGA_CEPH_ENV=DIR/env cargo test -p kaktus --test rbd_cluster`.
//! Without that variable the tests say so and pass (the fast tier has no cluster).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::{Canned, HttpServer, Node};
use kaktus::inventory::{PoolBackend, RbdPool};
use kaktus::rbd::{Cluster, Rbd, RbdError};
use kaktus::{NodeInventory, Pool};
use serde_json::json;

/// `KEY=value` lines of the script's env file.
fn env_file() -> Option<BTreeMap<String, String>> {
    let path = std::env::var_os("KOWABUNGA_CEPH_ENV")?;
    let text = std::fs::read_to_string(&path).unwrap();
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// The cluster of the env file, as its client, with the key in a file under `dir`.
fn cluster(env: &BTreeMap<String, String>, dir: &std::path::Path) -> Cluster {
    let key_file = dir.join("client.key");
    std::fs::write(&key_file, &env["CEPH_CLIENT_KEY"]).unwrap();
    Cluster {
        monitors: vec![format!("{}:{}", env["CEPH_MON_ADDR"], env["CEPH_MON_PORT"])],
        client: env["CEPH_ID"].clone(),
        key_file,
    }
}

/// Ceph's own view of the cluster's space (`ceph df`, which the agent does not use):
/// `(total_bytes, total_avail_bytes)`.
fn ceph_df(env: &BTreeMap<String, String>) -> (u64, u64) {
    let df = common::json_output(
        Command::new("ceph")
            .args([
                "--conf",
                &env["CEPH_CONF"],
                "--keyring",
                &env["CEPH_KEYRING"],
            ])
            .args(["--id", &env["CEPH_ID"], "df", "--format", "json"]),
    );
    let stats = &df["stats"];
    (
        stats["total_bytes"].as_u64().unwrap(),
        stats["total_avail_bytes"].as_u64().unwrap(),
    )
}

/// `a` and `b` differ by at most 64 MiB (free space moves as the OSD writes).
fn close(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= 64 << 20
}

#[tokio::test]
async fn templates_clones_and_refusals_on_a_real_cluster() {
    let Some(env) = env_file() else {
        eprintln!(
            "KOWABUNGA_CEPH_ENV not set: no cluster to test against (see docs/ceph-single-node.md)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rbd = Rbd::new(cluster(&env, dir.path()));
    let pool = env["CEPH_POOL"].as_str();
    let tag = format!("t{:08x}", fastrand::u32(..));
    let (template, os, work) = (
        format!("{tag}-tpl"),
        format!("{tag}-os"),
        format!(".kaktus-work-{tag}"),
    );

    assert_eq!(rbd.info(pool, &template).await.unwrap(), None);
    // A template: imported under a work name, snapshotted, renamed.
    let raw = dir.path().join("template.raw");
    std::fs::write(&raw, vec![7u8; 4 << 20]).unwrap();
    rbd.import(pool, &work, &raw, Duration::from_secs(120))
        .await
        .unwrap();
    rbd.snapshot_protected(pool, &work, "kaktus-template")
        .await
        .unwrap();
    rbd.rename(pool, &work, &template).await.unwrap();
    let info = rbd.info(pool, &template).await.unwrap().unwrap();
    assert_eq!((info.size, info.snapshot_count), (4 << 20, 1));

    // An OS volume: a clone, grown.
    rbd.clone_from(pool, &template, "kaktus-template", &os)
        .await
        .unwrap();
    rbd.resize(pool, &os, 8 << 20).await.unwrap();
    let info = rbd.info(pool, &os).await.unwrap().unwrap();
    assert_eq!(info.size, 8 << 20);
    assert_eq!(info.parent.unwrap().image, template);
    let children = rbd
        .children(pool, &template, "kaktus-template")
        .await
        .unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].image, os);
    assert!(rbd.list(pool).await.unwrap().contains(&os));

    // Refusals, told apart.
    let err = rbd.rename(pool, &os, &template).await.unwrap_err();
    assert!(matches!(err, RbdError::Exists { .. }), "{err}");
    let err = rbd.remove(pool, &template).await.unwrap_err();
    assert!(matches!(err, RbdError::Busy { .. }), "{err}");
    let err = rbd
        .remove_snapshot(pool, &template, "kaktus-template")
        .await
        .unwrap_err();
    assert!(!matches!(err, RbdError::NotFound { .. }), "{err}");
    let err = rbd.resize(pool, &os, 1 << 20).await.unwrap_err();
    assert!(err.to_string().contains("shrink"), "{err}");
    let usage = rbd.usage(pool).await.unwrap();
    let (total, avail) = ceph_df(&env);
    assert_eq!(usage.cluster_size, total, "{usage:?}");
    assert!(
        close(usage.cluster_avail, avail),
        "{usage:?}, ceph df: {avail}"
    );
    assert!(usage.stored <= usage.cluster_size, "{usage:?}");
    let missing = rbd.usage("no-such-pool").await.unwrap_err();
    assert!(missing.to_string().contains("no-such-pool"), "{missing}");

    // Clean up: the clone, then the template's snapshot, then the template.
    rbd.remove(pool, &os).await.unwrap();
    rbd.remove_snapshot(pool, &template, "kaktus-template")
        .await
        .unwrap();
    rbd.remove(pool, &template).await.unwrap();
    assert_eq!(rbd.info(pool, &template).await.unwrap(), None);
    let err = rbd.remove(pool, &template).await.unwrap_err();
    assert!(matches!(err, RbdError::NotFound { .. }), "{err}");
}

/// Kahuna's volume methods on an `rbd` pool, over the real WebSocket transport, checked
/// against Ceph's own view (`rbd info`), not only the replies.
#[tokio::test(flavor = "multi_thread")]
async fn volume_methods_on_an_rbd_pool_through_kahuna() {
    let Some(env) = env_file() else {
        eprintln!(
            "KOWABUNGA_CEPH_ENV not set: no cluster to test against (see docs/ceph-single-node.md)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&env, dir.path());
    let ceph_pool = env["CEPH_POOL"].clone();
    let mut inventory = NodeInventory::new();
    inventory.pools.insert(
        "ceph".into(),
        Pool {
            name: "ceph".into(),
            backend: PoolBackend::Rbd(RbdPool {
                ceph_pool: ceph_pool.clone(),
                cluster: cluster.clone(),
                secret_uuid: "6a3e1b56-0f2c-4a8e-9d3b-2b1f5c7e9a10".into(),
            }),
        },
    );
    let mut node = Node::start("test:///default", inventory).await;
    let rbd = Rbd::new(cluster);
    let tag = format!("k{:06x}", fastrand::u32(..1 << 24));
    let name = |what: &str| format!("{tag}-{what}");

    // A qcow2 template served over HTTP: downloaded, converted, imported with its
    // snapshot; nothing left in the scratch directory.
    let raw: Vec<u8> = (0..4usize << 20).map(|i| (i / 4096 % 251) as u8).collect();
    std::fs::write(dir.path().join("src.raw"), &raw).unwrap();
    let ok = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(dir.path().join("src.raw"))
        .arg(dir.path().join("src.qcow2"))
        .status()
        .unwrap();
    assert!(ok.success());
    let qcow = std::fs::read(dir.path().join("src.qcow2")).unwrap();
    let http = HttpServer::start(BTreeMap::from([(
        "/img.qcow2".to_owned(),
        Canned::ok("application/octet-stream", qcow),
    )]))
    .await;
    let tpl = name("tpl");
    let r = node
        .ok(
            "CreateTemplateVolume",
            json!({"Pool": "ceph", "Volume": tpl, "SourceURL": http.url("/img.qcow2")}),
        )
        .await;
    assert_eq!(r, json!({"Size": 4u64 << 20}));
    let info = rbd.info(&ceph_pool, &tpl).await.unwrap().unwrap();
    assert_eq!((info.size, info.snapshot_count), (4 << 20, 1));
    let scratch: Vec<String> = std::fs::read_dir(kaktus::storage_rbd::SCRATCH_DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&tpl))
        .collect();
    assert!(
        scratch.is_empty(),
        "left in the scratch directory: {scratch:?}"
    );
    let err = node
        .err(
            "CreateTemplateVolume",
            json!({"Pool": "ceph", "Volume": tpl, "SourceURL": http.url("/img.qcow2")}),
        )
        .await;
    assert!(err.contains("already exists"), "{err}");

    // An OS volume: a clone of the template, grown; smaller than the template refused.
    let os = name("os");
    node.ok(
        "CreateOsVolume",
        json!({"Pool": "ceph", "Volume": os, "Size": 8u64 << 20, "Template": tpl}),
    )
    .await;
    let info = rbd.info(&ceph_pool, &os).await.unwrap().unwrap();
    assert_eq!(info.size, 8 << 20);
    assert_eq!(info.parent.unwrap().image, tpl);
    let err = node
        .err(
            "CreateOsVolume",
            json!({"Pool": "ceph", "Volume": name("small"), "Size": 1u64 << 20, "Template": tpl}),
        )
        .await;
    assert!(err.contains("smaller than its template"), "{err}");
    let err = node
        .err(
            "CreateOsVolume",
            json!({"Pool": "ceph", "Volume": name("x"), "Size": 0, "Template": name("nope")}),
        )
        .await;
    assert!(err.contains("no such volume"), "{err}");
    let r = node
        .ok("GetVolumeInfos", json!({"Pool": "ceph", "Volume": os}))
        .await;
    assert_eq!(r, json!({"Size": 8u64 << 20}));

    // Resize: grow, never shrink.
    node.ok(
        "ResizeVolume",
        json!({"Pool": "ceph", "Volume": os, "Size": 16u64 << 20}),
    )
    .await;
    assert_eq!(
        rbd.info(&ceph_pool, &os).await.unwrap().unwrap().size,
        16 << 20
    );
    let err = node
        .err(
            "ResizeVolume",
            json!({"Pool": "ceph", "Volume": os, "Size": 1u64 << 20}),
        )
        .await;
    assert!(err.contains("cannot shrink"), "{err}");

    // A raw volume and a cloud-init ISO, created then replaced.
    let data = name("data");
    node.ok(
        "CreateRawVolume",
        json!({"Pool": "ceph", "Volume": data, "Size": 32u64 << 20}),
    )
    .await;
    assert_eq!(
        rbd.info(&ceph_pool, &data).await.unwrap().unwrap().size,
        32 << 20
    );
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let ci = name("ci");
    node.ok(
        "CreateIsoVolume",
        json!({"Pool": "ceph", "Volume": ci, "Size": 1u64 << 20, "Content": b64(b"first")}),
    )
    .await;
    node.ok(
        "UpdateIsoVolume",
        json!({"Pool": "ceph", "Volume": ci, "Size": 1u64 << 20, "Content": b64(b"second")}),
    )
    .await;
    assert_eq!(
        rbd.info(&ceph_pool, &ci).await.unwrap().unwrap().size,
        1 << 20
    );

    // Pool statistics from Ceph.
    let stats = node
        .ok("GetStoragePoolStats", json!({"Pool": "ceph"}))
        .await;
    // Upstream's figures: the pool's bytes, the cluster's free and total raw bytes.
    let (total, avail) = ceph_df(&env);
    assert_eq!(stats["Capacity"].as_u64().unwrap(), total, "{stats}");
    assert!(
        close(stats["Available"].as_u64().unwrap(), avail),
        "{stats}, ceph df: {avail}"
    );
    assert!(stats["Allocated"].as_u64().unwrap() <= total, "{stats}");

    // Delete: the template is refused while its clone exists; then everything goes,
    // and no work image is left in the Ceph pool.
    let err = node
        .err("DeleteVolume", json!({"Pool": "ceph", "Volume": tpl}))
        .await;
    assert!(
        err.contains(&format!("is the template of volume {os}")),
        "{err}"
    );
    for v in [&os, &tpl, &data, &ci] {
        node.ok("DeleteVolume", json!({"Pool": "ceph", "Volume": v}))
            .await;
    }
    let left: Vec<String> = rbd
        .list(&ceph_pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.contains(&tag))
        .collect();
    assert!(left.is_empty(), "left in the Ceph pool: {left:?}");
    let err = node
        .err("GetVolumeInfos", json!({"Pool": "ceph", "Volume": os}))
        .await;
    assert!(err.contains("no such volume"), "{err}");
    node.stop().await;
}

/// An instance on an `rbd` pool, as Kahuna defines one: the reconciler defines the
/// pool's secret from the key file; the template is imported, the OS volume cloned,
/// the cloud-init ISO written; Kahuna's RBD disks keep their image and get the node's
/// monitors and secret; the instance starts under TCG (libvirtd's QEMU opens the image
/// through librbd: Ceph lists it as a watcher), is grown live, stopped and deleted.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_on_an_rbd_pool_runs_with_its_disk_in_ceph() {
    let Some(env) = env_file() else {
        eprintln!(
            "KOWABUNGA_CEPH_ENV not set: no cluster to test against (see docs/ceph-single-node.md)"
        );
        return;
    };
    use kaktus::{KaktusReconciler, Libvirt, SharedInventory};
    use kowabunga_model::{Document, Format, Reconciler};
    common::ensure_libvirtd();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&env, dir.path());
    let ceph_pool = env["CEPH_POOL"].clone();
    let uuid = format!("6a3e1b56-0f2c-4a8e-9d3b-{:012x}", fastrand::u64(..1 << 48));
    let text = format!(
        "version = 1\nnode = \"kaktus-eu-1\"\nissued_at = 2026-01-01T00:00:00Z\nexpires_at = 2099-01-01T00:00:00Z\n\
         [kaktus]\nconsole_address = \"127.0.0.1\"\n\
         [kaktus.pools.ceph]\nbackend = \"rbd\"\nceph_pool = \"{ceph_pool}\"\nmonitors = [\"{}\"]\n\
         client = \"{}\"\nsecret_uuid = \"{uuid}\"\nkey_file = \"{}\"\n",
        cluster.monitors[0],
        cluster.client,
        cluster.key_file.display()
    );
    let doc = Document::parse(text.as_bytes(), Format::Toml).unwrap();
    let libvirt = Libvirt::new(common::SYSTEM);
    let inventory = SharedInventory::new(NodeInventory::new());
    let reconciler = KaktusReconciler::new(libvirt.clone(), inventory.clone());
    let planned = reconciler.plan(&doc, None).await.unwrap();
    reconciler.apply(planned.payload).await.unwrap();
    reconciler.check(&doc).await.unwrap();
    let mut node = Node::start_with(libvirt, inventory).await;
    let rbd = Rbd::new(cluster.clone());
    let tag = format!("k{:06x}", fastrand::u32(..1 << 24));
    let (tpl, os, ci) = (
        format!("{tag}-tpl"),
        format!("{tag}-os"),
        format!("{tag}-ci"),
    );

    let http = HttpServer::start(BTreeMap::from([(
        "/tpl.raw".to_owned(),
        Canned::ok("application/octet-stream", vec![0u8; 16 << 20]),
    )]))
    .await;
    node.ok(
        "CreateTemplateVolume",
        json!({"Pool": "ceph", "Volume": tpl, "SourceURL": http.url("/tpl.raw")}),
    )
    .await;
    node.ok(
        "CreateOsVolume",
        json!({"Pool": "ceph", "Volume": os, "Size": 32u64 << 20, "Template": tpl}),
    )
    .await;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    node.ok(
        "CreateIsoVolume",
        json!({"Pool": "ceph", "Volume": ci, "Size": 65536, "Content": b64(&[0u8; 4096])}),
    )
    .await;

    let name = common::unique("vm");
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type></os><features><acpi/></features><devices>\
         <disk type='network' device='disk'><driver name='qemu' type='raw' cache='writeback'/>\
           <auth username='libvirt'><secret type='ceph' uuid='3f8b2a55-1111-2222-3333-444455556666'/></auth>\
           <source protocol='rbd' name='ceph/{os}'><host name='10.0.0.1' port='3300'/></source><target dev='vda' bus='virtio'/></disk>\
         <disk type='network' device='cdrom'><driver name='qemu' type='raw'/><source protocol='rbd' name='ceph/{ci}'/>\
           <target dev='hda' bus='ide'/><readonly/><serial>cloudinit</serial></disk>\
         <graphics type='vnc' autoport='yes' listen='127.0.0.1'/></devices></domain>"
    );
    node.ok("CreateInstance", json!({"Name": name, "XML": xml}))
        .await;
    let defined = common::virsh(common::SYSTEM, &["dumpxml", &name]);
    assert!(
        defined.contains(&format!("name='{ceph_pool}/{os}'"))
            && defined.contains(&format!("uuid='{uuid}'"))
            && !defined.contains("10.0.0.1"),
        "{defined}"
    );

    node.ok("InstanceOperation", json!({"Name": name, "Action": 1}))
        .await;
    assert_eq!(common::dominfo(common::SYSTEM, &name, "State"), "running");
    let status = Command::new("rbd")
        .args(["--conf", "/dev/null", "--mon_host", &cluster.monitors[0]])
        .args(["--id", &cluster.client, "--keyfile"])
        .arg(&cluster.key_file)
        .args(["status", "--format", "json", &format!("{ceph_pool}/{os}")])
        .output()
        .unwrap();
    let watchers: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        watchers["watchers"].as_array().map(Vec::len),
        Some(1),
        "QEMU does not hold {ceph_pool}/{os}: {watchers}"
    );

    // In use: not deletable; grown live through libvirt (the guest sees it).
    let err = node
        .err("DeleteVolume", json!({"Pool": "ceph", "Volume": os}))
        .await;
    assert!(
        err.contains(&format!("is in use by instance {name}")),
        "{err}"
    );
    node.ok(
        "ResizeVolume",
        json!({"Pool": "ceph", "Volume": os, "Size": 48u64 << 20}),
    )
    .await;
    let blk = common::virsh(common::SYSTEM, &["domblkinfo", &name, "vda"]);
    assert!(
        blk.lines()
            .any(|l| l.starts_with("Capacity:")
                && l.trim_end().ends_with(&(48u64 << 20).to_string())),
        "{blk}"
    );
    assert_eq!(
        rbd.info(&ceph_pool, &os).await.unwrap().unwrap().size,
        48 << 20
    );

    node.ok("InstanceOperation", json!({"Name": name, "Action": 4}))
        .await;
    node.ok("DeleteInstance", json!({"Name": name})).await;
    for v in [&os, &ci, &tpl] {
        node.ok("DeleteVolume", json!({"Pool": "ceph", "Volume": v}))
            .await;
    }
    node.stop().await;
    common::virsh(common::SYSTEM, &["secret-undefine", &uuid]);
}
