//! Kiwi's DNS desired state: the signed `[dns]` section, the records Kahuna pushed over
//! RPC, and how the two merge into the configuration the DNS server runs. Pure: no I/O.
//!
//! Two sources feed the DNS server:
//! - the signed `[dns]` section of the pulled document ([`DnsSection`], named
//!   [`SECTION`]; its JSON Schema is `schemars::schema_for!(DnsSection)`): where to
//!   listen, which recursors to forward to and for whom, the server's own name, and
//!   zones with records the operator declares;
//! - the pushed table `dns` ([`PushedDns`]): what Kahuna sent with `Kiwi.Reload`,
//!   `Kiwi.CreateDnsRecord`... Stored with each generation, authenticated by the RPC
//!   channel, not signed.
//!
//! Merge ([`effective`]), written down in `docs/dns.md`:
//! - every server setting comes only from the signed section (defaults when it is
//!   absent): Kahuna cannot move the server or open its recursion.
//! - the managed zones are the union of both sources.
//! - per name inside a zone, **pushed wins**: a pushed name replaces the signed name's
//!   whole address list, so an RPC reply of success always means the name now resolves
//!   as Kahuna asked. A pushed name with an empty address list is a tombstone: it hides a
//!   signed name (that is what `Kiwi.DeleteDnsRecord` of a signed name stores).
//! - a zone declared by the signed section cannot be deleted over RPC.
//! - reverse zones ([`reverse`]) are derived from the merged records.
//!
//! Names are case-insensitive and kept lowercase, zones without the trailing dot
//! (`acme.local`), records relative to their zone (`www`, `db.eu`, `@` for the apex).

mod names;
mod pushed;
pub mod reverse;
mod schema;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;
use kowabunga_model::{Document, DocumentError};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

pub use names::{host_name, parse_addresses, record_name, zone_name};
pub use pushed::{Presence, PushedDns, PushedZone};
pub use reverse::ReverseZones;

use names::check_addresses;

/// Name of the signed section and of the pushed table.
pub const SECTION: &str = "dns";

/// Recursors used when the signed section names none (upstream Kiwi's defaults).
pub const DEFAULT_RECURSORS: [&str; 2] = ["9.9.9.9", "149.112.112.112"];
/// Listen address used when the signed section names none.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:53";
pub const DEFAULT_FORWARD_TIMEOUT_MS: u64 = 1500;
pub const DEFAULT_TTL: u32 = 60;
/// Addresses one name may carry; more would not fit a 1232-byte UDP answer anyway.
pub const MAX_ADDRESSES_PER_NAME: usize = 64;

/// Why DNS state is not acceptable, naming the zone or record and the cause.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("invalid domain name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error("{name}: invalid address {address:?}")]
    BadAddress { name: String, address: String },
    #[error("{name}: no addresses given")]
    NoAddresses { name: String },
    #[error("{name}: {count} addresses (at most {MAX_ADDRESSES_PER_NAME})")]
    TooManyAddresses { name: String, count: usize },
    #[error("record {name} does not exist")]
    NoSuchRecord { name: String },
    #[error("zone {zone} is declared by the signed [dns] section and cannot be deleted over RPC")]
    SignedZone { zone: String },
    #[error("record {name} in zone {zone} is shadowed by zone {shadow}")]
    Shadowed {
        name: String,
        zone: String,
        shadow: String,
    },
    #[error("{0}")]
    Section(String),
}

impl From<DocumentError> for DnsError {
    fn from(err: DocumentError) -> Self {
        DnsError::Section(err.to_string())
    }
}

/// Addresses of one name, A and AAAA mixed.
pub type Addresses = Vec<IpAddr>;
/// Records of a zone: relative name (`@` for the apex) -> addresses.
pub type ZoneRecords = BTreeMap<String, Addresses>;

/// The signed `[dns]` section.
///
/// ```toml
/// [dns]
/// listen = ["0.0.0.0:53", "[::]:53"]
/// recursors = ["9.9.9.9", "149.112.112.112:53"]
/// forward_timeout_ms = 1500
/// ttl = 60
/// nameserver = "kiwi-1.infra.acme.local"     # default: ns.<zone> in each zone
/// nameserver_addresses = ["10.0.0.1"]        # default: the specific listen addresses
/// reverse_zones = true                       # PTR for managed addresses
/// recursion_clients = ["10.8.0.0/16"]        # besides the node's own subnets
///
/// [dns.zones."acme.local".records]
/// "@" = ["10.0.0.1"]
/// www = ["10.0.0.10", "fd00::10"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "[dns]",
    description = "Kiwi's DNS server: listeners, forwarding, and the zones it answers for."
)]
pub struct DnsSection {
    /// Where to listen, UDP and TCP (`ip:port`).
    #[serde(default = "default_listen")]
    #[schemars(schema_with = "schema::listen")]
    pub listen: Vec<SocketAddr>,
    /// Where to forward names outside the managed zones, in order: `ip` or `ip:port`
    /// (port 53 when omitted).
    #[serde(default = "default_recursors", deserialize_with = "recursors")]
    #[schemars(schema_with = "schema::recursors")]
    pub recursors: Vec<SocketAddr>,
    /// Time given to each recursor, in milliseconds.
    #[serde(default = "default_forward_timeout_ms")]
    #[schemars(range(min = 1, max = 30_000))]
    pub forward_timeout_ms: u64,
    /// TTL of every answer, and the SOA minimum (negative caching).
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// This server's name in every zone's NS record (and SOA MNAME). Absent:
    /// `ns.<zone>` in each zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nameserver_schema")]
    pub nameserver: Option<String>,
    /// Addresses served for the nameserver's name when it lies in a managed zone that
    /// does not define it (glue). Empty: the listen addresses that are not wildcards.
    #[serde(default)]
    #[schemars(schema_with = "schema::addresses")]
    pub nameserver_addresses: Vec<IpAddr>,
    /// Answer PTR queries for the managed addresses from reverse zones derived from the
    /// records (each IPv4 /24, IPv6 /64 holding one).
    #[serde(default = "default_true")]
    pub reverse_zones: bool,
    /// Networks whose clients get recursive (forwarded) answers, besides the subnets
    /// of the node's own addresses, which always do. Others get REFUSED.
    #[serde(default)]
    pub recursion_clients: Vec<IpNet>,
    /// Managed zones and their records.
    #[serde(default)]
    #[schemars(schema_with = "schema::zones")]
    pub zones: BTreeMap<String, SignedZone>,
}

fn nameserver_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schema::domain_name(generator)
}

/// One zone of the signed section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedZone {
    /// Relative name (`@` for the apex) -> its A and AAAA addresses.
    #[serde(default)]
    #[schemars(schema_with = "schema::records")]
    pub records: ZoneRecords,
}

impl Default for DnsSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            recursors: default_recursors(),
            forward_timeout_ms: DEFAULT_FORWARD_TIMEOUT_MS,
            ttl: DEFAULT_TTL,
            nameserver: None,
            nameserver_addresses: Vec::new(),
            reverse_zones: true,
            recursion_clients: Vec::new(),
            zones: BTreeMap::new(),
        }
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 53))]
}

fn default_recursors() -> Vec<SocketAddr> {
    DEFAULT_RECURSORS
        .iter()
        .filter_map(|r| parse_recursor(r).ok())
        .collect()
}

fn default_forward_timeout_ms() -> u64 {
    DEFAULT_FORWARD_TIMEOUT_MS
}

fn default_ttl() -> u32 {
    DEFAULT_TTL
}

fn default_true() -> bool {
    true
}

/// `9.9.9.9`, `9.9.9.9:5353`, `2620:fe::fe` or `[2620:fe::fe]:53`.
pub fn parse_recursor(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("recursor {text:?} is neither an IP address nor IP:port"))
}

fn recursors<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| parse_recursor(t).map_err(serde::de::Error::custom))
        .collect()
}

/// What the DNS server runs: both sources merged and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub listen: Vec<SocketAddr>,
    pub recursors: Vec<SocketAddr>,
    pub forward_timeout_ms: u64,
    pub ttl: u32,
    /// The server's name in NS records; `None`: `ns.<zone>` per zone.
    pub nameserver: Option<String>,
    /// Addresses served for the nameserver's name where no record defines it.
    pub nameserver_addresses: Vec<IpAddr>,
    /// Whether PTR answers come from reverse zones derived from the records.
    pub reverse_zones: bool,
    /// Networks allowed recursion besides the node's own subnets (host bits cleared).
    pub recursion_clients: Vec<IpNet>,
    /// Zone (lowercase, no trailing dot) -> records (tombstones removed).
    pub zones: BTreeMap<String, ZoneRecords>,
}

impl DnsConfig {
    /// Number of names with at least one address, over all zones.
    pub fn record_count(&self) -> usize {
        self.zones.values().map(BTreeMap::len).sum()
    }

    /// The fully qualified name of `record` in `zone` (`www` + `acme.local` ->
    /// `www.acme.local`).
    pub fn fqdn(zone: &str, record: &str) -> String {
        if record == "@" {
            zone.to_owned()
        } else {
            format!("{record}.{zone}")
        }
    }

    /// The name in `zone`'s NS record.
    pub fn nameserver_of(&self, zone: &str) -> String {
        self.nameserver
            .clone()
            .unwrap_or_else(|| format!("ns.{zone}"))
    }

    /// The reverse zones derived from the records, empty when `reverse_zones` is off.
    pub fn reverse(&self) -> ReverseZones {
        if self.reverse_zones {
            reverse::derive(&self.zones)
        } else {
            ReverseZones::new()
        }
    }
}

/// The signed `[dns]` section of `doc` (defaults when absent), validated.
pub fn signed(doc: &Document) -> Result<DnsSection, DnsError> {
    let mut section: DnsSection = doc.section(SECTION)?.unwrap_or_default();
    if section.listen.is_empty() {
        return Err(DnsError::Section("[dns] listen: no address given".into()));
    }
    if section.recursors.is_empty() {
        return Err(DnsError::Section(
            "[dns] recursors: no recursor given".into(),
        ));
    }
    if section.forward_timeout_ms == 0 || section.forward_timeout_ms > 30_000 {
        return Err(DnsError::Section(format!(
            "[dns] forward_timeout_ms: {} is outside 1..=30000",
            section.forward_timeout_ms
        )));
    }
    if let Some(name) = &section.nameserver {
        section.nameserver = Some(host_name(name)?);
    }
    if !section.nameserver_addresses.is_empty() {
        check_addresses("[dns] nameserver_addresses", &section.nameserver_addresses)?;
    }
    for net in &mut section.recursion_clients {
        *net = net.trunc();
    }
    let mut zones = BTreeMap::new();
    for (zone, spec) in std::mem::take(&mut section.zones) {
        let zone = zone_name(&zone)?;
        let mut records = ZoneRecords::new();
        for (name, addresses) in spec.records {
            let name = record_name(&name)?;
            let fqdn = DnsConfig::fqdn(&zone, &name);
            check_addresses(&fqdn, &addresses)?;
            records.insert(name, addresses);
        }
        zones.insert(zone, SignedZone { records });
    }
    section.zones = zones;
    Ok(section)
}

/// The pushed `dns` table of `doc` (empty when absent), validated.
pub fn pushed(doc: &Document) -> Result<PushedDns, DnsError> {
    let raw: PushedDns = doc.pushed(SECTION)?.unwrap_or_default();
    let mut out = PushedDns::default();
    for (zone, spec) in raw.zones {
        let zone = zone_name(&zone)?;
        let mut records = ZoneRecords::new();
        for (name, addresses) in spec.records {
            let name = record_name(&name)?;
            if !addresses.is_empty() {
                check_addresses(&DnsConfig::fqdn(&zone, &name), &addresses)?;
            }
            records.insert(name, addresses);
        }
        out.zones.insert(zone, PushedZone { records });
    }
    Ok(out)
}

/// The configuration `doc` asks for: its signed section merged with its pushed table.
pub fn effective(doc: &Document) -> Result<DnsConfig, DnsError> {
    merge(&signed(doc)?, &pushed(doc)?)
}

/// Merge the two sources (see the module documentation for the rules).
pub fn merge(signed: &DnsSection, pushed: &PushedDns) -> Result<DnsConfig, DnsError> {
    let mut zones: BTreeMap<String, ZoneRecords> = signed
        .zones
        .iter()
        .map(|(zone, spec)| (zone.clone(), spec.records.clone()))
        .collect();
    for (zone, spec) in &pushed.zones {
        let records = zones.entry(zone.clone()).or_default();
        for (name, addresses) in &spec.records {
            if addresses.is_empty() {
                records.remove(name);
            } else {
                records.insert(name.clone(), addresses.clone());
            }
        }
    }
    // A record must not sit below a more specific managed zone: the server answers
    // from the longest matching zone, so such a record would never be served.
    for (zone, records) in &zones {
        for name in records.keys() {
            let fqdn = DnsConfig::fqdn(zone, name);
            let mut rest = fqdn.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() <= zone.len() {
                    break;
                }
                if zones.contains_key(parent) {
                    return Err(DnsError::Shadowed {
                        name: fqdn.clone(),
                        zone: zone.clone(),
                        shadow: parent.to_owned(),
                    });
                }
                rest = parent;
            }
            if name != "@" && zones.contains_key(&fqdn) {
                return Err(DnsError::Shadowed {
                    name: fqdn.clone(),
                    zone: zone.clone(),
                    shadow: fqdn.clone(),
                });
            }
        }
    }
    let nameserver_addresses = if signed.nameserver_addresses.is_empty() {
        let mut specific: Vec<IpAddr> = Vec::new();
        for ip in signed.listen.iter().map(SocketAddr::ip) {
            if !ip.is_unspecified() && !specific.contains(&ip) {
                specific.push(ip);
            }
        }
        specific
    } else {
        signed.nameserver_addresses.clone()
    };
    Ok(DnsConfig {
        listen: signed.listen.clone(),
        recursors: signed.recursors.clone(),
        forward_timeout_ms: signed.forward_timeout_ms,
        ttl: signed.ttl,
        nameserver: signed.nameserver.clone(),
        nameserver_addresses,
        reverse_zones: signed.reverse_zones,
        recursion_clients: signed.recursion_clients.clone(),
        zones,
    })
}

impl fmt::Display for DnsConfig {
    /// A zone-file-like listing, kept in the generation's `rendered/dns/` for audit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |v: &[SocketAddr]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(f, "; listen {}", join(&self.listen))?;
        writeln!(
            f,
            "; recursors {} (timeout {} ms)",
            join(&self.recursors),
            self.forward_timeout_ms
        )?;
        let clients: Vec<String> = self
            .recursion_clients
            .iter()
            .map(ToString::to_string)
            .collect();
        writeln!(
            f,
            "; recursion for the node's own subnets{}{}",
            if clients.is_empty() { "" } else { " and " },
            clients.join(" ")
        )?;
        for (zone, records) in &self.zones {
            writeln!(f, "$ORIGIN {zone}.")?;
            writeln!(
                f,
                "{:<24} {} IN NS   {}.",
                "@",
                self.ttl,
                self.nameserver_of(zone)
            )?;
            for (name, addresses) in records {
                for a in addresses {
                    let kind = if a.is_ipv4() { "A" } else { "AAAA" };
                    writeln!(f, "{name:<24} {} IN {kind:<4} {a}", self.ttl)?;
                }
            }
        }
        for (zone, owners) in self.reverse() {
            writeln!(f, "$ORIGIN {zone}.")?;
            writeln!(
                f,
                "{:<24} {} IN NS   {}.",
                "@",
                self.ttl,
                self.nameserver_of(&zone)
            )?;
            for (owner, targets) in owners {
                let label = owner.strip_suffix(&format!(".{zone}")).unwrap_or(&owner);
                for target in targets {
                    writeln!(f, "{label:<24} {} IN PTR  {target}.", self.ttl)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kowabunga_model::Format;
    use std::net::SocketAddr;

    const HEAD: &str = "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2027-01-01T00:00:00Z\"\n";

    fn doc(body: &str) -> Document {
        Document::parse(format!("{HEAD}{body}").as_bytes(), Format::Toml).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn absent_section_means_defaults() {
        let cfg = effective(&doc("")).unwrap();
        assert_eq!(cfg.listen, vec!["0.0.0.0:53".parse().unwrap()]);
        assert_eq!(
            cfg.recursors,
            vec![
                "9.9.9.9:53".parse::<SocketAddr>().unwrap(),
                "149.112.112.112:53".parse().unwrap()
            ]
        );
        assert!(cfg.zones.is_empty());
    }

    #[test]
    fn signed_section_is_parsed_and_normalised() {
        let d = doc(r#"
[dns]
listen = ["127.0.0.1:5353", "[::1]:5353"]
recursors = ["10.0.0.1", "[fd00::1]:5300"]
forward_timeout_ms = 800
ttl = 30
[dns.zones."Acme.Local.".records]
"@" = ["10.0.0.1"]
WWW = ["10.0.0.10", "fd00::10"]
"#);
        let cfg = effective(&d).unwrap();
        assert_eq!(cfg.recursors[0], "10.0.0.1:53".parse().unwrap());
        assert_eq!(cfg.recursors[1], "[fd00::1]:5300".parse().unwrap());
        assert_eq!(cfg.ttl, 30);
        let z = &cfg.zones["acme.local"];
        assert_eq!(z["@"], vec![ip("10.0.0.1")]);
        assert_eq!(z["www"], vec![ip("10.0.0.10"), ip("fd00::10")]);
        let text = cfg.to_string();
        assert!(
            text.contains("www                      30 IN AAAA fd00::10"),
            "{text}"
        );
    }

    #[test]
    fn signed_section_errors_name_the_problem() {
        let cases = [
            ("[dns]\nlisten = []\n", "listen: no address"),
            ("[dns]\nrecursors = [\"nine\"]\n", "recursor \"nine\""),
            ("[dns]\nlisetn = []\n", "unknown field `lisetn`"),
            ("[dns]\nforward_timeout_ms = 0\n", "outside 1..=30000"),
            (
                "[dns.zones.\"a..b\".records]\nx = [\"10.0.0.1\"]\n",
                "empty label",
            ),
            (
                "[dns.zones.\"a.b\".records]\nx = []\n",
                "x.a.b: no addresses",
            ),
            (
                "[dns.zones.\"a.b\".records]\n\"x y\" = [\"10.0.0.1\"]\n",
                "character ' '",
            ),
            (
                "[dns.zones.\"a.b\".records]\nx = [\"0.0.0.0\"]\n",
                "invalid address \"0.0.0.0\"",
            ),
            (
                "[dns.zones.\"a.b\".records]\nx = [\"10.0.0.300\"]\n",
                "[dns]",
            ),
        ];
        for (body, want) in cases {
            let err = effective(&doc(body)).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    fn signed_fixture() -> DnsSection {
        signed(&doc(
            "[dns.zones.\"acme.local\".records]\nwww = [\"10.0.0.10\"]\nmail = [\"10.0.0.20\"]\n",
        ))
        .unwrap()
    }

    #[test]
    fn pushed_wins_per_name_and_zones_unite() {
        let s = signed_fixture();
        let mut p = PushedDns::default();
        p.set_record("acme.local", "www", vec![ip("10.9.9.9")])
            .unwrap();
        p.set_record("Other.Zone", "api", vec![ip("10.1.1.1")])
            .unwrap();
        let cfg = merge(&s, &p).unwrap();
        assert_eq!(cfg.zones["acme.local"]["www"], vec![ip("10.9.9.9")]);
        assert_eq!(cfg.zones["acme.local"]["mail"], vec![ip("10.0.0.20")]);
        assert_eq!(cfg.zones["other.zone"]["api"], vec![ip("10.1.1.1")]);
        assert_eq!(cfg.record_count(), 3);
    }

    #[test]
    fn delete_of_signed_name_is_a_tombstone() {
        let s = signed_fixture();
        let mut p = PushedDns::default();
        p.delete_record("acme.local", "mail", &s).unwrap();
        assert_eq!(p.zones["acme.local"].records["mail"], Vec::<IpAddr>::new());
        let cfg = merge(&s, &p).unwrap();
        assert!(!cfg.zones["acme.local"].contains_key("mail"));
        assert_eq!(
            p.presence("acme.local", "mail", &s).unwrap(),
            Presence::Absent
        );
        // Re-creating it lifts the tombstone.
        p.set_record("acme.local", "mail", vec![ip("10.0.0.21")])
            .unwrap();
        assert_eq!(
            merge(&s, &p).unwrap().zones["acme.local"]["mail"],
            vec![ip("10.0.0.21")]
        );
    }

    #[test]
    fn rpc_operations_follow_upstream_semantics() {
        let s = signed_fixture();
        let mut p = PushedDns::default();
        // Update of an unknown record fails, of a signed one overrides it.
        let err = p
            .update_record("acme.local", "nope", vec![ip("10.0.0.1")], &s)
            .unwrap_err();
        assert_eq!(err.to_string(), "record nope.acme.local does not exist");
        p.update_record("acme.local", "www", vec![ip("10.0.0.11")], &s)
            .unwrap();
        // Delete is idempotent.
        p.delete_record("acme.local", "ghost", &s).unwrap();
        p.delete_record("nozone.local", "ghost", &s).unwrap();
        // Zones: create is idempotent, signed zones cannot be deleted.
        p.create_zone("new.local").unwrap();
        p.create_zone("new.local.").unwrap();
        assert!(p.zones["new.local"].records.is_empty());
        p.delete_zone("new.local", &s).unwrap();
        assert!(!p.zones.contains_key("new.local"));
        let err = p.delete_zone("acme.local", &s).unwrap_err().to_string();
        assert!(err.contains("signed [dns] section"), "{err}");
        // Bad input changes nothing.
        let before = p.clone();
        assert!(p.set_record("acme.local", "x", vec![]).is_err());
        assert!(
            p.set_record("bad..zone", "x", vec![ip("10.0.0.1")])
                .is_err()
        );
        assert!(
            p.set_record("acme.local", "x.", vec![ip("10.0.0.1")])
                .is_err()
        );
        assert_eq!(p, before);
    }

    #[test]
    fn reload_replaces_and_adds_families() {
        let p = PushedDns::reload(vec![(
            "acme.local".to_owned(),
            vec![
                ("www".to_owned(), vec![ip("10.0.0.1")]),
                ("www".to_owned(), vec![ip("fd00::1"), ip("10.0.0.1")]),
            ],
        )])
        .unwrap();
        assert_eq!(
            p.zones["acme.local"].records["www"],
            vec![ip("10.0.0.1"), ip("fd00::1")]
        );
    }

    #[test]
    fn shadowed_records_are_refused() {
        let mut p = PushedDns::default();
        p.set_record("acme.local", "www.eu", vec![ip("10.0.0.1")])
            .unwrap();
        p.create_zone("eu.acme.local").unwrap();
        let err = merge(&DnsSection::default(), &p).unwrap_err().to_string();
        assert!(err.contains("shadowed by zone eu.acme.local"), "{err}");
        let mut p = PushedDns::default();
        p.set_record("acme.local", "eu", vec![ip("10.0.0.1")])
            .unwrap();
        p.create_zone("eu.acme.local").unwrap();
        assert!(merge(&DnsSection::default(), &p).is_err());
    }

    #[test]
    fn pushed_table_round_trips_through_the_document() {
        let mut p = PushedDns::default();
        p.set_record("acme.local", "www", vec![ip("10.0.0.1"), ip("fd00::1")])
            .unwrap();
        p.set_record("acme.local", "@", vec![ip("10.0.0.2")])
            .unwrap();
        p.delete_record("acme.local", "mail", &signed_fixture())
            .unwrap();
        p.create_zone("empty.zone").unwrap();
        let mut d = doc("");
        d.set_pushed(SECTION, p.to_table());
        assert_eq!(pushed(&d).unwrap(), p);
        // And through TOML text, as the generation store keeps it.
        let text = toml::to_string(&p.to_table()).unwrap();
        let back: toml::Table = toml::from_str(&text).unwrap();
        let mut d2 = doc("");
        d2.set_pushed(SECTION, back);
        assert_eq!(pushed(&d2).unwrap(), p);
    }

    #[test]
    fn pushed_table_is_validated() {
        let mut d = doc("");
        let bad: toml::Table =
            toml::from_str("[zones.\"acme.local\".records]\nwww = [\"not-an-ip\"]\n").unwrap();
        d.set_pushed(SECTION, bad);
        assert!(effective(&d).unwrap_err().to_string().contains("[dns]"));
    }

    #[test]
    fn parse_addresses_names_the_record() {
        let err = parse_addresses("www.acme.local", &["10.0.0.1".into(), "x".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "www.acme.local: invalid address \"x\"");
    }

    #[test]
    fn server_knobs_default_and_normalise() {
        let cfg = effective(&doc("[dns]\nlisten = [\"10.0.0.1:53\", \"0.0.0.0:53\"]\n")).unwrap();
        assert_eq!(cfg.nameserver, None);
        assert_eq!(cfg.nameserver_of("acme.local"), "ns.acme.local");
        assert_eq!(cfg.nameserver_addresses, vec![ip("10.0.0.1")]);
        assert!(cfg.reverse_zones);
        assert!(cfg.recursion_clients.is_empty());
        let cfg = effective(&doc(
            "[dns]\nnameserver = \"Kiwi-1.Infra.Local.\"\nnameserver_addresses = [\"10.0.0.9\"]\nreverse_zones = false\nrecursion_clients = [\"10.8.1.2/16\", \"fd00::1/8\"]\n",
        ))
        .unwrap();
        assert_eq!(cfg.nameserver_of("acme.local"), "kiwi-1.infra.local");
        assert_eq!(cfg.nameserver_addresses, vec![ip("10.0.0.9")]);
        assert!(!cfg.reverse_zones);
        let nets: Vec<String> = cfg
            .recursion_clients
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.8.0.0/16", "fd00::/8"]);
    }

    #[test]
    fn schema_lists_exactly_the_fields_serde_accepts() {
        let schema = serde_json::to_value(schemars::schema_for!(DnsSection)).unwrap();
        assert_eq!(schema["additionalProperties"], false, "{schema:#}");
        let in_schema: std::collections::BTreeSet<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        // Every field, as serde writes a fully set section (and reads it back).
        let full = DnsSection {
            nameserver: Some("ns.acme.local".into()),
            ..DnsSection::default()
        };
        let table = toml::Table::try_from(&full).unwrap();
        let back: DnsSection = table.clone().try_into().unwrap();
        assert_eq!(back, full);
        let in_serde: std::collections::BTreeSet<String> = table.keys().cloned().collect();
        assert_eq!(in_schema, in_serde);
        // Validated values carry their constraints.
        let p = &schema["properties"];
        assert_eq!(p["listen"]["minItems"], 1);
        assert_eq!(p["recursors"]["minItems"], 1);
        assert_eq!(p["forward_timeout_ms"]["maximum"], 30_000);
        assert_eq!(p["forward_timeout_ms"]["minimum"], 1);
        assert_eq!(p["reverse_zones"]["default"], true);
        assert!(p["zones"]["propertyNames"]["pattern"].is_string(), "{p:#}");
        assert!(p["nameserver"]["pattern"].is_string(), "{p:#}");
        // The zone table is strict too, and its records are address lists.
        let text = schema.to_string();
        assert!(text.contains("\"maxItems\":64"), "{text}");
        assert!(text.contains("IpNet"), "{text}");
    }
}
