//! The `[network]` section: links, addresses, routes and the sysctls a router needs.
//!
//! Pure types and validation, no I/O. Values that have a syntax of their own (prefixes,
//! MAC addresses) are parsed while deserializing, so their errors carry the key's path
//! (`[network] links[0].addresses[1]: ...`); rules that tie several objects together
//! (a VLAN's parent must be declared, names are unique...) are checked by
//! [`Network::validate`], whose errors name the object.
//!
//! ```toml
//! [network]
//! ip_forward = true
//!
//! [[network.links]]
//! name = "eth0"                 # kind = "physical" (default): a link the agent never creates
//! mac = "52:54:00:12:34:56"     # optional: find the link by MAC and rename it to `name`
//! mtu = 9000
//! rp_filter = "loose"
//!
//! [[network.links]]
//! name = "vlan101"
//! kind = "vlan"
//! parent = "eth0"
//! id = 101
//! addresses = ["10.0.101.1/24", "fd00:101::1/64"]
//!
//! [[network.routes]]
//! to = "default"
//! via = "10.0.101.254"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, de};

/// The name of the section this module models.
pub const SECTION: &str = "network";

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// The main routing table (`ip route` without `table`).
pub const MAIN_TABLE: u32 = 254;

/// The `[network]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `net.ipv4.ip_forward` and `net.ipv6.conf.all.forwarding`; absent = not managed.
    #[serde(default)]
    pub ip_forward: Option<bool>,
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// What kind of link, and so whether the agent creates it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A link that exists without the agent (a NIC, or anything created by someone
    /// else that the document wants configured). Never created nor deleted.
    #[default]
    Physical,
    /// An 802.1Q VLAN on `parent`, with `id`.
    Vlan,
    /// A bridge with `ports`.
    Bridge,
    /// A bond with `mode` and `members`.
    Bond,
    /// One end of a veth pair; the other end is `peer`.
    Veth,
}

impl LinkKind {
    /// The kernel's name of the kind (`IFLA_INFO_KIND`), `None` for physical links.
    pub fn kernel_kind(self) -> Option<&'static str> {
        match self {
            LinkKind::Physical => None,
            LinkKind::Vlan => Some("vlan"),
            LinkKind::Bridge => Some("bridge"),
            LinkKind::Bond => Some("bond"),
            LinkKind::Veth => Some("veth"),
        }
    }

    /// Whether the agent creates (and so may delete) links of this kind.
    pub fn is_virtual(self) -> bool {
        self != LinkKind::Physical
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kernel_kind().unwrap_or("physical"))
    }
}

/// Bonding modes, spelled as in `ip link add ... type bond mode MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum BondMode {
    #[serde(rename = "balance-rr")]
    BalanceRr,
    #[serde(rename = "active-backup")]
    ActiveBackup,
    #[serde(rename = "balance-xor")]
    BalanceXor,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(rename = "802.3ad")]
    Ieee8023ad,
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    #[serde(rename = "balance-alb")]
    BalanceAlb,
}

impl BondMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Ieee8023ad => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }
}

/// Reverse-path filtering (`net.ipv4.conf.<link>.rp_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpFilter {
    Off,
    Strict,
    Loose,
}

impl RpFilter {
    /// The sysctl value.
    pub fn value(self) -> u8 {
        match self {
            RpFilter::Off => 0,
            RpFilter::Strict => 1,
            RpFilter::Loose => 2,
        }
    }
}

/// One link. Which keys are allowed depends on `kind`; [`Network::validate`] says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub name: String,
    #[serde(default)]
    pub kind: LinkKind,
    /// Physical links only: the link is found by this MAC and renamed to `name`.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Absent = not managed.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Administrative state; declared links are up unless told otherwise.
    #[serde(default = "yes")]
    pub up: bool,
    /// Static addresses, `ip/len` (IPv4 or IPv6).
    #[serde(default)]
    pub addresses: Vec<IfAddr>,
    /// Absent = not managed.
    #[serde(default)]
    pub rp_filter: Option<RpFilter>,
    /// `net.ipv6.conf.<link>.accept_ra`; absent = not managed.
    #[serde(default)]
    pub accept_ra: Option<bool>,
    /// VLAN: the link it is stacked on.
    #[serde(default)]
    pub parent: Option<String>,
    /// VLAN: its id, 1 to 4094.
    #[serde(default)]
    pub id: Option<u32>,
    /// Bridge: its ports (declared links).
    #[serde(default)]
    pub ports: Vec<String>,
    /// Bridge: 802.1Q VLAN filtering; absent = kernel default (off).
    #[serde(default)]
    pub vlan_filtering: Option<bool>,
    /// Bond: its mode.
    #[serde(default)]
    pub mode: Option<BondMode>,
    /// Bond: its members (declared links).
    #[serde(default)]
    pub members: Vec<String>,
    /// Veth: the name of the other end.
    #[serde(default)]
    pub peer: Option<String>,
}

fn yes() -> bool {
    true
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination: a network prefix, or `default` (the family then comes from `via`).
    pub to: Destination,
    /// Gateway; must lie in a subnet of the route's link (or of any link without `dev`).
    #[serde(default)]
    pub via: Option<IpAddr>,
    /// Output link (a declared link).
    #[serde(default)]
    pub dev: Option<String>,
    /// Route priority; absent = 0 for IPv4, 1024 for IPv6 (the kernel's defaults).
    #[serde(default)]
    pub metric: Option<u32>,
    /// Routing table; absent = main (254).
    #[serde(default)]
    pub table: Option<u32>,
}

/// What identifies a route in the kernel, as far as this agent is concerned: two
/// routes with the same key cannot coexist, routes with different keys can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub table: u32,
    pub dst: Prefix,
    pub metric: u32,
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dst.len == 0 {
            write!(f, "default")?;
            if self.dst.addr.is_ipv6() {
                write!(f, " (IPv6)")?;
            }
        } else {
            write!(f, "{}", self.dst)?;
        }
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        if self.metric != default_metric(self.dst.addr) {
            write!(f, " metric {}", self.metric)?;
        }
        Ok(())
    }
}

/// The metric the kernel gives a route added without one.
pub fn default_metric(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => 1024,
    }
}

impl Route {
    /// The destination prefix, with `default` resolved to the gateway's family.
    pub fn destination(&self) -> Prefix {
        match self.to {
            Destination::Prefix(p) => p,
            Destination::Default => match self.via {
                Some(IpAddr::V6(_)) => Prefix::unspecified_v6(),
                _ => Prefix::unspecified_v4(),
            },
        }
    }

    pub fn key(&self) -> RouteKey {
        let dst = self.destination();
        RouteKey {
            table: self.table.unwrap_or(MAIN_TABLE),
            dst,
            metric: self.metric.unwrap_or_else(|| default_metric(dst.addr)),
        }
    }
}

/// A route destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Default,
    Prefix(Prefix),
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "default" {
            return Ok(Destination::Default);
        }
        let p: Prefix = text.parse().map_err(de::Error::custom)?;
        if p.network() != p.addr {
            return Err(de::Error::custom(format!(
                "route destination {p} has host bits set (did you mean {}/{}?)",
                p.network(),
                p.len
            )));
        }
        Ok(Destination::Prefix(p))
    }
}

/// An address and a prefix length: `10.0.0.1/24`, `fd00::1/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

/// An interface address (host bits allowed, they are the point).
pub type IfAddr = Prefix;

impl Prefix {
    pub fn unspecified_v4() -> Self {
        Prefix {
            addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            len: 0,
        }
    }
    pub fn unspecified_v6() -> Self {
        Prefix {
            addr: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            len: 0,
        }
    }

    /// Maximum prefix length of the address family.
    pub fn max_len(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// The address with its host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        Prefix {
            addr: ip,
            len: self.len,
        }
        .network()
            == self.network()
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            format!("`{s}` is not a prefix (expected address/length, e.g. 10.0.0.1/24)")
        })?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}`: `{addr}` is not an IP address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("`{s}`: `{len}` is not a prefix length"))?;
        if len > Prefix::max_len(addr) {
            return Err(format!(
                "`{s}`: prefix length {len} exceeds {}",
                Prefix::max_len(addr)
            ));
        }
        Ok(Prefix { addr, len })
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// An Ethernet address, `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!(
                "`{s}` is not a MAC address (expected six hex pairs)"
            ));
        }
        for (byte, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(format!(
                    "`{s}` is not a MAC address (expected six hex pairs)"
                ));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("`{s}` is not a MAC address (`{part}` is not hex)"))?;
        }
        Ok(MacAddr(out))
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// Whether `name` is an interface name the kernel accepts and that is safe to put in
/// generated files (nft scripts, sysctl paths).
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface name `{name}` is longer than {MAX_IFNAME_LEN} bytes"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "interface name `{name}` contains {c:?} (allowed: letters, digits, - _ .)"
        ));
    }
    Ok(())
}

/// Why a `[network]` section is not acceptable; every problem found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub Vec<String>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl std::error::Error for Invalid {}

impl Network {
    /// The links by name.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// Every interface name the section declares or creates: the links, and the far
    /// ends of veth pairs.
    pub fn interface_names(&self) -> BTreeSet<&str> {
        let mut names: BTreeSet<&str> = self.links.iter().map(|l| l.name.as_str()).collect();
        names.extend(self.links.iter().filter_map(|l| l.peer.as_deref()));
        names
    }

    /// For each link that is a bridge port or bond member, its master.
    pub fn masters(&self) -> BTreeMap<&str, &str> {
        let mut out = BTreeMap::new();
        for l in &self.links {
            for p in l.ports.iter().chain(&l.members) {
                out.insert(p.as_str(), l.name.as_str());
            }
        }
        out
    }

    /// Check the rules that tie objects together. Errors name the object.
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut errs: Vec<String> = Vec::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for l in &self.links {
            let n = l.name.as_str();
            let k = l.kind;
            if let Err(e) = check_ifname(n) {
                errs.push(format!("link {n:?}: {e}"));
            }
            if !seen.insert(n) {
                errs.push(format!("{n}: duplicate interface name"));
            }
            let misplaced = [
                ("mac", LinkKind::Physical, l.mac.is_some()),
                ("parent", LinkKind::Vlan, l.parent.is_some()),
                ("id", LinkKind::Vlan, l.id.is_some()),
                ("ports", LinkKind::Bridge, !l.ports.is_empty()),
                (
                    "vlan_filtering",
                    LinkKind::Bridge,
                    l.vlan_filtering.is_some(),
                ),
                ("mode", LinkKind::Bond, l.mode.is_some()),
                ("members", LinkKind::Bond, !l.members.is_empty()),
                ("peer", LinkKind::Veth, l.peer.is_some()),
            ];
            for (field, kind, present) in misplaced {
                if present && k != kind {
                    errs.push(format!("{n}: `{field}` is only for {kind} links, not {k}"));
                }
            }
            match k {
                LinkKind::Vlan => {
                    match l.id {
                        None => errs.push(format!("{n}: a vlan link needs `id`")),
                        Some(id) if !(1..=4094).contains(&id) => {
                            errs.push(format!("{n}: VLAN id {id} is out of range (1 to 4094)"))
                        }
                        Some(_) => {}
                    }
                    match l.parent.as_deref() {
                        None => errs.push(format!("{n}: a vlan link needs `parent`")),
                        Some(p) if p == n => {
                            errs.push(format!("{n}: a VLAN cannot be its own parent"))
                        }
                        Some(p) if self.link(p).is_none() => errs.push(format!(
                            "{n}: parent {p} is not declared in [[network.links]]"
                        )),
                        Some(_) => {}
                    }
                }
                LinkKind::Bond => {
                    if l.mode.is_none() {
                        errs.push(format!("{n}: a bond needs `mode`"));
                    }
                }
                LinkKind::Veth => match l.peer.as_deref() {
                    None => errs.push(format!("{n}: a veth link needs `peer`")),
                    Some(p) => {
                        if let Err(e) = check_ifname(p) {
                            errs.push(format!("{n}: peer: {e}"));
                        }
                        if p == n {
                            errs.push(format!("{n}: a veth cannot be its own peer"));
                        }
                        if let Some(other) = self.link(p)
                            && (other.kind != LinkKind::Veth || other.peer.as_deref() != Some(n))
                        {
                            errs.push(format!(
                                "{n}: peer {p} is declared, so it must be a veth whose peer is {n}"
                            ));
                        }
                    }
                },
                LinkKind::Physical | LinkKind::Bridge => {}
            }
            if let Some(mtu) = l.mtu
                && !(68..=65535).contains(&mtu)
            {
                errs.push(format!("{n}: MTU {mtu} is out of range (68 to 65535)"));
            }
            let mut addrs = BTreeSet::new();
            for a in &l.addresses {
                if !addrs.insert(a.addr) {
                    errs.push(format!("{n}: address {} is listed twice", a.addr));
                }
                if a.addr.is_unspecified() || a.addr.is_multicast() {
                    errs.push(format!("{n}: {a} is not a unicast address"));
                }
            }
        }
        // Veth peers that are not declared links still take a name.
        for l in &self.links {
            if let Some(p) = l.peer.as_deref()
                && self.link(p).is_none()
                && !seen.insert(p)
            {
                errs.push(format!(
                    "{p}: duplicate interface name (veth peer of {})",
                    l.name
                ));
            }
        }
        // Ports and members: declared, not the master itself, one master each.
        let mut master_of: BTreeMap<&str, &str> = BTreeMap::new();
        for l in &self.links {
            for p in l.ports.iter().chain(&l.members) {
                let what = if l.kind == LinkKind::Bond {
                    "member"
                } else {
                    "port"
                };
                match self.link(p) {
                    None => errs.push(format!(
                        "{}: {what} {p} is not declared in [[network.links]]",
                        l.name
                    )),
                    Some(pl) if pl.name == l.name => {
                        errs.push(format!("{}: cannot be its own {what}", l.name))
                    }
                    Some(pl)
                        if l.kind == LinkKind::Bond
                            && pl.kind != LinkKind::Physical
                            && pl.kind != LinkKind::Veth =>
                    {
                        errs.push(format!(
                            "{}: member {p} is a {}; bond members are physical or veth links",
                            l.name, pl.kind
                        ))
                    }
                    Some(_) => {}
                }
                if let Some(prev) = master_of.insert(p.as_str(), l.name.as_str())
                    && prev != l.name
                {
                    errs.push(format!("{p}: enslaved to both {prev} and {}", l.name));
                }
            }
        }
        // Routes.
        let mut keys = BTreeSet::new();
        for r in &self.routes {
            let key = r.key();
            let what = format!("route {key}");
            if r.via.is_none() && r.dev.is_none() {
                errs.push(format!("{what}: needs `via`, `dev` or both"));
            }
            if let Some(via) = r.via {
                if via.is_ipv4() != key.dst.addr.is_ipv4() {
                    errs.push(format!(
                        "{what}: gateway {via} is not of the destination's family"
                    ));
                }
                if via.is_unspecified() || via.is_multicast() {
                    errs.push(format!("{what}: gateway {via} is not a unicast address"));
                }
            }
            if let Some(dev) = r.dev.as_deref() {
                if !self.interface_names().contains(dev) {
                    errs.push(format!(
                        "{what}: dev {dev} is not declared in [[network.links]]"
                    ));
                } else if self.link(dev).is_some_and(|l| !l.up) {
                    errs.push(format!("{what}: dev {dev} is declared down (up = false)"));
                }
            }
            match r.table {
                Some(0) => errs.push(format!("{what}: table 0 is not a routing table")),
                Some(255) => errs.push(format!("{what}: table 255 (local) is the kernel's")),
                _ => {}
            }
            if !keys.insert(key) {
                errs.push(format!("{what}: declared twice"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Invalid(errs))
        }
    }

    /// The declared addresses of `dev` (or of every link), for gateway checks.
    pub fn addresses_of<'a>(&'a self, dev: Option<&'a str>) -> impl Iterator<Item = Prefix> + 'a {
        self.links
            .iter()
            .filter(move |l| dev.is_none_or(|d| d == l.name))
            .flat_map(|l| l.addresses.iter().copied())
    }
}

/// Whether a route's gateway lies in one of `subnets` (the addresses its link will
/// have). Routes without a gateway, and IPv6 link-local gateways (always on-link), pass.
pub fn gateway_reachable(route: &Route, subnets: impl IntoIterator<Item = Prefix>) -> bool {
    match route.via {
        None => true,
        Some(IpAddr::V6(v6)) if (v6.segments()[0] & 0xffc0) == 0xfe80 => route.dev.is_some(),
        Some(via) => subnets.into_iter().any(|p| p.contains(via)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Network, String> {
        toml::from_str::<Network>(text).map_err(|e| e.to_string())
    }

    fn invalid(text: &str) -> String {
        let n = parse(text).unwrap();
        n.validate().unwrap_err().to_string()
    }

    const FULL: &str = r#"
ip_forward = true
[[links]]
name = "eth0"
mac = "52:54:00:12:34:56"
mtu = 9000
rp_filter = "loose"
accept_ra = false
[[links]]
name = "eth1"
[[links]]
name = "eth2"
[[links]]
name = "bond0"
kind = "bond"
mode = "802.3ad"
members = ["eth1", "eth2"]
[[links]]
name = "vlan101"
kind = "vlan"
parent = "bond0"
id = 101
addresses = ["10.0.101.1/24", "fd00:101::1/64"]
[[links]]
name = "br0"
kind = "bridge"
ports = ["ve0"]
vlan_filtering = true
addresses = ["192.168.0.1/24"]
[[links]]
name = "ve0"
kind = "veth"
peer = "ve1"
up = false
[[routes]]
to = "default"
via = "10.0.101.254"
[[routes]]
to = "10.9.0.0/16"
via = "192.168.0.254"
dev = "br0"
metric = 10
table = 100
[[routes]]
to = "default"
via = "fd00:101::fe"
"#;

    #[test]
    fn full_example_is_valid() {
        let n = parse(FULL).unwrap();
        n.validate().unwrap();
        assert_eq!(n.links[0].mac.unwrap().to_string(), "52:54:00:12:34:56");
        assert!(n.links[1].up && !n.links[6].up);
        assert_eq!(n.routes[0].key().dst, Prefix::unspecified_v4());
        assert_eq!(n.routes[0].key().metric, 0);
        assert_eq!(n.routes[2].key().metric, 1024);
        assert_eq!(
            n.routes[1].key().to_string(),
            "10.9.0.0/16 table 100 metric 10"
        );
        assert_eq!(
            n.interface_names().into_iter().collect::<Vec<_>>(),
            [
                "bond0", "br0", "eth0", "eth1", "eth2", "ve0", "ve1", "vlan101"
            ]
        );
        assert_eq!(n.masters().get("eth1"), Some(&"bond0"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("[[links]]\nname = \"eth0\"\nmtu2 = 1\n").unwrap_err();
        assert!(e.contains("unknown field `mtu2`"), "{e}");
        let e = parse("forwarding = true\n").unwrap_err();
        assert!(e.contains("unknown field `forwarding`"), "{e}");
    }

    #[test]
    fn bad_prefixes_are_refused_while_parsing() {
        for (addr, want) in [
            ("10.0.0.1/33", "prefix length 33 exceeds 32"),
            ("10.0.0.1", "is not a prefix"),
            ("10.0.0.300/24", "is not an IP address"),
            ("fd00::1/129", "exceeds 128"),
            ("10.0.0.1/x", "is not a prefix length"),
        ] {
            let e = parse(&format!(
                "[[links]]\nname = \"eth0\"\naddresses = [\"{addr}\"]\n"
            ))
            .unwrap_err();
            assert!(e.contains(want), "{addr}: {e}");
        }
        let e = parse("[[routes]]\nto = \"10.1.2.3/16\"\ndev = \"eth0\"\n").unwrap_err();
        assert!(
            e.contains("host bits set (did you mean 10.1.0.0/16?)"),
            "{e}"
        );
        let e = parse("[[links]]\nname = \"eth0\"\nmac = \"52:54:00:12:34\"\n").unwrap_err();
        assert!(e.contains("not a MAC address"), "{e}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let e = invalid("[[links]]\nname = \"eth0\"\n[[links]]\nname = \"eth0\"\n");
        assert!(e.contains("eth0: duplicate interface name"), "{e}");
        let e = invalid(
            "[[links]]\nname = \"eth0\"\n[[links]]\nname = \"v0\"\nkind = \"veth\"\npeer = \"eth0\"\n",
        );
        assert!(
            e.contains("peer eth0 is declared, so it must be a veth"),
            "{e}"
        );
        let e = invalid(
            "[[links]]\nname = \"a\"\nkind = \"veth\"\npeer = \"x\"\n[[links]]\nname = \"b\"\nkind = \"veth\"\npeer = \"x\"\n",
        );
        assert!(
            e.contains("x: duplicate interface name (veth peer of b)"),
            "{e}"
        );
    }

    #[test]
    fn vlan_rules() {
        let base = "[[links]]\nname = \"eth0\"\n[[links]]\nname = \"vlan5000\"\nkind = \"vlan\"\nparent = \"eth0\"\n";
        assert!(
            invalid(&format!("{base}id = 5000\n"))
                .contains("vlan5000: VLAN id 5000 is out of range (1 to 4094)")
        );
        assert!(invalid(&format!("{base}id = 0\n")).contains("out of range"));
        assert!(invalid(base).contains("needs `id`"));
        let e = invalid(
            "[[links]]\nname = \"vlan101\"\nkind = \"vlan\"\nparent = \"eth9\"\nid = 101\n",
        );
        assert!(e.contains("vlan101: parent eth9 is not declared"), "{e}");
        let e = invalid("[[links]]\nname = \"eth0\"\nid = 3\n");
        assert!(
            e.contains("eth0: `id` is only for vlan links, not physical"),
            "{e}"
        );
    }

    #[test]
    fn kind_specific_keys_and_members() {
        let e = invalid(
            "[[links]]\nname = \"br0\"\nkind = \"bridge\"\nports = [\"eth7\"]\nmode = \"802.3ad\"\n",
        );
        assert!(e.contains("br0: port eth7 is not declared"), "{e}");
        assert!(e.contains("br0: `mode` is only for bond links"), "{e}");
        let e = invalid("[[links]]\nname = \"bond0\"\nkind = \"bond\"\n");
        assert!(e.contains("bond0: a bond needs `mode`"), "{e}");
        let e = invalid(
            "[[links]]\nname = \"e\"\n[[links]]\nname = \"b1\"\nkind = \"bridge\"\nports = [\"e\"]\n[[links]]\nname = \"b2\"\nkind = \"bridge\"\nports = [\"e\"]\n",
        );
        assert!(e.contains("e: enslaved to both b1 and b2"), "{e}");
        let e = invalid("[[links]]\nname = \"e\"\nmtu = 20\n");
        assert!(e.contains("MTU 20 is out of range"), "{e}");
        let e = invalid("[[links]]\nname = \"this-name-is-too-long\"\n");
        assert!(e.contains("longer than 15 bytes"), "{e}");
        let e = invalid("[[links]]\nname = \"a\\\"b\"\n");
        assert!(e.contains("contains '\"'"), "{e}");
    }

    #[test]
    fn route_rules() {
        let link = "[[links]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/24\"]\n";
        let e = invalid(&format!("{link}[[routes]]\nto = \"10.1.0.0/16\"\n"));
        assert!(
            e.contains("route 10.1.0.0/16: needs `via`, `dev` or both"),
            "{e}"
        );
        let e = invalid(&format!(
            "{link}[[routes]]\nto = \"10.1.0.0/16\"\nvia = \"fd00::1\"\n"
        ));
        assert!(e.contains("not of the destination's family"), "{e}");
        let e = invalid(&format!(
            "{link}[[routes]]\nto = \"10.1.0.0/16\"\ndev = \"eth3\"\n"
        ));
        assert!(e.contains("dev eth3 is not declared"), "{e}");
        let e = invalid(
            "[[links]]\nname = \"eth0\"\nup = false\n[[routes]]\nto = \"10.1.0.0/16\"\ndev = \"eth0\"\n",
        );
        assert!(
            e.contains("route 10.1.0.0/16: dev eth0 is declared down"),
            "{e}"
        );
        let e = invalid(&format!(
            "{link}[[routes]]\nto = \"10.1.0.0/16\"\ndev = \"eth0\"\n[[routes]]\nto = \"10.1.0.0/16\"\nvia = \"10.0.0.2\"\n"
        ));
        assert!(e.contains("route 10.1.0.0/16: declared twice"), "{e}");
        let n = parse(&format!(
            "{link}[[routes]]\nto = \"default\"\nvia = \"10.9.9.9\"\n"
        ))
        .unwrap();
        n.validate().unwrap();
        assert!(!gateway_reachable(&n.routes[0], n.addresses_of(None)));
        let n = parse(&format!(
            "{link}[[routes]]\nto = \"default\"\nvia = \"10.0.0.254\"\n"
        ))
        .unwrap();
        assert!(gateway_reachable(&n.routes[0], n.addresses_of(None)));
    }

    #[test]
    fn prefix_arithmetic() {
        let p: Prefix = "10.1.2.3/16".parse().unwrap();
        assert_eq!(p.network().to_string(), "10.1.0.0");
        assert!(p.contains("10.1.255.1".parse().unwrap()));
        assert!(!p.contains("10.2.0.1".parse().unwrap()));
        assert!(!p.contains("fd00::1".parse().unwrap()));
        let z: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(z.contains("1.2.3.4".parse().unwrap()));
        let v6: Prefix = "fd00:1::1/64".parse().unwrap();
        assert_eq!(v6.network().to_string(), "fd00:1::");
        let full: Prefix = "fd00::1/128".parse().unwrap();
        assert_eq!(full.network(), full.addr);
    }
}
