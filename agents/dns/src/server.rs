//! The DNS server: UDP and TCP listeners on the configured addresses, answering from
//! the record set in force and forwarding the rest. The record set, recursors and
//! listeners change only through [`DnsServer::apply`], which swaps them atomically.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use kowabunga_model::dns::{DnsConfig, DnsSection, PushedDns};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::forward::{Transport, forward};
use crate::zones::{Answer, Zones, reply_to, udp_limit};

/// Forwarded queries in flight at once, per server; beyond, SERVFAIL at once.
const MAX_FORWARDS: usize = 1024;
/// TCP connections served at once, per server.
const MAX_TCP: usize = 256;
/// An idle TCP client is dropped after this.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often a UDP thread with nothing to do checks whether it must stop.
const UDP_POLL: Duration = Duration::from_millis(250);

/// What the server runs: the merged configuration and where it came from.
#[derive(Debug)]
pub struct State {
    pub config: DnsConfig,
    /// The signed `[dns]` section in force (defaults when absent).
    pub signed: DnsSection,
    /// The pushed `dns` table in force.
    pub pushed: PushedDns,
    zones: Zones,
}

impl State {
    /// Compile a state; fails only if a validated name does not convert.
    pub fn new(config: DnsConfig, signed: DnsSection, pushed: PushedDns) -> Result<Self, String> {
        let zones = Zones::compile(&config)?;
        Ok(Self {
            config,
            signed,
            pushed,
            zones,
        })
    }

    fn empty() -> Self {
        let signed = DnsSection::default();
        let config = DnsConfig {
            listen: Vec::new(),
            recursors: signed.recursors.clone(),
            forward_timeout_ms: signed.forward_timeout_ms,
            ttl: signed.ttl,
            zones: BTreeMap::new(),
        };
        Self {
            config,
            signed,
            pushed: PushedDns::default(),
            zones: Zones::default(),
        }
    }
}

struct Shared {
    state: RwLock<Arc<State>>,
    forwards: Arc<Semaphore>,
    tcp_slots: Semaphore,
}

impl Shared {
    fn current(&self) -> Arc<State> {
        match self.state.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// One bound address: its UDP and TCP tasks, stopped on drop.
/// One bound address: its UDP threads and TCP task, stopped on drop.
///
/// UDP is served by plain threads doing blocking `recv_from`/`send_to` on the shared
/// socket (the kernel wakes one waiter per datagram): two syscalls per answered query,
/// no event loop in between. Forwarded queries go to the async runtime.
struct Listener {
    local: SocketAddr,
    tcp: JoinHandle<()>,
    udp: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    fn is_running(&self) -> bool {
        !self.tcp.is_finished() && self.udp.iter().all(|t| !t.is_finished())
    }

    /// Stop and wait until the sockets are closed.
    async fn close(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tcp.abort();
        let threads = std::mem::take(&mut self.udp);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        let _ = (&mut self.tcp).await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // UDP threads notice within UDP_POLL and exit, closing the socket.
        self.stop.store(true, Ordering::Relaxed);
        self.tcp.abort();
    }
}

/// Cheap to clone: clones share the server.
#[derive(Clone)]
pub struct DnsServer {
    shared: Arc<Shared>,
    listeners: Arc<tokio::sync::Mutex<BTreeMap<SocketAddr, Listener>>>,
    bound: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Default for DnsServer {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsServer {
    /// A server with no zones, listening nowhere until the first [`apply`](Self::apply).
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: RwLock::new(Arc::new(State::empty())),
                forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
                tcp_slots: Semaphore::new(MAX_TCP),
            }),
            listeners: Arc::default(),
            bound: Arc::default(),
        }
    }

    /// The state in force.
    pub fn current(&self) -> Arc<State> {
        self.shared.current()
    }

    /// The local addresses bound (port 0 resolved; UDP and TCP share the port).
    pub fn bound(&self) -> Vec<SocketAddr> {
        self.bound.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Bring the server to `state`: bind new listen addresses first (any failure
    /// leaves everything as it was), swap the record set and recursors in one step,
    /// then close the addresses no longer wanted.
    pub async fn apply(&self, state: State) -> Result<(), String> {
        let mut listeners = self.listeners.lock().await;
        let wanted: Vec<SocketAddr> = state.config.listen.clone();
        let mut fresh = BTreeMap::new();
        for addr in &wanted {
            if !listeners.contains_key(addr) && !fresh.contains_key(addr) {
                let listener = self
                    .listen(*addr)
                    .map_err(|e| format!("listen on {addr}: {e}"))?;
                fresh.insert(*addr, listener);
            }
        }
        let records = state.zones.len();
        match self.shared.state.write() {
            Ok(mut guard) => *guard = Arc::new(state),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(state),
        }
        listeners.append(&mut fresh);
        let gone: Vec<SocketAddr> = listeners
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(listener) = listeners.remove(&addr) {
                // Wait for the sockets to close, so that a revert can bind them again.
                listener.close().await;
                tracing::info!(%addr, "dns: stopped listening");
            }
        }
        if let Ok(mut bound) = self.bound.lock() {
            *bound = listeners.values().map(|l| l.local).collect();
        }
        tracing::info!(names = records, listen = ?wanted, "dns: record set in force");
        Ok(())
    }

    fn listen(&self, addr: SocketAddr) -> std::io::Result<Listener> {
        let udp_socket = bind(addr, Type::DGRAM)?;
        udp_socket.set_nonblocking(false)?;
        udp_socket.set_read_timeout(Some(UDP_POLL))?;
        let udp: Arc<std::net::UdpSocket> = Arc::new(udp_socket.into());
        let local = udp.local_addr()?;
        // TCP on the same port as UDP, also when the configuration said port 0.
        let tcp_socket = bind(local, Type::STREAM)?;
        tcp_socket.listen(1024)?;
        let tcp = TcpListener::from_std(tcp_socket.into())?;
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Handle::current();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let (udp, shared, flag, runtime) = (
                Arc::clone(&udp),
                Arc::clone(&self.shared),
                Arc::clone(&stop),
                runtime.clone(),
            );
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || serve_udp(&udp, &shared, &flag, &runtime));
            match thread {
                Ok(t) => threads.push(t),
                Err(err) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(err);
                }
            }
        }
        let tcp = tokio::spawn(serve_tcp(tcp, Arc::clone(&self.shared)));
        tracing::info!(%local, "dns: listening (UDP and TCP)");
        Ok(Listener {
            local,
            tcp,
            udp: threads,
            stop,
        })
    }

    /// Close every listener and wait until its sockets are released (for a clean stop;
    /// a later [`apply`](Self::apply) listens again).
    pub async fn shutdown(&self) {
        let mut listeners = self.listeners.lock().await;
        for (_, listener) in std::mem::take(&mut *listeners) {
            listener.close().await;
        }
        if let Ok(mut bound) = self.bound.lock() {
            bound.clear();
        }
    }

    /// Health: every listener's tasks run, and each address answers a probe over UDP
    /// (a question-less query, answered FORMERR locally) and accepts TCP.
    pub async fn check(&self) -> Result<(), String> {
        let listeners = self.listeners.lock().await;
        for (addr, listener) in listeners.iter() {
            if !listener.is_running() {
                return Err(format!("listener {addr} stopped"));
            }
        }
        let addrs: Vec<(SocketAddr, SocketAddr)> =
            listeners.iter().map(|(a, l)| (*a, l.local)).collect();
        drop(listeners);
        for (addr, local) in addrs {
            probe(probe_target(local))
                .await
                .map_err(|e| format!("{addr} does not answer: {e}"))?;
        }
        Ok(())
    }
}

/// Where to probe a bound address: loopback for the wildcard.
fn probe_target(local: SocketAddr) -> SocketAddr {
    let mut target = local;
    if local.ip().is_unspecified() {
        target.set_ip(if local.is_ipv4() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        });
    }
    target
}

async fn probe(target: SocketAddr) -> Result<(), String> {
    let probe = Message::query();
    let id = probe.metadata.id;
    let bytes = probe.to_vec().map_err(|e| e.to_string())?;
    let local: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let attempt = async {
        let socket = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
        socket.connect(target).await.map_err(|e| e.to_string())?;
        socket.send(&bytes).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
        match Message::from_vec(&buf[..n]) {
            Ok(reply) if reply.metadata.id == id => {}
            Ok(_) => return Err("UDP probe: reply with another id".to_owned()),
            Err(e) => return Err(format!("UDP probe: {e}")),
        }
        TcpStream::connect(target)
            .await
            .map_err(|e| format!("TCP: {e}"))?;
        Ok(())
    };
    timeout(Duration::from_secs(2), attempt)
        .await
        .map_err(|_| "no answer within 2 s".to_owned())?
}

fn bind(addr: SocketAddr, kind: Type) -> std::io::Result<Socket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let protocol = if kind == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let socket = Socket::new(domain, kind, Some(protocol))?;
    if addr.is_ipv6() {
        // `[::]:53` next to `0.0.0.0:53` must not clash.
        socket.set_only_v6(true)?;
    }
    if kind == Type::STREAM {
        socket.set_reuse_address(true)?;
    } else {
        // Bursts (a benchmark, a cache flush downstream) queue instead of dropping.
        let _ = socket.set_recv_buffer_size(4 << 20);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// What the server does with one request.
enum Handled {
    Reply(Vec<u8>),
    Forward(Message),
    Drop,
}

fn handle(state: &State, bytes: &[u8], transport: Transport) -> Handled {
    let request = match Message::from_vec(bytes) {
        Ok(request) => request,
        Err(_) => return formerr(bytes),
    };
    match state.zones.answer(&request) {
        Answer::Reply(response) => encode(&request, response, transport),
        Answer::Forward => Handled::Forward(request),
        Answer::Drop => Handled::Drop,
    }
}

/// A request that does not decode: FORMERR if at least its header does.
fn formerr(bytes: &[u8]) -> Handled {
    use hickory_proto::op::{Header, MessageType};
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    match Header::read(&mut BinDecoder::new(bytes)) {
        Ok(header) if header.metadata.message_type == MessageType::Query => {
            let reply = Message::error_msg(
                header.metadata.id,
                header.metadata.op_code,
                ResponseCode::FormErr,
            );
            reply.to_vec().map_or(Handled::Drop, Handled::Reply)
        }
        _ => Handled::Drop,
    }
}

/// Encode `response`, truncated (TC, no records) if it does not fit the client's UDP
/// size.
fn encode(request: &Message, mut response: Message, transport: Transport) -> Handled {
    let Ok(bytes) = response.to_vec() else {
        return servfail(request);
    };
    if transport == Transport::Udp && bytes.len() > udp_limit(request) {
        response.answers.clear();
        response.authorities.clear();
        response.additionals.clear();
        response.metadata.truncation = true;
        return response.to_vec().map_or(Handled::Drop, Handled::Reply);
    }
    Handled::Reply(bytes)
}

fn servfail(request: &Message) -> Handled {
    let mut reply = reply_to(request);
    reply.metadata.response_code = ResponseCode::ServFail;
    reply.to_vec().map_or(Handled::Drop, Handled::Reply)
}

fn forward_reply(
    request: &Message,
    reply: Option<Message>,
    transport: Transport,
) -> Option<Vec<u8>> {
    let reply = match reply {
        Some(reply) => reply.to_vec().ok(),
        None => None,
    };
    match reply {
        Some(bytes) => Some(bytes),
        None => match servfail(request) {
            Handled::Reply(bytes) => Some(bytes),
            _ => None,
        },
    }
    .filter(|b| transport == Transport::Tcp || b.len() <= 65_507)
}

fn serve_udp(
    socket: &Arc<std::net::UdpSocket>,
    shared: &Arc<Shared>,
    stop: &AtomicBool,
    runtime: &tokio::runtime::Handle,
) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(err) => {
                tracing::debug!("dns: UDP receive: {err}");
                continue;
            }
        };
        let state = shared.current();
        match handle(&state, &buf[..n], Transport::Udp) {
            Handled::Reply(bytes) => {
                let _ = socket.send_to(&bytes, peer);
            }
            Handled::Drop => {}
            Handled::Forward(request) => {
                let Ok(permit) = Arc::clone(&shared.forwards).try_acquire_owned() else {
                    if let Handled::Reply(bytes) = servfail(&request) {
                        let _ = socket.send_to(&bytes, peer);
                    }
                    continue;
                };
                let socket = Arc::clone(socket);
                runtime.spawn(async move {
                    let reply = forward(
                        &request,
                        &state.config.recursors,
                        Duration::from_millis(state.config.forward_timeout_ms),
                        Transport::Udp,
                    )
                    .await;
                    if let Some(bytes) = forward_reply(&request, reply, Transport::Udp) {
                        // A blocking socket: a datagram send does not wait in practice.
                        let _ = socket.send_to(&bytes, peer);
                    }
                    drop(permit);
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(got) => got,
            Err(err) => {
                tracing::debug!("dns: TCP accept: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let Ok(_slot) = shared.tcp_slots.try_acquire() else {
                return;
            };
            if let Err(err) = serve_tcp_client(stream, &shared).await {
                tracing::debug!("dns: TCP client: {err}");
            }
        });
    }
}

async fn serve_tcp_client(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let len = match timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            Ok(Err(_)) | Err(_) => return Ok(()),
        };
        let mut buf = vec![0u8; len];
        timeout(TCP_IDLE, stream.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("TCP read timed out"))??;
        let state = shared.current();
        let reply = match handle(&state, &buf, Transport::Tcp) {
            Handled::Reply(bytes) => Some(bytes),
            Handled::Drop => None,
            Handled::Forward(request) => {
                let reply = forward(
                    &request,
                    &state.config.recursors,
                    Duration::from_millis(state.config.forward_timeout_ms),
                    Transport::Tcp,
                )
                .await;
                forward_reply(&request, reply, Transport::Tcp)
            }
        };
        let Some(bytes) = reply else {
            return Ok(());
        };
        let len =
            u16::try_from(bytes.len()).map_err(|_| std::io::Error::other("reply too long"))?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
    }
}
