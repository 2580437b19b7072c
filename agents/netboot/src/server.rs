//! The netboot server: the configuration in force, the image store filled in the
//! background, the DHCP server's boot files ([`BootDirectory`]) and the HTTP listener
//! that serves iPXE scripts and images.
//!
//! A node is offered a boot file only once its image is verified in the store: until
//! then it gets an address and nothing to boot, and its firmware moves on (or retries).
//! Its script, which carries its API key, is served only to the address the DHCP server
//! has bound to its MAC.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::TryStreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Method, Request, Response, StatusCode};
use kowabunga_agent::signed_files::SignedSource;
use kowabunga_dhcp::{BootClient, BootDirectory, BootFile};
use kowabunga_model::network::MacAddr;
use kowabunga_model::report::{Metric, MetricKind, Sample};
use kowabunga_model::{Report, Supervised};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::model::{ImageSource, NetbootConfig};
use crate::script;
use crate::store::{INITRD, ImageStore, KERNEL, StoredImage};
use crate::tftp::{self, LOADER_DIR, Loaders, TFTP_PORT};

/// The supervised service's name.
pub const SERVICE: &str = "netboot";
/// The TCP port of the HTTP listener (on every address; the baseline firewall opens it
/// on the links `[dhcp]` serves).
pub const HTTP_PORT: u16 = 9724;
/// Wait before fetching again an image whose fetch failed.
const RETRY: Duration = Duration::from_secs(30);
/// Chunk of a file sent over HTTP.
const CHUNK: usize = 256 * 1024;

type Body = BoxBody<Bytes, std::io::Error>;
type Leases = dyn Fn(&MacAddr) -> Option<Ipv4Addr> + Send + Sync;

/// Where one image of the configuration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ImageState {
    Fetching,
    Ready(StoredImage),
    Failed(String),
}

struct Inner {
    /// The HTTP port: as configured, then as bound (a test's port 0).
    port: AtomicU16,
    config: RwLock<NetbootConfig>,
    /// The images to keep, by id: what the filler works toward.
    wanted: watch::Sender<BTreeMap<String, ImageSource>>,
    store: Mutex<Option<ImageStore>>,
    signed: Mutex<SignedSource>,
    images: RwLock<BTreeMap<String, ImageState>>,
    /// The address the DHCP server has bound to a MAC.
    leases: Box<Leases>,
    /// TFTP for PXE ROMs: the port (as bound) and the boot loaders' directory.
    tftp_port: AtomicU16,
    loader_dir: PathBuf,
    loaders_served: Arc<AtomicU64>,
    scripts_served: AtomicU64,
    scripts_refused: AtomicU64,
    bytes_served: AtomicU64,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Cheap to clone: clones share the server.
#[derive(Clone)]
pub struct NetbootServer {
    inner: Arc<Inner>,
}

impl NetbootServer {
    /// A server on [`HTTP_PORT`] and [`TFTP_PORT`], its boot loaders in
    /// [`LOADER_DIR`]; `leases` gives the address bound to a MAC (the DHCP server's
    /// [`kowabunga_dhcp::DhcpServer::address_of`]).
    pub fn new(leases: impl Fn(&MacAddr) -> Option<Ipv4Addr> + Send + Sync + 'static) -> Self {
        Self::with_ports(HTTP_PORT, TFTP_PORT, LOADER_DIR, leases)
    }

    /// The same on other ports (0: any), the loaders in `loader_dir` (tests).
    pub fn with_ports(
        port: u16,
        tftp_port: u16,
        loader_dir: impl Into<PathBuf>,
        leases: impl Fn(&MacAddr) -> Option<Ipv4Addr> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                port: AtomicU16::new(port),
                config: RwLock::default(),
                wanted: watch::Sender::new(BTreeMap::new()),
                store: Mutex::new(None),
                signed: Mutex::default(),
                images: RwLock::default(),
                leases: Box::new(leases),
                tftp_port: AtomicU16::new(tftp_port),
                loader_dir: loader_dir.into(),
                loaders_served: Arc::new(AtomicU64::new(0)),
                scripts_served: AtomicU64::new(0),
                scripts_refused: AtomicU64::new(0),
                bytes_served: AtomicU64::new(0),
            }),
        }
    }

    /// Keep images in `dir`; fetch them as `signed` says (keys, CA, insecure).
    pub fn set_store(&self, dir: impl Into<PathBuf>, signed: SignedSource) {
        *lock(&self.inner.store) = Some(ImageStore::new(dir));
        *lock(&self.inner.signed) = signed;
    }

    /// The configuration in force.
    pub fn current(&self) -> NetbootConfig {
        read(&self.inner.config).clone()
    }

    /// Serve `config` from now on; its images are fetched in the background.
    pub fn apply(&self, config: NetbootConfig) {
        let images = config.images.clone();
        *write(&self.inner.config) = config;
        self.inner.wanted.send_if_modified(|wanted| {
            let changed = *wanted != images;
            *wanted = images;
            changed
        });
    }

    /// The HTTP port (once the service runs, the one bound).
    pub fn port(&self) -> u16 {
        self.inner.port.load(Ordering::Relaxed)
    }

    /// The TFTP port (once the service runs, the one bound).
    pub fn tftp_port(&self) -> u16 {
        self.inner.tftp_port.load(Ordering::Relaxed)
    }

    /// The verified image `id`, if it is in the configuration and ready.
    fn ready(&self, id: &str) -> Option<StoredImage> {
        match read(&self.inner.images).get(id) {
            Some(ImageState::Ready(image)) => Some(image.clone()),
            _ => None,
        }
    }

    /// Whether every image of the configuration in force is ready.
    pub fn all_ready(&self) -> bool {
        let config = read(&self.inner.config);
        config.images.keys().all(|id| self.ready(id).is_some())
    }

    /// The background service: the HTTP listener and the store's filler.
    pub fn supervised(&self) -> Supervised {
        let server = self.clone();
        Supervised::new(SERVICE, move || {
            let server = server.clone();
            async move { server.run().await }
        })
        .with_report(Arc::new(self.clone()))
    }

    async fn run(&self) -> Result<(), String> {
        tokio::select! {
            result = self.fill() => result,
            result = self.listen() => result,
        }
    }

    /// The HTTP and TFTP listeners, open while the configuration has nodes to boot and
    /// closed while it has none (an agent installed from a package on a host that
    /// boots nothing opens no port).
    async fn listen(&self) -> Result<(), String> {
        let mut wanted = self.inner.wanted.subscribe();
        loop {
            wanted
                .wait_for(|images| !images.is_empty())
                .await
                .map_err(|e| e.to_string())?;
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, self.port()));
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("netboot: listening on {addr}: {e}"))?;
            if let Ok(bound) = listener.local_addr() {
                self.inner.port.store(bound.port(), Ordering::Relaxed);
            }
            let tftp_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, self.tftp_port()));
            let socket = std::net::UdpSocket::bind(tftp_addr)
                .map_err(|e| format!("netboot: tftp on {tftp_addr}: {e}"))?;
            if let Ok(bound) = socket.local_addr() {
                self.inner.tftp_port.store(bound.port(), Ordering::Relaxed);
            }
            let loaders = Loaders::new(&self.inner.loader_dir, self.inner.loaders_served.clone());
            let tftp = async_tftp::server::TftpServerBuilder::with_handler(loaders)
                .std_socket(socket)
                .map_err(|e| format!("netboot: tftp: {e}"))?
                .build()
                .await
                .map_err(|e| format!("netboot: tftp: {e}"))?;
            tracing::info!(
                http = self.port(),
                tftp = self.tftp_port(),
                "netboot: listening"
            );
            tokio::select! {
                result = self.serve(listener) => result?,
                result = tftp.serve() => result.map_err(|e| format!("netboot: tftp: {e}"))?,
                closed = wanted.wait_for(|images| images.is_empty()) => {
                    closed.map_err(|e| e.to_string())?;
                    tracing::info!("netboot: no node to boot: listeners closed");
                }
            }
        }
    }

    /// Keeps the store at the wanted images: prunes the rest, fetches what is missing,
    /// retries failures every [`RETRY`].
    async fn fill(&self) -> Result<(), String> {
        let mut wanted_rx = self.inner.wanted.subscribe();
        loop {
            let wanted = wanted_rx.borrow_and_update().clone();
            let store = lock(&self.inner.store).clone();
            let Some(store) = store else {
                return Err("netboot: no image store directory".into());
            };
            write(&self.inner.images).retain(|id, _| wanted.contains_key(id));
            let keep = wanted.keys().cloned().collect();
            match store.prune(&keep) {
                Ok(removed) => {
                    for id in removed {
                        tracing::info!(image = %id, "netboot: image removed from the store");
                    }
                }
                Err(e) => tracing::warn!("netboot: pruning the image store: {e}"),
            }
            let mut failed = false;
            for (id, source) in &wanted {
                if self.ready(id).is_some() {
                    continue;
                }
                let state = match store.get(id) {
                    Some(image) => ImageState::Ready(image),
                    None => {
                        write(&self.inner.images).insert(id.clone(), ImageState::Fetching);
                        tracing::info!(image = %id, url = %source.url, "netboot: fetching image");
                        let signed = lock(&self.inner.signed).clone();
                        match store.fill(source, &signed).await {
                            Ok(image) => {
                                tracing::info!(image = %id, "netboot: image verified and stored");
                                ImageState::Ready(image)
                            }
                            Err(e) => {
                                tracing::warn!(image = %id, "netboot: image refused: {e}");
                                failed = true;
                                ImageState::Failed(e.to_string())
                            }
                        }
                    }
                };
                write(&self.inner.images).insert(id.clone(), state);
            }
            if failed {
                tokio::select! {
                    changed = wanted_rx.changed() => changed.map_err(|e| e.to_string())?,
                    () = tokio::time::sleep(RETRY) => {}
                }
            } else {
                wanted_rx.changed().await.map_err(|e| e.to_string())?;
            }
        }
    }

    async fn serve(&self, listener: TcpListener) -> Result<(), String> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("netboot: accept: {e}");
                    continue;
                }
            };
            let local = match stream.local_addr() {
                Ok(local) => local,
                Err(e) => {
                    tracing::debug!("netboot: local address: {e}");
                    continue;
                }
            };
            let server = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.respond(&req, peer, local).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!("netboot: {peer}: {e}");
                }
            });
        }
    }

    async fn respond<B>(
        &self,
        req: &Request<B>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        let path = req.uri().path();
        if let Some(mac) = script::script_mac(path) {
            return self.script(&mac, peer, local);
        }
        if let Some(rest) = path.strip_prefix("/netboot/images/")
            && let Some((id, file)) = rest.split_once('/')
            && (file == KERNEL || file == INITRD)
            && let Some(image) = self.ready(id)
        {
            let head = req.method() == Method::HEAD;
            return self.file(image.file(file), head).await;
        }
        text(StatusCode::NOT_FOUND, "not a netboot script or image\n")
    }

    fn script(&self, mac: &MacAddr, peer: SocketAddr, local: SocketAddr) -> Response<Body> {
        let Some(node) = read(&self.inner.config).nodes.get(mac).cloned() else {
            return text(StatusCode::NOT_FOUND, "no netboot entry for this MAC\n");
        };
        // The script holds the node's API key: only the address leased to its MAC gets
        // it.
        let leased = (self.inner.leases)(mac);
        if leased.map(IpAddr::V4) != Some(peer.ip().to_canonical()) {
            self.inner.scripts_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%mac, %peer, "netboot: script refused: the asker does not hold the MAC's DHCP lease");
            return text(
                StatusCode::FORBIDDEN,
                "this script is served only to the address leased to its MAC\n",
            );
        }
        let Some(image) = self.ready(&node.image) else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node's image is not in the store yet\n",
            );
        };
        let origin = script::origin(local.ip().to_canonical(), self.port());
        let body = script::render(&origin, mac, &node, &node.image, &image);
        self.inner.scripts_served.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%mac, agent_id = %node.agent_id, image = %node.image, "netboot: script served");
        let mut response = Response::new(full(body.into_bytes()));
        set_type(&mut response, "text/plain");
        response
    }

    async fn file(&self, path: PathBuf, head: bool) -> Response<Body> {
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!("netboot: {}: {e}", path.display());
                return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the image\n");
            }
        };
        let len = match file.metadata().await {
            Ok(meta) => meta.len(),
            Err(e) => {
                tracing::warn!("netboot: {}: {e}", path.display());
                return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the image\n");
            }
        };
        let body = if head {
            full(Vec::new())
        } else {
            let inner = self.inner.clone();
            let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
                let mut buf = vec![0u8; CHUNK];
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some((Frame::data(Bytes::from(buf)), file)))
            })
            .inspect_ok(move |frame: &Frame<Bytes>| {
                if let Some(data) = frame.data_ref() {
                    inner
                        .bytes_served
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            });
            BodyExt::boxed(StreamBody::new(chunks))
        };
        let mut response = Response::new(body);
        set_type(&mut response, "application/octet-stream");
        if let Ok(value) = hyper::header::HeaderValue::from_str(&len.to_string()) {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_LENGTH, value);
        }
        response
    }
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(full(message.as_bytes().to_vec()));
    *response.status_mut() = status;
    set_type(&mut response, "text/plain");
    response
}

fn set_type(response: &mut Response<Body>, content_type: &'static str) {
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
}

impl BootDirectory for NetbootServer {
    fn boot_file(&self, mac: &MacAddr, client: BootClient, server: Ipv4Addr) -> Option<BootFile> {
        let image = read(&self.inner.config).nodes.get(mac)?.image.clone();
        self.ready(&image)?;
        match client {
            BootClient::Ipxe => Some(BootFile {
                file: format!(
                    "{}{}",
                    script::origin(IpAddr::V4(server), self.port()),
                    script::script_path(mac)
                ),
            }),
            // A firmware PXE ROM is given iPXE over TFTP first (from `siaddr`, this
            // Kiwi); iPXE then asks again as iPXE.
            BootClient::Pxe { arch } => {
                let Some(loader) = tftp::loader_for(arch) else {
                    tracing::debug!(%mac, arch, "netboot: no iPXE loader for this PXE architecture");
                    return None;
                };
                if !self.inner.loader_dir.join(loader).is_file() {
                    tracing::warn!(%mac, loader, dir = %self.inner.loader_dir.display(), "netboot: the iPXE loader is missing");
                    return None;
                }
                Some(BootFile {
                    file: loader.to_owned(),
                })
            }
        }
    }
}

impl Report for NetbootServer {
    fn status(&self) -> serde_json::Value {
        let config = self.current();
        let images = read(&self.inner.images);
        let image_status: serde_json::Map<String, serde_json::Value> = config
            .images
            .iter()
            .map(|(id, source)| {
                let (state, error) = match images.get(id) {
                    Some(ImageState::Ready(_)) => ("ready", None),
                    Some(ImageState::Failed(e)) => ("failed", Some(e.clone())),
                    Some(ImageState::Fetching) | None => ("fetching", None),
                };
                (
                    id.clone(),
                    serde_json::json!({ "url": source.url, "state": state, "error": error }),
                )
            })
            .collect();
        let nodes: serde_json::Map<String, serde_json::Value> = config
            .nodes
            .iter()
            .map(|(mac, node)| {
                (
                    mac.to_string(),
                    serde_json::json!({ "agent_id": node.agent_id, "image": node.image }),
                )
            })
            .collect();
        serde_json::json!({
            "http_port": self.port(),
            "tftp_port": self.tftp_port(),
            "loaders_served": self.inner.loaders_served.load(Ordering::Relaxed),
            "images": image_status,
            "nodes": nodes,
            "scripts_served": self.inner.scripts_served.load(Ordering::Relaxed),
            "scripts_refused": self.inner.scripts_refused.load(Ordering::Relaxed),
            "bytes_served": self.inner.bytes_served.load(Ordering::Relaxed),
        })
    }

    fn metrics(&self) -> Vec<Metric> {
        let config = self.current();
        let images = read(&self.inner.images);
        let mut by_state: BTreeMap<&'static str, u64> =
            [("ready", 0), ("fetching", 0), ("failed", 0)].into();
        for id in config.images.keys() {
            let state = match images.get(id) {
                Some(ImageState::Ready(_)) => "ready",
                Some(ImageState::Failed(_)) => "failed",
                _ => "fetching",
            };
            *by_state.entry(state).or_default() += 1;
        }
        let counter = |name, help, value: &AtomicU64| Metric {
            name,
            kind: MetricKind::Counter,
            help,
            samples: vec![Sample::plain(value.load(Ordering::Relaxed))],
        };
        vec![
            Metric {
                name: "kowabunga_netboot_images",
                kind: MetricKind::Gauge,
                help: "Images of [netboot], by state in the store.",
                samples: by_state
                    .into_iter()
                    .map(|(state, n)| Sample::labelled("state", state, n))
                    .collect(),
            },
            counter(
                "kowabunga_netboot_scripts_served_total",
                "iPXE scripts served to netbooting nodes.",
                &self.inner.scripts_served,
            ),
            counter(
                "kowabunga_netboot_scripts_refused_total",
                "Script requests refused: the asker did not hold the MAC's lease.",
                &self.inner.scripts_refused,
            ),
            counter(
                "kowabunga_netboot_loaders_served_total",
                "iPXE boot loaders sent over TFTP to PXE ROMs.",
                &self.inner.loaders_served,
            ),
            counter(
                "kowabunga_netboot_bytes_served_total",
                "Bytes of kernels and initrds sent.",
                &self.inner.bytes_served,
            ),
        ]
    }
}
