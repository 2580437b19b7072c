//! The agent side of the connection: dial, serve calls, keep alive, reconnect.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

use crate::dial::{Socket, dial, tls_config};
use crate::{Backoff, Credentials, Endpoint, Service, dispatch};

/// Transport settings. [`Options::default`] matches upstream's timings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Allow `ws://`/`http://` Kahuna URLs (development only).
    pub insecure: bool,
    /// Verify Kahuna with this PEM CA bundle instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Largest request accepted; a larger one closes the connection (code 1009) and
    /// the agent reconnects.
    pub max_frame_bytes: usize,
    /// Ping period (upstream: 9 s).
    pub ping_interval: Duration,
    /// A peer silent this long is gone (upstream: 10 s).
    pub peer_timeout: Duration,
    /// TCP + TLS + upgrade deadline.
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Calls served at once on one connection (Kahuna makes one at a time).
    pub max_in_flight: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            insecure: false,
            ca_file: None,
            max_frame_bytes: 16 << 20,
            ping_interval: Duration::from_secs(9),
            peer_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            max_in_flight: 16,
        }
    }
}

/// State of the link to Kahuna, for status reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Connected,
    /// The last attempt or session ended with this error; retrying.
    Down(String),
    Stopped,
}

/// A Kahuna RPC agent: one [`Service`], one connection at a time, forever.
pub struct Agent<S> {
    credentials: Credentials,
    endpoint: Endpoint,
    options: Options,
    service: Arc<S>,
    tls: Option<Arc<rustls::ClientConfig>>,
    link: watch::Sender<Link>,
}

impl<S: Service> Agent<S> {
    /// Check the endpoint and load the TLS roots; nothing is dialled yet.
    pub fn new(
        credentials: Credentials,
        options: Options,
        service: Arc<S>,
    ) -> Result<Self, String> {
        let endpoint = Endpoint::parse(&credentials.kahuna_url, options.insecure)
            .map_err(|e| e.to_string())?;
        if credentials.agent_id.trim().is_empty() {
            return Err("agent id is empty".into());
        }
        if credentials.api_key.is_empty() {
            return Err("API key is empty".into());
        }
        let tls = if endpoint.tls {
            Some(tls_config(options.ca_file.as_deref())?)
        } else {
            tracing::warn!(url = %endpoint.url, "rpc: INSECURE: Kahuna connection is not encrypted");
            None
        };
        let (link, _) = watch::channel(Link::Connecting);
        Ok(Self {
            credentials,
            endpoint,
            options,
            service,
            tls,
            link,
        })
    }

    /// Follow the link state.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.link.subscribe()
    }

    /// Connect and serve until `shutdown` completes; reconnect whenever the link drops.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop) = watch::channel(false);
        tokio::select! {
            () = shutdown => {}
            () = self.serve_forever(stop.clone()) => {}
        }
        // Let a live session send its close frame.
        let _ = stop_tx.send(true);
        self.link.send_replace(Link::Stopped);
    }

    /// Like [`run`](Self::run), but closes the session cleanly on shutdown.
    async fn serve_forever(&self, stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.options.backoff_min, self.options.backoff_max);
        let kind = self.credentials.kind;
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(self.options.max_frame_bytes))
            .max_frame_size(Some(self.options.max_frame_bytes));
        loop {
            self.link.send_replace(Link::Connecting);
            tracing::info!(url = %self.endpoint.url, agent = %self.credentials.agent_id, kind, "rpc: connecting to Kahuna");
            let attempt = dial(
                &self.endpoint,
                &self.credentials,
                kind,
                self.tls.as_ref(),
                ws_config,
                self.options.connect_timeout,
            )
            .await;
            let reason = match attempt {
                Ok(socket) => {
                    tracing::info!(url = %self.endpoint.url, "rpc: connected");
                    self.link.send_replace(Link::Connected);
                    let started = Instant::now();
                    let end = self.session(socket, stop.clone()).await;
                    if started.elapsed() >= self.options.peer_timeout {
                        backoff.reset();
                    }
                    match end {
                        Ok(()) => return,
                        Err(reason) => reason,
                    }
                }
                Err(err) => err.to_string(),
            };
            let delay = backoff.next_delay();
            tracing::warn!("rpc: link to Kahuna down: {reason}; retrying in {delay:.1?}");
            self.link.send_replace(Link::Down(reason));
            tokio::time::sleep(delay).await;
        }
    }

    /// Serve one connection. `Ok` when asked to stop, `Err(reason)` when the link broke.
    async fn session(&self, socket: Socket, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        let opts = &self.options;
        let write_timeout = opts.peer_timeout;
        let (mut sink, mut stream) = socket.split();
        let (replies_tx, mut replies) = mpsc::channel::<Vec<u8>>(opts.max_in_flight.max(1));
        let slots = Arc::new(Semaphore::new(opts.max_in_flight.max(1)));
        let mut ping =
            tokio::time::interval_at(Instant::now() + opts.ping_interval, opts.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();

        macro_rules! send {
            ($msg:expr, $what:literal) => {
                match timeout(write_timeout, sink.send($msg)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!(concat!("sending ", $what, ": {}"), e)),
                    Err(_) => {
                        return Err(format!(
                            concat!("sending ", $what, ": timed out after {:?}"),
                            write_timeout
                        ))
                    }
                }
            };
        }

        loop {
            tokio::select! {
                incoming = stream.next() => {
                    let message = match incoming {
                        None => return Err("Kahuna closed the connection".into()),
                        Some(Ok(message)) => message,
                        Some(Err(WsError::Capacity(err))) => {
                            // The rest of the oversized frame is unread: the stream cannot
                            // be resynchronised. Say why, close, and reconnect.
                            let close = CloseFrame { code: CloseCode::Size, reason: "frame too large".into() };
                            let _ = timeout(write_timeout, sink.send(Message::Close(Some(close)))).await;
                            return Err(format!("request refused: {err} (limit {} bytes)", opts.max_frame_bytes));
                        }
                        Some(Err(err)) => return Err(format!("reading from Kahuna: {err}")),
                    };
                    last_heard = Instant::now();
                    match message {
                        Message::Binary(bytes) => self.spawn_call(bytes, &slots, &replies_tx),
                        // Upstream ignores text frames; JSON is JSON, serve it alike.
                        Message::Text(text) => self.spawn_call(Bytes::from(text), &slots, &replies_tx),
                        // tungstenite queued the pong (echoing the payload); flush it now.
                        Message::Ping(_) => match timeout(write_timeout, sink.flush()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Err(format!("sending pong: {e}")),
                            Err(_) => return Err(format!("sending pong: timed out after {write_timeout:?}")),
                        },
                        Message::Pong(_) | Message::Frame(_) => {}
                        Message::Close(frame) => {
                            return Err(format!("Kahuna closed the connection ({})",
                                frame.map_or_else(|| "no reason".to_owned(), |f| format!("{} {}", f.code, f.reason))));
                        }
                    }
                }
                Some(reply) = replies.recv() => send!(Message::Binary(Bytes::from(reply)), "reply"),
                _ = ping.tick() => send!(Message::Ping(Bytes::new()), "ping"),
                () = sleep_until(last_heard + opts.peer_timeout) => {
                    return Err(format!("Kahuna silent for {:?}", opts.peer_timeout));
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        let close = CloseFrame { code: CloseCode::Normal, reason: "agent stopping".into() };
                        let _ = timeout(write_timeout, sink.send(Message::Close(Some(close)))).await;
                        return Ok(());
                    }
                }
            }
        }
    }

    fn spawn_call(&self, frame: Bytes, slots: &Arc<Semaphore>, replies: &mpsc::Sender<Vec<u8>>) {
        let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
            tracing::warn!(
                "rpc: {} calls already in flight, dropping a request",
                self.options.max_in_flight
            );
            let busy = busy_reply(&frame);
            if let Some(busy) = busy {
                let _ = replies.try_send(busy);
            }
            return;
        };
        let service = Arc::clone(&self.service);
        let kind = self.credentials.kind;
        let replies = replies.clone();
        tokio::spawn(async move {
            if let Some(reply) = dispatch(service.as_ref(), kind, &frame).await {
                // The session may have ended meanwhile; Kahuna re-sends on reconnect.
                let _ = replies.send(reply).await;
            }
            drop(permit);
        });
    }
}

fn busy_reply(frame: &[u8]) -> Option<Vec<u8>> {
    let id = serde_json::from_slice::<serde_json::Value>(frame)
        .ok()?
        .get("id")?
        .as_u64()?;
    serde_json::to_vec(&serde_json::json!({
        "id": id, "result": null, "error": "wsrpc: too many calls in flight"
    }))
    .ok()
}
