//! `network-config` (Netplan v2, as Kahuna writes it) converted to the shared network
//! model ([`kowabunga_model::network::Network`]), so the network reconciler applies it.
//!
//! ```yaml
//! version: 2
//! ethernets:
//!   ens3:
//!     match:
//!       macaddress: 52:54:00:aa:bb:01
//!     link-local: []
//!     accept-ra: false
//!     dhcp4: false
//!     addresses: [192.0.2.10/24]
//!     routes:
//!       - to: default
//!         via: 192.0.2.1
//!         metric: 100
//!     nameservers:
//!       addresses: [10.0.0.1]
//!       search: [acme.internal]
//! ```
//!
//! Each ethernet becomes a physical link named `set-name` (else its Netplan id), found
//! by `match.macaddress`; `addresses` are its static addresses; `routes` (and the old
//! `gateway4`/`gateway6`) become routes through it with their metrics. Name servers and
//! search domains are returned apart, for resolv.conf. Only static configuration is
//! accepted: DHCP, bonds, bridges, VLANs and keys this module does not know are refused,
//! naming the key.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kowabunga_model::network::{
    Destination, Invalid, Link, LinkKind, MacAddr, Network, Prefix, Route, check_ifname,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::refused::one_line;

/// Why a network-config is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetplanError {
    /// Not YAML, or a key or value of the wrong shape
    /// (`ethernets.ens3.bond: line 4 column 5: unknown field `bond``).
    #[error("{path}{}{message}", if path.is_empty() { "" } else { ": " })]
    Syntax { path: String, message: String },
    /// A value is wrong: `ethernets.ens3.addresses[0]: `10.0.0.1` is not a prefix`.
    #[error("{path}: {problem}")]
    Key { path: String, problem: String },
    /// The links and routes do not make a valid network (model validation).
    #[error("the resulting network is not valid: {0}")]
    Invalid(Invalid),
}

fn key(path: impl Into<String>, problem: impl Into<String>) -> NetplanError {
    NetplanError::Key {
        path: path.into(),
        problem: problem.into(),
    }
}

/// A converted network-config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetplanConfig {
    /// Links and routes, validated (`ip_forward` not set: that is the role's call).
    pub network: Network,
    /// Name servers of every ethernet, first seen first, without repeats.
    pub nameservers: Vec<IpAddr>,
    /// Search domains of every ethernet, first seen first, without repeats.
    pub search: Vec<String>,
    /// Keys accepted but not applied (`ethernets.ens3.link-local`), for the log.
    pub ignored: Vec<String>,
}

impl NetplanConfig {
    /// Each link's static addresses, by link name: the subnets the roles check their
    /// virtual IPs against.
    pub fn subnets(&self) -> BTreeMap<String, Vec<Prefix>> {
        self.network
            .links
            .iter()
            .map(|l| (l.name.clone(), l.addresses.clone()))
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    /// cloud-init also accepts the document wrapped in `network:`.
    network: Option<Box<RawTop>>,
    version: Option<u32>,
    renderer: Option<String>,
    #[serde(default)]
    ethernets: BTreeMap<String, RawEthernet>,
    bonds: Option<IgnoredAny>,
    bridges: Option<IgnoredAny>,
    vlans: Option<IgnoredAny>,
    wifis: Option<IgnoredAny>,
    tunnels: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawEthernet {
    #[serde(rename = "match")]
    match_: Option<RawMatch>,
    set_name: Option<String>,
    dhcp4: Option<bool>,
    dhcp6: Option<bool>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    gateway4: Option<String>,
    gateway6: Option<String>,
    nameservers: Option<RawNameservers>,
    accept_ra: Option<bool>,
    link_local: Option<Vec<String>>,
    mtu: Option<u32>,
    optional: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    macaddress: Option<String>,
    name: Option<String>,
    driver: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    to: String,
    via: Option<String>,
    metric: Option<u32>,
    table: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNameservers {
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    search: Vec<String>,
}

/// Parse and convert a network-config.
pub fn parse(text: &str) -> Result<NetplanConfig, NetplanError> {
    let mut path = String::new();
    let raw: RawTop = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| NetplanError::Syntax {
        path: if path == "." { String::new() } else { path },
        message: one_line(&e),
    })?;
    let (raw, prefix) = match raw.network {
        Some(inner) => (*inner, "network."),
        None => (raw, ""),
    };
    convert(raw, prefix)
}

fn convert(raw: RawTop, prefix: &str) -> Result<NetplanConfig, NetplanError> {
    match raw.version {
        Some(2) => {}
        Some(v) => {
            return Err(key(
                format!("{prefix}version"),
                format!("{v} is not supported (only Netplan version 2)"),
            ));
        }
        None => return Err(key(format!("{prefix}version"), "missing (expected 2)")),
    }
    for (name, present) in [
        ("bonds", raw.bonds.is_some()),
        ("bridges", raw.bridges.is_some()),
        ("vlans", raw.vlans.is_some()),
        ("wifis", raw.wifis.is_some()),
        ("tunnels", raw.tunnels.is_some()),
    ] {
        if present {
            return Err(key(
                format!("{prefix}{name}"),
                "not supported (a Kowabunga service VM has ethernets only)",
            ));
        }
    }
    let mut out = NetplanConfig {
        network: Network::default(),
        nameservers: Vec::new(),
        search: Vec::new(),
        ignored: Vec::new(),
    };
    if let Some(r) = raw.renderer {
        out.ignored.push(format!("{prefix}renderer ({r})"));
    }
    let mut macs: BTreeMap<MacAddr, String> = BTreeMap::new();
    for (id, eth) in raw.ethernets {
        let at = format!("{prefix}ethernets.{id}");
        convert_ethernet(&at, &id, eth, &mut macs, &mut out)?;
    }
    out.network.validate().map_err(NetplanError::Invalid)?;
    Ok(out)
}

fn convert_ethernet(
    at: &str,
    id: &str,
    eth: RawEthernet,
    macs: &mut BTreeMap<MacAddr, String>,
    out: &mut NetplanConfig,
) -> Result<(), NetplanError> {
    for (k, on) in [("dhcp4", eth.dhcp4), ("dhcp6", eth.dhcp6)] {
        if on == Some(true) {
            return Err(key(
                format!("{at}.{k}"),
                "true is not supported: the kontroller applies static addresses only (Kahuna writes dhcp4: false)",
            ));
        }
    }
    let name = eth.set_name.clone().unwrap_or_else(|| id.to_owned());
    let name_key = if eth.set_name.is_some() {
        format!("{at}.set-name")
    } else {
        at.to_owned()
    };
    check_ifname(&name).map_err(|e| key(&name_key, e))?;
    let mut mac = None;
    if let Some(m) = eth.match_ {
        if m.name.is_some() || m.driver.is_some() {
            return Err(key(
                format!("{at}.match"),
                "only `macaddress` is supported (not name or driver globs)",
            ));
        }
        if let Some(text) = m.macaddress {
            let parsed: MacAddr = text
                .trim()
                .parse()
                .map_err(|e: String| key(format!("{at}.match.macaddress"), e))?;
            if let Some(other) = macs.insert(parsed, id.to_owned()) {
                return Err(key(
                    format!("{at}.match.macaddress"),
                    format!("{parsed} is also the MAC of ethernets.{other}"),
                ));
            }
            mac = Some(parsed);
        }
    }
    let mut addresses = Vec::new();
    for (i, text) in eth.addresses.iter().enumerate() {
        let p: Prefix = text
            .trim()
            .parse()
            .map_err(|e: String| key(format!("{at}.addresses[{i}]"), e))?;
        addresses.push(p);
    }
    for (i, r) in eth.routes.iter().enumerate() {
        out.network
            .routes
            .push(convert_route(&format!("{at}.routes[{i}]"), &name, r)?);
    }
    for (k, gw) in [("gateway4", &eth.gateway4), ("gateway6", &eth.gateway6)] {
        if let Some(gw) = gw {
            let raw = RawRoute {
                to: "default".into(),
                via: Some(gw.clone()),
                metric: None,
                table: None,
            };
            let route = convert_route(&format!("{at}.{k}"), &name, &raw)?;
            let want_v4 = k == "gateway4";
            if route.via.is_some_and(|v| v.is_ipv4() != want_v4) {
                return Err(key(
                    format!("{at}.{k}"),
                    format!("{gw} is not of the {k} family"),
                ));
            }
            out.network.routes.push(route);
        }
    }
    if let Some(ns) = eth.nameservers {
        for (i, text) in ns.addresses.iter().enumerate() {
            let ip: IpAddr = text.trim().parse().map_err(|_| {
                key(
                    format!("{at}.nameservers.addresses[{i}]"),
                    format!("`{text}` is not an IP address"),
                )
            })?;
            if !out.nameservers.contains(&ip) {
                out.nameservers.push(ip);
            }
        }
        for (i, domain) in ns.search.iter().enumerate() {
            check_domain(domain).map_err(|e| key(format!("{at}.nameservers.search[{i}]"), e))?;
            if !out.search.contains(domain) {
                out.search.push(domain.clone());
            }
        }
    }
    if eth.link_local.is_some() {
        out.ignored.push(format!("{at}.link-local"));
    }
    if eth.optional.is_some() {
        out.ignored.push(format!("{at}.optional"));
    }
    out.network.links.push(Link {
        mac,
        mtu: eth.mtu,
        addresses,
        accept_ra: eth.accept_ra,
        ..Link::new(name, LinkKind::Physical)
    });
    Ok(())
}

fn convert_route(at: &str, dev: &str, r: &RawRoute) -> Result<Route, NetplanError> {
    let via = r
        .via
        .as_deref()
        .map(|v| {
            v.trim()
                .parse::<IpAddr>()
                .map_err(|_| key(format!("{at}.via"), format!("`{v}` is not an IP address")))
        })
        .transpose()?;
    let to = r.to.trim();
    let to = if to == "default" {
        Destination::Default
    } else {
        let p: Prefix = to.parse().map_err(|e: String| key(format!("{at}.to"), e))?;
        if p.network() != p.addr {
            return Err(key(
                format!("{at}.to"),
                format!(
                    "{p} has host bits set (did you mean {}/{}?)",
                    p.network(),
                    p.len
                ),
            ));
        }
        if p.len == 0 && via.is_some_and(|v| v.is_ipv4() == p.addr.is_ipv4()) {
            Destination::Default
        } else {
            Destination::Prefix(p)
        }
    };
    Ok(Route {
        to,
        via,
        dev: Some(dev.to_owned()),
        metric: r.metric,
        table: r.table,
    })
}

/// A search domain: DNS labels of letters, digits and `-`, dot-separated.
fn check_domain(domain: &str) -> Result<(), String> {
    let name = domain.strip_suffix('.').unwrap_or(domain);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{domain}` is not a domain name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape Kahuna's `network_config.yml` template renders for a Kawaii instance:
    /// public NIC first (metric 100), private NIC second (metric 200, name servers and
    /// search domain), a peering NIC without routes. Blank lines as the template leaves
    /// them.
    const KAHUNA: &str = "version: 2
ethernets:

  ens3:
    match:
      macaddress: 52:54:00:aa:bb:01
    link-local: []
    accept-ra: false
    dhcp4: false

    addresses:

      - 192.0.2.10/24


    routes:

      - to: default
        via: 192.0.2.1
        metric: 100



  ens4:
    match:
      macaddress: 52:54:00:AA:BB:02
    link-local: []
    accept-ra: false
    dhcp4: false

    addresses:

      - 10.0.0.2/24


    routes:

      - to: 0.0.0.0/0
        via: 10.0.0.1
        metric: 200

      - to: 10.99.0.0/16
        via: 10.0.0.254

    nameservers:
      addresses:
        - 10.0.0.1
      search:
        - acme.internal

  ens5:
    match:
      macaddress: 52:54:00:aa:bb:03
    link-local: []
    accept-ra: false
    dhcp4: false
    addresses:
      - 10.1.0.2/24
";

    #[test]
    fn kahuna_network_config() {
        let cfg = parse(KAHUNA).unwrap();
        let n = &cfg.network;
        assert_eq!(n.ip_forward, None);
        let names: Vec<&str> = n.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["ens3", "ens4", "ens5"]);
        let ens3 = &n.links[0];
        assert_eq!(ens3.mac.unwrap().to_string(), "52:54:00:aa:bb:01");
        assert_eq!(ens3.kind, LinkKind::Physical);
        assert_eq!(ens3.accept_ra, Some(false));
        assert_eq!(ens3.addresses, ["192.0.2.10/24".parse::<Prefix>().unwrap()]);
        assert_eq!(n.links[1].mac.unwrap().to_string(), "52:54:00:aa:bb:02");
        let routes: Vec<String> = n
            .routes
            .iter()
            .map(|r| format!("{} via {:?} dev {:?}", r.key(), r.via, r.dev))
            .collect();
        assert_eq!(
            routes,
            [
                "default metric 100 via Some(192.0.2.1) dev Some(\"ens3\")",
                "default metric 200 via Some(10.0.0.1) dev Some(\"ens4\")",
                "10.99.0.0/16 via Some(10.0.0.254) dev Some(\"ens4\")",
            ]
        );
        assert_eq!(n.routes[0].to, Destination::Default);
        assert_eq!(n.routes[1].to, Destination::Default);
        assert_eq!(cfg.nameservers, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(cfg.search, ["acme.internal"]);
        assert_eq!(
            cfg.ignored,
            [
                "ethernets.ens3.link-local",
                "ethernets.ens4.link-local",
                "ethernets.ens5.link-local"
            ]
        );
        let subnets = cfg.subnets();
        assert_eq!(subnets["ens4"], ["10.0.0.2/24".parse::<Prefix>().unwrap()]);
    }

    #[test]
    fn wrapped_set_name_and_old_gateways() {
        let cfg = parse(
            "network:\n  version: 2\n  ethernets:\n    id0:\n      match: {macaddress: '02:00:00:00:00:01'}\n      set-name: wan\n      addresses: [198.51.100.2/24, '2001:db8::2/64']\n      gateway4: 198.51.100.1\n      gateway6: 2001:db8::1\n      mtu: 1500\n",
        )
        .unwrap();
        let l = &cfg.network.links[0];
        assert_eq!((l.name.as_str(), l.mtu), ("wan", Some(1500)));
        assert_eq!(cfg.network.routes.len(), 2);
        assert!(
            cfg.network
                .routes
                .iter()
                .all(|r| r.dev.as_deref() == Some("wan"))
        );
        assert_eq!(cfg.network.routes[1].key().dst, Prefix::unspecified_v6());
    }

    #[test]
    fn refusals_name_the_key() {
        let eth = |body: &str| format!("version: 2\nethernets:\n  ens3:\n{body}");
        let cases = [
            ("version: 1\n".to_owned(), "version: 1 is not supported (only Netplan version 2)"),
            ("ethernets: {}\n".to_owned(), "version: missing"),
            (
                "version: 2\nbonds:\n  bond0: {}\n".to_owned(),
                "bonds: not supported",
            ),
            (eth("    dhcp4: true\n"), "ethernets.ens3.dhcp4: true is not supported"),
            (eth("    dhcp6: true\n"), "ethernets.ens3.dhcp6: true is not supported"),
            (
                eth("    addresses: [10.0.0.300/24]\n"),
                "ethernets.ens3.addresses[0]: `10.0.0.300/24`: `10.0.0.300` is not an IP address",
            ),
            (
                eth("    addresses: [10.0.0.3]\n"),
                "ethernets.ens3.addresses[0]: `10.0.0.3` is not a prefix",
            ),
            (
                eth("    match:\n      macaddress: 52:54:00:zz:00:01\n"),
                "ethernets.ens3.match.macaddress: `52:54:00:zz:00:01` is not a MAC address",
            ),
            (
                eth("    match:\n      name: en*\n"),
                "ethernets.ens3.match: only `macaddress` is supported",
            ),
            (
                eth("    routes:\n      - to: 10.1.2.3/16\n        via: 10.0.0.1\n"),
                "ethernets.ens3.routes[0].to: 10.1.2.3/16 has host bits set",
            ),
            (
                eth("    routes:\n      - to: default\n        via: gateway\n"),
                "ethernets.ens3.routes[0].via: `gateway` is not an IP address",
            ),
            (
                eth("    nameservers:\n      addresses: [dns.example]\n"),
                "ethernets.ens3.nameservers.addresses[0]: `dns.example` is not an IP address",
            ),
            (
                eth("    nameservers:\n      search: ['a b']\n"),
                "ethernets.ens3.nameservers.search[0]: `a b` is not a domain name",
            ),
            (eth("    wakeonlan: true\n"), "ethernets.ens3.wakeonlan: line 4 column 5: unknown field `wakeonlan`"),
            (
                eth("    routes:\n      - to: default\n        via: 10.0.0.1\n        on-link: true\n"),
                "ethernets.ens3.routes[0].on-link: line 7 column 9: unknown field `on-link`",
            ),
            (eth("    set-name: this-name-is-too-long\n"), "ethernets.ens3.set-name: interface name"),
            (eth("    gateway4: 2001:db8::1\n"), "ethernets.ens3.gateway4: 2001:db8::1 is not of the gateway4 family"),
            (
                "version: 2\nethernets:\n  a:\n    match: {macaddress: '02:00:00:00:00:01'}\n  b:\n    match: {macaddress: '02:00:00:00:00:01'}\n".to_owned(),
                "ethernets.b.match.macaddress: 02:00:00:00:00:01 is also the MAC of ethernets.a",
            ),
            (
                eth("    addresses: [10.0.0.2/24]\n    routes:\n      - to: default\n        via: 10.0.0.1\n      - to: 0.0.0.0/0\n        via: 10.0.0.9\n"),
                "the resulting network is not valid: route default: declared twice",
            ),
            ("version: 2\nethernets: [\n".to_owned(), ""),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}\n=> {e}");
        }
    }
}
