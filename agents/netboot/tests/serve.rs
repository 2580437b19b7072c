//! The netboot server end to end on loopback: images fetched from a file server against
//! a `SHA256SUMS` signed by the real `minisign`, boot files given to iPXE clients only
//! once their image is verified, scripts served only to the address leased to their
//! MAC, kernels and initrds served byte for byte; forged, unsigned and truncated images
//! never reach the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use kowabunga_agent::signed_files::SignedSource;
use kowabunga_dhcp::{BootClient, BootDirectory};
use kowabunga_model::Report;
use kowabunga_model::network::MacAddr;
use kowabunga_netboot::NetbootServer;
use kowabunga_netboot::model::{NetbootConfig, NetbootSection, compile};
use kowabunga_testkit::file_server::{Server, content, sha256_hex};
use kowabunga_testkit::minisign::Key;

const NODE_A: &str = "52:54:00:00:00:0a";
const NODE_B: &str = "52:54:00:00:00:0b";
const API_KEY: &str = "node-a-s3cret";
const CMDLINE: &str = "console=ttyS0 systemd.mask=var.mount\n";

fn mac(text: &str) -> MacAddr {
    text.parse().unwrap()
}

/// Serves the PXE artifacts of `id` (`ROLE-VERSION-ARCH`) with a signed `SHA256SUMS`
/// that also lists a file the store does not want; returns the kernel and initrd.
fn publish(server: &Server, key: &Key, id: &str, seed: usize) -> (Vec<u8>, Vec<u8>) {
    let kernel = content(seed, 70_000);
    let initrd = content(seed + 1, 900_000);
    let files = [
        (format!("{id}.pxe.vmlinuz"), kernel.clone()),
        (format!("{id}.pxe.initrd"), initrd.clone()),
        (format!("{id}.pxe.cmdline"), CMDLINE.as_bytes().to_vec()),
        (format!("{id}.qcow2"), b"not fetched".to_vec()),
    ];
    let mut sums = String::new();
    for (name, body) in files {
        sums.push_str(&format!("{}  {name}\n", sha256_hex(&body)));
        server.put(&name, body);
    }
    server.put("SHA256SUMS.minisig", key.sign(sums.as_bytes()));
    server.put("SHA256SUMS", sums.into_bytes());
    (kernel, initrd)
}

fn config(url: &str, version: &str, nodes: &[&str]) -> NetbootConfig {
    let mut text =
        format!("[images.kaktus]\nurl = \"{url}\"\nrole = \"kaktus\"\nversion = \"{version}\"\n");
    for (i, node) in nodes.iter().enumerate() {
        text.push_str(&format!(
            "[[nodes]]\nmac = \"{node}\"\nimage = \"kaktus\"\nparams = {{ kahuna = \"https://kahuna.example\", agent_id = \"kaktus-{i}\", api_key = \"{API_KEY}\" }}\n"
        ));
    }
    let section: NetbootSection = toml::from_str(&text).unwrap();
    compile(&section).unwrap()
}

struct Setup {
    tmp: tempfile::TempDir,
    files: Server,
    key: Key,
    netboot: NetbootServer,
}

impl Setup {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let key = Key::generate(tmp.path(), "signer");
        let keys = tmp.path().join("trusted-keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::copy(key.public_file(), keys.join("kahuna.pub")).unwrap();
        let files = Server::start().await;
        // Node A holds 127.0.0.1, node B another address: B's script is not ours to get.
        let loaders = tmp.path().join("ipxe");
        std::fs::create_dir_all(&loaders).unwrap();
        std::fs::write(loaders.join("undionly.kpxe"), content(9, 70_000)).unwrap();
        let netboot = NetbootServer::with_ports(0, 0, &loaders, |m: &MacAddr| {
            if *m == mac(NODE_A) {
                Some(Ipv4Addr::LOCALHOST)
            } else if *m == mac(NODE_B) {
                Some(Ipv4Addr::new(127, 0, 0, 2))
            } else {
                None
            }
        });
        netboot.set_store(
            tmp.path().join("store"),
            SignedSource {
                trusted_keys: keys,
                pubkeys: Vec::new(),
                // The file server is plain http; the signature is still required.
                insecure: true,
                ca_file: None,
            },
        );
        let service = netboot.supervised();
        tokio::spawn(async move { service.start().await });
        Setup {
            tmp,
            files,
            key,
            netboot,
        }
    }

    fn store(&self) -> std::path::PathBuf {
        self.tmp.path().join("store")
    }

    /// Waits (bounded) until `image`'s state in `/status` is `state`.
    async fn wait_for(&self, image: &str, state: &str) -> serde_json::Value {
        for _ in 0..600 {
            let status = self.netboot.status();
            if status["images"][image]["state"] == state {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{image} never became {state}: {:#}", self.netboot.status());
    }

    /// A URL on the netboot server's HTTP listener, once it listens (it opens when a
    /// configuration has nodes; a bounded wait).
    fn url(&self, path: &str) -> String {
        for _ in 0..600 {
            if self.netboot.port() != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        format!("http://127.0.0.1:{}{path}", self.netboot.port())
    }
}

/// GET (reqwest, plain http): status and body. Kernels and initrds go out with their
/// length, not chunked.
async fn get(url: &str) -> (u16, Vec<u8>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    assert!(
        response.content_length().is_some(),
        "{url}: no Content-Length (chunked)"
    );
    (status, response.bytes().await.unwrap().to_vec())
}

fn store_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_image_boots_its_nodes_and_only_the_leaseholder_gets_the_script() {
    let s = Setup::start().await;
    let id = "kaktus-0.3.0-x86_64";
    let (kernel, initrd) = publish(&s.files, &s.key, id, 1);
    let a = mac(NODE_A);
    // Nothing to boot: no listener.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.netboot.port(), 0, "a port opened with nothing to boot");
    s.netboot
        .apply(config(&s.files.url_for("k"), "0.3.0", &[NODE_A, NODE_B]));
    let status = s.wait_for(id, "ready").await;
    assert_eq!(store_entries(&s.store()), [id]);
    assert_eq!(status["nodes"][NODE_A]["image"], id);
    assert!(
        !status.to_string().contains(API_KEY),
        "/status shows the key"
    );

    let file = s
        .netboot
        .boot_file(&a, BootClient::Ipxe, Ipv4Addr::new(10, 0, 0, 1))
        .unwrap();
    assert_eq!(
        file.file,
        format!(
            "http://10.0.0.1:{}/netboot/52-54-00-00-00-0a.ipxe",
            s.netboot.port()
        )
    );
    // A BIOS PXE ROM is given iPXE's UNDI loader, to fetch over TFTP from this Kiwi;
    // no loader for a UEFI one here (this store has none), nor for arm64.
    let bios = s
        .netboot
        .boot_file(&a, BootClient::Pxe { arch: 0 }, Ipv4Addr::LOCALHOST)
        .unwrap();
    assert_eq!(bios.file, "undionly.kpxe");
    for arch in [7, 11] {
        assert!(
            s.netboot
                .boot_file(&a, BootClient::Pxe { arch }, Ipv4Addr::LOCALHOST)
                .is_none(),
            "arch {arch}"
        );
    }
    // The loader over TFTP (busybox's client), byte for byte; nothing else.
    let got = s.tmp.path().join("got.kpxe");
    let tftp = |remote: &str| {
        std::process::Command::new("busybox")
            .args(["tftp", "-g", "-r", remote, "-l"])
            .arg(&got)
            .args(["127.0.0.1", &s.netboot.tftp_port().to_string()])
            .output()
            .unwrap()
    };
    let out = tftp("undionly.kpxe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&got).unwrap(), content(9, 70_000));
    for other in ["../ipxe/undionly.kpxe", "SHA256SUMS", "/etc/passwd"] {
        assert!(!tftp(other).status.success(), "{other} was served");
    }
    assert!(
        s.netboot
            .boot_file(
                &mac("52:54:00:00:00:99"),
                BootClient::Ipxe,
                Ipv4Addr::LOCALHOST
            )
            .is_none()
    );

    // The script, to the leaseholder: the image from this server, the node's keys.
    let (code, script) = get(&s.url("/netboot/52-54-00-00-00-0a.ipxe")).await;
    let script = String::from_utf8(script).unwrap();
    assert_eq!(code, 200, "{script}");
    let base = s.url(&format!("/netboot/images/{id}"));
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        script.contains(&format!(
            "kernel {base}/vmlinuz initrd=initrd console=ttyS0 systemd.mask=var.mount kowabunga.agent_id=kaktus-0 kowabunga.api_key={API_KEY} kowabunga.kahuna=https://kahuna.example\n"
        )),
        "{script}"
    );
    assert!(
        script.contains(&format!("initrd {base}/initrd\nboot\n")),
        "{script}"
    );
    // Node B's script is not for 127.0.0.1.
    let (code, body) = get(&s.url("/netboot/52-54-00-00-00-0b.ipxe")).await;
    assert_eq!(code, 403);
    assert!(!String::from_utf8_lossy(&body).contains(API_KEY));
    assert_eq!(get(&s.url("/netboot/52-54-00-00-00-99.ipxe")).await.0, 404);
    // The files, byte for byte; nothing else.
    assert_eq!(get(&format!("{base}/vmlinuz")).await, (200, kernel));
    assert_eq!(get(&format!("{base}/initrd")).await, (200, initrd.clone()));
    assert_eq!(get(&format!("{base}/cmdline")).await.0, 404);
    assert_eq!(get(&s.url("/netboot/images/../../etc/passwd")).await.0, 404);
    let status = s.netboot.status();
    assert_eq!(status["scripts_served"], 1);
    assert_eq!(status["scripts_refused"], 1);
    assert_eq!(status["loaders_served"], 1);
    assert!(status["bytes_served"].as_u64().unwrap() >= initrd.len() as u64);

    // A new version replaces the old one in the store.
    let id2 = "kaktus-0.4.0-x86_64";
    publish(&s.files, &s.key, id2, 5);
    s.netboot
        .apply(config(&s.files.url_for("k"), "0.4.0", &[NODE_A]));
    s.wait_for(id2, "ready").await;
    for _ in 0..100 {
        if store_entries(&s.store()) == [id2] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store_entries(&s.store()), [id2]);
    assert_eq!(
        get(&format!("{base}/vmlinuz")).await.0,
        404,
        "the old image is gone"
    );

    // No node left: the listeners close and the store empties.
    let port = s.netboot.port();
    s.netboot.apply(NetbootConfig::default());
    let mut closed = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            && store_entries(&s.store()).is_empty()
        {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        closed,
        "still listening on {port}, or images kept: {:?}",
        store_entries(&s.store())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_and_truncated_images_never_reach_the_store() {
    let s = Setup::start().await;
    let id = "kaktus-0.3.0-x86_64";
    let a = mac(NODE_A);

    // Signed manifest, forged initrd.
    publish(&s.files, &s.key, id, 1);
    s.files
        .put(&format!("{id}.pxe.initrd"), content(42, 900_000));
    s.netboot
        .apply(config(&s.files.url_for("k"), "0.3.0", &[NODE_A]));
    let status = s.wait_for(id, "failed").await;
    let error = status["images"][id]["error"].as_str().unwrap();
    assert!(
        error.contains("sha256") && error.contains("initrd"),
        "{error}"
    );
    assert!(
        store_entries(&s.store()).is_empty(),
        "{:?}",
        store_entries(&s.store())
    );
    assert!(
        s.netboot
            .boot_file(&a, BootClient::Ipxe, Ipv4Addr::LOCALHOST)
            .is_none()
    );
    assert_eq!(get(&s.url("/netboot/52-54-00-00-00-0a.ipxe")).await.0, 503);

    // Signed by a key this Kiwi does not trust.
    let stranger = Key::generate(s.tmp.path(), "stranger");
    publish(&s.files, &stranger, "kaktus-0.3.1-x86_64", 1);
    s.netboot
        .apply(config(&s.files.url_for("k"), "0.3.1", &[NODE_A]));
    let status = s.wait_for("kaktus-0.3.1-x86_64", "failed").await;
    let error = status["images"]["kaktus-0.3.1-x86_64"]["error"]
        .as_str()
        .unwrap();
    assert!(error.contains("SHA256SUMS"), "{error}");

    // Not signed at all.
    publish(&s.files, &s.key, "kaktus-0.3.2-x86_64", 1);
    s.files.files.lock().unwrap().remove("SHA256SUMS.minisig");
    s.netboot
        .apply(config(&s.files.url_for("k"), "0.3.2", &[NODE_A]));
    let status = s.wait_for("kaktus-0.3.2-x86_64", "failed").await;
    let error = status["images"]["kaktus-0.3.2-x86_64"]["error"]
        .as_str()
        .unwrap();
    assert!(error.contains("not signed"), "{error}");

    // Truncated in transit.
    publish(&s.files, &s.key, "kaktus-0.3.3-x86_64", 1);
    s.files.truncate("kaktus-0.3.3-x86_64.pxe.initrd", 1000);
    s.netboot
        .apply(config(&s.files.url_for("k"), "0.3.3", &[NODE_A]));
    let status = s.wait_for("kaktus-0.3.3-x86_64", "failed").await;
    let error = status["images"]["kaktus-0.3.3-x86_64"]["error"]
        .as_str()
        .unwrap();
    assert!(error.contains("truncated"), "{error}");
    assert!(
        store_entries(&s.store()).is_empty(),
        "{:?}",
        store_entries(&s.store())
    );

    // Fixed at the source: the retry (or the next document) stores it.
    publish(&s.files, &s.key, "kaktus-0.3.3-x86_64", 1);
    s.netboot
        .apply(config(&s.files.url_for("k"), "0.3.3", &[NODE_A]));
    // The same configuration again changes nothing the filler waits on: the retry
    // timer brings it (30 s) unless the configuration changes; change it.
    s.netboot
        .apply(config(&s.files.url_for("k2"), "0.3.3", &[NODE_A]));
    s.wait_for("kaktus-0.3.3-x86_64", "ready").await;
    assert_eq!(store_entries(&s.store()), ["kaktus-0.3.3-x86_64"]);
}
