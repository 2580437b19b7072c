//! The `local` backend and instances against a real libvirtd (`qemu:///system`,
//! started here when none runs; guests under TCG): the `[kaktus]` reconciler defines
//! the pool, then a fake Kahuna drives every volume method over the real WebSocket
//! transport, and each result is checked with `virsh` and on disk, failures included
//! (nothing left behind).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::{
    Canned, HttpServer, Node, SYSTEM, ensure_libvirtd, pool_dir, unique, virsh, virsh_try,
};
use kaktus::{KaktusReconciler, Libvirt, NodeInventory, SharedInventory};
use kowabunga_model::{Document, Format, Reconciler};
use serde_json::json;
use sha2::{Digest, Sha256};

fn document(version: u64, pool: &str, dir: &Path) -> Document {
    let pools = if pool.is_empty() {
        String::new()
    } else {
        format!(
            "[kaktus.pools.{pool}]\nbackend = \"local\"\npath = \"{}\"\n",
            dir.display()
        )
    };
    let text = format!(
        "version = {version}\nnode = \"kaktus-eu-1\"\nissued_at = 2026-01-01T00:00:00Z\nexpires_at = 2099-01-01T00:00:00Z\n\
         [kaktus]\nconsole_address = \"127.0.0.1\"\n{pools}\
         [[network.links]]\nname = \"br102\"\nkind = \"bridge\"\n"
    );
    Document::parse(text.as_bytes(), Format::Toml).unwrap()
}

/// Define the pool through the reconciler, as a generation would.
async fn pool_up(reconciler: &KaktusReconciler, doc: &Document) -> Vec<String> {
    reconciler.validate(doc).unwrap();
    let planned = reconciler.plan(doc, None).await.unwrap();
    let actions = planned.actions.iter().map(|a| a.0.clone()).collect();
    reconciler.apply(planned.payload).await.unwrap();
    reconciler.check(doc).await.unwrap();
    actions
}

async fn pool_down(reconciler: &KaktusReconciler, pool: &str, dir: &Path, in_force: &Document) {
    let empty = document(in_force.header.version + 1, "", dir);
    let planned = reconciler.plan(&empty, Some(in_force)).await.unwrap();
    let actions: Vec<String> = planned.actions.iter().map(|a| a.0.clone()).collect();
    assert_eq!(
        actions,
        [format!(
            "undefine pool {pool} (its directory and volumes are kept)"
        )]
    );
    reconciler.apply(planned.payload).await.unwrap();
    assert!(
        !virsh_try(SYSTEM, &["pool-info", pool]).0,
        "pool {pool} still defined"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn vol_list(pool: &str) -> Vec<String> {
    let mut names: Vec<String> = virsh(SYSTEM, &["vol-list", pool])
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Files in the pool directory (work files included: none may be left behind).
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn qemu_img_info(path: &Path) -> serde_json::Value {
    common::json_output(
        Command::new("qemu-img")
            .args(["info", "--output=json", "-U"])
            .arg(path),
    )
}

/// A raw image with a recognisable pattern, and the same as qcow2 bytes.
fn images(dir: &Path, mib: usize) -> (Vec<u8>, Vec<u8>) {
    let raw: Vec<u8> = (0..mib << 20).map(|i| (i / 4096 % 251) as u8).collect();
    let raw_path = dir.join("src.raw");
    let qcow_path = dir.join("src.qcow2");
    std::fs::write(&raw_path, &raw).unwrap();
    let ok = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw_path)
        .arg(&qcow_path)
        .status()
        .unwrap();
    assert!(ok.success());
    (raw, std::fs::read(&qcow_path).unwrap())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn local_pool_volumes_through_kahuna() {
    ensure_libvirtd();
    let pool = unique("pool");
    let dir = pool_dir(&pool);
    let libvirt = Libvirt::new(SYSTEM);
    let inventory = SharedInventory::new(NodeInventory::new());
    let reconciler = KaktusReconciler::new(libvirt.clone(), inventory.clone());
    let doc = document(1, &pool, &dir);
    let actions = pool_up(&reconciler, &doc).await;
    assert_eq!(
        actions,
        [
            format!("create directory {}", dir.display()),
            format!("define pool {pool} (local, {})", dir.display()),
            format!("start pool {pool}"),
            format!("autostart pool {pool}"),
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o711
    );
    let info = virsh(SYSTEM, &["pool-info", &pool]);
    assert!(
        info.contains("running")
            && info
                .lines()
                .any(|l| l.starts_with("Autostart:") && l.ends_with("yes")),
        "{info}"
    );
    // Applied: planning again changes nothing.
    assert!(
        reconciler
            .plan(&doc, Some(&doc))
            .await
            .unwrap()
            .actions
            .is_empty()
    );
    assert!(inventory.get().bridges.contains("br102"));
    // Drift: a pool stopped by hand is started again.
    virsh(SYSTEM, &["pool-destroy", &pool]);
    let drift = reconciler.plan(&doc, Some(&doc)).await.unwrap();
    let drift_actions: Vec<String> = drift.actions.iter().map(|a| a.0.clone()).collect();
    assert_eq!(drift_actions, [format!("start pool {pool}")]);
    reconciler.apply(drift.payload).await.unwrap();
    reconciler.check(&doc).await.unwrap();

    let mut node = Node::start_with(libvirt, inventory.clone()).await;
    let p = pool.as_str();

    // Pool stats: libvirt's numbers.
    let stats = node.ok("GetStoragePoolStats", json!({"Pool": p})).await;
    let bytes = virsh(SYSTEM, &["pool-info", "--bytes", p]);
    let capacity = bytes
        .lines()
        .find_map(|l| l.strip_prefix("Capacity:"))
        .unwrap()
        .trim()
        .parse::<u64>()
        .unwrap();
    assert_eq!(stats["Capacity"], capacity);
    assert!(stats["Available"].as_u64().unwrap() > 0);

    // Raw volume: sparse, listed by libvirt, sized.
    node.ok(
        "CreateRawVolume",
        json!({"Pool": p, "Volume": "data1", "Size": 10u64 << 20}),
    )
    .await;
    assert_eq!(vol_list(p), ["data1"]);
    assert_eq!(
        node.ok("GetVolumeInfos", json!({"Pool": p, "Volume": "data1"}))
            .await,
        json!({"Size": 10u64 << 20})
    );
    let err = node
        .err(
            "CreateRawVolume",
            json!({"Pool": p, "Volume": "data1", "Size": 1}),
        )
        .await;
    assert!(err.contains("already exists"), "{err}");
    for bad in ["../escape", "a/b", ".hidden", ""] {
        let err = node
            .err(
                "CreateRawVolume",
                json!({"Pool": p, "Volume": bad, "Size": 1}),
            )
            .await;
        assert!(err.contains(&format!("volume name {bad:?}")), "{err}");
    }
    assert_eq!(files(&dir), ["data1"]);
    assert!(!Path::new("/var/tmp/escape").exists());

    // Templates over HTTP: raw (sha256 checked) and qcow2 (converted to raw).
    let src = tempfile::tempdir().unwrap();
    let (raw, qcow2) = images(src.path(), 4);
    let sha = hex(&Sha256::digest(&raw));
    let mut html_body = b"<!DOCTYPE html><html><head><title>Sign in</title></head>".to_vec();
    html_body.resize(4096, b' ');
    let mut xz = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
    xz.resize(4096, 0);
    let mut routes = BTreeMap::new();
    routes.insert(
        "/img.raw".to_owned(),
        Canned::ok("application/octet-stream", raw.clone()),
    );
    routes.insert(
        "/img.qcow2".to_owned(),
        Canned::ok("application/octet-stream", qcow2.clone()),
    );
    routes.insert(
        "/login".to_owned(),
        Canned::ok("text/html; charset=utf-8", html_body.clone()),
    );
    routes.insert(
        "/disguised".to_owned(),
        Canned::ok("application/octet-stream", html_body),
    );
    routes.insert(
        "/img.qcow2.xz".to_owned(),
        Canned::ok("application/x-xz", xz),
    );
    routes.insert(
        "/cut.qcow2".to_owned(),
        Canned {
            send: Some(qcow2.len() / 2),
            ..Canned::ok("application/octet-stream", qcow2.clone())
        },
    );
    routes.insert("/latest.raw".to_owned(), Canned::redirect("/img.raw"));
    routes.insert("/loop".to_owned(), Canned::redirect("/loop"));
    let http = HttpServer::start(routes).await;

    let r = node
        .ok("CreateTemplateVolume", json!({"Pool": p, "Volume": "tpl-raw", "SourceURL": format!("{}#sha256={sha}", http.url("/latest.raw"))}))
        .await;
    assert_eq!(r, json!({"Size": 4u64 << 20}));
    assert_eq!(std::fs::read(dir.join("tpl-raw")).unwrap(), raw);
    let r = node
        .ok(
            "CreateTemplateVolume",
            json!({"Pool": p, "Volume": "tpl-qcow", "SourceURL": http.url("/img.qcow2")}),
        )
        .await;
    assert_eq!(r, json!({"Size": 4u64 << 20}));
    assert_eq!(
        qemu_img_info(&dir.join("tpl-qcow"))["format"],
        "raw",
        "stored as raw"
    );
    assert_eq!(std::fs::read(dir.join("tpl-qcow")).unwrap(), raw);
    assert!(node.progress.snapshot().is_empty(), "progress cleared");

    let before = files(&dir);
    let wrong_sha = "00".repeat(32);
    let failures = [
        (http.url("/missing.qcow2"), "HTTP 404 Not Found"),
        (http.url("/login"), "HTML page (Content-Type text/html)"),
        (
            http.url("/disguised"),
            "answered an HTML page, not a disk image",
        ),
        (http.url("/img.qcow2.xz"), "is a xz archive"),
        (http.url("/cut.qcow2"), "download broke"),
        (
            format!("{}#sha256={wrong_sha}", http.url("/img.raw")),
            "sha256 mismatch",
        ),
        ("ftp://127.0.0.1/x".to_owned(), "only http and https"),
        (http.url("/loop"), "more than 5 redirects"),
    ];
    for (url, expected) in &failures {
        let err = node
            .err(
                "CreateTemplateVolume",
                json!({"Pool": p, "Volume": "tpl-bad", "SourceURL": url}),
            )
            .await;
        assert!(
            err.contains(expected) || (expected == &"download broke" && err.contains("truncated")),
            "{url}: {err}"
        );
        assert!(err.starts_with(&format!("template {p}/tpl-bad")), "{err}");
        assert_eq!(files(&dir), before, "{url}: left something behind");
    }
    // Over the node's cap: refused from Content-Length, nothing written.
    let mut small = inventory.get();
    small.template_max_bytes = 1 << 20;
    inventory.set(small);
    let err = node
        .err(
            "CreateTemplateVolume",
            json!({"Pool": p, "Volume": "tpl-bad", "SourceURL": http.url("/img.raw")}),
        )
        .await;
    assert!(
        err.contains("over this node's cap of 1048576 bytes"),
        "{err}"
    );
    assert_eq!(files(&dir), before);
    assert_eq!(vol_list(p), ["data1", "tpl-qcow", "tpl-raw"]);

    // OS volume: a qcow2 clone backed by the template, nothing copied.
    node.ok(
        "CreateOsVolume",
        json!({"Pool": p, "Volume": "vm1-os", "Size": 64u64 << 20, "Template": "tpl-qcow"}),
    )
    .await;
    let info = qemu_img_info(&dir.join("vm1-os"));
    assert_eq!(info["format"], "qcow2");
    assert_eq!(
        info["backing-filename"],
        dir.join("tpl-qcow").display().to_string()
    );
    assert_eq!(info["virtual-size"], 64u64 << 20);
    assert!(
        info["actual-size"].as_u64().unwrap() < (1 << 20),
        "clone copied data: {info}"
    );
    assert_eq!(
        node.ok("GetVolumeInfos", json!({"Pool": p, "Volume": "vm1-os"}))
            .await,
        json!({"Size": 64u64 << 20})
    );
    let err = node
        .err(
            "CreateOsVolume",
            json!({"Pool": p, "Volume": "vm2-os", "Size": 1u64 << 20, "Template": "tpl-qcow"}),
        )
        .await;
    assert!(err.contains("smaller than its template"), "{err}");
    let err = node
        .err(
            "CreateOsVolume",
            json!({"Pool": p, "Volume": "vm2-os", "Size": 0, "Template": "nope"}),
        )
        .await;
    assert!(
        err.contains("template ") && err.contains("/nope: no such volume"),
        "{err}"
    );

    // Cloud-init ISO: created, padded to its size, replaced atomically.
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let iso = vec![0x43u8; 100_000];
    node.ok(
        "CreateIsoVolume",
        json!({"Pool": p, "Volume": "vm1-ci", "Size": 1u64 << 20, "Content": b64(&iso)}),
    )
    .await;
    let stored = std::fs::read(dir.join("vm1-ci")).unwrap();
    assert_eq!((stored.len(), &stored[..iso.len()]), (1 << 20, &iso[..]));
    let err = node
        .err(
            "CreateIsoVolume",
            json!({"Pool": p, "Volume": "vm1-ci", "Size": 1u64 << 20, "Content": b64(&iso)}),
        )
        .await;
    assert!(err.contains("already exists"), "{err}");
    let iso2 = vec![0x44u8; 50_000];
    node.ok(
        "UpdateIsoVolume",
        json!({"Pool": p, "Volume": "vm1-ci", "Size": 1u64 << 20, "Content": b64(&iso2)}),
    )
    .await;
    assert_eq!(
        &std::fs::read(dir.join("vm1-ci")).unwrap()[..iso2.len()],
        &iso2[..]
    );
    let err = node
        .err(
            "UpdateIsoVolume",
            json!({"Pool": p, "Volume": "ghost-ci", "Size": 1024, "Content": b64(b"x")}),
        )
        .await;
    assert!(err.contains("no such volume"), "{err}");
    let err = node
        .err(
            "CreateIsoVolume",
            json!({"Pool": p, "Volume": "x-ci", "Size": 10, "Content": b64(&iso)}),
        )
        .await;
    assert!(err.contains("more than its size"), "{err}");
    let err = node
        .err(
            "CreateIsoVolume",
            json!({"Pool": p, "Volume": "x-ci", "Size": 10, "Content": "***"}),
        )
        .await;
    assert!(err.contains("Content is not base64"), "{err}");

    // Resize: grow raw and qcow2, never shrink.
    node.ok(
        "ResizeVolume",
        json!({"Pool": p, "Volume": "data1", "Size": 20u64 << 20}),
    )
    .await;
    assert_eq!(
        node.ok("GetVolumeInfos", json!({"Pool": p, "Volume": "data1"}))
            .await,
        json!({"Size": 20u64 << 20})
    );
    node.ok(
        "ResizeVolume",
        json!({"Pool": p, "Volume": "vm1-os", "Size": 128u64 << 20}),
    )
    .await;
    assert_eq!(
        qemu_img_info(&dir.join("vm1-os"))["virtual-size"],
        128u64 << 20
    );
    let err = node
        .err(
            "ResizeVolume",
            json!({"Pool": p, "Volume": "data1", "Size": 1u64 << 20}),
        )
        .await;
    assert!(
        err.contains("cannot shrink from 20971520 to 1048576 bytes"),
        "{err}"
    );

    // Delete: a template with clones is refused, then everything goes.
    let err = node
        .err(
            "DeleteVolume",
            json!({"Pool": p, "Volume": "tpl-qcow", "WithSnapshots": false}),
        )
        .await;
    assert!(err.contains("is the template of volume vm1-os"), "{err}");
    for v in ["vm1-os", "tpl-qcow", "tpl-raw", "vm1-ci", "data1"] {
        node.ok(
            "DeleteVolume",
            json!({"Pool": p, "Volume": v, "WithSnapshots": true}),
        )
        .await;
    }
    let err = node
        .err("DeleteVolume", json!({"Pool": p, "Volume": "data1"}))
        .await;
    assert!(err.contains("no such volume"), "{err}");
    assert!(vol_list(p).is_empty());
    assert!(files(&dir).is_empty());

    node.stop().await;
    pool_down(&reconciler, &pool, &dir, &doc).await;
}

/// Kahuna's domain XML (RBD disks on the node's pool, cloud-init cdrom) boots under
/// TCG on the local pool; a volume in use cannot be deleted.
#[tokio::test(flavor = "multi_thread")]
async fn instance_on_a_local_pool_boots_under_tcg() {
    ensure_libvirtd();
    let pool = unique("pool");
    let dir = pool_dir(&pool);
    let libvirt = Libvirt::new(SYSTEM);
    let inventory = SharedInventory::new(NodeInventory::new());
    let reconciler = KaktusReconciler::new(libvirt.clone(), inventory.clone());
    let doc = document(1, &pool, &dir);
    pool_up(&reconciler, &doc).await;
    let mut node = Node::start_with(libvirt, inventory).await;
    let p = pool.as_str();

    // The host as libvirt describes it, counted like upstream.
    let caps = node.ok("NodeCapabilities", json!({})).await;
    // Memory as libvirt counts it: its NUMA cells (on some hosts less than
    // /proc/meminfo's MemTotal, memory added outside the cells).
    let nodeinfo = virsh(SYSTEM, &["nodeinfo"]);
    let mem_kib: u64 = nodeinfo
        .lines()
        .find_map(|l| l.strip_prefix("Memory size:"))
        .and_then(|v| v.trim().trim_end_matches(" KiB").parse().ok())
        .unwrap();
    let nproc =
        String::from_utf8(Command::new("nproc").arg("--all").output().unwrap().stdout).unwrap();
    assert_eq!(caps["Arch"], std::env::consts::ARCH);
    assert_eq!(caps["Memory"], mem_kib * 1024, "{caps}");
    assert_eq!(
        caps["Threads"],
        nproc.trim().parse::<u64>().unwrap(),
        "{caps}"
    );
    assert_eq!(
        caps["GuestEmulator"], "/usr/bin/qemu-system-x86_64",
        "{caps}"
    );
    assert!(
        caps["GuestMachineName"]
            .as_str()
            .unwrap()
            .starts_with("pc-"),
        "{caps}"
    );

    node.ok(
        "CreateRawVolume",
        json!({"Pool": p, "Volume": "tpl", "Size": 16u64 << 20}),
    )
    .await;
    node.ok(
        "CreateOsVolume",
        json!({"Pool": p, "Volume": "vm-os", "Size": 32u64 << 20, "Template": "tpl"}),
    )
    .await;
    let ci = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 4096]);
    node.ok(
        "CreateIsoVolume",
        json!({"Pool": p, "Volume": "vm-ci", "Size": 65536, "Content": ci}),
    )
    .await;

    let name = unique("vm");
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type></os><features><acpi/></features><devices>\
         <disk type='network' device='disk'><driver name='qemu' type='raw' cache='writeback'/>\
           <auth username='libvirt'><secret type='ceph' uuid='3f8b2a55-1111-2222-3333-444455556666'/></auth>\
           <source protocol='rbd' name='{p}/vm-os'><host name='10.0.0.1' port='3300'/></source><target dev='vda' bus='virtio'/></disk>\
         <disk type='network' device='cdrom'><driver name='qemu' type='raw'/><source protocol='rbd' name='{p}/vm-ci'/>\
           <target dev='hda' bus='ide'/><readonly/><serial>cloudinit</serial></disk>\
         <graphics type='vnc' autoport='yes' listen='127.0.0.1'/></devices></domain>"
    );
    node.ok("CreateInstance", json!({"Name": name, "XML": xml}))
        .await;
    let defined = virsh(SYSTEM, &["dumpxml", &name]);
    assert!(
        defined.contains(&format!("<source file='{}'", dir.join("vm-os").display())),
        "{defined}"
    );
    assert!(
        defined.contains("type='qcow2'") && !defined.contains("rbd"),
        "{defined}"
    );

    node.ok("InstanceOperation", json!({"Name": name, "Action": 1}))
        .await;
    assert_eq!(common::dominfo(SYSTEM, &name, "State"), "running");
    assert_eq!(
        node.ok("GetInstanceState", json!({"Name": name})).await,
        json!({"State": "Running", "Reason": "Booted"})
    );
    let url = node
        .ok("GetInstanceRemoteConnectionUrl", json!({"Name": name}))
        .await;
    let url = url["URL"].as_str().unwrap().to_owned();
    assert!(url.starts_with("vnc://127.0.0.1:59"), "{url}");

    // In use: not deletable; grown live through libvirt.
    let err = node
        .err("DeleteVolume", json!({"Pool": p, "Volume": "vm-os"}))
        .await;
    assert!(
        err.contains(&format!("is in use by instance {name}")),
        "{err}"
    );
    node.ok(
        "ResizeVolume",
        json!({"Pool": p, "Volume": "vm-os", "Size": 48u64 << 20}),
    )
    .await;
    let blk = virsh(SYSTEM, &["domblkinfo", &name, "vda"]);
    assert!(
        blk.lines()
            .any(|l| l.starts_with("Capacity:")
                && l.trim_end().ends_with(&(48u64 << 20).to_string())),
        "{blk}"
    );

    node.ok("InstanceOperation", json!({"Name": name, "Action": 4}))
        .await;
    assert_eq!(common::dominfo(SYSTEM, &name, "State"), "shut off");
    // Still defined: still in use.
    let err = node
        .err("DeleteVolume", json!({"Pool": p, "Volume": "vm-ci"}))
        .await;
    assert!(err.contains("in use by instance"), "{err}");
    node.ok("DeleteInstance", json!({"Name": name})).await;
    assert!(!virsh_try(SYSTEM, &["dominfo", &name]).0);
    for v in ["vm-os", "vm-ci", "tpl"] {
        node.ok("DeleteVolume", json!({"Pool": p, "Volume": v}))
            .await;
    }
    node.stop().await;
    pool_down(&reconciler, &pool, &dir, &doc).await;
}

/// An `rbd` pool's libvirt secret, from the node's key file: defined with the key's
/// digest, left alone while the file is unchanged, put again when it changes; a
/// missing file is a failure to read the node (retried), naming the file. (The Ceph
/// cluster itself is not needed here: tests/rbd_cluster.rs has it.)
#[tokio::test(flavor = "multi_thread")]
async fn an_rbd_pools_secret_comes_from_the_key_file() {
    ensure_libvirtd();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("kaktus.key");
    let key = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    std::fs::write(&key_file, key(&[7u8; 28])).unwrap();
    let uuid = format!(
        "6a3e1b56-0f2c-4a8e-9d3b-{:012x}",
        u64::from(std::process::id()) << 16 | u64::from(fastrand::u16(..))
    );
    let doc = |version: u64| {
        let text = format!(
            "version = {version}\nnode = \"kaktus-eu-1\"\nissued_at = 2026-01-01T00:00:00Z\nexpires_at = 2099-01-01T00:00:00Z\n\
             [kaktus.pools.ceph]\nbackend = \"rbd\"\nceph_pool = \"rbd\"\nmonitors = [\"127.0.0.1:3300\"]\n\
             client = \"kaktus\"\nsecret_uuid = \"{uuid}\"\nkey_file = \"{}\"\n",
            key_file.display()
        );
        Document::parse(text.as_bytes(), Format::Toml).unwrap()
    };
    let reconciler = KaktusReconciler::new(
        Libvirt::new(SYSTEM),
        SharedInventory::new(NodeInventory::new()),
    );
    let plan_apply = |d: Document| {
        let reconciler = reconciler.clone();
        async move {
            let planned = reconciler.plan(&d, None).await?;
            let actions: Vec<String> = planned.actions.iter().map(|a| a.0.clone()).collect();
            reconciler.apply(planned.payload).await?;
            Ok::<_, kowabunga_model::ReconcileError>(actions)
        }
    };
    let actions = plan_apply(doc(1)).await.unwrap();
    assert_eq!(
        actions,
        [format!(
            "define secret {uuid} (cephx key of client.kaktus, from {})",
            key_file.display()
        )]
    );
    let xml = virsh(SYSTEM, &["secret-dumpxml", &uuid]);
    assert!(
        xml.contains("private='yes'") || xml.contains("private=\"yes\""),
        "{xml}"
    );
    assert!(xml.contains("cephx key of client.kaktus, sha256:"), "{xml}");
    // Private: libvirt never gives the value back.
    assert!(!virsh_try(SYSTEM, &["secret-get-value", &uuid]).0);

    // Unchanged: nothing to do. A new key: put again.
    assert!(plan_apply(doc(2)).await.unwrap().is_empty());
    std::fs::write(&key_file, key(&[9u8; 28])).unwrap();
    assert_eq!(plan_apply(doc(3)).await.unwrap().len(), 1);
    assert!(plan_apply(doc(4)).await.unwrap().is_empty());

    // No key file: the node cannot be read now (retried), and the error names it.
    std::fs::remove_file(&key_file).unwrap();
    let err = plan_apply(doc(5)).await.unwrap_err();
    assert_eq!(err.kind, kowabunga_model::ErrorKind::Observe, "{err}");
    assert!(err.message.contains("kaktus.key"), "{err}");
    virsh(SYSTEM, &["secret-undefine", &uuid]);
}
