//! Who the agent is to Kahuna, and where Kahuna's WebSocket endpoint is.

use std::fmt;

use kernel_cmdline::HttpUrl;
use thiserror::Error;

/// The agent's Kahuna credentials (from the kernel command line or upstream's
/// `/etc/kowabunga/<agent>.yml`). `Debug` never shows the API key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The agent kind: `Kiwi`, `Kaktus` or `Kontroller` (the `X-WS-Kowabunga-Agent`
    /// header and the prefix of every method Kahuna calls).
    pub kind: &'static str,
    /// Kahuna's URL: `https://kahuna.acme.com` or `wss://kahuna.acme.com`
    /// (`http://`/`ws://` only in insecure mode), without a path: the agent dials `/ws`
    /// on it (see [`Endpoint::parse`]).
    pub kahuna_url: String,
    /// The agent id Kahuna issued when the agent was registered.
    pub agent_id: String,
    /// The agent's API key. Secret: sent only in the upgrade request header.
    pub api_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("kind", &self.kind)
            .field("kahuna_url", &self.kahuna_url)
            .field("agent_id", &self.agent_id)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("Kahuna URL {url:?} is not a valid URL: {reason}")]
    Invalid { url: String, reason: String },
    #[error("Kahuna URL {url:?}: scheme must be wss/https (or ws/http in insecure mode)")]
    Scheme { url: String },
    #[error(
        "Kahuna URL {url:?} is not encrypted: plain ws/http is only allowed with kowabunga.insecure"
    )]
    Insecure { url: String },
}

/// The resolved WebSocket endpoint: `<scheme>://<host>[:<port>]/ws`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// The URL dialled, path `/ws`.
    pub url: String,
}

impl Endpoint {
    /// Resolve Kahuna's URL to its WebSocket endpoint as upstream agents do: the path is
    /// always `/ws` on the configured server (`wss://kowabunga.acme.com` ->
    /// `wss://kowabunga.acme.com/ws`).
    ///
    /// The URL is `wss://`/`https://` (or `ws://`/`http://` in insecure mode), a host and
    /// an optional port, checked by the same rules as `kowabunga.kahuna`
    /// ([`kernel_cmdline::HttpUrl::parse_base`]). A path other than `/` is refused rather
    /// than dropped: the agent pulls its document under the same URL, and a path there
    /// would point the pull and the RPC at different places.
    pub fn parse(kahuna_url: &str, insecure: bool) -> Result<Self, EndpointError> {
        let text = kahuna_url.trim();
        let scheme_error = || EndpointError::Scheme {
            url: kahuna_url.to_owned(),
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(scheme_error)?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "wss" | "https" => true,
            "ws" | "http" => false,
            _ => return Err(scheme_error()),
        };
        if !tls && !insecure {
            return Err(EndpointError::Insecure {
                url: kahuna_url.to_owned(),
            });
        }
        let http = format!("{}://{rest}", if tls { "https" } else { "http" });
        let base = HttpUrl::parse_base(&http).map_err(|e| EndpointError::Invalid {
            url: kahuna_url.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            tls,
            host: base
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: base.port().unwrap_or(if tls { 443 } else { 80 }),
            url: base.websocket_url(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_always_slash_ws_on_the_server() {
        let e = Endpoint::parse("wss://kowabunga.acme.com", false).unwrap();
        assert_eq!(e.url, "wss://kowabunga.acme.com/ws");
        assert_eq!(
            (e.tls, e.port, e.host.as_str()),
            (true, 443, "kowabunga.acme.com")
        );
        let e = Endpoint::parse("https://Kahuna.Acme.com/", false).unwrap();
        assert_eq!(e.url, "wss://kahuna.acme.com/ws");
        let e = Endpoint::parse("wss://kahuna.acme.com:8443", false).unwrap();
        assert_eq!(
            (e.url.as_str(), e.port),
            ("wss://kahuna.acme.com:8443/ws", 8443)
        );
        let e = Endpoint::parse(" ws://[::1]:9000/ ", true).unwrap();
        assert_eq!((e.tls, e.port, e.host.as_str()), (false, 9000, "::1"));
        assert_eq!(e.url, "ws://[::1]:9000/ws");
        let e = Endpoint::parse("http://10.0.0.1", true).unwrap();
        assert_eq!((e.url.as_str(), e.port), ("ws://10.0.0.1/ws", 80));
    }

    #[test]
    fn a_path_is_refused_not_silently_replaced() {
        for url in ["https://kahuna.acme.com/api/v1", "wss://kahuna.acme.com/ws"] {
            let err = Endpoint::parse(url, false).unwrap_err();
            assert!(
                matches!(err, EndpointError::Invalid { .. }),
                "{url}: {err:?}"
            );
            assert!(err.to_string().contains("without a path"), "{url}: {err}");
        }
    }

    #[test]
    fn endpoint_errors() {
        assert!(matches!(
            Endpoint::parse("http://kahuna", false),
            Err(EndpointError::Insecure { .. })
        ));
        assert!(matches!(
            Endpoint::parse("ftp://kahuna", true),
            Err(EndpointError::Scheme { .. })
        ));
        assert!(matches!(
            Endpoint::parse("kahuna.acme.com", true),
            Err(EndpointError::Scheme { .. })
        ));
        assert_eq!(
            Endpoint::parse("wss://u:p@kahuna", false).unwrap_err(),
            EndpointError::Invalid {
                url: "wss://u:p@kahuna".into(),
                reason: "user credentials are not allowed in the URL".into()
            }
        );
        assert!(matches!(
            Endpoint::parse("wss://kahuna?x", false),
            Err(EndpointError::Invalid { .. })
        ));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let c = Credentials {
            kind: "Kiwi",
            kahuna_url: "wss://k".into(),
            agent_id: "a".into(),
            api_key: "s3cr3t-key".into(),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
