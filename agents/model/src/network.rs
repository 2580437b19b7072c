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

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The name of the section this module models.
pub const SECTION: &str = "network";

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// The main routing table (`ip route` without `table`).
pub const MAIN_TABLE: u32 = 254;

/// What [`check_ifname`] accepts, for the JSON Schema (`.` and `..` aside).
pub const IFNAME_PATTERN: &str = r"^[A-Za-z0-9._-]{1,15}$";

/// An IPv4 address in dotted quad without leading zeros (what `Ipv4Addr` parses).
const IPV4: &str = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}";
/// The characters of an IPv6 address with at least one colon: looser than `Ipv6Addr`,
/// which the model applies anyway.
const IPV6: &str = r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*";
/// Prefix lengths 0-32 and 0-128.
const LEN4: &str = r"(3[0-2]|[12]?[0-9])";
const LEN6: &str = r"(12[0-8]|1[01][0-9]|[1-9]?[0-9])";

/// `address/len`, for the JSON Schema of [`Prefix`].
pub fn prefix_pattern() -> String {
    format!("^({IPV4}/{LEN4}|{IPV6}/{LEN6})$")
}

/// The `[network]` section.
/// Its JSON Schema is `schemars::schema_for!(Network)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `net.ipv4.ip_forward` and `net.ipv6.conf.all.forwarding`; absent = not managed.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_forward: Option<bool>,
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// What kind of link, and so whether the agent creates it.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    JsonSchema,
)]
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
    /// An XFRM interface with `if_id` on `parent` (the link its packets leave by):
    /// routes into it send traffic through the IPsec SAs of the same `if_id`
    /// (strongSwan's `if_id_in`/`if_id_out`).
    Xfrm,
    /// A WireGuard interface: its key, port and peers are the `[wireguard]`
    /// section's (Kiwi), its addresses, MTU and routes this section's.
    Wireguard,
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
            LinkKind::Xfrm => Some("xfrm"),
            LinkKind::Wireguard => Some("wireguard"),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Link {
    #[schemars(pattern(IFNAME_PATTERN))]
    pub name: String,
    #[serde(default)]
    pub kind: LinkKind,
    /// Physical link: the link is found by this MAC and renamed to `name`. Bridge: the
    /// MAC it is created with and kept at (else the kernel picks one, and the agent
    /// re-creates the bridge with the MAC it last had; see docs/network.md).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Absent = not managed.
    #[serde(default)]
    #[schemars(range(min = 68, max = 65535))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Administrative state; declared links are up unless told otherwise.
    #[serde(default = "yes")]
    pub up: bool,
    /// Static addresses, `ip/len` (IPv4 or IPv6).
    #[serde(default)]
    pub addresses: Vec<IfAddr>,
    /// Absent = not managed.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rp_filter: Option<RpFilter>,
    /// `net.ipv6.conf.<link>.accept_ra`; absent = not managed.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_ra: Option<bool>,
    /// VLAN: the link it is stacked on. XFRM: the link its packets leave by.
    #[serde(default)]
    #[schemars(pattern(IFNAME_PATTERN))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// VLAN: its id, 1 to 4094.
    #[serde(default)]
    #[schemars(range(min = 1, max = 4094))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// Bridge: its ports (declared links).
    #[serde(default)]
    #[schemars(inner(pattern(IFNAME_PATTERN)))]
    pub ports: Vec<String>,
    /// Bridge: 802.1Q VLAN filtering; absent = kernel default (off).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan_filtering: Option<bool>,
    /// Bond: its mode.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<BondMode>,
    /// Bond: its members (declared links).
    #[serde(default)]
    #[schemars(inner(pattern(IFNAME_PATTERN)))]
    pub members: Vec<String>,
    /// XFRM: the interface id its IPsec SAs carry, 1 to 4294967295.
    #[serde(default)]
    #[schemars(range(min = 1))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_id: Option<u32>,
    /// Veth: the name of the other end.
    #[serde(default)]
    #[schemars(pattern(IFNAME_PATTERN))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

fn yes() -> bool {
    true
}

impl Link {
    /// A link of `kind` named `name`, up, with nothing else set.
    pub fn new(name: impl Into<String>, kind: LinkKind) -> Self {
        Self {
            name: name.into(),
            kind,
            mac: None,
            mtu: None,
            up: true,
            addresses: Vec::new(),
            rp_filter: None,
            accept_ra: None,
            parent: None,
            id: None,
            ports: Vec::new(),
            vlan_filtering: None,
            mode: None,
            members: Vec::new(),
            if_id: None,
            peer: None,
        }
    }
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination: a network prefix, or `default` (the family then comes from `via`).
    pub to: Destination,
    /// Gateway; must lie in a subnet of the route's link (or of any link without `dev`).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<IpAddr>,
    /// Output link (a declared link).
    #[serde(default)]
    #[schemars(pattern(IFNAME_PATTERN))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// Route priority; absent = 0 for IPv4, 1024 for IPv6 (the kernel's defaults).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// Routing table; absent = main (254). 0 and 255 (local) are refused.
    #[serde(default)]
    #[schemars(range(min = 1))]
    #[serde(skip_serializing_if = "Option::is_none")]
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

/// The text [`Destination`]'s `Deserialize` reads back: `default` or the prefix.
impl Serialize for Destination {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Destination::Default => s.serialize_str("default"),
            Destination::Prefix(p) => p.serialize(s),
        }
    }
}

impl JsonSchema for Destination {
    fn schema_name() -> Cow<'static, str> {
        "Destination".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`default`, or a network prefix without host bits (`10.9.0.0/16`)",
            "type": "string",
            "pattern": format!("^(default|{IPV4}/{LEN4}|{IPV6}/{LEN6})$"),
        })
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

/// `address/len`, the text `Deserialize` (and `FromStr`) read back.
impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for Prefix {
    fn schema_name() -> Cow<'static, str> {
        "Prefix".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "address/length, IPv4 or IPv6 (`10.0.0.1/24`, `fd00::1/64`)",
            "type": "string",
            "pattern": prefix_pattern(),
        })
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

/// Six lowercase hex pairs, the text `Deserialize` (and `FromStr`) read back.
impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for MacAddr {
    fn schema_name() -> Cow<'static, str> {
        "MacAddr".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "six hex pairs separated by colons (`52:54:00:12:34:56`)",
            "type": "string",
            "pattern": "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$",
        })
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

    /// A stacked link's (VLAN, XFRM) `parent`: given, not the link itself, declared.
    /// `what` names the link in the errors: (its kind, the kind as a noun).
    fn check_parent(&self, l: &Link, what: (&str, &str), errs: &mut Vec<String>) {
        let n = l.name.as_str();
        let (kind, noun) = what;
        match l.parent.as_deref() {
            None => errs.push(format!("{n}: {kind} needs `parent`")),
            Some(p) if p == n => errs.push(format!("{n}: {noun} cannot be its own parent")),
            Some(p) if self.link(p).is_none() => errs.push(format!(
                "{n}: parent {p} is not declared in [[network.links]]"
            )),
            Some(_) => {}
        }
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
            use LinkKind::{Bond, Bridge, Veth, Vlan, Xfrm};
            let misplaced: [(&str, &[LinkKind], bool); 8] = [
                ("parent", &[Vlan, Xfrm], l.parent.is_some()),
                ("id", &[Vlan], l.id.is_some()),
                ("if_id", &[Xfrm], l.if_id.is_some()),
                ("ports", &[Bridge], !l.ports.is_empty()),
                ("vlan_filtering", &[Bridge], l.vlan_filtering.is_some()),
                ("mode", &[Bond], l.mode.is_some()),
                ("members", &[Bond], !l.members.is_empty()),
                ("peer", &[Veth], l.peer.is_some()),
            ];
            if l.mac.is_some() && k != LinkKind::Physical && k != LinkKind::Bridge {
                errs.push(format!(
                    "{n}: `mac` is only for physical and bridge links, not {k}"
                ));
            }
            if let Some(mac) = l.mac
                && k == LinkKind::Bridge
                && (mac.0[0] & 1 == 1 || mac.0 == [0; 6])
            {
                errs.push(format!(
                    "{n}: MAC {mac} is not a unicast address (a bridge needs one)"
                ));
            }
            for (field, kinds, present) in misplaced {
                if present && !kinds.contains(&k) {
                    let kinds: Vec<String> = kinds.iter().map(ToString::to_string).collect();
                    errs.push(format!(
                        "{n}: `{field}` is only for {} links, not {k}",
                        kinds.join(" and ")
                    ));
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
                    self.check_parent(l, ("a vlan link", "a VLAN"), &mut errs);
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
                LinkKind::Xfrm => {
                    match l.if_id {
                        None => errs.push(format!("{n}: an xfrm link needs `if_id`")),
                        Some(0) => errs.push(format!(
                            "{n}: if_id 0 is not an XFRM interface id (1 to 4294967295)"
                        )),
                        Some(_) => {}
                    }
                    self.check_parent(l, ("an xfrm link", "an XFRM interface"), &mut errs);
                }
                LinkKind::Physical | LinkKind::Bridge | LinkKind::Wireguard => {}
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
        errs.extend(self.cycles());
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

    /// Links stacked on each other in a loop: a bridge that is a port of its own port,
    /// a VLAN on a bridge that has that VLAN as a port, a bond enslaved to a bridge
    /// that is one of its members... The kernel refuses these only at apply (after
    /// other changes were made), so they are refused here. An edge `a -> b` means
    /// `a` is under `b`: `a` is a port or member of `b`, or `b` is a VLAN on `a`.
    /// One message per cycle, starting from its smallest name: `br0 -> br1 -> br0`.
    /// Self-loops have their own messages above.
    fn cycles(&self) -> Vec<String> {
        let mut up: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for l in &self.links {
            for p in l.ports.iter().chain(&l.members) {
                up.entry(p.as_str()).or_default().insert(l.name.as_str());
            }
            // A VLAN or an XFRM interface is above its parent.
            if let Some(parent) = l.parent.as_deref() {
                up.entry(parent).or_default().insert(l.name.as_str());
            }
        }
        for (from, to) in up.iter_mut() {
            to.remove(from);
        }
        // Depth-first search; a link on the current path reached again closes a cycle.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            OnPath,
            Done,
        }
        fn visit<'a>(
            node: &'a str,
            up: &BTreeMap<&'a str, BTreeSet<&'a str>>,
            marks: &mut BTreeMap<&'a str, Mark>,
            path: &mut Vec<&'a str>,
            found: &mut BTreeSet<Vec<&'a str>>,
        ) {
            marks.insert(node, Mark::OnPath);
            path.push(node);
            for &next in up.get(node).into_iter().flatten() {
                match marks.get(next) {
                    Some(Mark::OnPath) => {
                        let start = path.iter().rposition(|n| *n == next).unwrap_or(0);
                        let mut cycle = path[start..].to_vec();
                        let min = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                        cycle.rotate_left(min);
                        found.insert(cycle);
                    }
                    Some(Mark::Done) => {}
                    None => visit(next, up, marks, path, found),
                }
            }
            path.pop();
            marks.insert(node, Mark::Done);
        }
        let mut marks = BTreeMap::new();
        let mut found = BTreeSet::new();
        for &node in up.keys() {
            if !marks.contains_key(node) {
                visit(node, &up, &mut marks, &mut Vec::new(), &mut found);
            }
        }
        found
            .into_iter()
            .map(|cycle| {
                let closed: Vec<&str> = cycle.iter().chain(cycle.first()).copied().collect();
                format!(
                    "links stacked in a cycle: {} (each is a port, member or VLAN parent of the next)",
                    closed.join(" -> ")
                )
            })
            .collect()
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
    use proptest::prelude::*;

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
    fn xfrm_links_need_an_if_id_and_a_declared_parent() {
        let ok = "[[links]]\nname = \"eth0\"\n[[links]]\nname = \"xfrm-1\"\nkind = \"xfrm\"\nparent = \"eth0\"\nif_id = 1\n";
        let n = parse(ok).unwrap();
        n.validate().unwrap();
        round_trip(&n);
        let e = invalid(&ok.replace("if_id = 1\n", ""));
        assert!(e.contains("xfrm-1: an xfrm link needs `if_id`"), "{e}");
        let e = invalid(&ok.replace("if_id = 1", "if_id = 0"));
        assert!(e.contains("if_id 0 is not an XFRM interface id"), "{e}");
        let e = invalid(&ok.replace("parent = \"eth0\"", "parent = \"eth9\""));
        assert!(e.contains("xfrm-1: parent eth9 is not declared"), "{e}");
        let e = invalid("[[links]]\nname = \"eth0\"\nif_id = 3\n");
        assert!(
            e.contains("eth0: `if_id` is only for xfrm links, not physical"),
            "{e}"
        );
        let e = invalid("[[links]]\nname = \"eth0\"\nparent = \"lo\"\n");
        assert!(
            e.contains("eth0: `parent` is only for vlan and xfrm links, not physical"),
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
    fn stacking_cycles_are_refused_naming_the_cycle() {
        let e = invalid(
            "[[links]]\nname = \"br0\"\nkind = \"bridge\"\nports = [\"br1\"]\n[[links]]\nname = \"br1\"\nkind = \"bridge\"\nports = [\"br0\"]\n",
        );
        assert_eq!(
            e,
            "links stacked in a cycle: br0 -> br1 -> br0 (each is a port, member or VLAN parent of the next)"
        );
        // A VLAN on a bridge that has the VLAN as a port.
        let e = invalid(
            "[[links]]\nname = \"br0\"\nkind = \"bridge\"\nports = [\"vlan7\"]\n[[links]]\nname = \"vlan7\"\nkind = \"vlan\"\nparent = \"br0\"\nid = 7\n",
        );
        assert!(
            e.contains("links stacked in a cycle: br0 -> vlan7 -> br0"),
            "{e}"
        );
        // A bond enslaved to a bridge that is one of its members (also refused as a
        // member of the wrong kind).
        let e = invalid(
            "[[links]]\nname = \"br0\"\nkind = \"bridge\"\nports = [\"bond0\"]\n[[links]]\nname = \"bond0\"\nkind = \"bond\"\nmode = \"active-backup\"\nmembers = [\"br0\"]\n",
        );
        assert!(
            e.contains("links stacked in a cycle: bond0 -> br0 -> bond0"),
            "{e}"
        );
        // Three bridges, and two VLANs on each other.
        let e = invalid(
            "[[links]]\nname = \"c\"\nkind = \"bridge\"\nports = [\"a\"]\n[[links]]\nname = \"a\"\nkind = \"bridge\"\nports = [\"b\"]\n[[links]]\nname = \"b\"\nkind = \"bridge\"\nports = [\"c\"]\n[[links]]\nname = \"v1\"\nkind = \"vlan\"\nparent = \"v2\"\nid = 1\n[[links]]\nname = \"v2\"\nkind = \"vlan\"\nparent = \"v1\"\nid = 2\n",
        );
        assert!(
            e.contains("links stacked in a cycle: a -> c -> b -> a"),
            "{e}"
        );
        assert!(
            e.contains("links stacked in a cycle: v1 -> v2 -> v1"),
            "{e}"
        );
        assert_eq!(e.matches("cycle").count(), 2, "{e}");
        // Stacks without a loop are fine: a VLAN on a bond, a bridge over that VLAN.
        let n = parse(
            "[[links]]\nname = \"eth0\"\n[[links]]\nname = \"bond0\"\nkind = \"bond\"\nmode = \"active-backup\"\nmembers = [\"eth0\"]\n[[links]]\nname = \"vlan7\"\nkind = \"vlan\"\nparent = \"bond0\"\nid = 7\n[[links]]\nname = \"br0\"\nkind = \"bridge\"\nports = [\"vlan7\"]\n[[links]]\nname = \"br1\"\nkind = \"bridge\"\nports = [\"br0\"]\n",
        )
        .unwrap();
        n.validate().unwrap();
    }

    #[test]
    fn bridges_may_declare_a_unicast_mac() {
        let br = "[[links]]\nname = \"br0\"\nkind = \"bridge\"\n";
        parse(&format!("{br}mac = \"02:00:00:00:00:01\"\n"))
            .unwrap()
            .validate()
            .unwrap();
        let e = invalid(&format!("{br}mac = \"01:00:5e:00:00:01\"\n"));
        assert!(
            e.contains("br0: MAC 01:00:5e:00:00:01 is not a unicast address"),
            "{e}"
        );
        let e = invalid(
            "[[links]]\nname = \"v\"\nkind = \"veth\"\npeer = \"w\"\nmac = \"02:00:00:00:00:01\"\n",
        );
        assert!(
            e.contains("v: `mac` is only for physical and bridge links, not veth"),
            "{e}"
        );
    }

    /// The schema says what serde accepts: the same key names, no unknown keys, the
    /// enum spellings, the patterns of the values parsed by hand, the model's ranges.
    #[test]
    fn json_schema_follows_serde() {
        let generated = schemars::schema_for!(Network);
        let schema = generated.as_value();
        let defs = &schema["$defs"];
        macro_rules! keys {
            ($v:expr) => {{
                let mut keys: Vec<String> = $v["properties"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect();
                keys.sort();
                keys
            }};
        }
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(keys!(schema), ["ip_forward", "links", "routes"]);
        let link = &defs["Link"];
        assert_eq!(link["additionalProperties"], false);
        assert_eq!(link["required"].to_string(), r#"["name"]"#);
        let link_keys = keys!(link);
        assert_eq!(
            link_keys,
            [
                "accept_ra",
                "addresses",
                "id",
                "if_id",
                "kind",
                "mac",
                "members",
                "mode",
                "mtu",
                "name",
                "parent",
                "peer",
                "ports",
                "rp_filter",
                "up",
                "vlan_filtering"
            ]
        );
        assert_eq!(link["properties"]["up"]["default"], true);
        assert_eq!(link["properties"]["name"]["pattern"], IFNAME_PATTERN);
        let text = schema.to_string();
        for needle in [
            r#""minimum":68"#,
            r#""maximum":65535"#,
            r#""maximum":4094"#,
            r#""802.3ad""#,
            r#""active-backup""#,
            r#""physical""#,
            r#""loose""#,
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
        let route = &defs["Route"];
        assert_eq!(route["additionalProperties"], false);
        assert_eq!(route["required"].to_string(), r#"["to"]"#);
        assert_eq!(defs["Prefix"]["type"], "string");
        assert_eq!(defs["Prefix"]["pattern"], prefix_pattern().as_str());
        assert!(
            defs["Destination"]["pattern"]
                .as_str()
                .unwrap()
                .starts_with("^(default|")
        );
        assert_eq!(defs["MacAddr"]["type"], "string");
        // Every key of the full example is a key of the schema.
        let full: toml::Value = toml::from_str(FULL).unwrap();
        for l in full["links"].as_array().unwrap() {
            for key in l.as_table().unwrap().keys() {
                assert!(link_keys.contains(key), "{key}");
            }
        }
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

    fn round_trip(n: &Network) {
        crate::round_trip::assert_round_trips(SECTION, n);
    }

    fn link(name: &str, kind: LinkKind) -> Link {
        Link::new(name, kind)
    }

    #[test]
    fn serialize_round_trips_the_full_example() {
        let n = parse(FULL).unwrap();
        round_trip(&n);
        round_trip(&Network::default());
    }

    /// A network built in code, the way another component would: every kind of link,
    /// IPv4 and IPv6 addresses, routes with and without gateway, metric and table.
    #[test]
    fn serialize_round_trips_a_network_built_in_code() {
        let p = |s: &str| -> Prefix { s.parse().unwrap() };
        let n = Network {
            ip_forward: Some(false),
            links: vec![
                Link {
                    mac: Some("52:54:00:AB:cd:0f".parse().unwrap()),
                    mtu: Some(9000),
                    rp_filter: Some(RpFilter::Strict),
                    accept_ra: Some(true),
                    ..link("eth0", LinkKind::Physical)
                },
                Link {
                    rp_filter: Some(RpFilter::Off),
                    ..link("eth1", LinkKind::Physical)
                },
                Link {
                    mode: Some(BondMode::ActiveBackup),
                    members: vec!["eth1".into()],
                    ..link("bond0", LinkKind::Bond)
                },
                Link {
                    parent: Some("eth0".into()),
                    id: Some(4094),
                    addresses: vec![p("10.0.101.1/24"), p("fd00:101::1/64")],
                    ..link("vlan4094", LinkKind::Vlan)
                },
                Link {
                    mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
                    ports: vec!["ve0".into(), "bond0".into()],
                    vlan_filtering: Some(false),
                    addresses: vec![p("192.168.0.1/24"), p("::ffff:1.2.3.4/128")],
                    rp_filter: Some(RpFilter::Loose),
                    ..link("br0", LinkKind::Bridge)
                },
                Link {
                    peer: Some("ve1".into()),
                    up: false,
                    ..link("ve0", LinkKind::Veth)
                },
            ],
            routes: vec![
                Route {
                    to: Destination::Default,
                    via: Some("10.0.101.254".parse().unwrap()),
                    dev: None,
                    metric: None,
                    table: None,
                },
                Route {
                    to: Destination::Default,
                    via: Some("fe80::1".parse().unwrap()),
                    dev: Some("vlan4094".into()),
                    metric: Some(u32::MAX),
                    table: Some(100),
                },
                Route {
                    to: Destination::Prefix(p("10.9.0.0/16")),
                    via: Some("192.168.0.254".parse().unwrap()),
                    dev: Some("br0".into()),
                    metric: Some(10),
                    table: Some(u32::MAX),
                },
                Route {
                    to: Destination::Prefix(p("fd00:9::/48")),
                    via: None,
                    dev: Some("br0".into()),
                    metric: None,
                    table: None,
                },
            ],
        };
        n.validate().unwrap();
        round_trip(&n);
        // The values parsed by hand are written in the form their `Deserialize` reads.
        let t = toml::Table::try_from(&n).unwrap();
        assert_eq!(t["links"][0]["mac"].as_str(), Some("52:54:00:ab:cd:0f"));
        assert_eq!(
            t["links"][3]["addresses"][1].as_str(),
            Some("fd00:101::1/64")
        );
        assert_eq!(t["routes"][0]["to"].as_str(), Some("default"));
        assert_eq!(t["routes"][2]["to"].as_str(), Some("10.9.0.0/16"));
        assert_eq!(t["links"][2]["mode"].as_str(), Some("active-backup"));
        assert_eq!(t["links"][2]["kind"].as_str(), Some("bond"));
        // Absent options are left out, not written as some placeholder.
        assert!(!t["links"][1].as_table().unwrap().contains_key("mtu"));
        assert!(!t["routes"][0].as_table().unwrap().contains_key("metric"));
        for mode in [
            BondMode::BalanceRr,
            BondMode::ActiveBackup,
            BondMode::BalanceXor,
            BondMode::Broadcast,
            BondMode::Ieee8023ad,
            BondMode::BalanceTlb,
            BondMode::BalanceAlb,
        ] {
            let n = Network {
                links: vec![Link {
                    mode: Some(mode),
                    ..link("bond0", LinkKind::Bond)
                }],
                ..Network::default()
            };
            round_trip(&n);
            let t = toml::Table::try_from(&n).unwrap();
            assert_eq!(t["links"][0]["mode"].as_str(), Some(mode.as_str()));
        }
    }

    fn arb_prefix() -> impl Strategy<Value = Prefix> {
        prop_oneof![
            (any::<std::net::Ipv4Addr>(), 0..=32u8).prop_map(|(a, len)| Prefix {
                addr: IpAddr::V4(a),
                len
            }),
            (any::<std::net::Ipv6Addr>(), 0..=128u8).prop_map(|(a, len)| Prefix {
                addr: IpAddr::V6(a),
                len
            }),
        ]
    }

    fn arb_name() -> impl Strategy<Value = String> {
        prop_oneof!["[A-Za-z0-9._-]{1,15}", any::<String>()]
    }

    fn arb_link() -> impl Strategy<Value = Link> {
        let kind = prop_oneof![
            Just(LinkKind::Physical),
            Just(LinkKind::Vlan),
            Just(LinkKind::Bridge),
            Just(LinkKind::Bond),
            Just(LinkKind::Veth),
            Just(LinkKind::Xfrm),
        ];
        let rp = prop_oneof![
            Just(RpFilter::Off),
            Just(RpFilter::Strict),
            Just(RpFilter::Loose)
        ];
        let mode = prop_oneof![
            Just(BondMode::BalanceRr),
            Just(BondMode::ActiveBackup),
            Just(BondMode::BalanceXor),
            Just(BondMode::Broadcast),
            Just(BondMode::Ieee8023ad),
            Just(BondMode::BalanceTlb),
            Just(BondMode::BalanceAlb),
        ];
        let names = || proptest::collection::vec(arb_name(), 0..3);
        (
            (
                arb_name(),
                kind,
                proptest::option::of(any::<[u8; 6]>().prop_map(MacAddr)),
                proptest::option::of(any::<u32>()),
                any::<bool>(),
                proptest::collection::vec(arb_prefix(), 0..3),
                proptest::option::of(rp),
                proptest::option::of(any::<bool>()),
            ),
            (
                proptest::option::of(arb_name()),
                proptest::option::of(any::<u32>()),
                names(),
                proptest::option::of(any::<bool>()),
                proptest::option::of(mode),
                names(),
                proptest::option::of(arb_name()),
                proptest::option::of(any::<u32>()),
            ),
        )
            .prop_map(
                |(
                    (name, kind, mac, mtu, up, addresses, rp_filter, accept_ra),
                    (parent, id, ports, vlan_filtering, mode, members, peer, if_id),
                )| Link {
                    name,
                    kind,
                    mac,
                    mtu,
                    up,
                    addresses,
                    rp_filter,
                    accept_ra,
                    parent,
                    id,
                    ports,
                    vlan_filtering,
                    mode,
                    members,
                    if_id,
                    peer,
                },
            )
    }

    fn arb_route() -> impl Strategy<Value = Route> {
        // A destination is a network: its host bits are clear (else it is refused).
        let to = prop_oneof![
            Just(Destination::Default),
            arb_prefix().prop_map(|p| Destination::Prefix(Prefix {
                addr: p.network(),
                len: p.len
            })),
        ];
        (
            to,
            proptest::option::of(any::<IpAddr>()),
            proptest::option::of(arb_name()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(to, via, dev, metric, table)| Route {
                to,
                via,
                dev,
                metric,
                table,
            })
    }

    fn arb_network() -> impl Strategy<Value = Network> {
        (
            proptest::option::of(any::<bool>()),
            proptest::collection::vec(arb_link(), 0..4),
            proptest::collection::vec(arb_route(), 0..4),
        )
            .prop_map(|(ip_forward, links, routes)| Network {
                ip_forward,
                links,
                routes,
            })
    }

    proptest! {
        /// Every network the types can hold (that the parsers accept: prefix lengths
        /// within the family, destinations without host bits) survives the trip.
        #[test]
        fn serialize_round_trips_any_network(n in arb_network()) {
            round_trip(&n);
        }
    }
}
