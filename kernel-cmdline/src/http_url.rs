//! Absolute `http://` and `https://` URLs: parsed by the `url` crate (WHATWG URL
//! standard), with this project's stricter policy on top.
//!
//! The policy, for URLs that come from a kernel command line or a configuration file:
//! - written in full: `http://` or `https://`, then the host (`https:host` and other
//!   forms the URL standard repairs are refused);
//! - ASCII only, and only RFC 3986 characters, with well-formed `%XX` escapes: what the
//!   URL standard would silently percent-encode (a space, `{`...) is refused, so the URL
//!   used is the URL written;
//! - no user credentials (no password can travel in a URL that may be logged);
//! - the host is a DNS name of RFC 1123 labels, a dotted-quad IPv4 address or a bracketed
//!   IPv6 address (the standard's `1.2.3` or `0x7f.1` IPv4 shorthands are refused);
//! - a port, if given, is 1 to 65535.
//!
//! Normalised as the URL standard does: scheme and host in lower case, a default port
//! (`:443` for https) dropped, an empty path written `/`, `.`/`..` segments resolved.

use std::fmt;
use std::str::FromStr;

use url::{Host, Position, Url};

/// Why a string is not an acceptable URL (the URL itself is not repeated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidUrl(String);

/// A checked absolute `http://` or `https://` URL, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    text: String,
    https: bool,
    host: String,
    port: Option<u16>,
    /// Index in `text` where the path (or query, or fragment) starts.
    path_start: usize,
}

impl HttpUrl {
    /// Parse and check an absolute http(s) URL.
    pub fn parse(text: &str) -> Result<Self, InvalidUrl> {
        let fail = |why: String| Err(InvalidUrl(why));
        check_characters(text)?;
        let Some((scheme, after_scheme)) = text.split_once("://") else {
            return fail("not an absolute URL (expected https://host...)".into());
        };
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return fail(format!("scheme {scheme:?} is not supported (use https://)"));
        };
        if after_scheme.is_empty() || after_scheme.starts_with(['/', '?', '#']) {
            // The URL standard would take the first path segment as the host.
            return fail("no host".into());
        }
        let url = Url::parse(text).map_err(describe)?;
        if !url.username().is_empty() || url.password().is_some() {
            return fail("user credentials are not allowed in the URL".into());
        }
        let host = match url.host() {
            None => return fail("no host".into()),
            Some(Host::Domain(name)) => {
                check_dns_name(name)?;
                check_written_as_is(name, after_scheme)?;
                name.to_owned()
            }
            Some(Host::Ipv4(addr)) => {
                check_written_as_is(&addr.to_string(), after_scheme)?;
                addr.to_string()
            }
            Some(Host::Ipv6(addr)) => format!("[{addr}]"),
        };
        let port = url.port();
        if port == Some(0) {
            return fail("port \"0\" is not a number from 1 to 65535".into());
        }
        Ok(Self {
            text: url.as_str().to_owned(),
            https,
            host,
            port,
            path_start: url[..Position::BeforePath].len(),
        })
    }

    /// Parse Kahuna's base URL: the server, `scheme://host[:port]`, to which the agent
    /// adds its own paths (`/ws` for the RPC, `/api/v1/...` for the document). A trailing
    /// `/` is dropped (`https://k.example/` becomes `https://k.example`); any other path,
    /// a query or a fragment is refused, because upstream Kahuna serves `/ws` at the root
    /// of its host whatever path the URL had.
    pub fn parse_base(text: &str) -> Result<Self, InvalidUrl> {
        let mut url = Self::parse(text)?;
        let rest = &url.text[url.path_start..];
        if rest.contains(['?', '#']) {
            return Err(InvalidUrl(
                "a base URL cannot have a query (?) or fragment (#)".into(),
            ));
        }
        let path = rest.trim_end_matches('/');
        if !path.is_empty() {
            return Err(InvalidUrl(format!(
                "a Kahuna URL is scheme://host[:port] without a path (found {path:?}): \
                 the agent adds /ws and /api/v1/... to it itself"
            )));
        }
        url.text.truncate(url.path_start);
        Ok(url)
    }

    /// The normalised URL.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host in lower case; an IPv6 address keeps its brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, if one other than the scheme's default (443, 80) was given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Everything after the host and port: path, query and fragment. At least `/`,
    /// except for a base URL ([`Self::parse_base`]), where it is empty.
    pub fn path(&self) -> &str {
        &self.text[self.path_start..]
    }

    /// Kahuna's WebSocket endpoint, as upstream agents dial it: `wss` (or `ws` for
    /// `http`), the same host and port, and the path `/ws`, always
    /// (`https://kowabunga.acme.com` -> `wss://kowabunga.acme.com/ws`). Any path of this
    /// URL is not used: a base URL ([`Self::parse_base`]) has none.
    pub fn websocket_url(&self) -> String {
        let scheme = if self.https { "wss" } else { "ws" };
        match self.port {
            Some(port) => format!("{scheme}://{}:{port}/ws", self.host),
            None => format!("{scheme}://{}/ws", self.host),
        }
    }
}

impl FromStr for HttpUrl {
    type Err = InvalidUrl;

    fn from_str(text: &str) -> Result<Self, InvalidUrl> {
        Self::parse(text)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The `url` crate's errors, in the words of this module.
fn describe(e: url::ParseError) -> InvalidUrl {
    use url::ParseError as E;
    InvalidUrl(match e {
        E::EmptyHost => "no host".into(),
        E::InvalidPort => "the port is not a number from 1 to 65535".into(),
        E::InvalidIpv4Address
        | E::InvalidIpv6Address
        | E::InvalidDomainCharacter
        | E::IdnaError => format!("the host is not a valid DNS name or IP address ({e})"),
        E::RelativeUrlWithoutBase => "not an absolute URL (expected https://host...)".into(),
        other => other.to_string(),
    })
}

/// ASCII only, RFC 3986 characters only, `%` always followed by two hex digits: what
/// the URL standard would percent-encode or repair on its own is refused instead.
fn check_characters(text: &str) -> Result<(), InvalidUrl> {
    if let Some(c) = text.chars().find(|c| !c.is_ascii()) {
        return Err(InvalidUrl(format!(
            "character {c:?} is not allowed in a URL (percent-encode it in a path, \
             write a host name in punycode, xn--...)"
        )));
    }
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let ok = match b {
            b'%' => bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => true,
            _ => b"-._~!$&'()*+,;=:@/?#[]".contains(&b),
        };
        if !ok {
            return Err(InvalidUrl(if b == b'%' {
                "'%' not followed by two hex digits".into()
            } else {
                format!(
                    "character {:?} is not allowed in a URL (percent-encode it)",
                    char::from(b)
                )
            }));
        }
    }
    Ok(())
}

/// A DNS name of RFC 1123 labels (the URL standard also takes `_`, empty labels, a
/// trailing dot and labels longer than 63 characters).
fn check_dns_name(name: &str) -> Result<(), InvalidUrl> {
    let labels_ok = name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if labels_ok {
        Ok(())
    } else {
        Err(InvalidUrl(format!(
            "host {name:?} is not a valid DNS name or IP address"
        )))
    }
}

/// The host the URL standard found must be the one written (in any case): refuses
/// IPv4 shorthands (`1.2.3` read as 1.2.0.3) and percent-encoded host names.
fn check_written_as_is(host: &str, after_scheme: &str) -> Result<(), InvalidUrl> {
    let written = after_scheme.get(..host.len());
    let next = after_scheme.as_bytes().get(host.len());
    if written.is_some_and(|w| w.eq_ignore_ascii_case(host))
        && next.is_none_or(|b| b"/?#:".contains(b))
    {
        return Ok(());
    }
    Err(InvalidUrl(format!(
        "the host is not a dotted-quad IPv4 address or a DNS name as written \
         (the URL standard reads it as {host:?})"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        HttpUrl::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_and_normalises() {
        let url = HttpUrl::parse("HTTPS://Kahuna.Example.COM:8443/a/b?x=1").unwrap();
        assert_eq!(url.as_str(), "https://kahuna.example.com:8443/a/b?x=1");
        assert!(url.is_https());
        assert_eq!(url.host(), "kahuna.example.com");
        assert_eq!(url.port(), Some(8443));
        assert_eq!(url.path(), "/a/b?x=1");
        let url: HttpUrl = "http://10.0.0.1".parse().unwrap();
        assert!(!url.is_https());
        assert_eq!(url.as_str(), "http://10.0.0.1/");
        assert_eq!(
            (url.host(), url.port(), url.path()),
            ("10.0.0.1", None, "/")
        );
    }

    #[test]
    fn default_ports_and_dot_segments_are_normalised() {
        let url = HttpUrl::parse("https://k:443/a/./b/../c").unwrap();
        assert_eq!((url.as_str(), url.port()), ("https://k/a/c", None));
        assert_eq!(HttpUrl::parse("http://k:80").unwrap().as_str(), "http://k/");
        assert_eq!(HttpUrl::parse("http://k:443").unwrap().port(), Some(443));
    }

    #[test]
    fn ipv6_hosts() {
        let url = HttpUrl::parse("https://[FD00::1]:8443/").unwrap();
        assert_eq!(url.host(), "[fd00::1]");
        assert_eq!(url.port(), Some(8443));
        for bad in ["https://[fd00::1", "https://[zz::1]/"] {
            assert!(
                err(bad).starts_with("the host is not a valid DNS name or IP address ("),
                "{bad}: {}",
                err(bad)
            );
        }
        assert!(HttpUrl::parse("https://[fd00::1]x").is_err());
    }

    #[test]
    fn rejects_other_schemes_and_relative_urls() {
        assert_eq!(
            err("ftp://x"),
            "scheme \"ftp\" is not supported (use https://)"
        );
        assert_eq!(
            err("wss://x"),
            "scheme \"wss\" is not supported (use https://)"
        );
        for relative in ["kahuna.example.com", "https:kahuna", "https:/kahuna"] {
            assert_eq!(
                err(relative),
                "not an absolute URL (expected https://host...)",
                "{relative}"
            );
        }
    }

    #[test]
    fn rejects_bad_hosts() {
        assert_eq!(err("https:///path"), "no host");
        assert_eq!(err("https://"), "no host");
        assert_eq!(err("https://?q"), "no host");
        assert_eq!(err("https://:443"), "no host");
        // Accepted by the URL standard, refused by RFC 1123.
        for host in ["-a.b", "a-.b", "a_b.c", "a.b."] {
            assert_eq!(
                err(&format!("https://{host}/")),
                format!("host {host:?} is not a valid DNS name or IP address")
            );
        }
        let long = format!("https://{}.com", "a".repeat(64));
        assert!(err(&long).starts_with("host"), "{}", err(&long));
        // Refused by both (the message depends on who refuses first).
        for host in ["a..b", "1.2.3.999"] {
            assert!(
                err(&format!("https://{host}/")).contains("not a valid DNS name or IP address"),
                "{host}: {}",
                err(&format!("https://{host}/"))
            );
        }
    }

    #[test]
    fn rejects_what_the_url_standard_would_reinterpret() {
        // IPv4 shorthands the URL standard reads as dotted quads.
        for host in ["1.2.3", "0x7f.1", "2130706433", "127.000.0.1"] {
            assert!(
                err(&format!("https://{host}/")).starts_with(
                    "the host is not a dotted-quad IPv4 address or a DNS name as written"
                ),
                "{host}: {}",
                err(&format!("https://{host}/"))
            );
        }
        // A percent-encoded host name.
        assert!(err("https://%6Bahuna/").starts_with("the host is not"));
        // Non-ASCII, whitespace, backslashes: refused, not encoded or dropped.
        assert!(err("https://é.fr/").starts_with("character 'é' is not allowed in a URL"));
        assert!(err("https://k/\u{e9}").starts_with("character 'é' is not allowed in a URL"));
        assert_eq!(
            err("https://k/a\tb"),
            "character '\\t' is not allowed in a URL (percent-encode it)"
        );
        assert_eq!(
            err("https:\\\\k/"),
            "character '\\\\' is not allowed in a URL (percent-encode it)"
        );
    }

    #[test]
    fn rejects_credentials() {
        for url in [
            "https://user:pw@host/",
            "https://user@host/",
            "https://:pw@host/",
        ] {
            assert_eq!(err(url), "user credentials are not allowed in the URL");
        }
    }

    #[test]
    fn rejects_bad_ports() {
        assert_eq!(
            err("https://h:0/"),
            "port \"0\" is not a number from 1 to 65535"
        );
        for port in ["65536", "+1", "x", "-1"] {
            assert_eq!(
                err(&format!("https://h:{port}/")),
                "the port is not a number from 1 to 65535",
                "{port}"
            );
        }
        // An empty port is no port, as the URL standard reads it.
        assert_eq!(
            HttpUrl::parse("https://h:/").unwrap().as_str(),
            "https://h/"
        );
    }

    #[test]
    fn rejects_bad_path_characters() {
        assert_eq!(
            err("https://h/a b"),
            "character ' ' is not allowed in a URL (percent-encode it)"
        );
        assert_eq!(
            err("https://h/{id}"),
            "character '{' is not allowed in a URL (percent-encode it)"
        );
        assert_eq!(err("https://h/%zz"), "'%' not followed by two hex digits");
        assert_eq!(err("https://h/%4"), "'%' not followed by two hex digits");
        let url = HttpUrl::parse("https://h/%41~:@!$&'()*+,;=?q#f").unwrap();
        assert_eq!(url.path(), "/%41~:@!$&'()*+,;=?q#f");
    }

    #[test]
    fn base_urls_are_a_server_without_path() {
        let base = HttpUrl::parse_base("https://k.example//").unwrap();
        assert_eq!(base.as_str(), "https://k.example");
        assert_eq!(base.path(), "");
        assert_eq!(
            HttpUrl::parse_base("HTTP://K.example:8080")
                .unwrap()
                .as_str(),
            "http://k.example:8080"
        );
        assert_eq!(
            HttpUrl::parse_base("https://k.example/?a")
                .unwrap_err()
                .to_string(),
            "a base URL cannot have a query (?) or fragment (#)"
        );
        assert_eq!(
            HttpUrl::parse_base("https://k.example/kahuna/")
                .unwrap_err()
                .to_string(),
            "a Kahuna URL is scheme://host[:port] without a path (found \"/kahuna\"): \
             the agent adds /ws and /api/v1/... to it itself"
        );
        assert!(HttpUrl::parse_base("https://k.example/ws").is_err());
    }

    #[test]
    fn websocket_url_is_always_slash_ws_on_the_server() {
        let ws = |s: &str| HttpUrl::parse_base(s).unwrap().websocket_url();
        assert_eq!(
            ws("https://kowabunga.acme.com"),
            "wss://kowabunga.acme.com/ws"
        );
        assert_eq!(
            ws("https://kowabunga.acme.com/"),
            "wss://kowabunga.acme.com/ws"
        );
        assert_eq!(ws("http://10.0.0.1:8080/"), "ws://10.0.0.1:8080/ws");
        assert_eq!(ws("https://[fd00::1]:8443"), "wss://[fd00::1]:8443/ws");
        // A full URL's path is not used either.
        assert_eq!(
            HttpUrl::parse("https://k/api/v1").unwrap().websocket_url(),
            "wss://k/ws"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in proptest::prelude::any::<String>()) {
            let _ = HttpUrl::parse(&s);
            let _ = HttpUrl::parse_base(&s);
        }

        #[test]
        fn accepted_urls_are_stable(s in "https?://[a-z0-9.:/?#%-]{1,30}") {
            if let Ok(url) = HttpUrl::parse(&s) {
                let again = HttpUrl::parse(url.as_str()).unwrap();
                proptest::prop_assert_eq!(again.as_str(), url.as_str());
            }
        }
    }
}
