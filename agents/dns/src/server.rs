//! The DNS server: UDP and TCP listeners on the configured addresses, answering from
//! the record set in force and forwarding the rest for the clients allowed to recurse.
//! The record set, recursors and listeners change only through [`DnsServer::apply`],
//! which swaps them atomically. A listener that stops (a fatal socket error, a panic)
//! ends the run of [`DnsServer::supervised`] with the reason; the next run reopens it.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use kowabunga_model::Supervised;
use kowabunga_model::supervised::LoopExit;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::forward::{Transport, forward};
use crate::model::{DnsConfig, DnsSection, PushedDns};
use crate::recursion::{self, LocalNets};
use crate::reply_source;
use crate::zones::{Answer, Zones, reply_to, udp_limit};

/// Name of the supervised service (logs, `/status`, `/metrics`).
pub const SERVICE: &str = "dns";

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
            nameserver: None,
            nameserver_addresses: Vec::new(),
            reverse_zones: signed.reverse_zones,
            recursion_clients: Vec::new(),
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
    /// The node's subnets: who may recurse without being listed.
    local_nets: LocalNets,
    /// Bumped each time a serving loop stops on its own (see [`LoopExit`]).
    failures: watch::Sender<u64>,
}

impl Shared {
    fn current(&self) -> Arc<State> {
        match self.state.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// One bound address: its UDP threads and TCP task, stopped on drop.
///
/// UDP is served by plain threads doing blocking `recvmsg`/`sendmsg` on the shared
/// socket (the kernel wakes one waiter per datagram): two syscalls per answered query,
/// no event loop in between, each answer sent from the address asked
/// ([`reply_source`]). Forwarded queries go to the async runtime.
struct Listener {
    local: SocketAddr,
    tcp: JoinHandle<()>,
    udp: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Why a serving loop of this listener stopped on its own, if one did.
    exit: Arc<Mutex<Option<String>>>,
    /// The listening TCP socket (a duplicate descriptor), for tests to break it.
    #[cfg(test)]
    tcp_socket: Socket,
}

impl Listener {
    fn is_running(&self) -> bool {
        !self.tcp.is_finished() && self.udp.iter().all(|t| !t.is_finished())
    }

    /// Why this listener no longer serves, if it does not.
    fn failure(&self) -> Option<String> {
        let exit = self
            .exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match exit {
            Some(reason) => Some(reason),
            None if !self.is_running() => Some("a serving loop stopped".to_owned()),
            None => None,
        }
    }

    /// Stop and wait until the sockets are closed.
    async fn close(&mut self) {
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
                local_nets: LocalNets::new(),
                failures: watch::Sender::new(0),
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
        // A listener that stopped is bound again like a new one.
        self.reopen_failed(&mut listeners).await?;
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
            if let Some(mut listener) = listeners.remove(&addr) {
                // Wait for the sockets to close, so that a revert can bind them again.
                listener.close().await;
                tracing::info!(%addr, "dns: stopped listening");
            }
        }
        self.set_bound(&listeners);
        tracing::info!(names = records, listen = ?wanted, "dns: record set in force");
        Ok(())
    }

    fn set_bound(&self, listeners: &BTreeMap<SocketAddr, Listener>) {
        if let Ok(mut bound) = self.bound.lock() {
            *bound = listeners.values().map(|l| l.local).collect();
        }
    }

    /// Close every listener that stopped serving and bind its address again (the same
    /// port when the configuration said port 0). On a bind failure the closed listener
    /// stays in place, still reported as failed.
    async fn reopen_failed(
        &self,
        listeners: &mut BTreeMap<SocketAddr, Listener>,
    ) -> Result<(), String> {
        let failed: Vec<SocketAddr> = listeners
            .iter()
            .filter(|(_, l)| l.failure().is_some())
            .map(|(a, _)| *a)
            .collect();
        for addr in failed {
            let Some(mut old) = listeners.remove(&addr) else {
                continue;
            };
            old.close().await;
            let target = if addr.port() == 0 { old.local } else { addr };
            match self.listen(target) {
                Ok(listener) => {
                    tracing::info!(%addr, "dns: listener reopened");
                    listeners.insert(addr, listener);
                }
                Err(err) => {
                    listeners.insert(addr, old);
                    self.set_bound(listeners);
                    return Err(format!("listen on {target}: {err}"));
                }
            }
        }
        self.set_bound(listeners);
        Ok(())
    }

    /// The listeners as a service the agent core supervises. One run reopens the
    /// listeners that stopped, then waits until one stops and ends with `Err` naming it
    /// and why; the core starts another run after its back-off. Which addresses are
    /// served is still decided by [`apply`](Self::apply).
    pub fn supervised(&self) -> Supervised {
        let server = self.clone();
        Supervised::new(SERVICE, move || {
            let server = server.clone();
            async move { server.watch().await }
        })
    }

    /// One run of [`supervised`](Self::supervised).
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
                if let Some((addr, reason)) = listeners
                    .iter()
                    .find_map(|(a, l)| l.failure().map(|r| (*a, r)))
                {
                    return Err(format!("listener {addr}: {reason}"));
                }
            }
            // The sender lives as long as the server: this only waits.
            if failures.changed().await.is_err() {
                return Err("dns: the server is gone".to_owned());
            }
        }
    }

    fn listen(&self, addr: SocketAddr) -> std::io::Result<Listener> {
        let udp_socket = bind(addr, Type::DGRAM)?;
        udp_socket.set_nonblocking(false)?;
        udp_socket.set_read_timeout(Some(UDP_POLL))?;
        let udp: Arc<std::net::UdpSocket> = Arc::new(udp_socket.into());
        reply_source::enable(&udp)?;
        let local = udp.local_addr()?;
        // TCP on the same port as UDP, also when the configuration said port 0.
        let tcp_socket = bind(local, Type::STREAM)?;
        tcp_socket.listen(1024)?;
        #[cfg(test)]
        let tcp_probe = tcp_socket.try_clone()?;
        let tcp = TcpListener::from_std(tcp_socket.into())?;
        let stop = Arc::new(AtomicBool::new(false));
        let exit = Arc::new(Mutex::new(None));
        let shared = Arc::clone(&self.shared);
        let failed: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |message: &str| {
            tracing::error!("dns: {message}");
            shared.failures.send_modify(|n| *n = n.wrapping_add(1));
        });
        let guard = |what: String| LoopExit::new(what, &stop, &exit, Arc::clone(&failed));
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
            let exit = guard(format!("UDP {local}"));
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || {
                    exit.ended(serve_udp(&udp, &shared, &flag, &runtime));
                });
            match thread {
                Ok(t) => threads.push(t),
                Err(err) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(err);
                }
            }
        }
        let exit_tcp = guard(format!("TCP {local}"));
        let shared = Arc::clone(&self.shared);
        let tcp = tokio::spawn(async move {
            exit_tcp.ended(serve_tcp(tcp, shared).await);
        });
        tracing::info!(%local, "dns: listening (UDP and TCP)");
        Ok(Listener {
            local,
            tcp,
            udp: threads,
            stop,
            exit,
            #[cfg(test)]
            tcp_socket: tcp_probe,
        })
    }

    /// Close every listener and wait until its sockets are released (for a clean stop;
    /// a later [`apply`](Self::apply) listens again).
    pub async fn shutdown(&self) {
        let mut listeners = self.listeners.lock().await;
        for (_, mut listener) in std::mem::take(&mut *listeners) {
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
            if let Some(reason) = listener.failure() {
                return Err(format!("listener {addr} stopped: {reason}"));
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

/// Answer one request from `client`: authoritative data, an error, or a forward when
/// `client` may recurse (REFUSED otherwise, see [`recursion`]).
fn handle(
    state: &State,
    local_nets: &LocalNets,
    bytes: &[u8],
    transport: Transport,
    client: IpAddr,
) -> Handled {
    let request = match Message::from_vec(bytes) {
        Ok(request) => request,
        Err(_) => return undecodable(bytes),
    };
    match state.zones.answer(&request) {
        Answer::Reply(response) => encode(&request, response, transport),
        Answer::Forward
            if recursion::allowed(client, &state.config.recursion_clients, local_nets) =>
        {
            Handled::Forward(request)
        }
        Answer::Forward => {
            let mut reply = reply_to(&request);
            reply.metadata.response_code = ResponseCode::Refused;
            reply.metadata.recursion_available = false;
            reply.to_vec().map_or(Handled::Drop, Handled::Reply)
        }
        Answer::Drop => Handled::Drop,
    }
}

/// A request that does not decode: NOTIMP for an opcode we do not serve anyway (an
/// UPDATE's records may not decode as a query's would), FORMERR for a query, nothing
/// without a query header.
fn undecodable(bytes: &[u8]) -> Handled {
    use hickory_proto::op::{Header, MessageType};
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    match Header::read(&mut BinDecoder::new(bytes)) {
        Ok(header) if header.metadata.message_type == MessageType::Query => {
            let code = if header.metadata.op_code == OpCode::Query {
                ResponseCode::FormErr
            } else {
                ResponseCode::NotImp
            };
            let reply = Message::error_msg(header.metadata.id, header.metadata.op_code, code);
            reply.to_vec().map_or(Handled::Drop, Handled::Reply)
        }
        _ => Handled::Drop,
    }
}

/// Receive errors a serving loop carries on after; any other ends it (the supervised
/// run then reports it and the listener is reopened).
fn transient(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::WouldBlock
            | ErrorKind::TimedOut
            | ErrorKind::Interrupted
            | ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::OutOfMemory
    ) || err.raw_os_error().is_some_and(|code| {
        [
            nix::errno::Errno::EMFILE,
            nix::errno::Errno::ENFILE,
            nix::errno::Errno::ENOBUFS,
            nix::errno::Errno::ENOMEM,
            nix::errno::Errno::EPROTO,
            nix::errno::Errno::EPERM,
        ]
        .contains(&nix::errno::Errno::from_raw(code))
    })
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

/// Serve UDP until `stop`; `Err` on a receive error it cannot serve past.
fn serve_udp(
    socket: &Arc<std::net::UdpSocket>,
    shared: &Arc<Shared>,
    stop: &AtomicBool,
    runtime: &tokio::runtime::Handle,
) -> Result<(), String> {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (n, peer, arrival) = match reply_source::recv(socket, &mut buf) {
            Ok(got) => got,
            Err(err) if transient(&err) => continue,
            Err(err) => return Err(format!("UDP receive: {err}")),
        };
        let state = shared.current();
        match handle(
            &state,
            &shared.local_nets,
            &buf[..n],
            Transport::Udp,
            peer.ip(),
        ) {
            Handled::Reply(bytes) => {
                let _ = reply_source::send(socket, &bytes, peer, arrival);
            }
            Handled::Drop => {}
            Handled::Forward(request) => {
                let Ok(permit) = Arc::clone(&shared.forwards).try_acquire_owned() else {
                    if let Handled::Reply(bytes) = servfail(&request) {
                        let _ = reply_source::send(socket, &bytes, peer, arrival);
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
                        let _ = reply_source::send(&socket, &bytes, peer, arrival);
                    }
                    drop(permit);
                });
            }
        }
    }
    Ok(())
}

/// Accept TCP clients until aborted; `Err` on an accept error it cannot serve past.
async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) -> Result<(), String> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(err) if transient(&err) => {
                tracing::debug!("dns: TCP accept: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(err) => return Err(format!("TCP accept: {err}")),
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let Ok(_slot) = shared.tcp_slots.try_acquire() else {
                return;
            };
            if let Err(err) = serve_tcp_client(stream, peer.ip(), &shared).await {
                tracing::debug!("dns: TCP client: {err}");
            }
        });
    }
}

async fn serve_tcp_client(
    mut stream: TcpStream,
    client: IpAddr,
    shared: &Shared,
) -> std::io::Result<()> {
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
        let reply = match handle(&state, &shared.local_nets, &buf, Transport::Tcp, client) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::model::{self, DnsSection};

    fn state_on(listen: &str) -> State {
        let signed = DnsSection {
            listen: vec![listen.parse().unwrap()],
            ..DnsSection::default()
        };
        let pushed = PushedDns::default();
        let config = model::merge(&signed, &pushed).unwrap();
        State::new(config, signed, pushed).unwrap()
    }

    /// Break the listening TCP socket of the first listener: `accept` then fails with
    /// EINVAL, an error no serving loop can continue past.
    async fn break_tcp(server: &DnsServer) {
        let listeners = server.listeners.lock().await;
        let listener = listeners.values().next().expect("a listener");
        listener
            .tcp_socket
            .shutdown(std::net::Shutdown::Read)
            .expect("shutdown");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failing_listener_ends_the_supervised_run_with_err_and_the_next_run_reopens_it() {
        let server = DnsServer::new();
        server.apply(state_on("127.0.0.1:0")).await.unwrap();
        let port = server.bound()[0].port();
        let service = server.supervised();
        assert_eq!(service.name(), "dns");

        let run = tokio::spawn(service.start());
        server.check().await.unwrap();
        assert!(!run.is_finished(), "a healthy run keeps running");

        break_tcp(&server).await;
        let ended = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the run ends when a listener fails")
            .unwrap();
        let err = ended.unwrap_err();
        assert!(
            err.contains(&format!(
                "listener 127.0.0.1:0: TCP 127.0.0.1:{port}: TCP accept"
            )),
            "{err}"
        );
        let health = server.check().await.unwrap_err();
        assert!(health.contains("stopped"), "{health}");

        // What the supervisor does next: another run, which reopens the listener on the
        // same port. Up to 30 s: a wide bound, for a loaded 2-core machine (5 s was
        // seen to fail there).
        let run = tokio::spawn(service.start());
        let mut healthy = Err(String::new());
        for _ in 0..600 {
            healthy = server.check().await;
            if healthy.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        healthy.unwrap();
        assert_eq!(server.bound()[0].port(), port);
        assert!(!run.is_finished());
        run.abort();
        server.shutdown().await;
    }

    /// A wildcard listener answers from the address it was asked on: a resolver
    /// connected to 127.0.0.2 (which routing would not pick as the source) gets its
    /// answer. The case of a VRRP virtual address on a Kiwi.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_wildcard_listener_answers_from_the_address_asked() {
        let server = DnsServer::new();
        server.apply(state_on("0.0.0.0:0")).await.unwrap();
        let port = server.bound()[0].port();
        // The probe's socket is connected: an answer from another address never
        // reaches it (and the probe, which also checks the id, times out).
        timeout(
            Duration::from_secs(10),
            probe(([127, 0, 0, 2], port).into()),
        )
        .await
        .expect("an answer from 127.0.0.2")
        .unwrap();
        server.shutdown().await;
    }
}
