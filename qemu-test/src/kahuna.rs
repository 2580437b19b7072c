//! A fake Kahuna: serves one agent's signed desired-state documents over the config API
//! (docs/config-api.md) and records every request the agent makes, so tests can check
//! from outside what the agent fetched and reported.
//!
//! It also serves plain files under `/files/` (an object store or web server holding
//! VM templates, as Kahuna's template `source` URLs name), without credentials, and
//! records those downloads apart.
//!
//! It listens on loopback only; guests reach it through QEMU user-mode networking
//! (a `guestfwd` rule, see [`crate::vm`]).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What the agent must send in its request headers.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub agent_kind: String,
    pub agent_id: String,
    pub api_key: String,
}

/// One request seen by the fake Kahuna.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// The three `X-WS-Kowabunga-*` headers matched the expected credentials.
    pub authenticated: bool,
    pub status: u16,
    pub if_none_match: Option<String>,
    pub body: Vec<u8>,
}

/// One download of a file under `/files/`.
#[derive(Clone, Debug)]
pub struct Download {
    pub path: String,
    pub status: u16,
    /// The request carried `X-WS-Kowabunga-Api-Key` (it must not: a template URL is
    /// anybody's server).
    pub carried_api_key: bool,
    /// `X-Kowabunga-Instance-Id` and `X-Kowabunga-Source-Ip`, as a service VM sends
    /// them for its metadata.
    pub instance_id: Option<String>,
    pub source_ip: Option<String>,
}

/// A status report POSTed by the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub version: u64,
    pub state: String,
    pub error: Option<String>,
}

#[derive(Default)]
struct Published {
    document: Option<(Vec<u8>, Option<Vec<u8>>, String)>,
    /// When set, every request is answered 503 (Kahuna "down") but still recorded.
    down: bool,
    /// Served under `/files/<name>`.
    files: HashMap<String, Bytes>,
}

struct Shared {
    creds: Credentials,
    published: Mutex<Published>,
    seen: Mutex<Vec<Seen>>,
    downloads: Mutex<Vec<Download>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The running fake Kahuna. Dropping it stops the server.
pub struct FakeKahuna {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KahunaError {
    #[error("fake Kahuna: {0}")]
    Io(#[from] std::io::Error),
}

impl FakeKahuna {
    /// Starts serving on 127.0.0.1 (a free port).
    pub fn start(creds: Credentials) -> Result<Self, KahunaError> {
        let shared = Arc::new(Shared {
            creds,
            published: Mutex::default(),
            seen: Mutex::default(),
            downloads: Mutex::default(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let served = shared.clone();
        let thread = std::thread::Builder::new().name("fake-kahuna".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let shared = served.clone();
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        })?;
        Ok(Self {
            shared,
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Path of the agent's config document, as the agent derives it by default.
    pub fn config_path(&self) -> String {
        format!("/api/v1/agents/{}/config", self.shared.creds.agent_id)
    }

    /// Publishes a document (and its minisign signature, if any). Its ETag changes with it.
    pub fn publish(&self, document: Vec<u8>, signature: Option<Vec<u8>>) {
        let etag = format!("\"{:016x}\"", fnv1a(&document));
        lock(&self.shared.published).document = Some((document, signature, etag));
    }

    /// Serves `content` at `/files/<name>` (GET, no credentials asked); returns the path.
    pub fn serve_file(&self, name: &str, content: Vec<u8>) -> String {
        lock(&self.shared.published)
            .files
            .insert(name.to_owned(), Bytes::from(content));
        format!("/files/{name}")
    }

    /// Downloads of served files so far, oldest first.
    pub fn downloads(&self) -> Vec<Download> {
        lock(&self.shared.downloads).clone()
    }

    /// Kahuna down (503 to everything) or back up.
    pub fn set_down(&self, down: bool) {
        lock(&self.shared.published).down = down;
    }

    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// Reports received so far, oldest first (unparseable ones are skipped: see [`Self::seen`]).
    pub fn reports(&self) -> Vec<Report> {
        self.seen()
            .iter()
            .filter(|s| s.method == "POST" && s.path.ends_with("/report"))
            .filter_map(|s| parse_report(&s.body))
            .collect()
    }

    /// The `os` object of the last report that carried one (the running OS image, its
    /// other slot: `kowabunga_agent::os_image`).
    pub fn last_report_os(&self) -> Option<serde_json::Value> {
        self.report_bodies()
            .into_iter()
            .rev()
            .find_map(|v| v.get("os").cloned())
    }

    /// Every report's JSON body, in the order received.
    pub fn report_bodies(&self) -> Vec<serde_json::Value> {
        self.seen()
            .iter()
            .filter(|s| s.method == "POST" && s.path.ends_with("/report"))
            .filter_map(|s| serde_json::from_slice::<serde_json::Value>(&s.body).ok())
            .collect()
    }

    /// Waits until `pred` holds on what was seen so far, or the deadline passes.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&FakeKahuna) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = pred(self) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// One line per request, for failure messages.
    pub fn transcript(&self) -> String {
        let seen = self.seen();
        let start = seen.first().map(|s| s.at);
        let mut out = String::new();
        for s in seen {
            let t = start
                .map(|t0| s.at.duration_since(t0).as_secs_f32())
                .unwrap_or(0.0);
            out.push_str(&format!(
                "  +{t:6.1}s {} {} -> {} (auth {}) {}\n",
                s.method,
                s.path,
                s.status,
                if s.authenticated { "ok" } else { "BAD" },
                String::from_utf8_lossy(&s.body)
            ));
        }
        if out.is_empty() {
            out.push_str("  (no request)\n");
        }
        out
    }
}

impl Drop for FakeKahuna {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn parse_report(body: &[u8]) -> Option<Report> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(Report {
        version: v.get("version")?.as_u64()?,
        state: v.get("state")?.as_str()?.to_owned(),
        error: v.get("error").and_then(|e| e.as_str()).map(str::to_owned),
    })
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let creds = &shared.creds;
    let authenticated = header(&req, "X-WS-Kowabunga-Agent").as_deref()
        == Some(creds.agent_kind.as_str())
        && header(&req, "X-WS-Kowabunga-Id").as_deref() == Some(creds.agent_id.as_str())
        && header(&req, "X-WS-Kowabunga-Api-Key").as_deref() == Some(creds.api_key.as_str());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if let Some(name) = path.strip_prefix("/files/") {
        let file = lock(&shared.published).files.get(name).cloned();
        let (status, body) = match file {
            Some(content) if method == Method::GET => (StatusCode::OK, content),
            _ => (StatusCode::NOT_FOUND, Bytes::new()),
        };
        lock(&shared.downloads).push(Download {
            path: path.clone(),
            status: status.as_u16(),
            carried_api_key: req.headers().contains_key("X-WS-Kowabunga-Api-Key"),
            instance_id: header(&req, "X-Kowabunga-Instance-Id"),
            source_ip: header(&req, "X-Kowabunga-Source-Ip"),
        });
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        return Ok(response);
    }
    let if_none_match = header(&req, "If-None-Match");
    // Bodies are small (reports); a cap keeps a misbehaving client from exhausting memory.
    let body = match req.into_body().collect().await {
        Ok(b) => b
            .to_bytes()
            .iter()
            .take(64 * 1024)
            .copied()
            .collect::<Vec<u8>>(),
        Err(_) => Vec::new(),
    };
    let base = format!("/api/v1/agents/{}", creds.agent_id);
    let (status, etag, payload) = {
        let published = lock(&shared.published);
        if published.down {
            (StatusCode::SERVICE_UNAVAILABLE, None, Vec::new())
        } else if !authenticated {
            (StatusCode::UNAUTHORIZED, None, b"bad credentials".to_vec())
        } else if path == format!("{base}/config")
            && (method == Method::GET || method == Method::HEAD)
        {
            match &published.document {
                None => (StatusCode::NOT_FOUND, None, Vec::new()),
                Some((_, _, etag)) if if_none_match.as_deref() == Some(etag.as_str()) => {
                    (StatusCode::NOT_MODIFIED, Some(etag.clone()), Vec::new())
                }
                Some((doc, _, etag)) => (StatusCode::OK, Some(etag.clone()), doc.clone()),
            }
        } else if path == format!("{base}/config.minisig") && method == Method::GET {
            match &published.document {
                Some((_, Some(sig), _)) => (StatusCode::OK, None, sig.clone()),
                _ => (StatusCode::NOT_FOUND, None, Vec::new()),
            }
        } else if path == format!("{base}/report") && method == Method::POST {
            if parse_report(&body).is_some() {
                (StatusCode::NO_CONTENT, None, Vec::new())
            } else {
                (StatusCode::BAD_REQUEST, None, b"malformed report".to_vec())
            }
        } else {
            (StatusCode::NOT_FOUND, None, Vec::new())
        }
    };
    lock(&shared.seen).push(Seen {
        at: Instant::now(),
        method: method.to_string(),
        path,
        authenticated,
        status: status.as_u16(),
        if_none_match,
        body,
    });
    let mut response = Response::builder().status(status);
    if let Some(etag) = etag {
        response = response.header("ETag", etag);
    }
    let payload = if method == Method::HEAD {
        Vec::new()
    } else {
        payload
    };
    Ok(response
        .body(Full::new(Bytes::from(payload)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// Ring buffer of the last lines of some text, for failure messages.
pub fn tail(text: &str, lines: usize) -> String {
    let mut last: VecDeque<&str> = VecDeque::with_capacity(lines);
    for line in text.lines() {
        if last.len() == lines {
            last.pop_front();
        }
        last.push_back(line);
    }
    last.into_iter().collect::<Vec<_>>().join("\n")
}
