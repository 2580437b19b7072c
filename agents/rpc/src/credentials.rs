//! Who the agent is to Kahuna, and where Kahuna's WebSocket endpoint is.

use std::fmt;

use thiserror::Error;
use tokio_tungstenite::tungstenite::http::Uri;

/// The agent's Kahuna credentials (from the kernel command line or upstream's
/// `/etc/kowabunga/<agent>.yml`). `Debug` never shows the API key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Kahuna's base URL: `https://kahuna.acme.com` or `wss://kahuna.acme.com`
    /// (`http://`/`ws://` only in insecure mode). Any path is replaced by `/ws`.
    pub kahuna_url: String,
    /// The agent id Kahuna issued when the agent was registered.
    pub agent_id: String,
    /// The agent's API key. Secret: sent only in the upgrade request header.
    pub api_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
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

/// The resolved WebSocket endpoint: `<scheme>://<host>:<port>/ws`.
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
    /// Resolve Kahuna's base URL to its `/ws` endpoint, as upstream agents do.
    pub fn parse(kahuna_url: &str, insecure: bool) -> Result<Self, EndpointError> {
        let invalid = |reason: String| EndpointError::Invalid {
            url: kahuna_url.to_owned(),
            reason,
        };
        let uri: Uri = kahuna_url.trim().parse().map_err(
            |e: tokio_tungstenite::tungstenite::http::uri::InvalidUri| invalid(e.to_string()),
        )?;
        let tls = match uri.scheme_str() {
            Some("wss" | "https") => true,
            Some("ws" | "http") => false,
            _ => {
                return Err(EndpointError::Scheme {
                    url: kahuna_url.to_owned(),
                });
            }
        };
        if !tls && !insecure {
            return Err(EndpointError::Insecure {
                url: kahuna_url.to_owned(),
            });
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host".into()))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information is not allowed".into()));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(invalid("no host".into()));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let scheme = if tls { "wss" } else { "ws" };
        let url = format!("{scheme}://{}/ws", authority.as_str());
        Ok(Self {
            tls,
            host,
            port,
            url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_always_slash_ws() {
        let e = Endpoint::parse("https://kahuna.acme.com/api/v1", false).unwrap();
        assert_eq!(e.url, "wss://kahuna.acme.com/ws");
        assert_eq!(
            (e.tls, e.port, e.host.as_str()),
            (true, 443, "kahuna.acme.com")
        );
        let e = Endpoint::parse("wss://kahuna.acme.com:8443", false).unwrap();
        assert_eq!(e.url, "wss://kahuna.acme.com:8443/ws");
        let e = Endpoint::parse("ws://[::1]:9000/", true).unwrap();
        assert_eq!((e.tls, e.port, e.host.as_str()), (false, 9000, "::1"));
        assert_eq!(e.url, "ws://[::1]:9000/ws");
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
        assert!(Endpoint::parse("wss://u:p@kahuna", false).is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let c = Credentials {
            kahuna_url: "wss://k".into(),
            agent_id: "a".into(),
            api_key: "s3cr3t-key".into(),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
