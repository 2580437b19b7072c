//! Absolute `http://` and `https://` URLs, checked without a URL crate.
//!
//! Only what the agent needs: scheme, host (DNS name, IPv4 or bracketed IPv6), optional
//! port, and a path/query made of RFC 3986 characters. User credentials in the URL are
//! refused, so no password can travel in a URL that may be logged.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a string is not an acceptable URL (the URL itself is not repeated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidUrl(String);

/// A checked absolute `http://` or `https://` URL, with scheme and host in lower case.
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
        let Some((scheme, rest)) = text.split_once("://") else {
            return fail("not an absolute URL (expected https://host...)".into());
        };
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return fail(format!("scheme {scheme:?} is not supported (use https://)")),
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if authority.contains('@') {
            return fail("user credentials are not allowed in the URL".into());
        }
        let (host, port) = split_host_port(authority)?;
        check_host(host)?;
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return fail(format!("port {p:?} is not a number from 1 to 65535")),
            },
        };
        check_path(path)?;
        let host = host.to_ascii_lowercase();
        let mut text = format!("{}://{host}", if https { "https" } else { "http" });
        if let Some(port) = port {
            text.push_str(&format!(":{port}"));
        }
        let path_start = text.len();
        text.push_str(path);
        Ok(Self {
            text,
            https,
            host,
            port,
            path_start,
        })
    }

    /// Parse a base URL, to which paths are appended: no query or fragment, and trailing
    /// slashes are dropped (`https://k.example/` becomes `https://k.example`).
    pub fn parse_base(text: &str) -> Result<Self, InvalidUrl> {
        let mut url = Self::parse(text)?;
        if url.path().contains(['?', '#']) {
            return Err(InvalidUrl(
                "a base URL cannot have a query (?) or fragment (#)".into(),
            ));
        }
        let trimmed = url.text.trim_end_matches('/').len();
        url.text.truncate(trimmed);
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

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Everything after the host and port: path, query and fragment (may be empty).
    pub fn path(&self) -> &str {
        &self.text[self.path_start..]
    }

    /// The WebSocket endpoint of a Kahuna base URL: same host and path, `wss` (or `ws`
    /// for `http`), plus `/ws`, as upstream agents dial it.
    pub fn websocket_url(&self) -> String {
        let scheme = if self.https { "wss" } else { "ws" };
        let after_scheme = self.text.split_once("://").map_or("", |(_, rest)| rest);
        format!("{scheme}://{}/ws", after_scheme.trim_end_matches('/'))
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

/// Split `host[:port]` or `[ipv6][:port]`.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), InvalidUrl> {
    if authority.starts_with('[') {
        let Some(close) = authority.find(']') else {
            return Err(InvalidUrl("unclosed '[' in IPv6 host".into()));
        };
        let (host, after) = authority.split_at(close + 1);
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(InvalidUrl(format!("unexpected {after:?} after IPv6 host"))),
            },
        };
    }
    Ok(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// A DNS name (RFC 1123 labels), a dotted IPv4 address or a bracketed IPv6 address.
fn check_host(host: &str) -> Result<(), InvalidUrl> {
    let invalid = || {
        Err(InvalidUrl(format!(
            "host {host:?} is not a valid DNS name or IP address"
        )))
    };
    if host.is_empty() {
        return Err(InvalidUrl("no host".into()));
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().map(drop).or_else(|_| invalid());
    }
    if host.len() > 253 {
        return invalid();
    }
    let labels_ok = host.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    // A name whose last label is numeric can only be an IPv4 address.
    let numeric_tld = host
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    if !labels_ok || (numeric_tld && host.parse::<Ipv4Addr>().is_err()) {
        return invalid();
    }
    Ok(())
}

/// Path, query and fragment: RFC 3986 characters, with well-formed `%XX` escapes.
fn check_path(path: &str) -> Result<(), InvalidUrl> {
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let ok = match b {
            b'%' => bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => true,
            _ => b"-._~!$&'()*+,;=:@/?#".contains(&b),
        };
        if !ok {
            let c = path.get(i..).and_then(|s| s.chars().next()).unwrap_or('?');
            return Err(InvalidUrl(if b == b'%' {
                "'%' not followed by two hex digits".into()
            } else {
                format!("character {c:?} is not allowed in a URL (percent-encode it)")
            }));
        }
    }
    Ok(())
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
        assert_eq!((url.host(), url.port(), url.path()), ("10.0.0.1", None, ""));
    }

    #[test]
    fn ipv6_hosts() {
        let url = HttpUrl::parse("https://[FD00::1]:443/").unwrap();
        assert_eq!(url.host(), "[fd00::1]");
        assert_eq!(url.port(), Some(443));
        assert_eq!(err("https://[fd00::1"), "unclosed '[' in IPv6 host");
        assert_eq!(
            err("https://[fd00::1]x"),
            "unexpected \"x\" after IPv6 host"
        );
        assert_eq!(
            err("https://[zz::1]/"),
            "host \"[zz::1]\" is not a valid DNS name or IP address"
        );
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
        assert_eq!(
            err("kahuna.example.com"),
            "not an absolute URL (expected https://host...)"
        );
    }

    #[test]
    fn rejects_bad_hosts() {
        assert_eq!(err("https:///path"), "no host");
        assert_eq!(err("https://:443"), "no host");
        for host in ["a..b", "-a.b", "a-.b", "a_b.c", "1.2.3.999", "a.b.", "é.fr"] {
            assert_eq!(
                err(&format!("https://{host}/")),
                format!("host {host:?} is not a valid DNS name or IP address")
            );
        }
        let long = format!("https://{}.com", "a".repeat(64));
        assert!(err(&long).starts_with("host"));
    }

    #[test]
    fn rejects_credentials() {
        assert_eq!(
            err("https://user:pw@host/"),
            "user credentials are not allowed in the URL"
        );
    }

    #[test]
    fn rejects_bad_ports() {
        for port in ["", "0", "65536", "+1", "x"] {
            assert_eq!(
                err(&format!("https://h:{port}/")),
                format!("port {port:?} is not a number from 1 to 65535")
            );
        }
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
        assert!(HttpUrl::parse("https://h/%41~:@!$&'()*+,;=?q#f").is_ok());
    }

    #[test]
    fn base_urls_drop_trailing_slashes_and_refuse_queries() {
        let base = HttpUrl::parse_base("https://k.example/kahuna//").unwrap();
        assert_eq!(base.as_str(), "https://k.example/kahuna");
        assert_eq!(base.path(), "/kahuna");
        assert_eq!(
            HttpUrl::parse_base("https://k.example/").unwrap().path(),
            ""
        );
        assert_eq!(
            HttpUrl::parse_base("https://k.example/?a")
                .unwrap_err()
                .to_string(),
            "a base URL cannot have a query (?) or fragment (#)"
        );
    }

    #[test]
    fn websocket_url_appends_ws() {
        let ws = |s: &str| HttpUrl::parse_base(s).unwrap().websocket_url();
        assert_eq!(
            ws("https://kowabunga.acme.com"),
            "wss://kowabunga.acme.com/ws"
        );
        assert_eq!(ws("http://10.0.0.1:8080/k/"), "ws://10.0.0.1:8080/k/ws");
    }
}
