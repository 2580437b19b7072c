//! The instance metadata JSON Kahuna serves at `kowabunga_metadata_uri`
//! (`GET <public url>/latest/meta-data` with `X-Kowabunga-Source-Ip` and
//! `X-Kowabunga-Instance-Id`), with the `kawaii` or `konvey` object of service VMs.
//!
//! Field names are upstream's (`kowabunga/common/metadata/*.go`). Fields this crate does
//! not use are tolerated (upstream adds some: `vcpu`, `mem_gb`, `monthly_cost`...).
//! Values with a syntax of their own (addresses, prefixes, ports, policies) are typed,
//! so a bad one is refused with its key path:
//! `kawaii.virtual_ips[0].vip: invalid IP address syntax`. Strings that Kahuna fills
//! with several values (`ports: "80,443,3000-3005"`, `source_ip`) are parsed by the
//! role modules, with the same kind of path.
//!
//! Go writes a nil slice as `null`: every list here reads `null` as empty.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use kernel_cmdline::Secret;
use kowabunga_model::network::Prefix;
use serde::{Deserialize, Deserializer};

use crate::refused::one_line;

/// Why a metadata document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance metadata: {path}{}{message}", if path.is_empty() { "" } else { ": " })]
pub struct MetadataError {
    /// Key path of the offending value (`kawaii.fw_nat_rules[0].public_ip`), empty for
    /// a syntax error.
    pub path: String,
    pub message: String,
}

/// Parse the JSON body of the metadata endpoint.
pub fn parse(json: &str) -> Result<InstanceMetadata, MetadataError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    let meta: InstanceMetadata = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        MetadataError {
            path: if path == "." || path == "?" {
                String::new()
            } else {
                path
            },
            message: one_line(e.inner()),
        }
    })?;
    de.end().map_err(|e| MetadataError {
        path: String::new(),
        message: one_line(&e),
    })?;
    Ok(meta)
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstanceMetadata {
    #[serde(rename = "instance-id")]
    pub instance_id: String,
    #[serde(rename = "local-hostname", default)]
    pub local_hostname: String,
    /// The instance's private address (the VRRP unicast source).
    #[serde(rename = "local-ipv4", default, deserialize_with = "opt_parsed")]
    pub local_ipv4: Option<IpAddr>,
    /// The project's private subnet (masqueraded by Kawaii, IPsec `local_ts`).
    #[serde(default, deserialize_with = "opt_parsed")]
    pub subnet_cidr: Option<Prefix>,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub region: String,
    #[serde(default, deserialize_with = "list")]
    pub tags: Vec<String>,
    /// The other instances of the same service (VRRP unicast peers).
    #[serde(default, deserialize_with = "list")]
    pub peers: Vec<IpAddr>,
    /// Top-level VIPs; the role objects carry their own, which take precedence.
    #[serde(default, deserialize_with = "list")]
    pub virtual_ips: Vec<VirtualIp>,
    #[serde(default)]
    pub kawaii: Option<Kawaii>,
    #[serde(default)]
    pub konvey: Option<Konvey>,
}

/// One virtual IP held by VRRP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VirtualIp {
    pub vrrp_id: u8,
    pub interface: String,
    pub vip: IpAddr,
    pub priority: u8,
    /// Prefix length of the VIP on its interface.
    pub mask: u8,
    #[serde(default)]
    pub public: bool,
}

/// A default firewall policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    Accept,
    Drop,
}

/// The `kawaii` object (internet gateway).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Kawaii {
    pub public_interface: String,
    pub private_interface: String,
    #[serde(default, deserialize_with = "list")]
    pub peering_interfaces: Vec<String>,
    pub vrrp_control_interface: String,
    #[serde(default, deserialize_with = "list")]
    pub public_vip_addresses: Vec<IpAddr>,
    #[serde(default, deserialize_with = "opt_parsed")]
    pub public_gw_address: Option<IpAddr>,
    #[serde(default, deserialize_with = "list")]
    pub virtual_ips: Vec<VirtualIp>,
    pub fw_input_default: DefaultPolicy,
    pub fw_output_default: DefaultPolicy,
    pub fw_forward_default: DefaultPolicy,
    /// CIDRs allowed to reach the gateway's SSH port.
    #[serde(default, deserialize_with = "list")]
    pub fw_input_extra_networks: Vec<String>,
    #[serde(default, deserialize_with = "list")]
    pub fw_input_rules: Vec<FirewallRule>,
    #[serde(default, deserialize_with = "list")]
    pub fw_output_rules: Vec<FirewallRule>,
    #[serde(default, deserialize_with = "list")]
    pub fw_forward_rules: Vec<FirewallRule>,
    #[serde(default, deserialize_with = "list")]
    pub fw_nat_rules: Vec<NatRule>,
    #[serde(default, deserialize_with = "list")]
    pub ipsec_connections: Vec<IpsecConnection>,
}

/// A filter rule as Kahuna writes it. Every field is text; `ports` is a list
/// (`"22"`, `"80,443,3000-3005"`); empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct FirewallRule {
    pub iifname: String,
    pub oifname: String,
    pub source_ip: String,
    pub destination_ip: String,
    /// `in`, `out` or empty: which port the rule matches (see docs/kontroller.md).
    pub direction: String,
    pub protocol: String,
    pub ports: String,
    pub action: String,
}

/// A port forward: `public_ip:ports` to `private_ip` (same ports).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NatRule {
    pub private_ip: Ipv4Addr,
    pub public_ip: Ipv4Addr,
    #[serde(default)]
    pub protocol: String,
    pub ports: String,
}

/// A site-to-site IPsec connection (IKEv2, PSK, on an XFRM interface).
/// `Debug` hides the pre-shared key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpsecConnection {
    pub name: String,
    /// Local address (one of the public VIPs).
    pub ip: IpAddr,
    /// XFRM interface id (`xfrm-<id>`, `if_id_in/out`).
    pub xfrm_id: u8,
    pub remote_peer: IpAddr,
    pub remote_subnet: Prefix,
    #[serde(deserialize_with = "secret")]
    pub pre_shared_key: Secret,
    #[serde(default)]
    pub dpd_timeout: String,
    #[serde(default)]
    pub dpd_action: String,
    #[serde(default)]
    pub start_action: String,
    #[serde(default)]
    pub rekey: String,
    #[serde(default)]
    pub phase1_lifetime: String,
    /// IANA name of the DH group (`modp2048`, `ecp256`); upstream's key name.
    #[serde(default)]
    pub phase1_df_group: String,
    #[serde(default)]
    pub phase1_integrity_algorithm: String,
    #[serde(default)]
    pub phase1_encryption_algorithm: String,
    #[serde(default)]
    pub phase2_lifetime: String,
    #[serde(default)]
    pub phase2_df_group: String,
    #[serde(default)]
    pub phase2_integrity_algorithm: String,
    #[serde(default)]
    pub phase2_encryption_algorithm: String,
    /// Forward rules for traffic arriving from the tunnel; none = accept all of it.
    #[serde(default, deserialize_with = "list")]
    pub ingress_rules: Vec<FirewallRule>,
}

/// The `konvey` object (L4 load balancer).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Konvey {
    pub private_interface: String,
    pub vrrp_control_interface: String,
    #[serde(default, deserialize_with = "list")]
    pub virtual_ips: Vec<VirtualIp>,
    #[serde(default, deserialize_with = "list")]
    pub endpoints: Vec<Endpoint>,
}

/// One balanced port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Endpoint {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    /// `tcp` or `udp`; empty = tcp (upstream's default).
    #[serde(default)]
    pub protocol: String,
    #[serde(default, deserialize_with = "list")]
    pub backends: Vec<Backend>,
}

/// One real server of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Backend {
    /// An IP address (keepalived's real servers are addresses, not names).
    pub host: String,
    pub port: u16,
}

impl InstanceMetadata {
    /// The Kawaii VIPs: the object's own, else the top-level ones.
    pub fn kawaii_vips<'a>(&'a self, k: &'a Kawaii) -> &'a [VirtualIp] {
        if k.virtual_ips.is_empty() {
            &self.virtual_ips
        } else {
            &k.virtual_ips
        }
    }

    /// The Konvey VIPs: the object's own, else the top-level ones.
    pub fn konvey_vips<'a>(&'a self, k: &'a Konvey) -> &'a [VirtualIp] {
        if k.virtual_ips.is_empty() {
            &self.virtual_ips
        } else {
            &k.virtual_ips
        }
    }
}

/// A list that may be `null` (a Go nil slice).
fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A value parsed from text, where `""` and `null` mean absent (Go's zero string).
fn opt_parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("`{s}`: {e}"))),
    }
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Kawaii document shaped like `Kawaii.Metadata()` upstream: two public VIPs,
    /// a private gateway VIP, ingress rules to each public VIP, a port forward, a VPC
    /// peering (forward rules between ens4 and ens5), one IPsec connection.
    pub(crate) const KAWAII: &str = r#"{
  "instance-id": "65a1b2c3d4e5f60718293a4b",
  "local-hostname": "kawaii-acme-eu-west-1a",
  "description": "", "kaktus": "kaktus-1", "vcpu": 1, "mem_gb": 1,
  "local-ipv4": "10.0.0.2",
  "subnet_cidr": "10.0.0.0/24",
  "template": "debian", "monthly_cost": "0.000000 EUR",
  "project": "acme", "domain": "acme.internal", "zone": "eu-west-1a", "region": "eu-west-1",
  "tags": null,
  "peers": ["10.0.0.3"],
  "kawaii": {
    "public_interface": "ens3",
    "private_interface": "ens4",
    "peering_interfaces": ["ens5"],
    "vrrp_control_interface": "ens4",
    "public_vip_addresses": ["192.0.2.100", "192.0.2.101"],
    "public_gw_address": "192.0.2.1",
    "virtual_ips": [
      {"vrrp_id": 3, "interface": "ens4", "vip": "10.0.0.1", "priority": 150, "mask": 24, "public": false},
      {"vrrp_id": 1, "interface": "ens3", "vip": "192.0.2.100", "priority": 150, "mask": 24, "public": true},
      {"vrrp_id": 2, "interface": "ens3", "vip": "192.0.2.101", "priority": 100, "mask": 24, "public": true}
    ],
    "fw_input_default": "drop",
    "fw_output_default": "accept",
    "fw_forward_default": "drop",
    "fw_input_extra_networks": ["10.99.0.0/16"],
    "fw_input_rules": [
      {"iifname": "ens3", "oifname": "ens3", "source_ip": "0.0.0.0/0", "destination_ip": "192.0.2.100", "protocol": "tcp", "ports": "80,443", "action": "accept"},
      {"iifname": "ens3", "oifname": "ens3", "source_ip": "198.51.100.0/24", "destination_ip": "192.0.2.101", "protocol": "udp", "ports": "51820", "action": "accept"}
    ],
    "fw_output_rules": [
      {"oifname": "ens3", "source_ip": "0.0.0.0/0", "destination_ip": "203.0.113.0/24", "protocol": "tcp", "ports": "25", "action": "drop"}
    ],
    "fw_forward_rules": [
      {"iifname": "ens4", "oifname": "ens5", "source_ip": "10.0.0.0/24", "destination_ip": "10.1.0.0/24", "direction": "out", "protocol": "tcp", "ports": "3300,6789,6800-7300", "action": "accept"},
      {"iifname": "ens5", "oifname": "ens4", "source_ip": "10.1.0.0/24", "destination_ip": "10.0.0.0/24", "direction": "in", "protocol": "tcp", "ports": "5432", "action": "accept"}
    ],
    "fw_nat_rules": [
      {"private_ip": "10.0.0.20", "public_ip": "192.0.2.100", "protocol": "tcp", "ports": "8080,9000-9010"}
    ],
    "ipsec_connections": [
      {"name": "hq", "ip": "192.0.2.100", "xfrm_id": 1, "remote_peer": "203.0.113.7",
       "remote_subnet": "172.16.0.0/16", "pre_shared_key": "correct horse battery staple",
       "dpd_timeout": "240s", "dpd_action": "restart", "start_action": "start", "rekey": "2h",
       "phase1_lifetime": "1h", "phase1_df_group": "modp2048",
       "phase1_integrity_algorithm": "SHA256", "phase1_encryption_algorithm": "AES256",
       "phase2_lifetime": "1h", "phase2_df_group": "ecp256",
       "phase2_integrity_algorithm": "SHA256", "phase2_encryption_algorithm": "AES128",
       "ingress_rules": [
         {"source_ip": "172.16.5.0/24", "direction": "in", "protocol": "tcp", "ports": "22,443", "action": "accept"}
       ]}
    ]
  }
}"#;

    /// A Konvey document shaped like `Konvey.Metadata()` upstream.
    pub(crate) const KONVEY: &str = r#"{
  "instance-id": "65a1b2c3d4e5f60718293a4c",
  "local-hostname": "konvey-web-1",
  "local-ipv4": "10.0.0.30",
  "subnet_cidr": "10.0.0.0/24",
  "project": "acme", "domain": "acme.internal", "zone": "eu-west-1a", "region": "eu-west-1",
  "tags": [], "peers": null,
  "konvey": {
    "private_interface": "ens4",
    "vrrp_control_interface": "ens4",
    "virtual_ips": [
      {"vrrp_id": 7, "interface": "ens4", "vip": "10.0.0.100", "priority": 150, "mask": 24, "public": false}
    ],
    "endpoints": [
      {"name": "https", "port": 443, "protocol": "tcp",
       "backends": [{"host": "10.0.0.12", "port": 8443}, {"host": "10.0.0.11", "port": 8443}]},
      {"name": "dns", "port": 53, "protocol": "udp",
       "backends": [{"host": "10.0.0.21", "port": 53}]},
      {"name": "dns-tcp", "port": 53, "protocol": "tcp",
       "backends": [{"host": "10.0.0.21", "port": 53}]}
    ]
  }
}"#;

    #[test]
    fn kawaii_document() {
        let m = parse(KAWAII).unwrap();
        assert_eq!(m.instance_id, "65a1b2c3d4e5f60718293a4b");
        assert_eq!(m.local_ipv4, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(m.subnet_cidr.unwrap().to_string(), "10.0.0.0/24");
        assert!(m.tags.is_empty());
        assert_eq!(m.peers.len(), 1);
        let k = m.kawaii.as_ref().unwrap();
        assert_eq!(k.fw_input_default, DefaultPolicy::Drop);
        assert_eq!(k.public_gw_address, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(m.kawaii_vips(k).len(), 3);
        assert_eq!(k.fw_nat_rules[0].ports, "8080,9000-9010");
        assert_eq!(
            k.ipsec_connections[0].remote_subnet.to_string(),
            "172.16.0.0/16"
        );
        assert_eq!(
            k.ipsec_connections[0].pre_shared_key.expose(),
            "correct horse battery staple"
        );
        assert!(!format!("{m:?}").contains("horse"));
        assert!(m.konvey.is_none());
    }

    #[test]
    fn konvey_document() {
        let m = parse(KONVEY).unwrap();
        let k = m.konvey.as_ref().unwrap();
        assert_eq!(k.endpoints.len(), 3);
        assert_eq!(k.endpoints[0].backends[1].host, "10.0.0.11");
        assert!(m.peers.is_empty());
        assert_eq!(m.konvey_vips(k)[0].vrrp_id, 7);
    }

    #[test]
    fn top_level_vips_are_the_fallback() {
        let m = parse(
            r#"{"instance-id": "i", "virtual_ips": [{"vrrp_id": 1, "interface": "ens4", "vip": "10.0.0.9", "priority": 100, "mask": 24}],
                "konvey": {"private_interface": "ens4", "vrrp_control_interface": "ens4", "virtual_ips": null, "endpoints": null}}"#,
        )
        .unwrap();
        let k = m.konvey.as_ref().unwrap();
        assert_eq!(m.konvey_vips(k)[0].vip.to_string(), "10.0.0.9");
        assert!(!m.konvey_vips(k)[0].public);
    }

    #[test]
    fn bad_values_are_refused_with_their_path() {
        let swap = |from: &str, to: &str| {
            assert!(KAWAII.contains(from), "{from}");
            KAWAII.replacen(from, to, 1)
        };
        let cases = [
            (
                swap("\"vip\": \"10.0.0.1\"", "\"vip\": \"10.0.0.1/24\""),
                "kawaii.virtual_ips[0].vip: ",
            ),
            (
                swap("\"vrrp_id\": 3", "\"vrrp_id\": 300"),
                "kawaii.virtual_ips[0].vrrp_id: ",
            ),
            (
                swap(
                    "\"fw_input_default\": \"drop\"",
                    "\"fw_input_default\": \"reject\"",
                ),
                "kawaii.fw_input_default: unknown variant `reject`",
            ),
            (
                swap(
                    "\"private_ip\": \"10.0.0.20\"",
                    "\"private_ip\": \"fd00::20\"",
                ),
                "kawaii.fw_nat_rules[0].private_ip: ",
            ),
            (
                swap(
                    "\"subnet_cidr\": \"10.0.0.0/24\"",
                    "\"subnet_cidr\": \"10.0.0.0\"",
                ),
                "instance metadata: subnet_cidr: `10.0.0.0`",
            ),
            (
                swap("\"local-ipv4\": \"10.0.0.2\"", "\"local-ipv4\": \"ten\""),
                "local-ipv4: `ten`",
            ),
            (
                swap(
                    "\"remote_subnet\": \"172.16.0.0/16\"",
                    "\"remote_subnet\": \"172.16.0.0/40\"",
                ),
                "kawaii.ipsec_connections[0].remote_subnet: ",
            ),
            (
                swap("\"peers\": [\"10.0.0.3\"]", "\"peers\": [\"x\"]"),
                "peers[0]: ",
            ),
            (
                swap("\"public_interface\": \"ens3\",", ""),
                "kawaii: missing field `public_interface`",
            ),
            (
                KAWAII.replacen("\"instance-id\": \"65a1b2c3d4e5f60718293a4b\",", "", 1),
                "missing field `instance-id`",
            ),
            (format!("{KAWAII} trailing"), "trailing characters"),
            ("[]".to_owned(), "instance metadata: "),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
        let e = parse(&KONVEY.replacen("\"port\": 443", "\"port\": 70000", 1)).unwrap_err();
        assert_eq!(e.path, "konvey.endpoints[0].port");
    }
}
