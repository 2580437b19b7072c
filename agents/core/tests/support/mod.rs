//! Test harness: minisign keys made with the real CLI, a fake config endpoint on
//! loopback, and a reconciler test double that writes files (a real, observable effect).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use kowabunga_model::{Action, Document, Planned, ReconcileError, Reconciler};
use serde::Deserialize;
use tokio::net::TcpListener;

pub mod artifacts;

pub const NODE: &str = "kiwi-test-1";
pub const API_KEY: &str = "k3y-for-tests";

pub use kowabunga_testkit::minisign::Key;

/// A document for [`NODE`] with `body` appended to the header.
pub fn document(version: u64, body: &str) -> Vec<u8> {
    document_for(NODE, version, "2099-01-01T00:00:00Z", body)
}

pub fn document_for(node: &str, version: u64, expires_at: &str, body: &str) -> Vec<u8> {
    format!(
        "version = {version}\nnode = \"{node}\"\nissued_at = 2026-01-01T00:00:00Z\nexpires_at = \"{expires_at}\"\n{body}"
    )
    .into_bytes()
}

/// What the fake endpoint serves and has seen.
#[derive(Default)]
pub struct Served {
    pub document: Option<Vec<u8>>,
    pub signature: Option<Vec<u8>>,
    pub reports: Vec<serde_json::Value>,
    pub unauthorized: usize,
    pub gets: usize,
    pub not_modified: usize,
    /// Called as each request arrives, before it is answered (a test notes what the
    /// agent looked like at that moment).
    pub on_request: Option<Arc<dyn Fn() + Send + Sync>>,
    /// When set, every request is answered `503 Service Unavailable`: Kahuna is down,
    /// but its port stays bound (no other listener can take it meanwhile).
    pub unavailable: bool,
}

/// A config endpoint on loopback enforcing the agent's headers like Kahuna.
pub struct FakeKahuna {
    pub addr: SocketAddr,
    /// `https` when started with [`FakeKahuna::start_tls`].
    scheme: &'static str,
    pub served: Arc<Mutex<Served>>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl FakeKahuna {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::start_with(addr, None).await
    }

    /// The same endpoint over HTTPS, with the certificate and key of `pki`.
    pub async fn start_tls(pki: &kowabunga_testkit::Pki) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(&pki.chain)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::start_with("127.0.0.1:0".parse().unwrap(), Some(acceptor)).await
    }

    async fn start_with(addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Mutex::new(Served::default()));
        let state = served.clone();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let open = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let tls = tls.clone();
                let connection = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        }
                        // A client that refuses the certificate ends the handshake.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
                open.lock().unwrap().push(connection.abort_handle());
            }
        });
        Self {
            addr,
            scheme,
            served,
            task,
            connections,
        }
    }

    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn config_url(&self) -> String {
        format!("{}/api/v1/agents/{NODE}/config", self.base_url())
    }

    pub fn serve(&self, document: Vec<u8>, signature: Option<Vec<u8>>) {
        let mut served = self.served.lock().unwrap();
        served.document = Some(document);
        served.signature = signature;
    }

    pub fn reports(&self) -> Vec<serde_json::Value> {
        self.served.lock().unwrap().reports.clone()
    }

    /// Stop listening and close every open connection (keep-alive ones included).
    pub fn stop(self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

async fn handle(
    state: &Mutex<Served>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (hook, unavailable) = {
        let served = state.lock().unwrap();
        (served.on_request.clone(), served.unavailable)
    };
    if let Some(hook) = hook {
        hook();
    }
    if unavailable {
        return reply(StatusCode::SERVICE_UNAVAILABLE, Vec::new(), None);
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorized = header("X-WS-Kowabunga-Agent").as_deref() == Some("Kiwi")
        && header("X-WS-Kowabunga-Id").as_deref() == Some(NODE)
        && header("X-WS-Kowabunga-Api-Key").as_deref() == Some(API_KEY);
    if !authorized {
        state.lock().unwrap().unauthorized += 1;
        return reply(StatusCode::UNAUTHORIZED, Vec::new(), None);
    }
    let path = req.uri().path().to_owned();
    let if_none_match = header("If-None-Match");
    let method = req.method().clone();
    if method == hyper::Method::POST && path == format!("/api/v1/agents/{NODE}/report") {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        state.lock().unwrap().reports.push(json);
        return reply(StatusCode::NO_CONTENT, Vec::new(), None);
    }
    let mut served = state.lock().unwrap();
    let config = format!("/api/v1/agents/{NODE}/config");
    if path == config {
        served.gets += 1;
        let Some(document) = served.document.clone() else {
            return reply(StatusCode::NOT_FOUND, Vec::new(), None);
        };
        let etag = format!(
            "\"{}\"",
            kowabunga_agent::generations::sha256_hex(&document)
        );
        if if_none_match.as_deref() == Some(etag.as_str()) {
            served.not_modified += 1;
            return reply(StatusCode::NOT_MODIFIED, Vec::new(), Some(etag));
        }
        return reply(StatusCode::OK, document, Some(etag));
    }
    if path == format!("{config}.minisig") {
        return match served.signature.clone() {
            Some(signature) => reply(StatusCode::OK, signature, None),
            None => reply(StatusCode::NOT_FOUND, Vec::new(), None),
        };
    }
    reply(StatusCode::NOT_FOUND, Vec::new(), None)
}

fn reply(status: StatusCode, body: Vec<u8>, etag: Option<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Some(etag) = etag {
        response.headers_mut().insert("ETag", etag.parse().unwrap());
    }
    response
}

/// The `[files]` section of the test double: file name -> content.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSection {
    #[serde(default)]
    pub entries: BTreeMap<String, String>,
    /// `"apply"` makes apply fail after writing half the files; `"check"` makes the
    /// health check fail.
    #[serde(default)]
    pub fail: Option<String>,
}

/// Reconciler test double: makes a directory hold exactly the files its section
/// (`[<name>]`, shaped like [`FilesSection`]) declares, one write per file.
pub struct FilesReconciler {
    pub name: &'static str,
    pub dir: PathBuf,
}

impl FilesReconciler {
    pub fn new(name: &'static str, dir: PathBuf) -> Self {
        Self { name, dir }
    }
}

pub struct FilesPlan {
    writes: Vec<(String, String)>,
    removes: Vec<String>,
    fail: bool,
}

fn files(document: &Document, section: &str) -> Result<FilesSection, ReconcileError> {
    Ok(document
        .section::<FilesSection>(section)?
        .unwrap_or_default())
}

impl Reconciler for FilesReconciler {
    type Plan = FilesPlan;

    fn name(&self) -> &'static str {
        self.name
    }

    async fn plan(
        &self,
        desired: &Document,
        in_force: Option<&Document>,
    ) -> Result<Planned<FilesPlan>, ReconcileError> {
        let want = files(desired, self.name)?;
        let owned_before = match in_force {
            Some(doc) => files(doc, self.name)?.entries,
            None => BTreeMap::new(),
        };
        let mut actions = Vec::new();
        let mut writes = Vec::new();
        for (name, content) in &want.entries {
            let now = std::fs::read_to_string(self.dir.join(name)).ok();
            if now.as_deref() != Some(content.as_str()) {
                actions.push(Action(format!("write {name}")));
                writes.push((name.clone(), content.clone()));
            }
        }
        let removes: Vec<String> = owned_before
            .keys()
            .filter(|name| !want.entries.contains_key(*name) && self.dir.join(name).exists())
            .cloned()
            .collect();
        actions.extend(removes.iter().map(|n| Action(format!("remove {n}"))));
        Ok(Planned {
            actions,
            artifacts: Vec::new(),
            payload: FilesPlan {
                writes,
                removes,
                fail: want.fail.as_deref() == Some("apply"),
            },
        })
    }

    async fn apply(&self, plan: FilesPlan) -> Result<(), ReconcileError> {
        let half = plan.writes.len() / 2;
        for (i, (name, content)) in plan.writes.iter().enumerate() {
            if plan.fail && i == half {
                return Err(ReconcileError::apply(format!("{name}: injected failure")));
            }
            std::fs::write(self.dir.join(name), content)
                .map_err(|e| ReconcileError::apply(format!("{name}: {e}")))?;
        }
        for name in &plan.removes {
            std::fs::remove_file(self.dir.join(name))
                .map_err(|e| ReconcileError::apply(format!("{name}: {e}")))?;
        }
        Ok(())
    }

    async fn check(&self, desired: &Document) -> Result<(), ReconcileError> {
        if files(desired, self.name)?.fail.as_deref() == Some("check") {
            return Err(ReconcileError::unhealthy("injected unhealthy state"));
        }
        Ok(())
    }
}

/// The directory's files, name -> content.
pub fn dir_state(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect()
}

/// `[files]` with `n` entries whose contents carry `tag`.
pub fn files_body(tag: &str, n: usize) -> String {
    section_body("files", tag, n)
}

/// `[<section>]` with `n` entries whose contents carry `tag`.
pub fn section_body(section: &str, tag: &str, n: usize) -> String {
    let mut body = format!("[{section}.entries]\n");
    for i in 0..n {
        body.push_str(&format!("f{i} = \"{tag}-{i}\"\n"));
    }
    body
}

/// Like [`files_body`], with `fail = "apply"` or `"check"`.
pub fn failing_files_body(tag: &str, n: usize, fail: &str) -> String {
    format!("[files]\nfail = \"{fail}\"\n{}", files_body(tag, n))
}
