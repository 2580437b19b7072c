//! Reverse zones derived from the managed records: every address a managed name
//! carries gets a PTR back to that name, so the reverse view follows the merged view
//! (pushed wins, tombstones hide) with no separate source to keep in step.
//!
//! Zone boundaries: an IPv4 address's reverse zone is its /24 (`0.0.10.in-addr.arpa`),
//! an IPv6 address's its /64 (16 nibbles under `ip6.arpa`); the server is
//! authoritative for those (NXDOMAIN for an address of the /24 nobody carries). A
//! derived zone that is also declared as a managed zone is left to that zone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::{DnsConfig, ZoneRecords};

/// Reverse zone -> owner name (fully qualified, no trailing dot) -> the names it points
/// back to (fully qualified), sorted.
pub type ReverseZones = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// The reverse zones of `zones` (see the module documentation).
pub fn derive(zones: &BTreeMap<String, ZoneRecords>) -> ReverseZones {
    let mut out = ReverseZones::new();
    for (zone, records) in zones {
        for (name, addresses) in records {
            let target = DnsConfig::fqdn(zone, name);
            for address in addresses {
                let (reverse_zone, owner) = reverse_name(*address);
                if zones.contains_key(&reverse_zone) {
                    continue;
                }
                let targets = out
                    .entry(reverse_zone)
                    .or_default()
                    .entry(owner)
                    .or_default();
                if !targets.contains(&target) {
                    targets.push(target.clone());
                }
            }
        }
    }
    for owners in out.values_mut() {
        for targets in owners.values_mut() {
            targets.sort();
        }
    }
    out
}

/// `10.0.0.5` -> (`0.0.10.in-addr.arpa`, `5.0.0.10.in-addr.arpa`); `fd00::1` ->
/// (its /64 zone, its 32-nibble name), both under `ip6.arpa`.
pub fn reverse_name(address: IpAddr) -> (String, String) {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            (
                format!("{c}.{b}.{a}.in-addr.arpa"),
                format!("{d}.{c}.{b}.{a}.in-addr.arpa"),
            )
        }
        IpAddr::V6(v6) => {
            let mut nibbles = String::with_capacity(64);
            for byte in v6.octets().iter().rev() {
                let _ = write!(nibbles, "{:x}.{:x}.", byte & 0x0f, byte >> 4);
            }
            // The first 16 nibbles (32 characters) are the interface identifier.
            let owner = format!("{nibbles}ip6.arpa");
            let zone = owner[32..].to_owned();
            (zone, owner)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_of_both_families() {
        assert_eq!(
            reverse_name("10.1.2.3".parse().unwrap()),
            (
                "2.1.10.in-addr.arpa".to_owned(),
                "3.2.1.10.in-addr.arpa".to_owned()
            )
        );
        let (zone, owner) = reverse_name("fd00:1:2:3::a".parse().unwrap());
        assert_eq!(zone, "3.0.0.0.2.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa");
        assert_eq!(
            owner,
            "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa"
        );
    }

    #[test]
    fn shared_addresses_point_back_to_every_name_and_declared_zones_win() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut zones = BTreeMap::new();
        let mut acme = ZoneRecords::new();
        acme.insert("www".into(), vec![ip("10.0.0.1"), ip("fd00::1")]);
        acme.insert("web".into(), vec![ip("10.0.0.1")]);
        acme.insert("db".into(), vec![ip("10.9.0.1")]);
        zones.insert("acme.local".to_owned(), acme);
        zones.insert("0.9.10.in-addr.arpa".to_owned(), ZoneRecords::new());
        let rev = derive(&zones);
        assert_eq!(
            rev["0.0.10.in-addr.arpa"]["1.0.0.10.in-addr.arpa"],
            ["web.acme.local", "www.acme.local"]
        );
        assert!(!rev.contains_key("0.9.10.in-addr.arpa"));
        assert_eq!(rev.len(), 2, "{rev:?}");
    }
}
