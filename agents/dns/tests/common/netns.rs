//! Our DNS server inside throwaway network namespaces (root only), queried with `dig`
//! from other namespaces: real source addresses, real links, port 53.
//!
//! [`NsServer`] runs a fake recursor and the server (through the real reconciler) on a
//! thread that joined the namespace with `setns(2)`, with its own tokio runtime built
//! there, so every serving thread and the node-address reading see that namespace.

use std::fs::File;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use hickory_proto::op::Message;
use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;

use super::{FakeRecursor, Pipeline, tempdir};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named namespace (`ip netns add`) with `lo` up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "kdns{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
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
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .expect("ip netns exec");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "in {}: `{cmd}` failed: {text}",
            self.name
        );
        text
    }

    /// `dig` from this namespace.
    pub fn dig(&self, server: &str, name: &str, qtype: &str, extra: &[&str]) -> super::Dig {
        super::dig_at(Some(&self.name), server, 53, name, qtype, extra)
    }

    /// Send `request` to `server` from this namespace (over TCP or UDP) and decode the
    /// reply: for what `dig` cannot send or does not print (AXFR over UDP, rcodes of a
    /// refused transfer).
    pub fn query(&self, server: SocketAddr, tcp: bool, request: &Message) -> Message {
        self.try_query(server, tcp, request).unwrap()
    }

    /// [`query`](Self::query), with no reply (or a broken one) as an error.
    pub fn try_query(
        &self,
        server: SocketAddr,
        tcp: bool,
        request: &Message,
    ) -> Result<Message, String> {
        use std::io::{Read, Write};
        let path = format!("/run/netns/{}", self.name);
        let bytes = request.to_vec().unwrap();
        let timeout = Some(std::time::Duration::from_secs(3));
        let reply = std::thread::scope(|s| {
            s.spawn(|| -> Result<Vec<u8>, String> {
                setns(File::open(&path).unwrap(), CloneFlags::CLONE_NEWNET).unwrap();
                let io = |e: std::io::Error| e.to_string();
                if tcp {
                    let mut stream = std::net::TcpStream::connect(server).map_err(io)?;
                    stream.set_read_timeout(timeout).map_err(io)?;
                    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&bytes);
                    stream.write_all(&framed).map_err(io)?;
                    let mut len = [0u8; 2];
                    stream.read_exact(&mut len).map_err(io)?;
                    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
                    stream.read_exact(&mut reply).map_err(io)?;
                    Ok(reply)
                } else {
                    let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(io)?;
                    socket.set_read_timeout(timeout).map_err(io)?;
                    socket.connect(server).map_err(io)?;
                    socket.send(&bytes).map_err(io)?;
                    let mut reply = vec![0u8; 65535];
                    let n = socket.recv(&mut reply).map_err(io)?;
                    reply.truncate(n);
                    Ok(reply)
                }
            })
            .join()
            .unwrap()
        })?;
        Message::from_vec(&reply).map_err(|e| e.to_string())
    }

    /// `dig` from this namespace to another port.
    pub fn dig_port(
        &self,
        server: &str,
        port: u16,
        name: &str,
        qtype: &str,
        extra: &[&str],
    ) -> super::Dig {
        super::dig_at(Some(&self.name), server, port, name, qtype, extra)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Join two namespaces with a veth pair and address both ends (`a_addr`, `b_addr` in
/// CIDR form).
pub fn link(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    a.sh(&format!(
        "ip link add {a_if} type veth peer name {b_if} netns {}",
        b.name
    ));
    a.sh(&format!(
        "ip addr add {a_addr} dev {a_if} && ip link set {a_if} up"
    ));
    b.sh(&format!(
        "ip addr add {b_addr} dev {b_if} && ip link set {b_if} up"
    ));
}

type Push = (toml::Table, oneshot::Sender<Result<(), String>>);

/// Our server (and a fake recursor on its loopback) running inside a namespace.
pub struct NsServer {
    /// Queries the fake recursor received.
    pub forwarded: Arc<Mutex<usize>>,
    /// The recursor's address inside the namespace.
    pub recursor: SocketAddr,
    pushes: Option<tokio::sync::mpsc::UnboundedSender<Push>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsServer {
    /// Start in `ns` with the document `doc(recursor)` (TOML text).
    pub fn start(ns: &Netns, doc: impl FnOnce(SocketAddr) -> String + Send + 'static) -> Self {
        let path = format!("/run/netns/{}", ns.name);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (push_tx, mut push_rx) = tokio::sync::mpsc::unbounded_channel::<Push>();
        let thread = std::thread::spawn(move || {
            let fd = File::open(&path).expect("open netns");
            setns(fd, CloneFlags::CLONE_NEWNET).expect("setns");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let recursor = FakeRecursor::start().await;
                let dir = tempdir("ns");
                let pipeline = Pipeline::start(&doc(recursor.addr), &dir.join("dns.toml")).await;
                ready_tx
                    .send((Arc::clone(&recursor.queries), recursor.addr))
                    .expect("ready");
                while let Some((table, reply)) = push_rx.recv().await {
                    let _ = reply.send(pipeline.push(table).await);
                }
                pipeline.server().shutdown().await;
                recursor.stop().await;
            });
        });
        let (forwarded, recursor) = ready_rx.recv().expect("the server started");
        Self {
            forwarded,
            recursor,
            pushes: Some(push_tx),
            thread: Some(thread),
        }
    }

    /// What the core's push of the `dns` table does, in the namespace.
    pub fn push(&self, table: toml::Table) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.pushes
            .as_ref()
            .expect("running")
            .send((table, tx))
            .expect("server thread");
        rx.blocking_recv().expect("push reply")
    }

    pub fn forwarded(&self) -> usize {
        *self.forwarded.lock().unwrap()
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        self.pushes.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A signed document serving `infra.acme.local` on port 53 of every address, forwarding
/// to `recursor`; `extra` goes inside `[dns]`.
pub fn doc(recursor: SocketAddr, extra: &str) -> String {
    format!(
        r#"version = 1
node = "kiwi-1"
issued_at = "2026-01-01T00:00:00Z"
expires_at = "2099-01-01T00:00:00Z"

[dns]
listen = ["0.0.0.0:53"]
recursors = ["{recursor}"]
forward_timeout_ms = 500
{extra}

[dns.zones."infra.acme.local".records]
"@" = ["10.0.0.1"]
kahuna = ["10.0.0.2", "fd00::2"]
ntp = ["10.0.0.3"]
"#
    )
}
