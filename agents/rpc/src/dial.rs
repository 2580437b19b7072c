//! Open the WebSocket to Kahuna: TCP, TLS (rustls, ring), upgrade with the agent headers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Error as WsError};

use crate::{Credentials, Endpoint, HEADER_AGENT, HEADER_API_KEY, HEADER_ID};

/// Either side of the TLS choice, so that one session type serves both.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

pub(crate) type Socket = WebSocketStream<Box<dyn Io>>;

/// rustls client configuration: the pinned CA file if given, else the system roots.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("CA file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "CA file {}: no PEM certificate in it",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no usable system CA certificate found ({} errors): install ca-certificates or pin a CA file",
                    found.errors.len()
                ));
            }
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate to verify Kahuna with".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Why one connection attempt failed. Never contains the API key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connect to {addr}: timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("TLS with {host}: {detail}")]
    Tls { host: String, detail: String },
    #[error("Kahuna refused the agent: HTTP {status}")]
    Refused { status: u16 },
    #[error("WebSocket upgrade: {0}")]
    Upgrade(String),
}

pub(crate) async fn dial(
    endpoint: &Endpoint,
    credentials: &Credentials,
    kind: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    ws_config: WebSocketConfig,
    timeout: Duration,
) -> Result<Socket, DialError> {
    let addr = format!("{}:{}", endpoint.host, endpoint.port);
    let attempt = async {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|source| DialError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match (endpoint.tls, tls) {
            (true, Some(config)) => {
                let tls_err = |detail: String| DialError::Tls {
                    host: endpoint.host.clone(),
                    detail,
                };
                let name = ServerName::try_from(endpoint.host.clone())
                    .map_err(|e| tls_err(e.to_string()))?;
                let stream = TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls_err(e.to_string()))?;
                Box::new(stream)
            }
            (true, None) => {
                return Err(DialError::Tls {
                    host: endpoint.host.clone(),
                    detail: "no TLS configuration".into(),
                });
            }
            (false, _) => Box::new(tcp),
        };
        let request = upgrade_request(endpoint, credentials, kind)?;
        match tokio_tungstenite::client_async_with_config(request, io, Some(ws_config)).await {
            Ok((socket, _response)) => Ok(socket),
            Err(WsError::Http(response)) => Err(DialError::Refused {
                status: response.status().as_u16(),
            }),
            Err(err) => Err(DialError::Upgrade(err.to_string())),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| DialError::Timeout {
            addr: addr.clone(),
            after: timeout,
        })?
}

fn upgrade_request(
    endpoint: &Endpoint,
    credentials: &Credentials,
    kind: &str,
) -> Result<tungstenite::handshake::client::Request, DialError> {
    let mut request = endpoint
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| DialError::Upgrade(format!("request for {}: {e}", endpoint.url)))?;
    let header = |name: &str, value: &str| {
        HeaderValue::from_str(value)
            .map_err(|_| DialError::Upgrade(format!("{name}: not a valid header value")))
    };
    let mut key = header(HEADER_API_KEY, &credentials.api_key)?;
    key.set_sensitive(true);
    let headers = request.headers_mut();
    headers.insert(HEADER_AGENT, header(HEADER_AGENT, kind)?);
    headers.insert(HEADER_ID, header(HEADER_ID, &credentials.agent_id)?);
    headers.insert(HEADER_API_KEY, key);
    Ok(request)
}
