//! The pushed table `dns`: what Kahuna sent over RPC, and the `Kiwi.*` operations on
//! it (upstream's semantics: idempotent deletes, update of an unknown record fails).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::names::{check_addresses, record_name, zone_name};
use super::{Addresses, DnsConfig, DnsError, DnsSection, ZoneRecords};

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
