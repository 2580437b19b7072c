//! The `[firewall]` section: filter policies and rules, and NAT.
//!
//! Pure types and validation, no I/O. Rendering into nftables is the firewall
//! backend's job (`kowabunga-firewall`). Everything here ends up inside a generated
//! nft script, so every free-text value is checked against a strict character set:
//! nothing a document says can escape its quotes.
//!
//! ```toml
//! [firewall]
//! input = "drop"            # policies: accept (default) or drop
//! forward = "drop"
//!
//! [[firewall.rules]]
//! chain = "input"
//! iif = "eth0"
//! saddr = "10.0.0.0/8"
//! proto = "tcp"
//! dport = 22                # a port, or a range "8000-8100"
//! action = "accept"
//! comment = "ssh from the LAN"
//!
//! [[firewall.nat.masquerade]]
//! oif = "eth0"
//! saddr = "10.0.101.0/24"
//!
//! [[firewall.nat.dnat]]
//! iif = "eth0"
//! proto = "tcp"
//! dport = 8080
//! to = "10.0.101.5:80"
//!
//! [[firewall.nat.snat]]
//! oif = "eth1"
//! saddr = "10.0.102.0/24"
//! to = "192.0.2.10"
//! ```

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::network::{Invalid, Prefix, check_ifname};

/// The name of the section this module models.
pub const SECTION: &str = "firewall";

/// Longest rule comment accepted (nftables' own limit is 128 bytes).
pub const MAX_COMMENT_LEN: usize = 128;

/// An interface name, or a prefix pattern ending in `*` (`vnet*`), for the JSON Schema
/// (whether a name is declared in `[network]` is checked by [`Firewall::validate`]).
pub const IFACE_PATTERN: &str = r"^[A-Za-z0-9._-]{1,15}\*?$";

/// A comment: no quote, backslash or control character, for the JSON Schema (the
/// length limit, [`MAX_COMMENT_LEN`], is in bytes; the schema's `maxLength` counts
/// characters, so it is only a first filter).
pub const COMMENT_PATTERN: &str = r#"^[^"\\\u0000-\u001f\u007f-\u009f]*$"#;

/// An IPv4 address in dotted quad without leading zeros (what `Ipv4Addr` parses).
const IPV4: &str = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}";

/// A port, 1 to 65535, as text.
const PORT: &str =
    r"\+?0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

/// The `[firewall]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    #[serde(default)]
    pub input: Policy,
    #[serde(default)]
    pub forward: Policy,
    #[serde(default)]
    pub output: Policy,
    /// Accept packets of established and related connections, drop invalid ones, ahead
    /// of the rules (in every filter chain).
    #[serde(default = "yes")]
    pub accept_established: bool,
    /// Accept everything arriving on `lo`, ahead of the rules (input chain).
    #[serde(default = "yes")]
    pub accept_loopback: bool,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub nat: Nat,
}

fn yes() -> bool {
    true
}

/// A chain's policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Accept,
    Drop,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Accept => "accept",
            Policy::Drop => "drop",
        }
    }
}

/// A filter chain.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Chain {
    Input,
    Forward,
    Output,
}

impl Chain {
    pub const ALL: [Chain; 3] = [Chain::Input, Chain::Forward, Chain::Output];
    pub fn as_str(self) -> &'static str {
        match self {
            Chain::Input => "input",
            Chain::Forward => "forward",
            Chain::Output => "output",
        }
    }
}

/// What a rule does with a matching packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accept,
    Drop,
    /// Drop and answer (TCP reset, ICMP unreachable).
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
            Verdict::Reject => "reject",
        }
    }
}

/// A protocol match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    /// VRRP adverts (IP protocol 112): Kiwi's failover.
    Vrrp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmpv6 => "icmpv6",
            Proto::Vrrp => "vrrp",
        }
    }
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

/// One filter rule. Absent matches match everything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub chain: Chain,
    /// Input interface (not in `output`). A name ending in `*` matches a prefix
    /// (`vnet*`) and need not be declared.
    #[serde(default)]
    #[schemars(pattern(IFACE_PATTERN))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    /// Output interface (not in `input`).
    #[serde(default)]
    #[schemars(pattern(IFACE_PATTERN))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oif: Option<String>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saddr: Option<Prefix>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daddr: Option<Prefix>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<Ports>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<Ports>,
    pub action: Verdict,
    #[serde(default)]
    #[schemars(pattern(COMMENT_PATTERN), length(max = MAX_COMMENT_LEN))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A port or an inclusive range of ports: `22` or `"8000-8100"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(i64),
            Text(String),
        }
        let port = |v: i64| -> Result<u16, D::Error> {
            match u16::try_from(v) {
                Ok(p) if p != 0 => Ok(p),
                _ => Err(de::Error::custom(format!(
                    "port {v} is out of range (1 to 65535)"
                ))),
            }
        };
        match Raw::deserialize(d)? {
            Raw::One(v) => {
                let p = port(v)?;
                Ok(Ports { first: p, last: p })
            }
            Raw::Text(text) => {
                let (a, b) = text.split_once('-').unwrap_or((&text, &text));
                let num = |s: &str| -> Result<u16, D::Error> {
                    let v: i64 = s.trim().parse().map_err(|_| {
                        de::Error::custom(format!(
                            "`{text}` is not a port or a port range (e.g. 22 or \"8000-8100\")"
                        ))
                    })?;
                    port(v)
                };
                let (first, last) = (num(a)?, num(b)?);
                if first > last {
                    return Err(de::Error::custom(format!(
                        "port range {first}-{last} is reversed (first port above last)"
                    )));
                }
                Ok(Ports { first, last })
            }
        }
    }
}

/// A single port as an integer (`22`), a range as text (`"8000-8100"`): the two forms
/// `Deserialize` reads.
impl Serialize for Ports {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.collect_str(self)
        }
    }
}

impl JsonSchema for Ports {
    fn schema_name() -> Cow<'static, str> {
        "Ports".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "a port (22), or an inclusive range of ports as text (\"8000-8100\", first port not above the last)",
            "oneOf": [
                { "type": "integer", "minimum": 1, "maximum": 65535 },
                { "type": "string", "pattern": format!(r"^\s*{PORT}\s*(-\s*{PORT}\s*)?$") },
            ],
        })
    }
}

/// NAT, in the IPv4 nat table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nat {
    #[serde(default)]
    pub masquerade: Vec<Masquerade>,
    #[serde(default)]
    pub dnat: Vec<Dnat>,
    #[serde(default)]
    pub snat: Vec<Snat>,
}

/// Rewrite the source of packets leaving `oif` to that link's address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Masquerade {
    #[schemars(pattern(IFACE_PATTERN))]
    pub oif: String,
    /// Only packets from this IPv4 prefix.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saddr: Option<Prefix>,
}

/// Port forward: packets arriving for `dport` go to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dnat {
    #[serde(default)]
    #[schemars(pattern(IFACE_PATTERN))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    /// Only packets to this IPv4 prefix.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daddr: Option<Prefix>,
    pub proto: Proto,
    pub dport: Ports,
    /// `address` or `address:port`.
    pub to: NatTarget,
}

/// Rewrite the source of packets leaving `oif` to a fixed address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Snat {
    #[schemars(pattern(IFACE_PATTERN))]
    pub oif: String,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saddr: Option<Prefix>,
    pub to: Ipv4Addr,
}

/// A DNAT target: an IPv4 address and optionally a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatTarget {
    pub addr: Ipv4Addr,
    pub port: Option<u16>,
}

impl fmt::Display for NatTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl JsonSchema for NatTarget {
    fn schema_name() -> Cow<'static, str> {
        "NatTarget".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "an IPv4 address, or address:port (`10.0.101.5`, `10.0.101.5:80`)",
            "type": "string",
            "pattern": format!("^{IPV4}(:{PORT})?$"),
        })
    }
}

/// `address` or `address:port`, the text `Deserialize` reads back.
impl Serialize for NatTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NatTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(addr) = text.parse::<Ipv4Addr>() {
            return Ok(NatTarget { addr, port: None });
        }
        match text.parse::<SocketAddrV4>() {
            Ok(sa) if sa.port() != 0 => Ok(NatTarget {
                addr: *sa.ip(),
                port: Some(sa.port()),
            }),
            _ => Err(de::Error::custom(format!(
                "`{text}` is not an IPv4 address or address:port"
            ))),
        }
    }
}

impl Firewall {
    /// Check the rules against each other and against the interfaces the document
    /// declares (`known`: the `[network]` section's interface names). Errors name the
    /// rule by its position and comment.
    pub fn validate(&self, known: &BTreeSet<&str>) -> Result<(), Invalid> {
        let mut errs = Vec::new();
        let check_if = |what: &str, name: &str, errs: &mut Vec<String>| {
            let base = name.strip_suffix('*').unwrap_or(name);
            if name.ends_with('*') {
                if base.is_empty() {
                    errs.push(format!("{what}: `*` alone is not an interface pattern"));
                } else if let Err(e) = check_ifname(base) {
                    errs.push(format!("{what}: {e}"));
                }
            } else if name != "lo" && !known.contains(name) {
                errs.push(format!(
                    "{what}: unknown interface {name} (not declared in [network]; use a pattern like {name}* for interfaces the agent does not manage)"
                ));
            }
        };
        for (i, r) in self.rules.iter().enumerate() {
            let what = match &r.comment {
                Some(c) => format!("rules[{i}] ({c:?})"),
                None => format!("rules[{i}]"),
            };
            if let Some(iif) = &r.iif {
                check_if(&what, iif, &mut errs);
                if r.chain == Chain::Output {
                    errs.push(format!(
                        "{what}: `iif` cannot be matched in the output chain"
                    ));
                }
            }
            if let Some(oif) = &r.oif {
                check_if(&what, oif, &mut errs);
                if r.chain == Chain::Input {
                    errs.push(format!(
                        "{what}: `oif` cannot be matched in the input chain"
                    ));
                }
            }
            if let (Some(s), Some(d)) = (r.saddr, r.daddr)
                && s.addr.is_ipv4() != d.addr.is_ipv4()
            {
                errs.push(format!(
                    "{what}: saddr {s} and daddr {d} are of different families"
                ));
            }
            let family = r.saddr.or(r.daddr).map(|p| p.addr.is_ipv4());
            match (r.proto, family) {
                (Some(Proto::Icmp), Some(false)) => {
                    errs.push(format!("{what}: icmp with IPv6 addresses (use icmpv6)"))
                }
                (Some(Proto::Icmpv6), Some(true)) => {
                    errs.push(format!("{what}: icmpv6 with IPv4 addresses (use icmp)"))
                }
                _ => {}
            }
            if (r.sport.is_some() || r.dport.is_some()) && !r.proto.is_some_and(Proto::has_ports) {
                errs.push(format!("{what}: ports need proto = \"tcp\" or \"udp\""));
            }
            if let Some(c) = &r.comment {
                if c.len() > MAX_COMMENT_LEN {
                    errs.push(format!(
                        "{what}: comment is longer than {MAX_COMMENT_LEN} bytes"
                    ));
                }
                if let Some(ch) = c
                    .chars()
                    .find(|ch| ch.is_control() || matches!(ch, '"' | '\\'))
                {
                    errs.push(format!("{what}: comment contains {ch:?}"));
                }
            }
        }
        let v4 = |what: &str, p: Option<Prefix>, errs: &mut Vec<String>| {
            if let Some(p) = p
                && !matches!(p.addr, IpAddr::V4(_))
            {
                errs.push(format!("{what}: {p} is not IPv4 (NAT is IPv4 only)"));
            }
        };
        for (i, m) in self.nat.masquerade.iter().enumerate() {
            let what = format!("nat.masquerade[{i}]");
            check_if(&what, &m.oif, &mut errs);
            v4(&what, m.saddr, &mut errs);
        }
        for (i, m) in self.nat.snat.iter().enumerate() {
            let what = format!("nat.snat[{i}]");
            check_if(&what, &m.oif, &mut errs);
            v4(&what, m.saddr, &mut errs);
        }
        for (i, m) in self.nat.dnat.iter().enumerate() {
            let what = format!("nat.dnat[{i}]");
            if let Some(iif) = &m.iif {
                check_if(&what, iif, &mut errs);
            }
            v4(&what, m.daddr, &mut errs);
            if !m.proto.has_ports() {
                errs.push(format!("{what}: proto must be tcp or udp"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Invalid(errs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Firewall, String> {
        toml::from_str::<Firewall>(text).map_err(|e| e.to_string())
    }

    fn known() -> BTreeSet<&'static str> {
        ["eth0", "eth1", "br0"].into_iter().collect()
    }

    const FULL: &str = r#"
input = "drop"
forward = "drop"
[[rules]]
chain = "input"
iif = "eth0"
saddr = "10.0.0.0/8"
proto = "tcp"
dport = 22
action = "accept"
comment = "ssh"
[[rules]]
chain = "forward"
iif = "vnet*"
oif = "eth1"
proto = "udp"
dport = "5000-5100"
sport = "53"
action = "reject"
[[nat.masquerade]]
oif = "eth0"
saddr = "10.0.101.0/24"
[[nat.dnat]]
iif = "eth0"
proto = "tcp"
dport = 8080
to = "10.0.101.5:80"
[[nat.snat]]
oif = "eth1"
to = "192.0.2.10"
"#;

    #[test]
    fn full_example() {
        let f = parse(FULL).unwrap();
        f.validate(&known()).unwrap();
        assert_eq!(f.input, Policy::Drop);
        assert_eq!(f.output, Policy::Accept);
        assert!(f.accept_established && f.accept_loopback);
        assert_eq!(
            f.rules[1].dport,
            Some(Ports {
                first: 5000,
                last: 5100
            })
        );
        assert_eq!(f.rules[1].sport.unwrap().to_string(), "53");
        assert_eq!(f.nat.dnat[0].to.to_string(), "10.0.101.5:80");
    }

    #[test]
    fn port_errors() {
        let rule = |p: &str| {
            format!(
                "[[rules]]\nchain = \"input\"\nproto = \"tcp\"\naction = \"drop\"\ndport = {p}\n"
            )
        };
        let e = parse(&rule("\"9000-8000\"")).unwrap_err();
        assert!(e.contains("port range 9000-8000 is reversed"), "{e}");
        assert!(e.contains("dport"), "{e}");
        let e = parse(&rule("70000")).unwrap_err();
        assert!(e.contains("port 70000 is out of range"), "{e}");
        let e = parse(&rule("\"ssh\"")).unwrap_err();
        assert!(e.contains("is not a port or a port range"), "{e}");
        let e = parse(&rule("0")).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn unknown_keys_and_values() {
        let e = parse("polcy = \"drop\"\n").unwrap_err();
        assert!(e.contains("unknown field `polcy`"), "{e}");
        let e = parse("[[rules]]\nchain = \"prerouting\"\naction = \"drop\"\n").unwrap_err();
        assert!(e.contains("unknown variant `prerouting`"), "{e}");
        let e =
            parse("[[nat.dnat]]\nproto = \"tcp\"\ndport = 1\nto = \"10.0.0.1:x\"\n").unwrap_err();
        assert!(e.contains("not an IPv4 address or address:port"), "{e}");
    }

    /// The schema says what serde accepts: the same keys, no unknown keys, the enum
    /// spellings, defaults, and the shapes of the values parsed by hand.
    #[test]
    fn json_schema_follows_serde() {
        let generated = schemars::schema_for!(Firewall);
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
        assert_eq!(
            keys!(schema),
            [
                "accept_established",
                "accept_loopback",
                "forward",
                "input",
                "nat",
                "output",
                "rules"
            ]
        );
        assert_eq!(schema["properties"]["accept_established"]["default"], true);
        assert_eq!(schema["properties"]["accept_loopback"]["default"], true);
        assert!(schema.get("required").is_none(), "every key has a default");
        let rule = &defs["Rule"];
        assert_eq!(rule["additionalProperties"], false);
        assert_eq!(rule["required"].to_string(), r#"["chain","action"]"#);
        assert_eq!(
            keys!(rule),
            [
                "action", "chain", "comment", "daddr", "dport", "iif", "oif", "proto", "saddr",
                "sport"
            ]
        );
        assert_eq!(rule["properties"]["iif"]["pattern"], IFACE_PATTERN);
        assert_eq!(rule["properties"]["comment"]["pattern"], COMMENT_PATTERN);
        assert_eq!(rule["properties"]["comment"]["maxLength"], MAX_COMMENT_LEN);
        let text = schema.to_string();
        for needle in [
            r#""maximum":65535"#,
            r#""icmpv6""#,
            r#""reject""#,
            r#""forward""#,
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
        for def in ["Nat", "Masquerade", "Dnat", "Snat"] {
            assert_eq!(defs[def]["additionalProperties"], false, "{def}");
        }
        assert_eq!(keys!(defs["Nat"]), ["dnat", "masquerade", "snat"]);
        assert_eq!(defs["Snat"]["required"].to_string(), r#"["oif","to"]"#);
        assert_eq!(
            defs["Dnat"]["required"].to_string(),
            r#"["proto","dport","to"]"#
        );
        assert_eq!(defs["NatTarget"]["type"], "string");
        assert_eq!(defs["Ports"]["oneOf"][0]["type"], "integer");
        assert_eq!(defs["Ports"]["oneOf"][1]["type"], "string");
        assert_eq!(defs["Prefix"]["type"], "string");
    }

    #[test]
    fn validation_errors() {
        let cases = [
            (
                "[[rules]]\nchain = \"input\"\niif = \"eth9\"\naction = \"accept\"\n",
                "rules[0]: unknown interface eth9",
            ),
            (
                "[[rules]]\nchain = \"input\"\noif = \"eth0\"\naction = \"accept\"\n",
                "`oif` cannot be matched in the input chain",
            ),
            (
                "[[rules]]\nchain = \"output\"\niif = \"eth0\"\naction = \"accept\"\n",
                "`iif` cannot be matched in the output chain",
            ),
            (
                "[[rules]]\nchain = \"input\"\ndport = 22\naction = \"accept\"\n",
                "ports need proto",
            ),
            (
                "[[rules]]\nchain = \"input\"\nsaddr = \"10.0.0.0/8\"\ndaddr = \"fd00::/8\"\naction = \"accept\"\n",
                "different families",
            ),
            (
                "[[rules]]\nchain = \"input\"\naction = \"accept\"\ncomment = \"a\\\"; flush ruleset\"\n",
                "comment contains '\"'",
            ),
            (
                "[[rules]]\nchain = \"input\"\nproto = \"icmp\"\nsaddr = \"fd00::/8\"\naction = \"accept\"\n",
                "use icmpv6",
            ),
            (
                "[[nat.masquerade]]\noif = \"wan\"\n",
                "nat.masquerade[0]: unknown interface wan",
            ),
            (
                "[[nat.snat]]\noif = \"eth0\"\nsaddr = \"fd00::/64\"\nto = \"1.2.3.4\"\n",
                "is not IPv4",
            ),
            (
                "[[nat.dnat]]\nproto = \"icmp\"\ndport = 1\nto = \"10.0.0.1\"\n",
                "proto must be tcp or udp",
            ),
            (
                "[[rules]]\nchain = \"forward\"\niif = \"*\"\naction = \"accept\"\n",
                "`*` alone",
            ),
            (
                "[[rules]]\nchain = \"forward\"\niif = \"v\\\"*\"\naction = \"accept\"\n",
                "contains '\"'",
            ),
        ];
        for (text, want) in cases {
            let f = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let e = f.validate(&known()).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    fn round_trip(f: &Firewall) {
        crate::round_trip::assert_round_trips(SECTION, f);
    }

    fn rule(chain: Chain, action: Verdict) -> Rule {
        Rule {
            chain,
            iif: None,
            oif: None,
            saddr: None,
            daddr: None,
            proto: None,
            sport: None,
            dport: None,
            action,
            comment: None,
        }
    }

    #[test]
    fn serialize_round_trips_the_full_example() {
        let f = parse(FULL).unwrap();
        round_trip(&f);
        round_trip(&parse("").unwrap());
    }

    /// A firewall built in code, the way another component would: every chain, policy,
    /// verdict and protocol, single ports and ranges, masquerade, DNAT and SNAT.
    #[test]
    fn serialize_round_trips_a_firewall_built_in_code() {
        let p = |s: &str| -> Prefix { s.parse().unwrap() };
        let ports = |first, last| Some(Ports { first, last });
        let f = Firewall {
            input: Policy::Drop,
            forward: Policy::Drop,
            output: Policy::Accept,
            accept_established: false,
            accept_loopback: true,
            rules: vec![
                Rule {
                    iif: Some("eth0".into()),
                    saddr: Some(p("10.0.0.0/8")),
                    proto: Some(Proto::Tcp),
                    dport: ports(22, 22),
                    comment: Some("ssh from the LAN".into()),
                    ..rule(Chain::Input, Verdict::Accept)
                },
                Rule {
                    iif: Some("vnet*".into()),
                    oif: Some("eth1".into()),
                    daddr: Some(p("fd00::/8")),
                    proto: Some(Proto::Udp),
                    sport: ports(1, 65535),
                    dport: ports(5000, 5100),
                    ..rule(Chain::Forward, Verdict::Reject)
                },
                Rule {
                    oif: Some("br0".into()),
                    daddr: Some(p("192.0.2.1/32")),
                    proto: Some(Proto::Icmp),
                    ..rule(Chain::Output, Verdict::Drop)
                },
                Rule {
                    saddr: Some(p("fe80::/10")),
                    proto: Some(Proto::Icmpv6),
                    ..rule(Chain::Input, Verdict::Accept)
                },
                rule(Chain::Input, Verdict::Drop),
            ],
            nat: Nat {
                masquerade: vec![
                    Masquerade {
                        oif: "eth0".into(),
                        saddr: Some(p("10.0.101.0/24")),
                    },
                    Masquerade {
                        oif: "vnet*".into(),
                        saddr: None,
                    },
                ],
                dnat: vec![
                    Dnat {
                        iif: Some("eth0".into()),
                        daddr: Some(p("192.0.2.10/32")),
                        proto: Proto::Tcp,
                        dport: Ports {
                            first: 8080,
                            last: 8080,
                        },
                        to: NatTarget {
                            addr: Ipv4Addr::new(10, 0, 101, 5),
                            port: Some(80),
                        },
                    },
                    Dnat {
                        iif: None,
                        daddr: None,
                        proto: Proto::Udp,
                        dport: Ports {
                            first: 6000,
                            last: 6010,
                        },
                        to: NatTarget {
                            addr: Ipv4Addr::new(10, 0, 101, 6),
                            port: None,
                        },
                    },
                ],
                snat: vec![
                    Snat {
                        oif: "eth1".into(),
                        saddr: Some(p("10.0.102.0/24")),
                        to: Ipv4Addr::new(192, 0, 2, 10),
                    },
                    Snat {
                        oif: "br0".into(),
                        saddr: None,
                        to: Ipv4Addr::new(192, 0, 2, 11),
                    },
                ],
            },
        };
        f.validate(&known()).unwrap();
        round_trip(&f);
        // The values parsed by hand are written in the form their `Deserialize` reads.
        let t = toml::Table::try_from(&f).unwrap();
        assert_eq!(t["input"].as_str(), Some("drop"));
        assert_eq!(t["rules"][0]["dport"].as_integer(), Some(22));
        assert_eq!(t["rules"][1]["dport"].as_str(), Some("5000-5100"));
        assert_eq!(t["rules"][1]["sport"].as_str(), Some("1-65535"));
        assert_eq!(t["rules"][3]["proto"].as_str(), Some("icmpv6"));
        assert_eq!(t["nat"]["dnat"][0]["to"].as_str(), Some("10.0.101.5:80"));
        assert_eq!(t["nat"]["dnat"][1]["to"].as_str(), Some("10.0.101.6"));
        assert_eq!(t["nat"]["snat"][0]["to"].as_str(), Some("192.0.2.10"));
        // Absent options are left out, not written as some placeholder.
        assert!(!t["rules"][4].as_table().unwrap().contains_key("proto"));
        assert!(
            !t["nat"]["masquerade"][1]
                .as_table()
                .unwrap()
                .contains_key("saddr")
        );
    }

    fn arb_prefix() -> impl Strategy<Value = Prefix> {
        prop_oneof![
            (any::<Ipv4Addr>(), 0..=32u8).prop_map(|(a, len)| Prefix {
                addr: IpAddr::V4(a),
                len
            }),
            (any::<std::net::Ipv6Addr>(), 0..=128u8).prop_map(|(a, len)| Prefix {
                addr: IpAddr::V6(a),
                len
            }),
        ]
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof!["[A-Za-z0-9._-]{1,15}\\*?", any::<String>()]
    }

    fn arb_proto() -> impl Strategy<Value = Proto> {
        prop_oneof![
            Just(Proto::Tcp),
            Just(Proto::Udp),
            Just(Proto::Icmp),
            Just(Proto::Icmpv6),
            Just(Proto::Vrrp)
        ]
    }

    /// Ports are 1 to 65535, the first not above the last; single ports often.
    fn arb_ports() -> impl Strategy<Value = Ports> {
        prop_oneof![
            (1..=u16::MAX).prop_map(|p| Ports { first: p, last: p }),
            (1..=u16::MAX, 1..=u16::MAX).prop_map(|(a, b)| Ports {
                first: a.min(b),
                last: a.max(b)
            }),
        ]
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        prop_oneof![Just(Policy::Accept), Just(Policy::Drop)]
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        let chain = prop_oneof![
            Just(Chain::Input),
            Just(Chain::Forward),
            Just(Chain::Output)
        ];
        let verdict = prop_oneof![
            Just(Verdict::Accept),
            Just(Verdict::Drop),
            Just(Verdict::Reject)
        ];
        (
            chain,
            proptest::option::of(arb_text()),
            proptest::option::of(arb_text()),
            proptest::option::of(arb_prefix()),
            proptest::option::of(arb_prefix()),
            proptest::option::of(arb_proto()),
            proptest::option::of(arb_ports()),
            proptest::option::of(arb_ports()),
            verdict,
            proptest::option::of(arb_text()),
        )
            .prop_map(
                |(chain, iif, oif, saddr, daddr, proto, sport, dport, action, comment)| Rule {
                    chain,
                    iif,
                    oif,
                    saddr,
                    daddr,
                    proto,
                    sport,
                    dport,
                    action,
                    comment,
                },
            )
    }

    fn arb_nat() -> impl Strategy<Value = Nat> {
        let masquerade = (arb_text(), proptest::option::of(arb_prefix()))
            .prop_map(|(oif, saddr)| Masquerade { oif, saddr });
        // A target's port, when given, is not 0 (else it is refused).
        let target = (any::<Ipv4Addr>(), proptest::option::of(1..=u16::MAX))
            .prop_map(|(addr, port)| NatTarget { addr, port });
        let dnat = (
            proptest::option::of(arb_text()),
            proptest::option::of(arb_prefix()),
            arb_proto(),
            arb_ports(),
            target,
        )
            .prop_map(|(iif, daddr, proto, dport, to)| Dnat {
                iif,
                daddr,
                proto,
                dport,
                to,
            });
        let snat = (
            arb_text(),
            proptest::option::of(arb_prefix()),
            any::<Ipv4Addr>(),
        )
            .prop_map(|(oif, saddr, to)| Snat { oif, saddr, to });
        (
            proptest::collection::vec(masquerade, 0..3),
            proptest::collection::vec(dnat, 0..3),
            proptest::collection::vec(snat, 0..3),
        )
            .prop_map(|(masquerade, dnat, snat)| Nat {
                masquerade,
                dnat,
                snat,
            })
    }

    fn arb_firewall() -> impl Strategy<Value = Firewall> {
        (
            arb_policy(),
            arb_policy(),
            arb_policy(),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(arb_rule(), 0..4),
            arb_nat(),
        )
            .prop_map(
                |(input, forward, output, accept_established, accept_loopback, rules, nat)| {
                    Firewall {
                        input,
                        forward,
                        output,
                        accept_established,
                        accept_loopback,
                        rules,
                        nat,
                    }
                },
            )
    }

    proptest! {
        /// Every firewall the types can hold (that the parsers accept: ports 1 to 65535
        /// in order, prefix lengths within the family, DNAT ports not 0) survives the trip.
        #[test]
        fn serialize_round_trips_any_firewall(f in arb_firewall()) {
            round_trip(&f);
        }
    }
}
