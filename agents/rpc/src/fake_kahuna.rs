//! A Kahuna double for tests (feature `fake-kahuna`): a real WebSocket server on
//! loopback that authenticates agents like Kahuna (the three `X-WS-Kowabunga-*`
//! headers, the right key, else HTTP 401) and then acts as upstream's RPC client:
//! binary JSON frames, one call at a time, ids from 0 up, replies matched by id.
//! It answers pings, and can be told to go silent.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The handshake callback type is tungstenite's.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::{HEADER_AGENT, HEADER_API_KEY, HEADER_ID};

/// What Kahuna expects of the agents it accepts.
#[derive(Debug, Clone)]
pub struct Expect {
    pub kind: String,
    pub agent_id: String,
    pub api_key: String,
}

/// A listening fake Kahuna.
pub struct FakeKahuna {
    addr: SocketAddr,
    connections: mpsc::Receiver<Conn>,
    refusals: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl FakeKahuna {
    /// Listen on an ephemeral loopback port.
    pub async fn start(expect: Expect) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("literal"), expect).await
    }

    /// Listen on `addr` (to come back on the same port after [`stop`](Self::stop)).
    pub async fn start_on(addr: SocketAddr, expect: Expect) -> std::io::Result<Self> {
        Self::listen(addr, expect, None).await
    }

    /// Serve `wss://` with this certificate chain and key (PEM files).
    pub async fn start_tls(expect: Expect, chain: &Path, key: &Path) -> std::io::Result<Self> {
        let certs = CertificateDer::pem_file_iter(chain)
            .map_err(std::io::Error::other)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(std::io::Error::other)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(std::io::Error::other)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Self::listen(
            "127.0.0.1:0".parse().expect("literal"),
            expect,
            Some(acceptor),
        )
        .await
    }

    async fn listen(
        addr: SocketAddr,
        expect: Expect,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(16)?;
        let addr = listener.local_addr()?;
        let (tx, connections) = mpsc::channel(16);
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(accept_loop(
            listener,
            expect,
            tls,
            tx,
            Arc::clone(&refusals),
        ));
        Ok(Self {
            addr,
            connections,
            refusals,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:<port>`: Kahuna's base URL (the agent appends `/ws`); use
    /// `wss://` with [`start_tls`](Self::start_tls).
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Why upgrade requests were refused so far (`missing X-WS-Kowabunga-Id`, ...).
    pub fn refusals(&self) -> Vec<String> {
        self.refusals.lock().unwrap().clone()
    }

    /// The next authenticated agent connection.
    pub async fn accept(&mut self, within: Duration) -> Conn {
        tokio::time::timeout(within, self.connections.recv())
            .await
            .expect("no agent connected in time")
            .expect("fake Kahuna stopped")
    }

    /// Stop listening and drop every connection, as a Kahuna restart does.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    expect: Expect,
    tls: Option<TlsAcceptor>,
    tx: mpsc::Sender<Conn>,
    refusals: Arc<Mutex<Vec<String>>>,
) {
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let expect = expect.clone();
        let tx = tx.clone();
        let refusals = Arc::clone(&refusals);
        let tls = tls.clone();
        // Sessions live in the JoinSet: stopping the fake drops them all.
        sessions.spawn(async move {
            match tls {
                None => session(tcp, expect, tx, refusals).await,
                Some(tls) => match tls.accept(tcp).await {
                    Ok(stream) => session(stream, expect, tx, refusals).await,
                    Err(err) => refusals.lock().unwrap().push(format!("TLS: {err}")),
                },
            }
        });
    }
}

async fn session<S>(
    tcp: S,
    expect: Expect,
    tx: mpsc::Sender<Conn>,
    refusals: Arc<Mutex<Vec<String>>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut why = None;
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let problem = if req.uri().path() != "/ws" {
            Some(format!("path {} is not /ws", req.uri().path()))
        } else {
            [
                (HEADER_AGENT, &expect.kind),
                (HEADER_ID, &expect.agent_id),
                (HEADER_API_KEY, &expect.api_key),
            ]
            .into_iter()
            .find_map(|(name, want)| match header(name) {
                None => Some(format!("missing {name}")),
                Some(got) if &got != want => Some(format!("wrong {name}")),
                Some(_) => None,
            })
        };
        match problem {
            None => Ok(resp),
            Some(p) => {
                why = Some(p);
                let mut refuse = ErrorResponse::new(Some("unauthorized".into()));
                *refuse.status_mut() = StatusCode::UNAUTHORIZED;
                Err(refuse)
            }
        }
    };
    match tokio_tungstenite::accept_hdr_async(tcp, check).await {
        Ok(ws) => {
            let (conn, pump) = Conn::new(ws);
            if tx.send(conn).await.is_ok() {
                pump.await;
            }
        }
        Err(_) => {
            refusals
                .lock()
                .unwrap()
                .push(why.unwrap_or_else(|| "bad handshake".into()));
        }
    }
}

/// What the agent sent back for one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub id: u64,
    pub result: Value,
    pub error: Option<String>,
}

enum Cmd {
    Send(Message),
    Silence,
}

/// One authenticated agent connection, Kahuna side.
pub struct Conn {
    cmds: mpsc::UnboundedSender<Cmd>,
    frames: mpsc::UnboundedReceiver<Option<Bytes>>,
    next_id: u64,
}

impl Conn {
    fn new<S>(ws: WebSocketStream<S>) -> (Self, impl Future<Output = ()>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (cmds, mut cmd_rx) = mpsc::unbounded_channel();
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let pump = async move {
            let (mut sink, mut stream) = ws.split();
            loop {
                tokio::select! {
                    msg = stream.next() => match msg {
                        Some(Ok(Message::Binary(b))) => { let _ = frames_tx.send(Some(b)); }
                        Some(Ok(Message::Text(t))) => { let _ = frames_tx.send(Some(Bytes::from(t))); }
                        Some(Ok(Message::Ping(_))) => { let _ = sink.flush().await; }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => { let _ = frames_tx.send(None); return; }
                    },
                    cmd = cmd_rx.recv() => match cmd {
                        Some(Cmd::Send(m)) => { if sink.send(m).await.is_err() { let _ = frames_tx.send(None); return; } }
                        Some(Cmd::Silence) => {
                            // Stop reading and writing, keep the socket open.
                            std::future::pending::<()>().await;
                        }
                        None => return,
                    },
                }
            }
        };
        (
            Self {
                cmds,
                frames,
                next_id: 0,
            },
            pump,
        )
    }

    /// Call `method` like upstream's client and wait for the reply with the same id.
    pub async fn call(&mut self, method: &str, params: Value) -> Reply {
        let id = self.next_id;
        self.call_within(method, params, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("no reply to {method} (id {id})"))
    }

    /// [`call`](Self::call), waiting at most `within`: `None` without a reply (a call
    /// that goes through a whole generation may take a while on a slow guest).
    pub async fn call_within(
        &mut self,
        method: &str,
        params: Value,
        within: Duration,
    ) -> Option<Reply> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({ "id": id, "method": method, "params": params });
        self.send_raw(serde_json::to_vec(&frame).unwrap());
        let reply = self.next_reply(within).await?;
        assert_eq!(reply.id, id, "reply id for {method}");
        Some(reply)
    }

    /// `Kiwi.Capabilities` etc.: `(Version, Methods)`.
    pub async fn capabilities(&mut self, kind: &str) -> (String, Vec<String>) {
        let r = self.call(&format!("{kind}.Capabilities"), json!({})).await;
        assert_eq!(r.error, None, "Capabilities failed");
        let version = r.result["Version"].as_str().unwrap().to_owned();
        let methods = r.result["Methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_owned())
            .collect();
        (version, methods)
    }

    /// Send bytes as one binary frame, whatever they are.
    pub fn send_raw(&mut self, bytes: Vec<u8>) {
        let _ = self
            .cmds
            .send(Cmd::Send(Message::Binary(Bytes::from(bytes))));
    }

    /// The next reply frame, parsed; `None` on timeout or when the agent hung up.
    pub async fn next_reply(&mut self, within: Duration) -> Option<Reply> {
        let frame = tokio::time::timeout(within, self.frames.recv())
            .await
            .ok()??;
        let frame = frame?;
        let v: Value = serde_json::from_slice(&frame).expect("agent sent invalid JSON");
        let obj = v.as_object().expect("reply is an object");
        assert!(
            obj.len() == 3 && obj.contains_key("result") && obj.contains_key("error"),
            "reply must carry exactly id, result, error: {v}"
        );
        Some(Reply {
            id: v["id"].as_u64().expect("reply id"),
            result: v["result"].clone(),
            error: v["error"].as_str().map(str::to_owned),
        })
    }

    /// Whether the agent closed this connection within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Err(_) => return false,
                Ok(None | Some(None)) => return true,
                Ok(Some(Some(_))) => {}
            }
        }
    }

    /// Stop answering anything (pings included), as a hung Kahuna would.
    pub fn go_silent(&mut self) {
        let _ = self.cmds.send(Cmd::Silence);
    }
}
