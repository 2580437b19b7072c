//! Test harness: a fake recursor, `dig`, and a pipeline double that runs pushes and
//! documents through the real `DnsReconciler` (plan, apply, check, revert on failure,
//! persist), as the agent core does.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod netns;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use kowabunga_dns::{DnsReconciler, DnsServer};
use kowabunga_model::{Document, Format, Reconciler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// The address every forwarded name resolves to at the fake recursor.
pub const RECURSOR_ANSWER: &str = "192.0.2.53";

/// A recursor double on loopback (UDP and TCP, same port): answers every A query
/// with [`RECURSOR_ANSWER`], counts queries.
pub struct FakeRecursor {
    pub addr: SocketAddr,
    pub queries: Arc<Mutex<usize>>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeRecursor {
    pub async fn start() -> Self {
        // One port for both: the UDP port the kernel picks may be taken for TCP (another
        // test's connection): pick again.
        let mut pair = None;
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                pair = Some((Arc::new(udp), addr, tcp));
                break;
            }
        }
        let (udp, addr, tcp) = pair.expect("no loopback port free for both UDP and TCP");
        let queries = Arc::new(Mutex::new(0));
        let q = Arc::clone(&queries);
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
                *q.lock().unwrap() += 1;
                let reply = answer(&buf[..n]);
                udp.send_to(&reply, peer).await.unwrap();
            }
        });
        let q = Arc::clone(&queries);
        let tcp_task = tokio::spawn(async move {
            loop {
                let (mut s, _) = tcp.accept().await.unwrap();
                *q.lock().unwrap() += 1;
                tokio::spawn(async move {
                    let n = s.read_u16().await.unwrap() as usize;
                    let mut buf = vec![0u8; n];
                    s.read_exact(&mut buf).await.unwrap();
                    let reply = answer(&buf);
                    s.write_u16(reply.len() as u16).await.unwrap();
                    s.write_all(&reply).await.unwrap();
                });
            }
        });
        Self {
            addr,
            queries,
            tasks: vec![udp_task, tcp_task],
        }
    }

    pub fn count(&self) -> usize {
        *self.queries.lock().unwrap()
    }

    /// Stop answering: the port closes.
    pub async fn stop(self) {
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

fn answer(query: &[u8]) -> Vec<u8> {
    let q = Message::from_vec(query).unwrap();
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.message_type = MessageType::Response;
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.response_code = ResponseCode::NoError;
    r.queries = q.queries.clone();
    if let Some(edns) = q.edns.clone() {
        r.set_edns(edns);
    }
    let name = q.queries[0].name().clone();
    r.answers.push(Record::from_rdata(
        name,
        300,
        RData::A(A(RECURSOR_ANSWER.parse().unwrap())),
    ));
    r.to_vec().unwrap()
}

/// A free loopback port for UDP and TCP alike.
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// The core's side of `Kiwi.*` pushes in tests: runs the table through [`Pipeline`].
pub struct PipelinePusher(pub Arc<Pipeline>);

impl kowabunga_model::Pusher for PipelinePusher {
    async fn push(&self, section: &'static str, table: toml::Table) -> Result<(), String> {
        assert_eq!(section, kowabunga_dns::model::SECTION);
        self.0.push(table).await
    }
}

/// A pusher whose pipeline rejects everything with `reason` (or must not be called).
pub struct RejectingPusher(pub &'static str);

impl kowabunga_model::Pusher for RejectingPusher {
    async fn push(&self, _section: &'static str, _table: toml::Table) -> Result<(), String> {
        Err(self.0.to_owned())
    }
}

/// What `dig` printed, parsed enough for assertions.
#[derive(Debug)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    /// Answer records as `TYPE DATA` (`A 10.0.0.1`), sorted.
    pub answers: Vec<String>,
    /// Authority and additional records, the same way.
    pub authority: Vec<String>,
    pub additional: Vec<String>,
    /// The `; EDNS: ...` line of the OPT pseudo-section, if the reply had an OPT.
    pub edns: Option<String>,
    /// The other lines of the OPT pseudo-section (`; COOKIE: ...`, options).
    pub options: Vec<String>,
    pub raw: String,
}

impl Dig {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// `status / flags / answer count / EDNS`, one line, for side-by-side tables.
    pub fn summary(&self) -> String {
        if self.status.is_empty() {
            let first = self
                .raw
                .lines()
                .find(|l| {
                    !l.trim().is_empty() && !l.starts_with("; <<>>") && !l.starts_with(";; global")
                })
                .unwrap_or("no reply");
            return first.trim().chars().take(40).collect();
        }
        let mut out = format!(
            "{} [{}] an={}",
            self.status,
            self.flags.join(" "),
            self.answers.len()
        );
        if !self.additional.is_empty() {
            out.push_str(&format!(" ad={}", self.additional.len()));
        }
        match &self.edns {
            Some(edns) => {
                let version = edns
                    .split("version: ")
                    .nth(1)
                    .and_then(|v| v.split(',').next())
                    .unwrap_or("?");
                out.push_str(&format!(" edns{version}"));
                if edns.contains("flags: do") || edns.contains("flags: do;") {
                    out.push_str(" do");
                }
                if edns.contains("MBZ") {
                    out.push_str(" mbz");
                }
            }
            None => out.push_str(" no-edns"),
        }
        if !self.options.is_empty() {
            out.push_str(&format!(" opts={}", self.options.len()));
        }
        out
    }
}

/// Query our server on loopback with the real `dig` (bind9-dnsutils).
pub fn dig(port: u16, name: &str, qtype: &str, extra: &[&str]) -> Dig {
    dig_at(None, "127.0.0.1", port, name, qtype, extra)
}

/// Run `dig @server -p port name qtype extra...`, inside network namespace `netns`
/// when given.
pub fn dig_at(
    netns: Option<&str>,
    server: &str,
    port: u16,
    name: &str,
    qtype: &str,
    extra: &[&str],
) -> Dig {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "dig"]);
            c
        }
        None => Command::new("dig"),
    };
    let out = command
        .args([
            &format!("@{server}"),
            "-p",
            &port.to_string(),
            name,
            qtype,
            "+tries=1",
            "+time=3",
        ])
        .args(extra)
        .output()
        .expect("dig not found: install bind9-dnsutils (scripts/install-deps.sh --for test)");
    parse_dig(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn parse_dig(raw: String) -> Dig {
    let status = raw
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_owned();
    let flags = raw
        .split("flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let (mut answers, mut authority, mut additional) = (Vec::new(), Vec::new(), Vec::new());
    let (mut edns, mut options) = (None, Vec::new());
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.strip_prefix(";; ")
            && (rest.ends_with("SECTION:") || rest.starts_with("OPT PSEUDOSECTION"))
        {
            section = rest.split_whitespace().next().unwrap_or("");
            continue;
        }
        if line.trim().is_empty() {
            section = "";
            continue;
        }
        if section == "OPT" {
            if line.starts_with("; EDNS:") {
                edns = Some(line.to_owned());
            } else {
                options.push(line.to_owned());
            }
            continue;
        }
        // "www.acme.local. 60 IN A 10.0.0.1" -> "A 10.0.0.1"
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || line.starts_with(';') {
            continue;
        }
        let record = format!("{} {}", f[3], f[4..].join(" "));
        match section {
            "ANSWER" => answers.push(record),
            "AUTHORITY" => authority.push(record),
            "ADDITIONAL" => additional.push(record),
            _ => {}
        }
    }
    answers.sort();
    authority.sort();
    additional.sort();
    Dig {
        status,
        flags,
        answers,
        authority,
        additional,
        edns,
        options,
        raw,
    }
}

/// A generation-pipeline double: the signed document plus pushed tables, applied
/// through the real reconciler, reverted on failure, persisted on success.
pub struct Pipeline {
    pub reconciler: DnsReconciler,
    pub current: Mutex<Document>,
    pub store: PathBuf,
}

impl Pipeline {
    /// Start from `signed` (TOML text), or from what `store` holds (a restart).
    pub async fn start(signed: &str, store: &Path) -> Arc<Self> {
        let server = DnsServer::new();
        let reconciler = DnsReconciler::new(server);
        let mut doc = Document::parse(signed.as_bytes(), Format::Toml).unwrap();
        if let Ok(text) = std::fs::read_to_string(store) {
            let table: toml::Table = toml::from_str(&text).unwrap();
            doc.set_pushed("dns", table);
        }
        let p = Arc::new(Self {
            reconciler,
            current: Mutex::new(doc.clone()),
            store: store.to_owned(),
        });
        p.run(&doc, None).await.unwrap();
        p
    }

    pub fn server(&self) -> &DnsServer {
        self.reconciler.server()
    }

    pub fn port(&self) -> u16 {
        self.server().bound()[0].port()
    }

    async fn run(&self, desired: &Document, in_force: Option<&Document>) -> Result<(), String> {
        let planned = self
            .reconciler
            .plan(desired, in_force)
            .await
            .map_err(|e| e.to_string())?;
        self.reconciler
            .apply(planned.payload)
            .await
            .map_err(|e| e.to_string())?;
        self.reconciler
            .check(desired)
            .await
            .map_err(|e| e.to_string())
    }

    /// What the core's `push("dns", table)` does.
    pub async fn push(&self, table: toml::Table) -> Result<(), String> {
        let previous = self.current.lock().unwrap().clone();
        let mut next = previous.clone();
        next.set_pushed("dns", table.clone());
        if let Err(err) = self.run(&next, Some(&previous)).await {
            self.run(&previous, None)
                .await
                .map_err(|e| format!("{err}; revert failed: {e}"))?;
            return Err(err);
        }
        std::fs::write(&self.store, toml::to_string(&table).unwrap()).unwrap();
        *self.current.lock().unwrap() = next;
        Ok(())
    }
}

pub fn signed_doc(port: u16, recursor: SocketAddr) -> String {
    format!(
        r#"version = 1
node = "kiwi-1"
issued_at = "2026-01-01T00:00:00Z"
expires_at = "2099-01-01T00:00:00Z"

[dns]
listen = ["127.0.0.1:{port}"]
recursors = ["{recursor}"]
forward_timeout_ms = 500

[dns.zones."infra.acme.local".records]
"@" = ["10.0.0.1"]
kahuna = ["10.0.0.2", "fd00::2"]
ntp = ["10.0.0.3"]
"#
    )
}

pub fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kowabunga-dns-{tag}-{}-{}",
        std::process::id(),
        fastrand_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand_u64() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
