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

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Deserializer, de};

use crate::network::{Invalid, Prefix, check_ifname};

/// The name of the section this module models.
pub const SECTION: &str = "firewall";

/// Longest rule comment accepted (nftables' own limit is 128 bytes).
pub const MAX_COMMENT_LEN: usize = 128;

/// The `[firewall]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmpv6 => "icmpv6",
        }
    }
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

/// One filter rule. Absent matches match everything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub chain: Chain,
    /// Input interface (not in `output`). A name ending in `*` matches a prefix
    /// (`vnet*`) and need not be declared.
    #[serde(default)]
    pub iif: Option<String>,
    /// Output interface (not in `input`).
    #[serde(default)]
    pub oif: Option<String>,
    #[serde(default)]
    pub saddr: Option<Prefix>,
    #[serde(default)]
    pub daddr: Option<Prefix>,
    #[serde(default)]
    pub proto: Option<Proto>,
    #[serde(default)]
    pub sport: Option<Ports>,
    #[serde(default)]
    pub dport: Option<Ports>,
    pub action: Verdict,
    #[serde(default)]
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

/// NAT, in the IPv4 nat table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Masquerade {
    pub oif: String,
    /// Only packets from this IPv4 prefix.
    #[serde(default)]
    pub saddr: Option<Prefix>,
}

/// Port forward: packets arriving for `dport` go to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dnat {
    #[serde(default)]
    pub iif: Option<String>,
    /// Only packets to this IPv4 prefix.
    #[serde(default)]
    pub daddr: Option<Prefix>,
    pub proto: Proto,
    pub dport: Ports,
    /// `address` or `address:port`.
    pub to: NatTarget,
}

/// Rewrite the source of packets leaving `oif` to a fixed address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snat {
    pub oif: String,
    #[serde(default)]
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
}
