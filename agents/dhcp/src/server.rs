//! The DHCP server: one UDP socket per served link (port 67, `SO_BINDTODEVICE` to the
//! link, broadcast allowed), each served by a plain thread doing blocking
//! `recv_from`/`send_to`, as the DNS server's UDP listeners do. Every message goes
//! through the one [`Engine`] under a lock; a change a client is told about (an ACK, a
//! release, a decline) is written to the [`Store`] before the reply leaves, on that
//! thread, never on the async runtime. Datagrams already queued when one arrives are
//! answered together, under one write (group commit). The served links and their configuration change
//! only through [`DhcpServer::apply`]. A serving thread that stops on its own (a socket
//! error, a panic) ends the run of [`DhcpServer::supervised`] with the reason; the next
//! run reopens it.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Slice, Icmpv4Type, Ipv4Slice};
use kowabunga_model::Supervised;
use kowabunga_model::network::MacAddr;
use kowabunga_model::supervised::LoopExit;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::engine::{Engine, Kind, LeaseState, Leases, Reply};
use crate::model::DhcpConfig;
use crate::report::{DhcpReport, LinkReport};
use crate::store::Store;
use crate::wire::{self, BootClient, BootFile, SERVER_PORT};

/// Name of the supervised service (logs, `/status`, `/metrics`).
pub const SERVICE: &str = "dhcp";

/// How often a serving thread with nothing to do checks whether it must stop.
const POLL: Duration = Duration::from_millis(250);
/// Largest datagram read (a client may announce up to 1500 bytes, RFC 2132 9.10).
const MAX_DATAGRAM: usize = 1500;
/// Most datagrams answered under one lease write.
const MAX_BATCH: usize = 64;

/// Messages seen, by fate, every link together (tests; `/metrics` has them by link:
/// [`LinkCounters`]).
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub dropped_unserved: AtomicU64,
    pub replies: AtomicU64,
    pub silent: AtomicU64,
    /// ICMP echoes sent before offers.
    pub probes: AtomicU64,
    /// Addresses found in use by a ping check.
    pub conflicts: AtomicU64,
}

/// Messages of one link, by DHCP message type, since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// DHCPOFFERs sent.
    pub offers: u64,
    /// DHCPACKs sent (leases granted or renewed, and INFORM answers).
    pub acks: u64,
    /// DHCPNAKs sent.
    pub naks: u64,
    /// DHCPDECLINEs received.
    pub declines: u64,
}

struct Shared {
    engine: Mutex<Engine>,
    /// By link; taken after `engine` when both are held.
    link_counters: Mutex<BTreeMap<String, LinkCounters>>,
    /// Lease writes that failed since the agent started.
    store_failures: AtomicU64,
    /// Where leases are kept; `None`: in memory only.
    store: Mutex<Option<Store>>,
    /// Whether the store was read (at the first apply).
    loaded: AtomicBool,
    /// The last store write failure, cleared by the next success.
    store_error: Mutex<Option<String>>,
    /// Second of the last expiry sweep.
    swept: AtomicU64,
    port: u16,
    counters: Counters,
    /// Bumped each time a serving thread stops on its own.
    failures: watch::Sender<u64>,
    /// Who gives network-boot clients their boot file (Kiwi's netboot), if anyone.
    boot: RwLock<Option<Arc<dyn BootDirectory>>>,
}

/// Gives network-boot clients their boot file: Kiwi's netboot server.
pub trait BootDirectory: Send + Sync {
    /// The boot file of the node with `mac`, asking as `client`, answered from
    /// `server` (this Kiwi's address on the client's link); `None`: no network boot
    /// for it (an address only).
    fn boot_file(&self, mac: &MacAddr, client: BootClient, server: Ipv4Addr) -> Option<BootFile>;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Shared {
    /// Write the leases; a failure is logged and kept for [`DhcpServer::check`]: the
    /// server goes on serving (the leases in memory are right; a restart would lose
    /// the unwritten ones).
    fn persist(&self, leases: &Leases) {
        let Some(store) = lock(&self.store).clone() else {
            return;
        };
        let mut error = lock(&self.store_error);
        match store.save(leases) {
            Ok(()) => *error = None,
            Err(e) => {
                tracing::error!("dhcp: cannot write the leases: {e}");
                self.store_failures.fetch_add(1, Ordering::Relaxed);
                *error = Some(e.to_string());
            }
        }
    }

    /// Answer a batch of datagrams received on `link`: what to send, in order. The
    /// leases are written once for the batch, before anything is sent (group commit:
    /// no reply leaves before the lease it announces is on disk).
    fn handle_batch(&self, link: &str, batch: &[Vec<u8>]) -> Vec<Out> {
        let mut engine = lock(&self.engine);
        let mut dirty = false;
        let out: Vec<Out> = batch
            .iter()
            .filter_map(|bytes| self.handle(&mut engine, link, bytes, &mut dirty))
            .collect();
        if dirty {
            self.persist(engine.leases());
        }
        out
    }

    /// Answer one datagram; `dirty` set when the leases must be written.
    fn handle(
        &self,
        engine: &mut Engine,
        link: &str,
        bytes: &[u8],
        dirty: &mut bool,
    ) -> Option<Out> {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let incoming = match wire::decode(bytes) {
            Ok(incoming) => incoming,
            Err(wire::Dropped::Malformed) => {
                self.counters
                    .dropped_malformed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(link, len = bytes.len(), "dhcp: malformed datagram dropped");
                return None;
            }
            Err(wire::Dropped::NotServed) => {
                self.counters
                    .dropped_unserved
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        if incoming.request.kind == Kind::Decline {
            self.count(link, |c| c.declines += 1);
        }
        let now = unix_now();
        if self.swept.swap(now, Ordering::Relaxed) != now && engine.expire(now) {
            *dirty = true;
        }
        let outcome = engine.handle(link, &incoming.request, now);
        *dirty |= outcome.changed;
        let req = &incoming.request;
        match &outcome.reply {
            Reply::Ack(g) => {
                tracing::info!(link, mac = %req.mac, address = %g.address, "dhcp: ACK")
            }
            Reply::Nak(why) => tracing::info!(link, mac = %req.mac, why, "dhcp: NAK"),
            Reply::Silent(why) => {
                self.counters.silent.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(link, mac = %req.mac, kind = ?req.kind, why, "dhcp: no answer");
            }
            Reply::Probe(ip) => {
                self.counters.probes.fetch_add(1, Ordering::Relaxed);
                return Some(Out::Probe(*ip));
            }
            Reply::Offer(_) | Reply::InformAck => {}
        }
        let cfg = engine.config().links.get(link)?;
        let boot = match (&outcome.reply, incoming.boot_client) {
            (Reply::Offer(_) | Reply::Ack(_), Some(client)) => {
                let directory = self.boot.read().unwrap_or_else(PoisonError::into_inner);
                directory
                    .as_ref()
                    .and_then(|d| d.boot_file(&req.mac, client, cfg.server))
            }
            _ => None,
        };
        if let Some(boot) = &boot {
            tracing::debug!(link, mac = %req.mac, file = %boot.file, "dhcp: boot file given");
        }
        let (bytes, to) = wire::encode(cfg, &incoming, &outcome.reply, boot.as_ref())?;
        self.counters.replies.fetch_add(1, Ordering::Relaxed);
        match &outcome.reply {
            Reply::Offer(_) => self.count(link, |c| c.offers += 1),
            Reply::Ack(_) | Reply::InformAck => self.count(link, |c| c.acks += 1),
            Reply::Nak(_) => self.count(link, |c| c.naks += 1),
            Reply::Probe(_) | Reply::Silent(_) => {}
        }
        Some(Out::Dhcp(bytes, to))
    }

    /// Count a message of `link`.
    fn count(&self, link: &str, bump: impl FnOnce(&mut LinkCounters)) {
        bump(
            lock(&self.link_counters)
                .entry(link.to_owned())
                .or_default(),
        );
    }

    /// An ICMP echo reply from `ip` on `link`.
    fn echo_reply(&self, link: &str, ip: Ipv4Addr) {
        let now = unix_now();
        let mut engine = lock(&self.engine);
        if engine.conflict(link, ip, now) {
            self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(link, address = %ip, "dhcp: address in use (answers ICMP echo), quarantined");
            self.persist(engine.leases());
        }
    }
}

/// What a serving thread sends for one datagram.
enum Out {
    Dhcp(Vec<u8>, SocketAddrV4),
    /// An ICMP echo to this address (ping check before an offer).
    Probe(Ipv4Addr),
}

/// One served link: its socket and serving thread, stopped on drop.
struct Listener {
    thread: Option<std::thread::JoinHandle<()>>,
    /// Reads ICMP echo replies (ping check); none without CAP_NET_RAW.
    icmp: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Why the thread stopped on its own, if it did.
    exit: Arc<Mutex<Option<String>>>,
}

impl Listener {
    fn failure(&self) -> Option<String> {
        if let Some(reason) = lock(&self.exit).clone() {
            return Some(reason);
        }
        match &self.thread {
            Some(t) if t.is_finished() => Some("the serving thread stopped".to_owned()),
            _ => None,
        }
    }

    /// Stop and wait until the socket is closed.
    async fn close(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads: Vec<_> = self
            .thread
            .take()
            .into_iter()
            .chain(self.icmp.take())
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The thread notices within POLL and exits, closing the socket.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Cheap to clone: clones share the server.
#[derive(Clone)]
pub struct DhcpServer {
    shared: Arc<Shared>,
    listeners: Arc<tokio::sync::Mutex<BTreeMap<String, Listener>>>,
}

impl Default for DhcpServer {
    fn default() -> Self {
        Self::new()
    }
}

impl DhcpServer {
    /// A server serving no link until the first [`apply`](Self::apply), keeping its
    /// leases in memory until [`set_state_dir`](Self::set_state_dir).
    pub fn new() -> Self {
        Self::with_port(SERVER_PORT)
    }

    /// The same, listening on another port than 67 (tests).
    pub fn with_port(port: u16) -> Self {
        Self {
            shared: Arc::new(Shared {
                engine: Mutex::new(Engine::default()),
                link_counters: Mutex::default(),
                store_failures: AtomicU64::new(0),
                store: Mutex::new(None),
                loaded: AtomicBool::new(false),
                store_error: Mutex::new(None),
                swept: AtomicU64::new(0),
                port,
                counters: Counters::default(),
                failures: watch::Sender::new(0),
                boot: RwLock::new(None),
            }),
            listeners: Arc::default(),
        }
    }

    /// Keep the leases in `dir` (read at the first [`apply`](Self::apply)).
    pub fn set_state_dir(&self, dir: impl Into<PathBuf>) {
        *lock(&self.shared.store) = Some(Store::new(dir));
    }

    /// Give network-boot clients the boot files `directory` names.
    pub fn set_boot_directory(&self, directory: Arc<dyn BootDirectory>) {
        *self
            .shared
            .boot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(directory);
    }

    /// The address leased to `mac` now (bound, on any link), if any.
    pub fn address_of(&self, mac: &MacAddr) -> Option<Ipv4Addr> {
        lock(&self.shared.engine).bound_address(mac, unix_now())
    }

    /// The configuration in force.
    pub fn current(&self) -> DhcpConfig {
        lock(&self.shared.engine).config().clone()
    }

    /// The leases held now.
    pub fn leases(&self) -> Leases {
        lock(&self.shared.engine).leases().clone()
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// What `/status` and `/metrics` show: per served link its pool, its bound leases
    /// (at `now`, Unix seconds) and its messages by type; the lease store's state.
    pub fn report_at(&self, now: u64) -> DhcpReport {
        let engine = lock(&self.shared.engine);
        let counters = lock(&self.shared.link_counters);
        let links = engine
            .config()
            .links
            .iter()
            .map(|(name, cfg)| {
                let bound = engine.leases().links.get(name).map_or(0, |l| {
                    l.leases
                        .values()
                        .filter(|lease| lease.state == LeaseState::Bound && lease.expires > now)
                        .count()
                });
                let c = counters.get(name).copied().unwrap_or_default();
                let report = LinkReport {
                    pool_size: cfg.pools.iter().map(|r| r.len()).sum(),
                    static_hosts: cfg.hosts.len() as u64,
                    bound: bound as u64,
                    offers: c.offers,
                    acks: c.acks,
                    naks: c.naks,
                    declines: c.declines,
                };
                (name.clone(), report)
            })
            .collect();
        drop(counters);
        drop(engine);
        DhcpReport {
            links,
            lease_store_error: lock(&self.shared.store_error).clone(),
            lease_store_failures: self.shared.store_failures.load(Ordering::Relaxed),
        }
    }

    /// [`report_at`](Self::report_at) now.
    pub fn report(&self) -> DhcpReport {
        self.report_at(unix_now())
    }

    /// Bring the server to `config`: read the store the first time, open the sockets of
    /// newly served links (any failure leaves everything as it was), swap the
    /// configuration (keeping the leases that still fit, written at once if some were
    /// dropped), then close the sockets of links no longer served.
    pub async fn apply(&self, config: DhcpConfig) -> Result<(), String> {
        let mut listeners = self.listeners.lock().await;
        let loaded = self.load().await?;
        self.reopen_failed(&mut listeners).await?;
        let mut fresh = BTreeMap::new();
        for link in config.links.keys() {
            if !listeners.contains_key(link) {
                let listener = self
                    .listen(link)
                    .map_err(|e| format!("dhcp: serve {link}: {e}"))?;
                fresh.insert(link.clone(), listener);
            }
        }
        let wanted: Vec<String> = config.links.keys().cloned().collect();
        let shared = Arc::clone(&self.shared);
        let dropped = tokio::task::spawn_blocking(move || {
            let mut engine = lock(&shared.engine);
            let dropped = match loaded {
                Some(leases) => {
                    let before: usize = leases.links.values().map(|l| l.leases.len()).sum();
                    *engine = Engine::new(config, leases);
                    let after: usize = engine.leases().links.values().map(|l| l.leases.len()).sum();
                    before - after
                }
                None => engine.reconfigure(config),
            };
            // Read leases are in the engine now: the next apply must not read them again.
            shared.loaded.store(true, Ordering::Relaxed);
            if dropped > 0 {
                shared.persist(engine.leases());
            }
            dropped
        })
        .await
        .map_err(|e| format!("dhcp: configuration swap: {e}"))?;
        if dropped > 0 {
            tracing::info!(dropped, "dhcp: leases that no longer fit dropped");
        }
        listeners.append(&mut fresh);
        let gone: Vec<String> = listeners
            .keys()
            .filter(|l| !wanted.contains(l))
            .cloned()
            .collect();
        for link in gone {
            if let Some(mut listener) = listeners.remove(&link) {
                listener.close().await;
                tracing::info!(link, "dhcp: stopped serving");
            }
        }
        tracing::info!(links = ?wanted, "dhcp: configuration in force");
        Ok(())
    }

    /// Until a configuration is in force: the leases the store kept (none without a
    /// store). Read again by the next apply if this one fails before the swap.
    async fn load(&self) -> Result<Option<Leases>, String> {
        if self.shared.loaded.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let store = lock(&self.shared.store).clone();
        let leases = match store {
            None => Leases::default(),
            Some(store) => {
                let (leases, reset) = tokio::task::spawn_blocking(move || store.load_or_reset())
                    .await
                    .map_err(|e| format!("dhcp: reading the leases: {e}"))?
                    .map_err(|e| format!("dhcp: reading the leases: {e}"))?;
                if let Some(why) = reset {
                    tracing::warn!("dhcp: lease file unreadable, starting without leases: {why}");
                }
                leases
            }
        };
        Ok(Some(leases))
    }

    /// Close every listener that stopped and open its link again.
    async fn reopen_failed(
        &self,
        listeners: &mut BTreeMap<String, Listener>,
    ) -> Result<(), String> {
        let failed: Vec<String> = listeners
            .iter()
            .filter(|(_, l)| l.failure().is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for link in failed {
            if let Some(mut old) = listeners.remove(&link) {
                old.close().await;
            }
            let listener = self
                .listen(&link)
                .map_err(|e| format!("dhcp: serve {link}: {e}"))?;
            tracing::info!(link, "dhcp: listener reopened");
            listeners.insert(link, listener);
        }
        Ok(())
    }

    fn listen(&self, link: &str) -> std::io::Result<Listener> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_broadcast(true)?;
        socket.bind_device(Some(link.as_bytes()))?;
        socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, self.shared.port).into())?;
        socket.set_read_timeout(Some(POLL))?;
        let socket: UdpSocket = socket.into();
        let stop = Arc::new(AtomicBool::new(false));
        // The ping check's socket: raw ICMP on the link (CAP_NET_RAW). Without it, no
        // probe is sent and offers only wait for the client's retransmission.
        let icmp = match icmp_socket(link) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::warn!(link, "dhcp: no ICMP socket for the ping check: {e}");
                None
            }
        };
        let icmp_thread = match &icmp {
            Some(sock) => {
                let (sock, shared, flag, name) = (
                    Arc::clone(sock),
                    Arc::clone(&self.shared),
                    Arc::clone(&stop),
                    link.to_owned(),
                );
                Some(
                    std::thread::Builder::new()
                        .name(format!("dhcp-icmp-{link}"))
                        .spawn(move || read_echo_replies(&name, &sock, &shared, &flag))?,
                )
            }
            None => None,
        };
        let exit = Arc::new(Mutex::new(None));
        let (shared, name) = (Arc::clone(&self.shared), link.to_owned());
        let failed: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |message: &str| {
            tracing::error!("dhcp: {name}: {message}");
            shared.failures.send_modify(|n| *n = n.wrapping_add(1));
        });
        let guard = LoopExit::new("serving thread", &stop, &exit, failed);
        let (shared, flag, name) = (Arc::clone(&self.shared), Arc::clone(&stop), link.to_owned());
        let thread = std::thread::Builder::new()
            .name(format!("dhcp-{link}"))
            .spawn(move || {
                guard.ended(serve(&name, &socket, icmp.as_deref(), &shared, &flag));
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        tracing::info!(link, port = self.shared.port, "dhcp: serving");
        Ok(Listener {
            thread: Some(thread),
            icmp: icmp_thread,
            stop,
            exit,
        })
    }

    /// The serving threads as a service the agent core supervises. One run reopens the
    /// links whose thread stopped, then waits until one stops and ends with `Err`
    /// naming it and why; the core starts another run after its back-off.
    /// Its [`Report`](kowabunga_model::Report) (per link: pool, leases, messages) goes
    /// with it into `/status` and `/metrics`.
    pub fn supervised(&self) -> Supervised {
        let server = self.clone();
        Supervised::new(SERVICE, move || {
            let server = server.clone();
            async move { server.watch().await }
        })
        .with_report(Arc::new(self.clone()))
    }

    async fn watch(&self) -> Result<(), String> {
        let mut failures = self.shared.failures.subscribe();
        {
            let mut listeners = self.listeners.lock().await;
            self.reopen_failed(&mut listeners).await?;
        }
        loop {
            failures.borrow_and_update();
            {
                let listeners = self.listeners.lock().await;
                if let Some((link, reason)) = listeners
                    .iter()
                    .find_map(|(k, l)| l.failure().map(|r| (k.clone(), r)))
                {
                    return Err(format!("link {link}: {reason}"));
                }
            }
            if failures.changed().await.is_err() {
                return Err("dhcp: the server is gone".to_owned());
            }
        }
    }

    /// Health: every served link has its thread, and the last lease write succeeded.
    pub async fn check(&self) -> Result<(), String> {
        let listeners = self.listeners.lock().await;
        for (link, listener) in listeners.iter() {
            if let Some(reason) = listener.failure() {
                return Err(format!("link {link} is not served: {reason}"));
            }
        }
        if let Some(e) = lock(&self.shared.store_error).clone() {
            return Err(format!("leases are not being written: {e}"));
        }
        Ok(())
    }

    /// Stop serving every link and wait until the sockets are closed.
    pub async fn shutdown(&self) {
        let mut listeners = self.listeners.lock().await;
        for (_, mut listener) in std::mem::take(&mut *listeners) {
            listener.close().await;
        }
    }
}

/// One serving thread's loop, until `stop` (or a socket error it cannot serve past).
fn serve(
    link: &str,
    socket: &UdpSocket,
    icmp: Option<&Socket>,
    shared: &Shared,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut seq: u16 = 0;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(MAX_BATCH);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !stop.load(Ordering::Relaxed) {
        let n = match socket.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(format!("receive: {e}")),
        };
        // Whatever else is already queued joins this batch (one lease write for all).
        batch.clear();
        batch.push(buf[..n].to_vec());
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("socket: {e}"))?;
        while batch.len() < MAX_BATCH {
            match socket.recv_from(&mut buf) {
                Ok((n, _)) => batch.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        socket
            .set_nonblocking(false)
            .map_err(|e| format!("socket: {e}"))?;
        for out in shared.handle_batch(link, &batch) {
            match out {
                Out::Dhcp(reply, to) => {
                    if let Err(e) = socket.send_to(&reply, to) {
                        // A client gone or a full queue: that client retries.
                        tracing::warn!(link, %to, "dhcp: send: {e}");
                    }
                }
                Out::Probe(ip) => {
                    seq = seq.wrapping_add(1);
                    if let Some(icmp) = icmp
                        && let Err(e) =
                            icmp.send_to(&echo_request(seq), &SocketAddrV4::new(ip, 0).into())
                    {
                        tracing::debug!(link, %ip, "dhcp: ping check: {e}");
                    }
                }
            }
        }
    }
    Ok(())
}

/// The identifier of this server's ICMP echoes.
fn echo_id() -> u16 {
    (std::process::id() & 0xffff) as u16
}

/// An ICMP echo request (header by `etherparse`, checksum included).
fn echo_request(seq: u16) -> Vec<u8> {
    let payload = b"kowabunga-dhcp";
    let header = Icmpv4Header::with_checksum(
        Icmpv4Type::EchoRequest(IcmpEchoHeader { id: echo_id(), seq }),
        payload,
    );
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// A raw ICMP socket on `link`, for the ping check.
fn icmp_socket(link: &str) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    socket.bind_device(Some(link.as_bytes()))?;
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket)
}

/// The ICMP thread of a link: echo replies to our echoes, until `stop`. A socket error
/// ends it quietly (the ping check then finds nothing; the DHCP thread serves on).
fn read_echo_replies(link: &str, socket: &Socket, shared: &Shared, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let n = match (&*socket).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::warn!(link, "dhcp: ping check socket: {e}");
                return;
            }
        };
        if let Some(from) = echo_reply_source(&buf[..n]) {
            shared.echo_reply(link, from);
        }
    }
}

/// The source of an IPv4 packet (as a raw ICMP socket reads it) that is an echo reply
/// to one of our echoes.
fn echo_reply_source(packet: &[u8]) -> Option<Ipv4Addr> {
    let ip = Ipv4Slice::from_slice(packet).ok()?;
    let icmp = Icmpv4Slice::from_slice(ip.payload().payload).ok()?;
    match icmp.icmp_type() {
        Icmpv4Type::EchoReply(echo) if echo.id == echo_id() => Some(ip.header().source_addr()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use etherparse::PacketBuilder;

    fn config(links: &[&str]) -> DhcpConfig {
        let net: kowabunga_model::network::Network = toml::from_str(
            "[[links]]\nname = \"lo\"\naddresses = [\"127.0.0.1/8\"]\n\
             [[links]]\nname = \"kdhcpnope0\"\naddresses = [\"10.99.0.1/24\"]\n",
        )
        .unwrap();
        let mut text = String::from("ping_check = false\n");
        for link in links {
            let first = if *link == "lo" {
                "127.0.0.10"
            } else {
                "10.99.0.10"
            };
            let last = if *link == "lo" {
                "127.0.0.20"
            } else {
                "10.99.0.20"
            };
            text.push_str(&format!(
                "[links.{link}]\npools = [{{ first = \"{first}\", last = \"{last}\" }}]\n"
            ));
        }
        let section: crate::model::DhcpSection = toml::from_str(&text).unwrap();
        crate::model::compile(&section, &net).unwrap()
    }

    /// A first apply that fails (a link that does not exist) keeps the leases read from
    /// the store for the next one.
    #[tokio::test]
    async fn a_failed_first_apply_keeps_the_stored_leases() {
        let dir = std::env::temp_dir().join(format!(
            "kdhcp-server-{}-{}",
            std::process::id(),
            unix_now()
        ));
        let store = Store::new(&dir);
        let mut engine = Engine::new(config(&["lo"]), Leases::default());
        let mac = kowabunga_model::network::MacAddr([2, 0, 0, 0, 0, 1]);
        let req = crate::engine::Request {
            kind: crate::engine::Kind::Request,
            client: crate::engine::ClientId::from_mac(&mac),
            mac,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: Some(Ipv4Addr::new(127, 0, 0, 10)),
            server_id: Some(Ipv4Addr::LOCALHOST),
        };
        assert!(engine.handle("lo", &req, unix_now()).changed);
        store.save(engine.leases()).unwrap();
        // Port 0: no clash with anything on the host.
        let server = DhcpServer::with_port(0);
        server.set_state_dir(&dir);
        let err = server
            .apply(config(&["lo", "kdhcpnope0"]))
            .await
            .unwrap_err();
        assert!(err.contains("kdhcpnope0"), "{err}");
        assert!(server.current().links.is_empty());
        server.apply(config(&["lo"])).await.unwrap();
        let leases = server.leases();
        assert!(
            leases.links["lo"]
                .leases
                .contains_key(&Ipv4Addr::new(127, 0, 0, 10)),
            "{leases:?}"
        );
        server.check().await.unwrap();
        server.shutdown().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn echo_replies_to_our_echoes_are_recognised() {
        let request = echo_request(7);
        let (header, payload) = Icmpv4Header::from_slice(&request).unwrap();
        assert_eq!(
            header.icmp_type,
            Icmpv4Type::EchoRequest(IcmpEchoHeader {
                id: echo_id(),
                seq: 7
            })
        );
        assert_eq!(payload, b"kowabunga-dhcp");
        let reply = |id: u16| {
            let mut out = Vec::new();
            PacketBuilder::ipv4([10, 0, 0, 10], [10, 0, 0, 1], 64)
                .icmpv4_echo_reply(id, 7)
                .write(&mut out, payload)
                .unwrap();
            out
        };
        assert_eq!(
            echo_reply_source(&reply(echo_id())),
            Some(Ipv4Addr::new(10, 0, 0, 10))
        );
        assert_eq!(echo_reply_source(&reply(echo_id().wrapping_add(1))), None);
        assert_eq!(echo_reply_source(&request), None);
        assert_eq!(echo_reply_source(&[]), None);
    }
}
