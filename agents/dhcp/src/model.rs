//! Kiwi's DHCPv4 desired state: the signed `[dhcp]` section and the configuration the
//! server runs, compiled from it and from the document's `[network]` section. Pure: no
//! I/O.
//!
//! A served link is named by its `[network]` link name; the Kiwi's first IPv4 address
//! on that link whose subnet holds the link's pools (or hosts) is the server's address
//! there: the subnet served, the server identifier, and the default router and DNS
//! server handed to clients. On a Kiwi pair, when `[vrrp]` holds a virtual address in
//! that subnet on that link, the virtual address is the default router and DNS server
//! instead: it is the one that survives a failover.
//!
//! ```toml
//! [dhcp]
//! lease_time = 3600                 # seconds, every link unless it says otherwise
//! domain = "acme.local"             # option 15
//! ntp = ["10.0.0.3"]                # option 42
//! ping_check = true                 # ICMP echo before offering a new address
//!
//! [dhcp.links.vlan101]
//! pools = [{ first = "10.0.101.100", last = "10.0.101.199" }]
//! # router = "10.0.101.1"           # default: the link's VIP, else the Kiwi's address
//! # dns = ["10.0.101.1"]            # default: the section's, else as the router
//! mtu = 1400                        # option 26; default: the link's mtu in [network]
//! routes = [{ to = "10.8.0.0/16", via = "10.0.101.254" }]   # option 121
//! hosts = [{ mac = "52:54:00:00:01:0a", address = "10.0.101.10" }]
//! ```
//!
//! Refused, with an error naming the field: a link not declared in `[network]` or
//! without an IPv4 address holding its pools, a pool outside that subnet or holding
//! its network, broadcast or the Kiwi's address, overlapping pools (on any links), a
//! host outside the subnet or inside one of the link's pools (a reserved address is
//! never also dynamic), two hosts with one MAC or one address on a link, a router or
//! route gateway off the subnet, a lease time outside 60 s..=30 days.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use kowabunga_model::network::{self, MacAddr, Network, check_ifname};
use kowabunga_model::{Document, DocumentError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Name of the signed section.
pub const SECTION: &str = "dhcp";

pub const DEFAULT_LEASE_TIME: u32 = 3600;
pub const MIN_LEASE_TIME: u32 = 60;
pub const MAX_LEASE_TIME: u32 = 30 * 86_400;
/// Smallest MTU a client may be told (RFC 2132, option 26).
pub const MIN_MTU: u16 = 68;

/// Why a `[dhcp]` section is not acceptable; the message names the field.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("[dhcp] {0}")]
pub struct DhcpError(pub String);

impl From<DocumentError> for DhcpError {
    fn from(err: DocumentError) -> Self {
        // The document's message already names the section.
        DhcpError(err.to_string().trim_start_matches("[dhcp] ").to_owned())
    }
}

/// The signed `[dhcp]` section. Absent: no link is served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "[dhcp]",
    description = "Kiwi's DHCPv4 server: the links it serves, their pools, static hosts and options."
)]
pub struct DhcpSection {
    /// Lease time in seconds, for links that do not set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 2_592_000))]
    pub lease_time: Option<u32>,
    /// Domain name handed to clients (option 15), for links that do not set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// DNS servers (option 6) for links that do not set their own; default: the Kiwi's
    /// address on each link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// NTP servers (option 42) for links that do not set their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp: Vec<Ipv4Addr>,
    /// Before offering an address no client had, check that nobody answers an ICMP
    /// echo from it (the client's retransmission gets the offer); an address that
    /// answers is quarantined like a declined one.
    #[serde(default = "yes")]
    pub ping_check: bool,
    /// Served links by `[network]` link name.
    #[serde(default)]
    pub links: BTreeMap<String, LinkSection>,
}

impl Default for DhcpSection {
    fn default() -> Self {
        Self {
            lease_time: None,
            domain: None,
            dns: Vec::new(),
            ntp: Vec::new(),
            ping_check: true,
            links: BTreeMap::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// One served link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkSection {
    /// Address ranges handed out dynamically.
    #[serde(default)]
    pub pools: Vec<Range>,
    /// Static leases: always the same address for a MAC.
    #[serde(default)]
    pub hosts: Vec<Host>,
    /// Default gateway (option 3); default: the Kiwi's address on the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6); default: the section's, else the Kiwi's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<Ipv4Addr>>,
    /// Domain name (option 15); default: the section's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// NTP servers (option 42); default: the section's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp: Option<Vec<Ipv4Addr>>,
    /// Lease time in seconds; default: the section's, else 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 2_592_000))]
    pub lease_time: Option<u32>,
    /// Interface MTU (option 26); default: the link's `mtu` in `[network]`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 68))]
    pub mtu: Option<u16>,
    /// Classless static routes (option 121). When given, a default route via the
    /// router is added to them: clients that take option 121 ignore option 3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<StaticRoute>,
}

/// `first` to `last`, both included.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Range {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl Range {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Number of addresses.
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The addresses, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A static lease.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub mac: MacAddr,
    pub address: Ipv4Addr,
}

/// A route for option 121.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    /// Destination, host bits clear (`10.8.0.0/16`).
    pub to: Ipv4Net,
    /// Gateway, on the link's subnet.
    pub via: Ipv4Addr,
}

/// What the server runs: every served link, validated and with defaults filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhcpConfig {
    pub links: BTreeMap<String, LinkConfig>,
}

/// One served link, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// The Kiwi's address on the link: server identifier, replies' source.
    pub server: Ipv4Addr,
    /// The subnet served (the Kiwi's address's prefix).
    pub subnet: Ipv4Net,
    pub pools: Vec<Range>,
    /// Static leases: MAC -> address.
    pub hosts: BTreeMap<MacAddr, Ipv4Addr>,
    pub lease_time: u32,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub ntp: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    /// Option 121 as sent: the declared routes, then the default route via the router.
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Probe a new address with an ICMP echo before offering it.
    pub ping_check: bool,
}

impl LinkConfig {
    /// Whether `ip` is one this link hands out (in a pool or a static lease).
    pub fn serves(&self, ip: Ipv4Addr) -> bool {
        self.in_pool(ip) || self.hosts.values().any(|h| *h == ip)
    }

    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        self.pools.iter().any(|r| r.contains(ip))
    }

    /// The static address of `mac`, if it has one.
    pub fn host(&self, mac: &MacAddr) -> Option<Ipv4Addr> {
        self.hosts.get(mac).copied()
    }

    /// The MAC a static address is reserved for.
    pub fn reserved_for(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.hosts
            .iter()
            .find_map(|(mac, a)| (*a == ip).then_some(*mac))
    }
}

impl fmt::Display for DhcpConfig {
    /// A listing of what is served, kept in the generation's `rendered/dhcp/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[Ipv4Addr]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        for (name, link) in &self.links {
            writeln!(f, "link {name}")?;
            writeln!(f, "  subnet {} server {}", link.subnet, link.server)?;
            for pool in &link.pools {
                writeln!(f, "  pool {pool}")?;
            }
            for (mac, ip) in &link.hosts {
                writeln!(f, "  host {mac} {ip}")?;
            }
            writeln!(f, "  lease-time {}", link.lease_time)?;
            if let Some(router) = link.router {
                writeln!(f, "  router {router}")?;
            }
            writeln!(f, "  dns {}", list(&link.dns))?;
            if let Some(domain) = &link.domain {
                writeln!(f, "  domain {domain}")?;
            }
            if !link.ntp.is_empty() {
                writeln!(f, "  ntp {}", list(&link.ntp))?;
            }
            if let Some(mtu) = link.mtu {
                writeln!(f, "  mtu {mtu}")?;
            }
            if link.ping_check {
                writeln!(f, "  ping-check")?;
            }
            for (to, via) in &link.routes {
                writeln!(f, "  route {to} via {via}")?;
            }
        }
        Ok(())
    }
}

/// The configuration `doc` asks for: its `[dhcp]` section, checked against its
/// `[network]` section. No section: no link served.
pub fn effective(doc: &Document) -> Result<DhcpConfig, DhcpError> {
    let Some(section) = doc.section::<DhcpSection>(SECTION)? else {
        return Ok(DhcpConfig::default());
    };
    let net = doc
        .section::<Network>(network::SECTION)
        .map_err(|e| DhcpError(format!("cannot read [network]: {e}")))?
        .unwrap_or_default();
    compile_with_vips(&section, &net, &vips_by_link(doc))
}

/// The IPv4 virtual addresses `[vrrp]` holds, by link. None when `[vrrp]` does not
/// validate: the vrrp reconciler refuses that document with its own error.
fn vips_by_link(doc: &Document) -> BTreeMap<String, Vec<Ipv4Addr>> {
    let mut vips: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    let config = kowabunga_vrrp::model::effective(doc).ok().flatten();
    for inst in config.map(|c| c.instances).unwrap_or_default() {
        for vip in &inst.vips {
            if let IpAddr::V4(v4) = vip.addr {
                vips.entry(inst.link.clone()).or_default().push(v4);
            }
        }
    }
    vips
}

/// The links `doc` has served: the links of its `[dhcp]` section once it validates
/// against `[network]`, none when it has no section or one that does not validate (the
/// dhcp reconciler refuses that document with its own error). What Kiwi's baseline
/// firewall opens DHCP on.
pub fn served_links(doc: &Document) -> Vec<String> {
    effective(doc)
        .map(|config| config.links.into_keys().collect())
        .unwrap_or_default()
}

/// Validate `section` against `net` and fill in the defaults.
pub fn compile(section: &DhcpSection, net: &Network) -> Result<DhcpConfig, DhcpError> {
    compile_with_vips(section, net, &BTreeMap::new())
}

/// [`compile`] on a node holding the VRRP virtual addresses `vips` (by link): a link's
/// VIP in the served subnet is its default router and DNS server.
pub fn compile_with_vips(
    section: &DhcpSection,
    net: &Network,
    vips: &BTreeMap<String, Vec<Ipv4Addr>>,
) -> Result<DhcpConfig, DhcpError> {
    let err = |msg: String| Err(DhcpError(msg));
    if let Some(t) = section.lease_time {
        check_lease_time("lease_time", t)?;
    }
    if let Some(d) = &section.domain {
        check_domain("domain", d)?;
    }
    check_unicast("dns", &section.dns)?;
    check_unicast("ntp", &section.ntp)?;
    let mut links = BTreeMap::new();
    // Every pool seen so far, for overlaps across links.
    let mut all_pools: Vec<(String, Range)> = Vec::new();
    for (name, spec) in &section.links {
        let at = format!("links.{name}");
        if let Err(e) = check_ifname(name) {
            return err(format!("{at}: {e}"));
        }
        let Some(link) = net.link(name) else {
            return err(format!("{at}: no link {name} in [network]"));
        };
        if spec.pools.is_empty() && spec.hosts.is_empty() {
            return err(format!("{at}: no pools and no hosts: nothing to serve"));
        }
        // The subnet: the link's IPv4 address holding the first pool (or host).
        let v4: Vec<Ipv4Net> = link
            .addresses
            .iter()
            .filter_map(|p| match p.addr {
                IpAddr::V4(a) => Ipv4Net::new(a, p.len).ok(),
                IpAddr::V6(_) => None,
            })
            .collect();
        let probe = spec
            .pools
            .first()
            .map(|r| r.first)
            .or_else(|| spec.hosts.first().map(|h| h.address));
        let Some(iface) = probe.and_then(|ip| v4.iter().find(|n| n.contains(&ip)).copied()) else {
            let have: Vec<String> = v4.iter().map(ToString::to_string).collect();
            return err(format!(
                "{at}: link {name} has no IPv4 address in [network] whose subnet holds {} (it has: {})",
                probe.map_or_else(String::new, |ip| ip.to_string()),
                if have.is_empty() {
                    "none".to_owned()
                } else {
                    have.join(", ")
                }
            ));
        };
        let server = iface.addr();
        let subnet = iface.trunc();
        // Addresses no client may get: network, broadcast (but /31 and /32 have none).
        let special: Vec<Ipv4Addr> = if subnet.prefix_len() < 31 {
            vec![subnet.network(), subnet.broadcast(), server]
        } else {
            vec![server]
        };
        for (i, pool) in spec.pools.iter().enumerate() {
            let at = format!("{at}.pools[{i}]");
            if pool.first > pool.last {
                return err(format!(
                    "{at}: {pool}: first {} is after last {}",
                    pool.first, pool.last
                ));
            }
            if !subnet.contains(&pool.first) || !subnet.contains(&pool.last) {
                return err(format!(
                    "{at}: {pool} is not inside the link's subnet {subnet}"
                ));
            }
            if let Some(ip) = special.iter().find(|ip| pool.contains(**ip)) {
                let what = if *ip == server {
                    "the Kiwi's own address"
                } else if *ip == subnet.network() {
                    "the network address"
                } else {
                    "the broadcast address"
                };
                return err(format!("{at}: {pool} holds {ip}, {what}"));
            }
            if let Some((other, range)) = all_pools.iter().find(|(_, r)| r.overlaps(pool)) {
                return err(format!("{at}: {pool} overlaps pool {range} of {other}"));
            }
            all_pools.push((name.clone(), *pool));
        }
        let mut hosts: BTreeMap<MacAddr, Ipv4Addr> = BTreeMap::new();
        for (i, host) in spec.hosts.iter().enumerate() {
            let at = format!("{at}.hosts[{i}]");
            let ip = host.address;
            if !subnet.contains(&ip) {
                return err(format!(
                    "{at}: {ip} ({}) is not inside the link's subnet {subnet}",
                    host.mac
                ));
            }
            if special.contains(&ip) {
                return err(format!(
                    "{at}: {ip} is the network, broadcast or Kiwi's own address"
                ));
            }
            if let Some(pool) = spec.pools.iter().find(|r| r.contains(ip)) {
                return err(format!(
                    "{at}: {ip} is inside pool {pool} (static addresses must be outside the pools)"
                ));
            }
            if let Some(previous) = hosts.get(&host.mac) {
                return err(format!(
                    "{at}: MAC {} already has a static lease ({previous})",
                    host.mac
                ));
            }
            if let Some((mac, _)) = hosts.iter().find(|(_, a)| **a == ip) {
                return err(format!("{at}: {ip} is already reserved for {mac}"));
            }
            hosts.insert(host.mac, ip);
        }
        let lease_time = spec
            .lease_time
            .or(section.lease_time)
            .unwrap_or(DEFAULT_LEASE_TIME);
        check_lease_time(&format!("{at}.lease_time"), lease_time)?;
        // The gateway a pair keeps across a failover, when there is one.
        let gateway = vips
            .get(name)
            .and_then(|v| v.iter().copied().find(|vip| subnet.contains(vip)))
            .unwrap_or(server);
        let router = spec.router.unwrap_or(gateway);
        if !subnet.contains(&router) || special[..special.len() - 1].contains(&router) {
            return err(format!(
                "{at}.router: {router} is not a host of the link's subnet {subnet}"
            ));
        }
        let dns = match &spec.dns {
            Some(list) => list.clone(),
            None if !section.dns.is_empty() => section.dns.clone(),
            None => vec![gateway],
        };
        check_unicast(&format!("{at}.dns"), &dns)?;
        let domain = spec.domain.clone().or_else(|| section.domain.clone());
        if let Some(d) = &spec.domain {
            check_domain(&format!("{at}.domain"), d)?;
        }
        let ntp = spec.ntp.clone().unwrap_or_else(|| section.ntp.clone());
        check_unicast(&format!("{at}.ntp"), &ntp)?;
        let mtu = match spec.mtu {
            Some(m) => Some(m),
            None => link.mtu.and_then(|m| u16::try_from(m).ok()),
        };
        if let Some(m) = mtu
            && m < MIN_MTU
        {
            return err(format!("{at}.mtu: {m} is below {MIN_MTU}"));
        }
        let mut routes = Vec::new();
        for (i, route) in spec.routes.iter().enumerate() {
            let at = format!("{at}.routes[{i}]");
            if route.to.trunc() != route.to {
                return err(format!(
                    "{at}: {} has host bits set (write {})",
                    route.to,
                    route.to.trunc()
                ));
            }
            if !subnet.contains(&route.via) {
                return err(format!(
                    "{at}: gateway {} is not on the link's subnet {subnet}",
                    route.via
                ));
            }
            routes.push((route.to, route.via));
        }
        if !routes.is_empty() && !routes.iter().any(|(to, _)| to.prefix_len() == 0) {
            routes.push((Ipv4Net::default(), router));
        }
        links.insert(
            name.clone(),
            LinkConfig {
                server,
                subnet,
                pools: spec.pools.clone(),
                hosts,
                lease_time,
                router: Some(router),
                dns,
                domain,
                ntp,
                mtu,
                routes,
                ping_check: section.ping_check,
            },
        );
    }
    Ok(DhcpConfig { links })
}

fn check_lease_time(at: &str, t: u32) -> Result<(), DhcpError> {
    if (MIN_LEASE_TIME..=MAX_LEASE_TIME).contains(&t) {
        Ok(())
    } else {
        Err(DhcpError(format!(
            "{at}: {t} s is outside {MIN_LEASE_TIME}..={MAX_LEASE_TIME}"
        )))
    }
}

fn check_unicast(at: &str, list: &[Ipv4Addr]) -> Result<(), DhcpError> {
    for ip in list {
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return Err(DhcpError(format!("{at}: {ip} is not a unicast address")));
        }
    }
    Ok(())
}

/// A domain name as option 15 carries it: labels of letters, digits and `-`.
fn check_domain(at: &str, name: &str) -> Result<(), DhcpError> {
    let bad = |why: &str| Err(DhcpError(format!("{at}: {name:?} {why}")));
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return bad("is not 1 to 253 characters long");
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("has a label that is empty or longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
        {
            return bad("is not a domain name (letters, digits and '-' only)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_model::Format;

    const HEAD: &str = "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2027-01-01T00:00:00Z\"\n";
    const NET: &str = r#"
[[network.links]]
name = "eth1"
mtu = 9000
addresses = ["10.0.101.1/24", "fd00:101::1/64"]
[[network.links]]
name = "eth2"
addresses = ["192.168.7.1/24"]
[[network.links]]
name = "eth3"
"#;

    fn doc(body: &str) -> Document {
        Document::parse(format!("{HEAD}{NET}{body}").as_bytes(), Format::Toml).unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn absent_section_serves_nothing() {
        assert_eq!(effective(&doc("")).unwrap(), DhcpConfig::default());
    }

    /// What the baseline firewall opens DHCP on: exactly the links served, none for a
    /// section that is absent or refused.
    #[test]
    fn served_links_are_the_links_of_a_valid_section() {
        assert!(served_links(&doc("")).is_empty());
        let two = "[dhcp.links.eth2]\npools = [{ first = \"192.168.7.10\", last = \"192.168.7.20\" }]\n\
                   [dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:01:0a\", address = \"10.0.101.10\" }]\n";
        assert_eq!(served_links(&doc(two)), ["eth1", "eth2"]);
        let refused =
            "[dhcp.links.eth3]\npools = [{ first = \"10.0.3.10\", last = \"10.0.3.20\" }]\n";
        assert!(effective(&doc(refused)).is_err());
        assert!(served_links(&doc(refused)).is_empty());
    }

    /// On a pair, the link's VRRP address (in the served subnet) is the default router
    /// and DNS server: it survives a failover, the Kiwi's own address does not. An
    /// explicit router wins; a VIP of another link does not count.
    #[test]
    fn a_links_vip_is_the_default_router_and_dns() {
        let vrrp = "[vrrp]\npriority = 100\n\
                    [[vrrp.instance]]\nlink = \"eth1\"\nvrid = 1\nvips = [\"fd00:101::254/64\"]\n\
                    [[vrrp.instance]]\nlink = \"eth1\"\nvrid = 2\nvips = [\"10.0.101.254/24\"]\n\
                    [[vrrp.instance]]\nlink = \"eth2\"\nvrid = 3\nvips = [\"192.168.7.254/24\"]\n";
        let dhcp = "[dhcp.links.eth1]\npools = [{ first = \"10.0.101.100\", last = \"10.0.101.199\" }]\n\
                    [dhcp.links.eth2]\npools = [{ first = \"192.168.7.10\", last = \"192.168.7.20\" }]\nrouter = \"192.168.7.1\"\n";
        let cfg = effective(&doc(&format!("{dhcp}{vrrp}"))).unwrap();
        let eth1 = &cfg.links["eth1"];
        assert_eq!(eth1.router, Some(ip("10.0.101.254")));
        assert_eq!(eth1.dns, [ip("10.0.101.254")]);
        assert_eq!(
            eth1.server,
            ip("10.0.101.1"),
            "the server id stays the Kiwi's own"
        );
        let eth2 = &cfg.links["eth2"];
        assert_eq!(
            eth2.router,
            Some(ip("192.168.7.1")),
            "an explicit router wins"
        );
        assert_eq!(eth2.dns, [ip("192.168.7.254")]);
        // Without [vrrp]: the Kiwi's own address, as before.
        let alone = effective(&doc(dhcp)).unwrap();
        assert_eq!(alone.links["eth1"].router, Some(ip("10.0.101.1")));
    }

    #[test]
    fn defaults_come_from_the_link_and_the_section() {
        let cfg = effective(&doc(r#"
[dhcp]
domain = "acme.local"
ntp = ["10.0.0.3"]
[dhcp.links.eth1]
pools = [{ first = "10.0.101.100", last = "10.0.101.199" }]
hosts = [{ mac = "52:54:00:00:01:0A", address = "10.0.101.10" }]
routes = [{ to = "10.8.0.0/16", via = "10.0.101.254" }]
[dhcp.links.eth2]
lease_time = 600
dns = ["9.9.9.9"]
mtu = 1400
pools = [{ first = "192.168.7.10", last = "192.168.7.20" }]
"#))
        .unwrap();
        let eth1 = &cfg.links["eth1"];
        assert_eq!(eth1.server, ip("10.0.101.1"));
        assert_eq!(eth1.subnet.to_string(), "10.0.101.0/24");
        assert_eq!(eth1.lease_time, DEFAULT_LEASE_TIME);
        assert_eq!(eth1.router, Some(ip("10.0.101.1")));
        assert_eq!(eth1.dns, vec![ip("10.0.101.1")]);
        assert_eq!(eth1.domain.as_deref(), Some("acme.local"));
        assert_eq!(eth1.ntp, vec![ip("10.0.0.3")]);
        assert_eq!(eth1.mtu, Some(9000));
        assert!(eth1.ping_check);
        let mac: MacAddr = "52:54:00:00:01:0a".parse().unwrap();
        assert_eq!(eth1.host(&mac), Some(ip("10.0.101.10")));
        assert_eq!(eth1.reserved_for(ip("10.0.101.10")), Some(mac));
        assert!(eth1.serves(ip("10.0.101.150")) && eth1.serves(ip("10.0.101.10")));
        assert!(!eth1.serves(ip("10.0.101.11")));
        // The declared route, then the default route via the router.
        let routes: Vec<String> = eth1
            .routes
            .iter()
            .map(|(to, via)| format!("{to} via {via}"))
            .collect();
        assert_eq!(
            routes,
            ["10.8.0.0/16 via 10.0.101.254", "0.0.0.0/0 via 10.0.101.1"]
        );
        let eth2 = &cfg.links["eth2"];
        assert_eq!(eth2.lease_time, 600);
        assert_eq!(eth2.dns, vec![ip("9.9.9.9")]);
        assert_eq!(eth2.mtu, Some(1400));
        assert!(eth2.routes.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[dhcp]\nlease_tim = 5\n", "unknown field `lease_tim`"),
            ("[dhcp]\nlease_time = 5\n", "lease_time: 5 s is outside"),
            (
                "[dhcp.links.eth9]\npools = [{ first = \"10.0.101.100\", last = \"10.0.101.199\" }]\n",
                "links.eth9: no link eth9 in [network]",
            ),
            ("[dhcp.links.eth1]\n", "links.eth1: no pools and no hosts"),
            (
                "[dhcp.links.eth3]\npools = [{ first = \"10.0.3.100\", last = \"10.0.3.199\" }]\n",
                "links.eth3: link eth3 has no IPv4 address in [network] whose subnet holds 10.0.3.100 (it has: none)",
            ),
            (
                "[dhcp.links.eth1]\npools = [{ first = \"10.0.101.100\", last = \"10.0.102.9\" }]\n",
                "links.eth1.pools[0]: 10.0.101.100-10.0.102.9 is not inside the link's subnet 10.0.101.0/24",
            ),
            (
                "[dhcp.links.eth1]\npools = [{ first = \"10.0.101.100\", last = \"10.0.101.99\" }]\n",
                "links.eth1.pools[0]: 10.0.101.100-10.0.101.99: first 10.0.101.100 is after last",
            ),
            (
                "[dhcp.links.eth1]\npools = [{ first = \"10.0.101.1\", last = \"10.0.101.99\" }]\n",
                "holds 10.0.101.1, the Kiwi's own address",
            ),
            (
                "[dhcp.links.eth1]\npools = [{ first = \"10.0.101.200\", last = \"10.0.101.255\" }]\n",
                "the broadcast address",
            ),
            (
                "[dhcp.links.eth1]\npools = [{ first = \"10.0.101.100\", last = \"10.0.101.199\" }, { first = \"10.0.101.150\", last = \"10.0.101.160\" }]\n",
                "links.eth1.pools[1]: 10.0.101.150-10.0.101.160 overlaps pool 10.0.101.100-10.0.101.199 of eth1",
            ),
            (
                "[dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:00:01\", address = \"10.0.101.10\" }, { mac = \"52:54:00:00:00:02\", address = \"10.0.9.10\" }]\n",
                "links.eth1.hosts[1]: 10.0.9.10 (52:54:00:00:00:02) is not inside the link's subnet",
            ),
            (
                "[dhcp.links.eth1]\npools = [{ first = \"10.0.101.100\", last = \"10.0.101.199\" }]\nhosts = [{ mac = \"52:54:00:00:00:01\", address = \"10.0.101.150\" }]\n",
                "links.eth1.hosts[0]: 10.0.101.150 is inside pool 10.0.101.100-10.0.101.199",
            ),
            (
                "[dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:00:01\", address = \"10.0.101.10\" }, { mac = \"52:54:00:00:00:01\", address = \"10.0.101.11\" }]\n",
                "links.eth1.hosts[1]: MAC 52:54:00:00:00:01 already has a static lease (10.0.101.10)",
            ),
            (
                "[dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:00:01\", address = \"10.0.101.10\" }, { mac = \"52:54:00:00:00:02\", address = \"10.0.101.10\" }]\n",
                "links.eth1.hosts[1]: 10.0.101.10 is already reserved for 52:54:00:00:00:01",
            ),
            (
                "[dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:00:01\", address = \"10.0.101.10\" }]\nrouter = \"10.0.9.1\"\n",
                "links.eth1.router: 10.0.9.1 is not a host",
            ),
            (
                "[dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:00:01\", address = \"10.0.101.10\" }]\nroutes = [{ to = \"10.8.0.1/16\", via = \"10.0.101.254\" }]\n",
                "links.eth1.routes[0]: 10.8.0.1/16 has host bits set",
            ),
            (
                "[dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:00:01\", address = \"10.0.101.10\" }]\nroutes = [{ to = \"10.8.0.0/16\", via = \"10.0.9.254\" }]\n",
                "links.eth1.routes[0]: gateway 10.0.9.254 is not on the link's subnet",
            ),
            (
                "[dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:00:01\", address = \"10.0.101.10\" }]\ndomain = \"a..b\"\n",
                "links.eth1.domain: \"a..b\"",
            ),
            (
                "[dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:00:01\", address = \"10.0.101.10\" }]\nmtu = 40\n",
                "links.eth1.mtu: 40 is below 68",
            ),
            (
                "[dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:00:01\", address = \"10.0.101.10\" }]\ndns = [\"224.0.0.1\"]\n",
                "links.eth1.dns: 224.0.0.1 is not a unicast",
            ),
            (
                "[dhcp.links.eth1]\nhosts = [{ mac = \"52:54:00:00:00:0z\", address = \"10.0.101.10\" }]\n",
                "is not hex",
            ),
        ];
        for (body, want) in cases {
            let err = effective(&doc(body)).unwrap_err().to_string();
            assert!(err.starts_with("[dhcp] "), "{body}: {err}");
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn pools_of_different_links_must_not_overlap() {
        let net = r#"
[[network.links]]
name = "eth1"
addresses = ["10.0.0.1/16"]
[[network.links]]
name = "eth2"
addresses = ["10.0.5.1/24"]
"#;
        let body = "[dhcp.links.eth1]\npools = [{ first = \"10.0.5.10\", last = \"10.0.5.20\" }]\n[dhcp.links.eth2]\npools = [{ first = \"10.0.5.15\", last = \"10.0.5.30\" }]\n";
        let d = Document::parse(format!("{HEAD}{net}{body}").as_bytes(), Format::Toml).unwrap();
        let err = effective(&d).unwrap_err().to_string();
        assert!(
            err.contains(
                "links.eth2.pools[0]: 10.0.5.15-10.0.5.30 overlaps pool 10.0.5.10-10.0.5.20 of eth1"
            ),
            "{err}"
        );
    }

    #[test]
    fn range_arithmetic() {
        let r = Range {
            first: ip("10.0.0.254"),
            last: ip("10.0.1.1"),
        };
        assert_eq!(r.len(), 4);
        assert_eq!(
            r.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]
        );
        assert!(r.overlaps(&Range {
            first: ip("10.0.1.1"),
            last: ip("10.0.1.9")
        }));
        assert!(!r.overlaps(&Range {
            first: ip("10.0.1.2"),
            last: ip("10.0.1.9")
        }));
    }

    #[test]
    fn schema_lists_exactly_the_fields_serde_accepts() {
        let schema = serde_json::to_value(schemars::schema_for!(DhcpSection)).unwrap();
        assert_eq!(schema["additionalProperties"], false, "{schema:#}");
        let keys = |v: &serde_json::Value| -> std::collections::BTreeSet<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        let full = DhcpSection {
            lease_time: Some(600),
            domain: Some("acme.local".into()),
            dns: vec![ip("10.0.0.53")],
            ntp: vec![ip("10.0.0.123")],
            ping_check: false,
            links: BTreeMap::from([(
                "eth1".to_owned(),
                LinkSection {
                    pools: vec![Range {
                        first: ip("10.0.101.100"),
                        last: ip("10.0.101.199"),
                    }],
                    hosts: vec![Host {
                        mac: "52:54:00:00:00:01".parse().unwrap(),
                        address: ip("10.0.101.10"),
                    }],
                    router: Some(ip("10.0.101.1")),
                    dns: Some(vec![ip("10.0.101.1")]),
                    domain: Some("lan.acme.local".into()),
                    ntp: Some(vec![]),
                    lease_time: Some(60),
                    mtu: Some(1500),
                    routes: vec![StaticRoute {
                        to: "10.8.0.0/16".parse().unwrap(),
                        via: ip("10.0.101.254"),
                    }],
                },
            )]),
        };
        let table = toml::Table::try_from(&full).unwrap();
        let back: DhcpSection = table.clone().try_into().unwrap();
        assert_eq!(back, full);
        assert_eq!(keys(&schema["properties"]), table.keys().cloned().collect());
        let link_ref = schema["$defs"]["LinkSection"].clone();
        let link_table = table["links"]["eth1"].as_table().unwrap();
        assert_eq!(
            keys(&link_ref["properties"]),
            link_table.keys().cloned().collect()
        );
        assert_eq!(link_ref["additionalProperties"], false);
        assert_eq!(schema["properties"]["lease_time"]["minimum"], 60);
        // And the whole section compiles against a matching [network].
        let mut wrapped = toml::Table::new();
        wrapped.insert(SECTION.to_owned(), toml::Value::Table(table));
        let d = doc(&toml::to_string(&wrapped).unwrap());
        assert_eq!(effective(&d).unwrap().links["eth1"].lease_time, 60);
    }
}
