//! The DHCP server in the agent's `/status` (under `services.dhcp.report`) and
//! `/metrics`: per served link, its pool size, bound leases and messages by type; the
//! lease store's last write error.

use std::collections::BTreeMap;

use kowabunga_model::{Metric, MetricKind, Report, Sample};
use serde::Serialize;

use crate::DhcpServer;

/// One served link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkReport {
    /// Addresses in its pools.
    pub pool_size: u64,
    /// Static leases.
    pub static_hosts: u64,
    /// Leases ACKed and not yet ended (released or expired).
    pub bound: u64,
    /// DHCPOFFERs sent since the agent started.
    pub offers: u64,
    /// DHCPACKs sent (leases granted or renewed, INFORM answers).
    pub acks: u64,
    /// DHCPNAKs sent.
    pub naks: u64,
    /// DHCPDECLINEs received.
    pub declines: u64,
}

/// The server: its served links, and the lease store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DhcpReport {
    pub links: BTreeMap<String, LinkReport>,
    /// Why the last lease write failed, until one succeeds (the reconciler's check
    /// fails meanwhile).
    pub lease_store_error: Option<String>,
    /// Lease writes that failed since the agent started.
    pub lease_store_failures: u64,
}

impl DhcpReport {
    /// The metric families, every served link in each.
    pub fn metrics(&self) -> Vec<Metric> {
        let by_link = |name, kind, help, value: fn(&LinkReport) -> u64| Metric {
            name,
            kind,
            help,
            samples: self
                .links
                .iter()
                .map(|(link, r)| Sample::labelled("link", link.as_str(), value(r)))
                .collect(),
        };
        vec![
            by_link(
                "kowabunga_dhcp_pool_addresses",
                MetricKind::Gauge,
                "Addresses in the pools of a served link.",
                |r| r.pool_size,
            ),
            by_link(
                "kowabunga_dhcp_leases_bound",
                MetricKind::Gauge,
                "Leases of a served link ACKed and not yet released or expired.",
                |r| r.bound,
            ),
            by_link(
                "kowabunga_dhcp_offers_total",
                MetricKind::Counter,
                "DHCPOFFERs sent on a served link.",
                |r| r.offers,
            ),
            by_link(
                "kowabunga_dhcp_acks_total",
                MetricKind::Counter,
                "DHCPACKs sent on a served link (leases granted or renewed, INFORM answers).",
                |r| r.acks,
            ),
            by_link(
                "kowabunga_dhcp_naks_total",
                MetricKind::Counter,
                "DHCPNAKs sent on a served link.",
                |r| r.naks,
            ),
            by_link(
                "kowabunga_dhcp_declines_total",
                MetricKind::Counter,
                "DHCPDECLINEs received on a served link.",
                |r| r.declines,
            ),
            Metric {
                name: "kowabunga_dhcp_lease_store_failing",
                kind: MetricKind::Gauge,
                help: "Whether the last write of the leases failed (1) or succeeded (0).",
                samples: vec![Sample::plain(u64::from(self.lease_store_error.is_some()))],
            },
            Metric {
                name: "kowabunga_dhcp_lease_store_failures_total",
                kind: MetricKind::Counter,
                help: "Writes of the leases that failed.",
                samples: vec![Sample::plain(self.lease_store_failures)],
            },
        ]
    }
}

impl Report for DhcpServer {
    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.report())
            .unwrap_or_else(|e| serde_json::json!({ "error": format!("dhcp report: {e}") }))
    }

    fn metrics(&self) -> Vec<Metric> {
        self.report().metrics()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_served_link_is_in_every_family() {
        let mut report = DhcpReport::default();
        for (link, acks) in [("eth1", 3), ("vlan101", 0)] {
            report.links.insert(
                link.to_owned(),
                LinkReport {
                    pool_size: 100,
                    acks,
                    ..LinkReport::default()
                },
            );
        }
        report.lease_store_error = Some("disk full".into());
        let metrics = report.metrics();
        for family in &metrics[..6] {
            let links: Vec<&str> = family
                .samples
                .iter()
                .map(|s| s.labels[0].1.as_str())
                .collect();
            assert_eq!(links, ["eth1", "vlan101"], "{}", family.name);
        }
        let acks = metrics
            .iter()
            .find(|m| m.name == "kowabunga_dhcp_acks_total")
            .unwrap();
        assert_eq!(acks.samples[0].value, 3);
        assert_eq!(acks.kind, MetricKind::Counter);
        let failing = metrics
            .iter()
            .find(|m| m.name == "kowabunga_dhcp_lease_store_failing")
            .unwrap();
        assert_eq!(failing.samples, [Sample::plain(1)]);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["links"]["eth1"]["pool_size"], 100);
        assert_eq!(json["lease_store_error"], "disk full");
    }
}
