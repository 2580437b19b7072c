//! Kiwi's DNS desired state: the signed `[dns]` section, the records Kahuna pushed over
//! RPC, and how the two merge into the configuration the DNS server runs.
//!
//! Two sources feed the DNS server:
//! - the signed `[dns]` section of the pulled document ([`DnsSection`]): where to listen,
//!   which recursors to forward to, and zones with records the operator declares;
//! - the pushed table `dns` ([`PushedDns`]): what Kahuna sent with `Kiwi.Reload`,
//!   `Kiwi.CreateDnsRecord`... Stored with each generation, authenticated by the RPC
//!   channel, not signed.
//!
//! Merge ([`effective`]), written down in `docs/dns.md`:
//! - listen addresses, recursors, timeout and TTL come only from the signed section
//!   (defaults when it is absent): Kahuna cannot move the server.
//! - the managed zones are the union of both sources.
//! - per name inside a zone, **pushed wins**: a pushed name replaces the signed name's
//!   whole address list, so an RPC reply of success always means the name now resolves
//!   as Kahuna asked. A pushed name with an empty address list is a tombstone: it hides a
//!   signed name (that is what `Kiwi.DeleteDnsRecord` of a signed name stores).
//! - a zone declared by the signed section cannot be deleted over RPC.
//!
//! Names are case-insensitive and kept lowercase, zones without the trailing dot
//! (`acme.local`), records relative to their zone (`www`, `db.eu`, `@` for the apex).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::{Document, DocumentError};

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
///
/// [dns.zones."acme.local".records]
/// "@" = ["10.0.0.1"]
/// www = ["10.0.0.10", "fd00::10"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// `ip` or `ip:port` (port 53 when omitted).
    #[serde(default = "default_recursors", deserialize_with = "recursors")]
    pub recursors: Vec<SocketAddr>,
    #[serde(default = "default_forward_timeout_ms")]
    pub forward_timeout_ms: u64,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    #[serde(default)]
    pub zones: BTreeMap<String, SignedZone>,
}

/// One zone of the signed section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignedZone {
    #[serde(default)]
    pub records: ZoneRecords,
}

impl Default for DnsSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            recursors: default_recursors(),
            forward_timeout_ms: DEFAULT_FORWARD_TIMEOUT_MS,
            ttl: DEFAULT_TTL,
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

/// The pushed table `dns`: what Kahuna sent over RPC, zone -> records.
///
/// ```toml
/// [zones."acme.local".records]
/// www = ["10.0.0.10"]
/// old = []          # tombstone: hides the signed name `old`
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushedDns {
    #[serde(default)]
    pub zones: BTreeMap<String, PushedZone>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushedZone {
    #[serde(default)]
    pub records: ZoneRecords,
}

/// What the DNS server runs: both sources merged and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub listen: Vec<SocketAddr>,
    pub recursors: Vec<SocketAddr>,
    pub forward_timeout_ms: u64,
    pub ttl: u32,
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
    Ok(DnsConfig {
        listen: signed.listen.clone(),
        recursors: signed.recursors.clone(),
        forward_timeout_ms: signed.forward_timeout_ms,
        ttl: signed.ttl,
        zones,
    })
}

/// What a record is in the merged view, to decide what an RPC may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Absent,
    Present,
}

impl PushedDns {
    /// `Kiwi.Reload`: replace every pushed record. Signed records stay (pushed still
    /// wins per name).
    pub fn reload(
        domains: impl IntoIterator<Item = (String, Vec<(String, Addresses)>)>,
    ) -> Result<Self, DnsError> {
        let mut out = PushedDns::default();
        for (zone, records) in domains {
            let zone = zone_name(&zone)?;
            let entry = out.zones.entry(zone.clone()).or_default();
            for (name, addresses) in records {
                let name = record_name(&name)?;
                let fqdn = DnsConfig::fqdn(&zone, &name);
                check_addresses(&fqdn, &addresses)?;
                // Upstream sends one record per (name, type): A and AAAA of a name
                // arrive separately and add up.
                let slot = entry.records.entry(name).or_default();
                for a in addresses {
                    if !slot.contains(&a) {
                        slot.push(a);
                    }
                }
                check_addresses(&fqdn, slot)?;
            }
        }
        Ok(out)
    }

    /// `Kiwi.CreateDnsZone`: make `zone` managed (idempotent).
    pub fn create_zone(&mut self, zone: &str) -> Result<(), DnsError> {
        let zone = zone_name(zone)?;
        self.zones.entry(zone).or_default();
        Ok(())
    }

    /// `Kiwi.DeleteDnsZone`: forget `zone` and its pushed records (idempotent). A zone
    /// the signed section declares cannot be deleted this way.
    pub fn delete_zone(&mut self, zone: &str, signed: &DnsSection) -> Result<(), DnsError> {
        let zone = zone_name(zone)?;
        if signed.zones.contains_key(&zone) {
            return Err(DnsError::SignedZone { zone });
        }
        self.zones.remove(&zone);
        Ok(())
    }

    /// `Kiwi.CreateDnsRecord` (and `UpdateDnsRecord` once existence is checked): set
    /// the addresses of `name` in `zone`, creating the zone if needed.
    pub fn set_record(
        &mut self,
        zone: &str,
        name: &str,
        addresses: Addresses,
    ) -> Result<(), DnsError> {
        let zone = zone_name(zone)?;
        let name = record_name(name)?;
        check_addresses(&DnsConfig::fqdn(&zone, &name), &addresses)?;
        let mut unique = Addresses::with_capacity(addresses.len());
        for a in addresses {
            if !unique.contains(&a) {
                unique.push(a);
            }
        }
        self.zones
            .entry(zone)
            .or_default()
            .records
            .insert(name, unique);
        Ok(())
    }

    /// `Kiwi.UpdateDnsRecord`: like [`set_record`](Self::set_record), but the record
    /// must exist in the merged view (upstream errors on an unknown record).
    pub fn update_record(
        &mut self,
        zone: &str,
        name: &str,
        addresses: Addresses,
        signed: &DnsSection,
    ) -> Result<(), DnsError> {
        if self.presence(zone, name, signed)? == Presence::Absent {
            let fqdn = DnsConfig::fqdn(&zone_name(zone)?, &record_name(name)?);
            return Err(DnsError::NoSuchRecord { name: fqdn });
        }
        self.set_record(zone, name, addresses)
    }

    /// `Kiwi.DeleteDnsRecord`: remove `name` (idempotent, as upstream). A signed name
    /// gets a tombstone so that it stops resolving.
    pub fn delete_record(
        &mut self,
        zone: &str,
        name: &str,
        signed: &DnsSection,
    ) -> Result<(), DnsError> {
        let zone = zone_name(zone)?;
        let name = record_name(name)?;
        let in_signed = signed
            .zones
            .get(&zone)
            .is_some_and(|z| z.records.contains_key(&name));
        if in_signed {
            self.zones
                .entry(zone)
                .or_default()
                .records
                .insert(name, Vec::new());
        } else if let Some(z) = self.zones.get_mut(&zone) {
            z.records.remove(&name);
        }
        Ok(())
    }

    /// Whether `name` in `zone` resolves in the merged view of `self` and `signed`.
    pub fn presence(
        &self,
        zone: &str,
        name: &str,
        signed: &DnsSection,
    ) -> Result<Presence, DnsError> {
        let zone = zone_name(zone)?;
        let name = record_name(name)?;
        let pushed = self.zones.get(&zone).and_then(|z| z.records.get(&name));
        let present = match pushed {
            Some(addresses) => !addresses.is_empty(),
            None => signed
                .zones
                .get(&zone)
                .is_some_and(|z| z.records.contains_key(&name)),
        };
        Ok(if present {
            Presence::Present
        } else {
            Presence::Absent
        })
    }

    /// As a TOML table, for [`Document::set_pushed`].
    pub fn to_table(&self) -> toml::Table {
        let mut zones = toml::Table::new();
        for (zone, spec) in &self.zones {
            let mut records = toml::Table::new();
            for (name, addresses) in &spec.records {
                let list = addresses
                    .iter()
                    .map(|a| toml::Value::String(a.to_string()))
                    .collect();
                records.insert(name.clone(), toml::Value::Array(list));
            }
            let mut z = toml::Table::new();
            z.insert("records".into(), toml::Value::Table(records));
            zones.insert(zone.clone(), toml::Value::Table(z));
        }
        let mut table = toml::Table::new();
        table.insert("zones".into(), toml::Value::Table(zones));
        table
    }
}

/// A zone name, normalised: lowercase, no trailing dot, valid labels.
pub fn zone_name(text: &str) -> Result<String, DnsError> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if name.is_empty() {
        return Err(bad_name(text, "empty (the root zone cannot be managed)"));
    }
    check_labels(text, &name)?;
    Ok(name)
}

/// A record name relative to its zone, normalised: lowercase; `@` or empty is the apex.
pub fn record_name(text: &str) -> Result<String, DnsError> {
    if text.is_empty() || text == "@" {
        return Ok("@".to_owned());
    }
    if text.ends_with('.') {
        return Err(bad_name(
            text,
            "record names are relative to their zone (no trailing dot)",
        ));
    }
    let name = text.to_ascii_lowercase();
    check_labels(text, &name)?;
    Ok(name)
}

fn check_labels(original: &str, name: &str) -> Result<(), DnsError> {
    if name.len() > 253 {
        return Err(bad_name(original, "longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad_name(original, "empty label"));
        }
        if label.len() > 63 {
            return Err(bad_name(original, "a label is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(bad_name(
                original,
                &format!("character {c:?} is not allowed"),
            ));
        }
    }
    Ok(())
}

fn check_addresses(fqdn: &str, addresses: &[IpAddr]) -> Result<(), DnsError> {
    if addresses.is_empty() {
        return Err(DnsError::NoAddresses {
            name: fqdn.to_owned(),
        });
    }
    if addresses.len() > MAX_ADDRESSES_PER_NAME {
        return Err(DnsError::TooManyAddresses {
            name: fqdn.to_owned(),
            count: addresses.len(),
        });
    }
    if let Some(bad) = addresses
        .iter()
        .find(|a| a.is_unspecified() || a.is_multicast())
    {
        return Err(DnsError::BadAddress {
            name: fqdn.to_owned(),
            address: bad.to_string(),
        });
    }
    Ok(())
}

/// Parse textual addresses (as upstream sends them), naming the record on error.
pub fn parse_addresses(fqdn: &str, texts: &[String]) -> Result<Addresses, DnsError> {
    texts
        .iter()
        .map(|t| {
            t.trim()
                .parse::<IpAddr>()
                .map_err(|_| DnsError::BadAddress {
                    name: fqdn.to_owned(),
                    address: t.clone(),
                })
        })
        .collect()
}

fn bad_name(name: &str, reason: &str) -> DnsError {
    DnsError::BadName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
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
        for (zone, records) in &self.zones {
            writeln!(f, "$ORIGIN {zone}.")?;
            for (name, addresses) in records {
                for a in addresses {
                    let kind = if a.is_ipv4() { "A" } else { "AAAA" };
                    writeln!(f, "{name:<24} {} IN {kind:<4} {a}", self.ttl)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

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
}
