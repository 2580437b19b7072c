//! Shared set-up of the Kaktus integration tests: the agent's RPC service behind a real
//! WebSocket link to a fake Kahuna, libvirt (the `test:///default` driver, or a real
//! libvirtd started here when none runs), a tiny HTTP server for template downloads,
//! and `virsh` to check libvirt's own view.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kaktus::{KaktusService, Libvirt, NodeInventory, Pool, SharedInventory};
use kowabunga_model::Progress;
use kowabunga_rpc::fake_kahuna::{Conn, Expect, FakeKahuna};
use kowabunga_rpc::{Agent, Credentials, Options};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

pub const T: Duration = Duration::from_secs(10);

/// A name unique to this test process and call (`kt-<pid>-<n>-<what>`).
pub fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "kt-{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Kaktus, connected to a fake Kahuna over a real WebSocket.
pub struct Node {
    pub conn: Conn,
    pub inventory: SharedInventory,
    pub libvirt: Libvirt,
    pub progress: Progress,
    _kahuna: FakeKahuna,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    pub async fn start(uri: &str, inventory: NodeInventory) -> Self {
        Self::start_with(Libvirt::new(uri), SharedInventory::new(inventory)).await
    }

    pub async fn start_with(libvirt: Libvirt, inventory: SharedInventory) -> Self {
        let progress = Progress::new();
        let service: KaktusService =
            kaktus::build(libvirt.clone(), inventory.clone(), progress.clone());
        let expect = Expect {
            kind: "Kaktus".into(),
            agent_id: "kaktus-eu-1".into(),
            api_key: "k4ktus-s3cret".into(),
        };
        let mut kahuna = FakeKahuna::start(expect).await.unwrap();
        let creds = Credentials {
            kind: "Kaktus",
            kahuna_url: kahuna.url(),
            agent_id: "kaktus-eu-1".into(),
            api_key: "k4ktus-s3cret".into(),
        };
        let options = Options {
            insecure: true,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            ..Options::default()
        };
        let agent = Agent::new(creds, options, Arc::new(service)).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async {
            let _ = rx.await;
        }));
        let conn = kahuna.accept(T).await;
        Self {
            conn,
            inventory,
            libvirt,
            progress,
            _kahuna: kahuna,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Call `Kaktus.<method>`: `Ok(result)` or `Err(error)`.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let r = self.conn.call(&format!("Kaktus.{method}"), params).await;
        match r.error {
            None => Ok(r.result),
            Some(e) => Err(e),
        }
    }

    pub async fn ok(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .await
            .unwrap_or_else(|e| panic!("Kaktus.{method}: {e}"))
    }

    pub async fn err(&mut self, method: &str, params: Value) -> String {
        match self.call(method, params).await {
            Ok(v) => panic!("Kaktus.{method} succeeded: {v}"),
            Err(e) => e,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(T, task).await.unwrap().unwrap();
        }
    }
}

/// `virsh -c <uri> <args>`: stdout, or panic with stderr.
/// What `command` prints on stdout, as JSON; the test fails with its stderr if it fails.
pub fn json_output(command: &mut Command) -> Value {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn virsh(uri: &str, args: &[&str]) -> String {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .expect("virsh (libvirt-clients) is installed");
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `virsh` that may fail: `(success, stdout + stderr)`.
pub fn virsh_try(uri: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// One field of `virsh dominfo` (`State` -> `running`).
pub fn dominfo(uri: &str, domain: &str, field: &str) -> String {
    virsh(uri, &["dominfo", domain])
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// The system libvirtd, started here (with virtlogd) if none answers. Panics with what
/// to install when the daemon is not on this machine.
pub const SYSTEM: &str = "qemu:///system";

pub fn ensure_libvirtd() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        kvm_device_as_udev_sets_it();
        if virsh_try(SYSTEM, &["version"]).0 {
            return;
        }
        for daemon in ["virtlogd", "libvirtd"] {
            let status = Command::new(daemon).arg("-d").status().unwrap_or_else(|e| {
                panic!("cannot start {daemon} ({e}): install libvirt-daemon-system")
            });
            assert!(status.success(), "{daemon} -d failed");
        }
        for _ in 0..100 {
            if virsh_try(SYSTEM, &["version"]).0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("libvirtd started but {SYSTEM} does not answer");
    });
    ONCE_SWEPT.call_once(sweep_leftovers);
}

static ONCE_SWEPT: std::sync::Once = std::sync::Once::new();

/// Domains and pools an earlier test run left behind (it failed midway): named
/// `kt-<pid>-...` by [`unique`], with that process gone.
fn sweep_leftovers() {
    let dead = |name: &str| {
        name.strip_prefix("kt-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            })
    };
    let names = |args: &[&str]| -> Vec<String> {
        virsh_try(SYSTEM, args)
            .1
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| dead(l))
            .collect()
    };
    for dom in names(&["list", "--all", "--name"]) {
        let _ = virsh_try(SYSTEM, &["destroy", &dom]);
        let _ = virsh_try(SYSTEM, &["undefine", &dom, "--nvram"]);
    }
    for pool in names(&["pool-list", "--all", "--name"]) {
        let _ = virsh_try(SYSTEM, &["pool-destroy", &pool]);
        let _ = virsh_try(SYSTEM, &["pool-undefine", &pool]);
        let _ = std::fs::remove_dir_all(Path::new("/var/tmp").join(&pool));
    }
}

/// Without udev (a container), `/dev/kvm` stays root-only 0600. libvirtd then probes
/// QEMU as root with KVM, finds KVM unusable for its QEMU user on the next lookup, and
/// re-probes QEMU on every domain definition (seconds each, tens under load). Debian's
/// udev rule gives it to the `kvm` group, 0660: do the same (guests here run under TCG
/// all the same).
fn kvm_device_as_udev_sets_it() {
    use std::os::unix::fs::PermissionsExt;
    let kvm = Path::new("/dev/kvm");
    let Ok(meta) = std::fs::metadata(kvm) else {
        return;
    };
    if meta.permissions().mode() & 0o060 != 0o060 {
        let _ = Command::new("chgrp").arg("kvm").arg(kvm).status();
        let _ = std::fs::set_permissions(kvm, std::fs::Permissions::from_mode(0o660));
    }
}

/// A directory for a pool, reachable by QEMU's user (0711 parents).
pub fn pool_dir(name: &str) -> PathBuf {
    let dir = Path::new("/var/tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn inventory_with(pools: &[(&str, &Path)], bridges: &[&str]) -> NodeInventory {
    let mut inv = NodeInventory::new();
    for (name, path) in pools {
        inv.pools
            .insert((*name).to_owned(), Pool::local(*name, *path));
    }
    inv.bridges = bridges.iter().map(|b| (*b).to_owned()).collect();
    inv
}

/// One canned HTTP answer: status line, headers, body, and how much of the body is
/// really sent before the connection closes (a truncated download).
#[derive(Clone)]
pub struct Canned {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub send: Option<usize>,
    /// `Location` header (with a 3xx status).
    pub location: Option<String>,
}

impl Canned {
    pub fn ok(content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status: "200 OK",
            content_type,
            body,
            send: None,
            location: None,
        }
    }

    /// A redirect to `to` (a path on the same server, or a URL).
    pub fn redirect(to: &str) -> Self {
        Self {
            status: "302 Found",
            content_type: "text/plain",
            body: Vec::new(),
            send: None,
            location: Some(to.to_owned()),
        }
    }
}

/// A loopback HTTP/1.1 server answering canned bodies by path (404 otherwise).
pub struct HttpServer {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    pub async fn start(routes: BTreeMap<String, Canned>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes = Arc::new(routes);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let routes = Arc::clone(&routes);
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let canned = routes.get(&path).cloned().unwrap_or(Canned {
                        status: "404 Not Found",
                        content_type: "text/plain",
                        body: b"not found".to_vec(),
                        send: None,
                        location: None,
                    });
                    let location = canned
                        .location
                        .as_ref()
                        .map(|l| format!("Location: {l}\r\n"))
                        .unwrap_or_default();
                    let head = format!(
                        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n",
                        canned.status,
                        canned.content_type,
                        canned.body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let n = canned.send.unwrap_or(canned.body.len());
                    let _ = sock.write_all(&canned.body[..n]).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self { base, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
