//! Test harness (root only): a server namespace and a client namespace joined by a veth
//! pair, our server running in the first through the real `DhcpReconciler`, busybox
//! `udhcpc` or raw datagrams in the second. Names carry the process id, a counter and
//! a random suffix; namespaces (and so their links) are deleted on drop, on every path.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kowabunga_dhcp::{DhcpReconciler, DhcpServer};
use kowabunga_model::{Document, Format, Reconciler};
use nix::sched::{CloneFlags, setns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Four hex digits that differ between runs.
pub fn suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:04x}",
        (nanos ^ std::process::id().rotate_left(16) ^ COUNTER.fetch_add(1, Ordering::Relaxed))
            & 0xffff
    )
}

/// A throwaway directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("kdhcp-{}-{tag}-{}", std::process::id(), suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A named namespace (`ip netns add`) with `lo` up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("kdhcp{}-{}-{tag}", std::process::id(), suffix());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip netns add (these tests run as root)");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// Run a shell command inside the namespace; panic with its output if it fails.
    pub fn sh(&self, cmd: &str) -> String {
        let out = self.try_sh(cmd);
        assert!(out.0, "in {}: `{cmd}` failed: {}", self.name, out.1);
        out.1
    }

    /// Run a shell command inside the namespace: whether it succeeded, and its output.
    pub fn try_sh(&self, cmd: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .expect("ip netns exec");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Start a shell command inside the namespace, in the background.
    pub fn spawn(&self, cmd: &str) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip netns exec")
    }

    /// Run `f` on a thread inside the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(File::open(&path).unwrap(), CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A served link and a client link: `server` holds `server_if` (10.0.0.1/24), `client`
/// holds `client_if`, no address.
pub struct Lab {
    pub server: Netns,
    pub client: Netns,
    pub server_if: String,
    pub client_if: String,
    pub state: TempDir,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let server = Netns::new(&format!("{tag}s"));
        let client = Netns::new(&format!("{tag}c"));
        let sfx = suffix();
        let (server_if, client_if) = (format!("dhs{sfx}"), format!("dhc{sfx}"));
        server.sh(&format!(
            "ip link add {server_if} type veth peer name {client_if} netns {} \
             && ip addr add 10.0.0.1/24 dev {server_if} && ip link set {server_if} up",
            client.name
        ));
        client.sh(&format!(
            "ip link set {client_if} address 52:54:00:00:00:01 && ip link set {client_if} up"
        ));
        Lab {
            server,
            client,
            server_if,
            client_if,
            state: TempDir::new(tag),
        }
    }

    /// A document serving the server's link with `dhcp` (TOML inside
    /// `[dhcp.links.<link>]`) and `section` (TOML inside `[dhcp]`).
    pub fn doc(&self, section: &str, link: &str) -> String {
        format!(
            r#"version = 1
node = "kiwi-1"
issued_at = "2026-01-01T00:00:00Z"
expires_at = "2099-01-01T00:00:00Z"

[[network.links]]
name = "{if_}"
addresses = ["10.0.0.1/24"]

[dhcp]
{section}

[dhcp.links.{if_}]
{link}
"#,
            if_ = self.server_if
        )
    }

    /// Set the client link's MAC.
    pub fn set_mac(&self, mac: &str) {
        self.client.sh(&format!(
            "ip link set {0} down && ip link set {0} address {mac} && ip link set {0} up",
            self.client_if
        ));
    }

    /// The script udhcpc runs at each event: logs the event and its options to `log`,
    /// configures the address on `bound`/`renew` (a renewal is unicast from it).
    pub fn script(&self, log: &Path) -> PathBuf {
        let path = self.state.0.join(format!("script-{}", suffix()));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n\
                 echo \"event=$1 ip=$ip mask=$mask router=$router dns=$dns domain=$domain \
                 mtu=$mtu lease=$lease serverid=$serverid staticroutes=$staticroutes \
                 ntpsrv=$ntpsrv\" >> {log}\n\
                 case \"$1\" in\n\
                 bound|renew) ip addr flush dev \"$interface\"; \
                 ip addr add \"$ip/${{mask:-24}}\" dev \"$interface\" ;;\n\
                 deconfig) ip addr flush dev \"$interface\" ;;\n\
                 esac\n",
                log = log.display()
            ),
        )
        .unwrap();
        Command::new("chmod")
            .args(["+x", &path.display().to_string()])
            .status()
            .unwrap();
        path
    }

    /// One `udhcpc -q` run: the events it logged, and whether it got a lease.
    pub fn udhcpc_once(&self, extra: &str) -> (bool, Vec<Event>) {
        let log = self.state.0.join(format!("log-{}", suffix()));
        let script = self.script(&log);
        let (ok, out) = self.client.try_sh(&format!(
            "busybox udhcpc -f -q -n -t 3 -T 1 -A 1 -O staticroutes -O mtu -O ntpsrv \
             -i {} -s {} {extra}",
            self.client_if,
            script.display()
        ));
        let events = read_events(&log);
        let _ = out;
        (ok, events)
    }
}

/// One line of the udhcpc script's log, as key=value pairs.
#[derive(Debug, Clone)]
pub struct Event(pub Vec<(String, String)>);

impl Event {
    pub fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

pub fn read_events(log: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut pairs = Vec::new();
            let mut key = String::new();
            // Values may hold spaces (lists): a token without '=' continues the value.
            for token in line.split(' ') {
                match token.split_once('=') {
                    Some((k, v)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase()) => {
                        key = k.to_owned();
                        pairs.push((key.clone(), v.to_owned()));
                    }
                    _ => {
                        if let Some((_, v)) = pairs.iter_mut().rev().find(|(k, _)| *k == key) {
                            v.push(' ');
                            v.push_str(token);
                        }
                    }
                }
            }
            Event(pairs)
        })
        .collect()
}

/// Wait (a hang guard, not a timing assertion) until `cond` holds.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

enum Command2 {
    Apply(String, mpsc::Sender<Result<(), String>>),
}

/// Our server running in a namespace (its own thread and tokio runtime there), driven
/// through the real reconciler: plan, apply, check.
pub struct NsServer {
    pub server: DhcpServer,
    commands: Option<tokio::sync::mpsc::UnboundedSender<Command2>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsServer {
    /// Start in `ns`, keeping leases in `state`, and apply `doc`.
    pub fn start(ns: &Netns, state: &Path, doc: &str) -> Self {
        let path = format!("/run/netns/{}", ns.name);
        let server = DhcpServer::new();
        server.set_state_dir(state);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Command2>();
        let reconciler = DhcpReconciler::new(server.clone());
        let thread = std::thread::spawn(move || {
            setns(
                File::open(&path).expect("open netns"),
                CloneFlags::CLONE_NEWNET,
            )
            .expect("setns");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                while let Some(Command2::Apply(text, reply)) = rx.recv().await {
                    let _ = reply.send(apply(&reconciler, &text).await);
                }
                reconciler.server().shutdown().await;
            });
        });
        let s = NsServer {
            server,
            commands: Some(tx),
            thread: Some(thread),
        };
        s.apply(doc).expect("the first document applies");
        s
    }

    /// Plan, apply and check `doc`, as the pipeline does.
    pub fn apply(&self, doc: &str) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .as_ref()
            .expect("running")
            .send(Command2::Apply(doc.to_owned(), tx))
            .expect("server thread");
        rx.recv().expect("apply reply")
    }

    /// Stop serving and wait until the sockets are closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn apply(reconciler: &DhcpReconciler, text: &str) -> Result<(), String> {
    let doc = Document::parse(text.as_bytes(), Format::Toml).map_err(|e| e.to_string())?;
    let planned = reconciler
        .plan(&doc, None)
        .await
        .map_err(|e| e.to_string())?;
    reconciler
        .apply(planned.payload)
        .await
        .map_err(|e| e.to_string())?;
    reconciler.check(&doc).await.map_err(|e| e.to_string())
}

/// A udhcpc left running (renewals, releases by signal), killed on drop.
pub struct Udhcpc {
    pub child: Child,
    pub log: PathBuf,
}

impl Udhcpc {
    pub fn start(lab: &Lab, extra: &str) -> Udhcpc {
        let log = lab.state.0.join(format!("log-{}", suffix()));
        let script = lab.script(&log);
        // `exec`: the child's pid is udhcpc's (ip netns exec execs too).
        let child = lab.client.spawn(&format!(
            "exec busybox udhcpc -f -t 5 -T 1 -A 1 -O staticroutes -O mtu -O ntpsrv \
             -i {} -s {} {extra}",
            lab.client_if,
            script.display()
        ));
        Udhcpc { child, log }
    }

    pub fn events(&self) -> Vec<Event> {
        read_events(&self.log)
    }

    /// Wait until the script has logged `n` events named `event`; the last of them.
    pub fn wait_event(&self, event: &str, n: usize) -> Event {
        wait_for(&format!("udhcpc event {event} #{n}"), || {
            self.events()
                .iter()
                .filter(|e| e.get("event") == event)
                .count()
                >= n
        });
        self.events()
            .into_iter()
            .rfind(|e| e.get("event") == event)
            .unwrap()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }
}

impl Drop for Udhcpc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
