//! Pulls the desired-state document and its signature from the config endpoint
//! (`docs/config-api.md`), and posts the outcome of each attempt back.
//!
//! HTTPS through rustls, with the system's roots or a pinned CA file; plain HTTP only in
//! insecure mode. Conditional requests with `ETag`/`If-None-Match`; bodies larger than
//! [`FetchConfig::max_body`] are refused while they stream in.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH};
use reqwest::{Client, StatusCode};
use thiserror::Error;

use crate::credentials::Credentials;
use crate::outcome::Outcome;

/// Header names Kahuna already authenticates agents with (upstream WebSocket contract).
pub const HEADER_AGENT: &str = "X-WS-Kowabunga-Agent";
pub const HEADER_ID: &str = "X-WS-Kowabunga-Id";
pub const HEADER_API_KEY: &str = "X-WS-Kowabunga-Api-Key";

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{0}: plain http is refused outside insecure mode (use https)")]
    PlainHttp(String),
    #[error("building the HTTP client: {0}")]
    Client(String),
    #[error("reading CA file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error("{url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: body larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: {refused}")]
    Redirect {
        url: String,
        refused: RefusedRedirect,
    },
}

/// How many redirects a request follows (all within the origin it was sent to).
pub const MAX_REDIRECTS: usize = 3;

/// A redirect the fetcher will not follow: it leaves the origin (scheme, host and
/// port) the request was sent to. The agent's API key travels as a plain header, so
/// following it would hand the key to whoever serves the other origin (an object
/// store, a CDN, a compromised mirror).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error(
    "redirect from origin {from} to origin {to} refused: the agent's credentials are only sent to the origin of the configured URL (serve the document there, or configure the final URL)"
)]
pub struct RefusedRedirect {
    pub from: String,
    pub to: String,
}

/// The agent's HTTP client settings, shared by the document fetch and the update
/// download: rustls with the node's roots (or only `ca_file`), redirects to the same
/// origin only, HTTPS only unless `insecure`. Callers add their own timeouts.
pub(crate) fn client_builder(
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
    insecure: bool,
) -> Result<reqwest::ClientBuilder, FetchError> {
    Ok(Client::builder()
        .use_preconfigured_tls(tls_config(ca_file)?)
        .connect_timeout(connect_timeout)
        .redirect(redirect_policy())
        .https_only(!insecure))
}

/// Follow up to [`MAX_REDIRECTS`] redirects, all to the origin of the first request.
pub(crate) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.follow();
        };
        let (from, to) = (first.origin(), attempt.url().origin());
        if from != to {
            let refused = RefusedRedirect {
                from: from.ascii_serialization(),
                to: to.ascii_serialization(),
            };
            attempt.error(refused)
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

/// Settings of the fetcher.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// URL of the document; its signature is at the same URL plus `.minisig`.
    pub url: String,
    /// Where outcomes are posted.
    pub report_url: String,
    /// Agent kind for the `X-WS-Kowabunga-Agent` header (`Kiwi`, `Kaktus`, `Kontroller`).
    pub agent_kind: &'static str,
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect, headers and body).
    pub timeout: Duration,
    pub max_body: usize,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
}

impl FetchConfig {
    /// Defaults for `credentials`: 10 s to connect, 30 s per request, 1 MiB documents.
    pub fn new(
        credentials: &Credentials,
        agent_kind: &'static str,
        insecure: bool,
    ) -> Result<Self, FetchError> {
        let url = credentials
            .config_url()
            .map_err(|e| FetchError::Client(e.to_string()))?;
        let report_url = report_url_for(&url);
        Ok(Self {
            url,
            report_url,
            agent_kind,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            max_body: 1024 * 1024,
            ca_file: credentials.ca_file.clone(),
            insecure,
        })
    }
}

/// `.../config` -> `.../report`; any other URL gets `/report` appended.
pub fn report_url_for(config_url: &str) -> String {
    match config_url.strip_suffix("/config") {
        Some(base) => format!("{base}/report"),
        None => format!("{}/report", config_url.trim_end_matches('/')),
    }
}

/// A document as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub signature: Option<Vec<u8>>,
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Same ETag as last time.
    NotModified,
    /// The endpoint has no document for this agent (404).
    NoDocument,
    Document(Fetched),
}

pub struct Fetcher {
    config: FetchConfig,
    client: Client,
    headers: HeaderMap,
    etag: Option<HeaderValue>,
    /// Read for every report: the running OS version and the other slot's.
    os: Option<crate::os_image::OsSource>,
    /// Read for every report: what the role's services say (`/status`'s
    /// `services.<name>.report`), e.g. a Kiwi's WireGuard public keys.
    services: Vec<(&'static str, Arc<dyn kowabunga_model::Report>)>,
}

/// A report's body: the outcome, the OS image when the agent knows it, and what the
/// role's services report (by service name, as in `/status`).
#[derive(serde::Serialize)]
struct ReportBody<'a> {
    #[serde(flatten)]
    outcome: &'a Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    os: Option<crate::os_image::OsImage>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    services: serde_json::Map<String, serde_json::Value>,
}

impl Fetcher {
    pub fn new(config: FetchConfig, credentials: &Credentials) -> Result<Self, FetchError> {
        for url in [&config.url, &config.report_url] {
            if url.starts_with("http://") && !config.insecure {
                return Err(FetchError::PlainHttp(url.clone()));
            }
        }
        let client = client_builder(
            config.ca_file.as_deref(),
            config.connect_timeout,
            config.insecure,
        )?
        .timeout(config.timeout)
        .build()
        .map_err(|e| FetchError::Client(e.to_string()))?;
        let mut headers = HeaderMap::new();
        let value = |v: &str| {
            HeaderValue::from_str(v).map_err(|_| {
                FetchError::Client(
                    "credentials contain characters not allowed in an HTTP header".into(),
                )
            })
        };
        headers.insert(HEADER_AGENT, value(config.agent_kind)?);
        headers.insert(HEADER_ID, value(&credentials.agent_id)?);
        let mut key = value(credentials.api_key.expose())?;
        key.set_sensitive(true);
        headers.insert(HEADER_API_KEY, key);
        Ok(Self {
            config,
            client,
            headers,
            etag: None,
            os: None,
            services: Vec::new(),
        })
    }

    /// Send what these services report with every report (those without a report
    /// are left out).
    pub fn set_services(&mut self, services: &[kowabunga_model::Supervised]) {
        self.services = services
            .iter()
            .filter_map(|s| s.report().map(|r| (s.name(), r)))
            .collect();
    }

    fn body<'a>(&self, outcome: &'a Outcome) -> ReportBody<'a> {
        ReportBody {
            outcome,
            os: self.os.as_ref().map(crate::os_image::OsSource::read),
            services: self
                .services
                .iter()
                .map(|(name, report)| ((*name).to_owned(), report.status()))
                .collect(),
        }
    }

    /// Send the OS image, as `read` gives it then (`OsImage::read_system`), with every
    /// report.
    pub fn with_os(mut self, read: crate::os_image::OsSource) -> Self {
        self.os = Some(read);
        self
    }

    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// Fetch the whole document at the next poll, even if the server says it did not
    /// change (a deferred document is submitted again).
    pub fn forget_etag(&mut self) {
        self.etag = None;
    }

    /// Fetch the document (conditionally) and its signature.
    pub async fn poll(&mut self) -> Result<Poll, FetchError> {
        let url = self.config.url.clone();
        let mut request = self.client.get(&url).headers(self.headers.clone());
        if let Some(etag) = &self.etag {
            request = request.header(IF_NONE_MATCH, etag.clone());
        }
        let response = request.send().await.map_err(|e| transport(&url, e))?;
        match response.status() {
            StatusCode::NOT_MODIFIED => return Ok(Poll::NotModified),
            StatusCode::NOT_FOUND => return Ok(Poll::NoDocument),
            status if !status.is_success() => {
                return Err(FetchError::Status {
                    url,
                    status: status.as_u16(),
                });
            }
            _ => {}
        }
        let etag = response.headers().get(ETAG).cloned();
        let bytes = read_limited(response, &url, self.config.max_body).await?;
        let signature = self.fetch_signature().await?;
        self.etag = etag;
        Ok(Poll::Document(Fetched { bytes, signature }))
    }

    async fn fetch_signature(&self) -> Result<Option<Vec<u8>>, FetchError> {
        let url = format!("{}.minisig", self.config.url);
        let response = self
            .client
            .get(&url)
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(|e| transport(&url, e))?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => Ok(Some(read_limited(response, &url, 4096).await?)),
            status => Err(FetchError::Status {
                url,
                status: status.as_u16(),
            }),
        }
    }

    /// Whether the config endpoint answers at all (any HTTP status counts): the
    /// management-path check of the confirm window.
    pub async fn reachable(&self) -> Result<(), String> {
        self.client
            .head(&self.config.url)
            .headers(self.headers.clone())
            .timeout(self.config.connect_timeout)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| transport(&self.config.url, e).to_string())
    }

    /// Post the outcome of an attempt.
    pub async fn report(&self, outcome: &Outcome) -> Result<(), FetchError> {
        let url = &self.config.report_url;
        let response = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .json(&self.body(outcome))
            .send()
            .await
            .map_err(|e| transport(url, e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(FetchError::Status {
                url: url.clone(),
                status: response.status().as_u16(),
            })
        }
    }
}

/// The fetcher's endpoint check, shared with the pipeline's confirm window.
pub struct EndpointProbe(pub Arc<tokio::sync::Mutex<Fetcher>>);

impl crate::pipeline::Probe for EndpointProbe {
    fn reachable(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { self.0.lock().await.reachable().await })
    }
}

pub(crate) fn transport(url: &str, e: reqwest::Error) -> FetchError {
    // reqwest's Display hides the cause ("error sending request"); walk the chain.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<RefusedRedirect>() {
            return FetchError::Redirect {
                url: url.to_owned(),
                refused: refused.clone(),
            };
        }
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    FetchError::Transport {
        url: url.to_owned(),
        detail,
    }
}

async fn read_limited(
    mut response: reqwest::Response,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, FetchError> {
    let too_large = || FetchError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(url, e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// rustls with the ring provider; roots from the system store, or only `ca_file`.
pub(crate) fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, FetchError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ca_err = |detail: String| FetchError::CaFile {
                path: path.to_owned(),
                detail,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!("system CA store: {error}");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!("system CA store: {added} roots ({ignored} unparsable)");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Client(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    struct Keys;

    impl kowabunga_model::Report for Keys {
        fn status(&self) -> serde_json::Value {
            serde_json::json!({ "links": { "wg0": { "public_key": "K" } } })
        }
        fn metrics(&self) -> Vec<kowabunga_model::Metric> {
            Vec::new()
        }
    }

    /// A service's report goes with the outcome, under its name; a service without
    /// one is left out, and no service at all leaves no `services` key.
    #[test]
    fn reports_carry_what_the_services_report() {
        let credentials = Credentials {
            kahuna: kernel_cmdline::HttpUrl::parse_base("https://k").unwrap(),
            agent_id: "a1".into(),
            api_key: kernel_cmdline::Secret::new("key"),
            config_url: None,
            ca_file: None,
        };
        let config = FetchConfig::new(&credentials, "Kiwi", true).unwrap();
        let mut fetcher = Fetcher::new(config, &credentials).unwrap();
        let outcome = Outcome::applied(3, 1);
        let bare = serde_json::to_value(fetcher.body(&outcome)).unwrap();
        assert_eq!(bare["version"], 3);
        assert!(bare.get("services").is_none(), "{bare}");
        fetcher.set_services(&[
            kowabunga_model::Supervised::new("wireguard", || async { Ok(()) })
                .with_report(Arc::new(Keys)),
            kowabunga_model::Supervised::new("dns", || async { Ok(()) }),
        ]);
        let body = serde_json::to_value(fetcher.body(&outcome)).unwrap();
        assert_eq!(
            body["services"],
            serde_json::json!({ "wireguard": { "links": { "wg0": { "public_key": "K" } } } })
        );
        assert_eq!(body["state"], "applied");
    }

    #[test]
    fn report_url_sits_beside_config() {
        assert_eq!(
            report_url_for("https://k/api/v1/agents/a1/config"),
            "https://k/api/v1/agents/a1/report"
        );
        assert_eq!(
            report_url_for("https://s3/bucket/a1.toml"),
            "https://s3/bucket/a1.toml/report"
        );
    }
}
