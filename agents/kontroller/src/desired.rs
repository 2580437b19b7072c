//! The kontroller's desired state: Kahuna's network-config and instance metadata turned
//! into the tables the role pushes through the generation pipeline (`network`,
//! `firewall`, `daemons`), read there by the shared network, firewall and daemons
//! reconcilers.

use std::collections::BTreeMap;

use kowabunga_daemons::{KEEPALIVED, SECTION as DAEMONS, STRONGSWAN};
use kowabunga_model::{firewall, network};

use crate::metadata::InstanceMetadata;
use crate::netplan::NetplanConfig;
use crate::{kawaii, konvey};

/// What one Reload brings into force, by pushed table name.
pub type Tables = BTreeMap<String, toml::Table>;

/// Network from the seed's `network-config` (when it has one), firewall and forwarding
/// from the metadata's `kawaii` or `konvey` object. Everything is checked before
/// anything is returned: a refusal names the key path and the problem.
pub fn tables(
    network_config: Option<&NetplanConfig>,
    meta: &InstanceMetadata,
) -> Result<Tables, String> {
    let subnets = network_config
        .map(NetplanConfig::subnets)
        .unwrap_or_default();
    let mut daemons = toml::Table::new();
    let mut xfrm = Vec::new();
    let (firewall, ip_forward, keepalived_conf) = if meta.kawaii.is_some() {
        let kawaii = kawaii::render(meta, &subnets).map_err(|e| e.to_string())?;
        xfrm.clone_from(&kawaii.xfrm_interfaces);
        if !kawaii.xfrm_interfaces.is_empty() {
            // One XFRM interface per IPsec connection: strongSwan runs for them.
            daemons.insert(
                STRONGSWAN.name.to_owned(),
                kawaii.swanctl_conf.expose().into(),
            );
        }
        (kawaii.firewall, kawaii.ip_forward, kawaii.keepalived_conf)
    } else if meta.konvey.is_some() {
        let konvey = konvey::render(meta, &subnets).map_err(|e| e.to_string())?;
        (konvey.firewall, konvey.ip_forward, konvey.keepalived_conf)
    } else {
        return Err(
            "instance metadata: neither a kawaii nor a konvey object: nothing to run".into(),
        );
    };
    let mut net = network_config
        .map(|n| n.network.clone())
        .unwrap_or_default();
    net.ip_forward = Some(ip_forward);
    add_xfrm_interfaces(&mut net, &xfrm);
    let mut tables = Tables::new();
    tables.insert(network::SECTION.to_owned(), table(&net, "network")?);
    tables.insert(firewall::SECTION.to_owned(), table(&firewall, "firewall")?);
    if runs_keepalived(&keepalived_conf) {
        daemons.insert(KEEPALIVED.name.to_owned(), keepalived_conf.into());
    }
    tables.insert(DAEMONS.to_owned(), daemons);
    Ok(tables)
}

/// One XFRM interface per IPsec connection, on the public link, and the route of the
/// remote subnet into it: strongSwan's SAs (`if_id_in/out`) carry what enters it, and
/// strongSwan installs no route itself.
fn add_xfrm_interfaces(net: &mut network::Network, xfrm: &[kawaii::XfrmInterface]) {
    for x in xfrm {
        net.links.push(network::Link {
            parent: Some(x.dev.clone()),
            if_id: Some(u32::from(x.if_id)),
            mtu: Some(x.mtu),
            ..network::Link::new(x.name.clone(), network::LinkKind::Xfrm)
        });
        net.routes.push(network::Route {
            to: network::Destination::Prefix(x.route),
            via: None,
            dev: Some(x.name.clone()),
            metric: None,
            table: None,
        });
    }
}

/// keepalived runs only for a configuration with something to hold: a VRRP instance
/// (a VIP) or a virtual server (a Konvey endpoint). Without either it is stopped.
fn runs_keepalived(conf: &str) -> bool {
    conf.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("vrrp_instance ") || l.starts_with("virtual_server ")
    })
}

/// The seed's network alone: what a first boot needs to reach Kahuna's metadata.
pub fn network_only(network_config: &NetplanConfig) -> Result<Tables, String> {
    let mut tables = Tables::new();
    tables.insert(
        network::SECTION.to_owned(),
        table(&network_config.network, "network")?,
    );
    Ok(tables)
}

fn table<T: serde::Serialize>(value: &T, what: &str) -> Result<toml::Table, String> {
    toml::Table::try_from(value).map_err(|e| format!("{what}: cannot be written as a table: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kowabunga_model::Document;
    use kowabunga_model::firewall::Firewall;
    use kowabunga_model::network::{LinkKind, Network};

    const NETPLAN: &str = "version: 2
ethernets:
  ens3:
    match:
      macaddress: 52:54:00:77:00:03
    set-name: ens3
    dhcp4: false
    addresses:
      - 10.77.0.10/24
    routes:
      - to: default
        via: 10.77.0.1
        metric: 100
  ens4:
    match:
      macaddress: 52:54:00:77:00:04
    set-name: ens4
    dhcp4: false
    addresses:
      - 10.78.0.1/24
";

    fn kawaii(input_default: &str) -> String {
        format!(
            r#"{{"instance-id": "i-1", "local-hostname": "kawaii-1", "local-ipv4": "10.77.0.10",
            "subnet_cidr": "10.78.0.0/24", "virtual_ips": [],
            "kawaii": {{"public_interface": "ens3", "private_interface": "ens4",
              "vrrp_control_interface": "ens4", "public_gw_address": "10.77.0.1",
              "fw_input_default": "{input_default}", "fw_output_default": "accept",
              "fw_forward_default": "drop",
              "fw_input_rules": [{{"iifname": "ens3", "protocol": "tcp", "ports": "2222",
                "action": "accept", "source_ip": "0.0.0.0/0"}}]}}}}"#
        )
    }

    #[test]
    fn kawaii_metadata_becomes_tables_the_reconcilers_read_back() {
        let netplan = crate::netplan::parse(NETPLAN).unwrap();
        let meta = crate::metadata::parse(&kawaii("drop")).unwrap();
        let tables = tables(Some(&netplan), &meta).unwrap();
        let mut doc = Document::empty("kawaii-1");
        for (name, table) in tables {
            doc.set_pushed(&name, table);
        }
        let net: Network = doc.pushed("network").unwrap().unwrap();
        assert_eq!(net.ip_forward, Some(true));
        assert_eq!(net.links.len(), 2);
        let fw: Firewall = doc.pushed("firewall").unwrap().unwrap();
        assert_eq!(
            fw,
            kawaii::render(&meta, &netplan.subnets()).unwrap().firewall
        );
    }

    #[test]
    fn keepalived_is_pushed_only_when_it_holds_something() {
        let netplan = crate::netplan::parse(NETPLAN).unwrap();
        let daemons = |json: &str| {
            let meta = crate::metadata::parse(json).unwrap();
            tables(Some(&netplan), &meta).unwrap()[DAEMONS].clone()
        };
        assert!(daemons(&kawaii("drop")).is_empty());
        let with_vip = kawaii("drop").replace(
            r#""virtual_ips": []"#,
            r#""virtual_ips": [{"vrrp_id": 7, "interface": "ens4", "vip": "10.78.0.254",
                "priority": 100, "mask": 24}]"#,
        );
        let d = daemons(&with_vip);
        let conf = d["keepalived"].as_str().unwrap();
        assert!(conf.contains("virtual_router_id 7"), "{conf}");
        assert!(conf.contains("10.78.0.254/24 dev ens4"), "{conf}");
    }

    #[test]
    fn strongswan_is_pushed_for_ipsec_connections_only() {
        let netplan = crate::netplan::parse(NETPLAN).unwrap();
        let daemons = |json: &str| {
            let meta = crate::metadata::parse(json).unwrap();
            tables(Some(&netplan), &meta).unwrap()[DAEMONS].clone()
        };
        assert!(!daemons(&kawaii("drop")).contains_key("strongswan"));
        let with_ipsec = kawaii("drop").replace(
            r#""fw_forward_default": "drop","#,
            r#""fw_forward_default": "drop",
              "ipsec_connections": [{"name": "hq", "ip": "10.77.0.10", "xfrm_id": 1,
                "remote_peer": "203.0.113.7", "remote_subnet": "172.16.0.0/16",
                "pre_shared_key": "correct horse", "start_action": "trap",
                "phase1_df_group": "modp2048", "phase1_integrity_algorithm": "SHA256",
                "phase1_encryption_algorithm": "AES256", "phase2_df_group": "modp2048",
                "phase2_integrity_algorithm": "SHA256",
                "phase2_encryption_algorithm": "AES256"}],"#,
        );
        let d = daemons(&with_ipsec);
        let conf = d["strongswan"].as_str().unwrap();
        assert!(conf.contains("if_id_in = 1"), "{conf}");
        // The key travels hex-encoded in the file (0600), never as written.
        assert!(!conf.contains("correct horse"), "{conf}");
        assert!(conf.contains(&hex("correct horse")), "{conf}");
        // Its XFRM interface, on the public link, with the remote subnet routed in.
        let meta = crate::metadata::parse(&with_ipsec).unwrap();
        let mut doc = Document::empty("kawaii-1");
        for (name, table) in tables(Some(&netplan), &meta).unwrap() {
            doc.set_pushed(&name, table);
        }
        let net: Network = doc.pushed("network").unwrap().unwrap();
        net.validate().unwrap();
        let x = net.link("xfrm-1").unwrap();
        assert_eq!(
            (x.kind, x.parent.as_deref(), x.if_id, x.mtu),
            (LinkKind::Xfrm, Some("ens3"), Some(1), Some(1300))
        );
        let route = net
            .routes
            .iter()
            .find(|r| r.dev.as_deref() == Some("xfrm-1"))
            .unwrap();
        assert_eq!(
            route.to,
            network::Destination::Prefix("172.16.0.0/16".parse().unwrap())
        );
    }

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn bad_metadata_is_refused_naming_the_key() {
        let netplan = crate::netplan::parse(NETPLAN).unwrap();
        let err = crate::metadata::parse(&kawaii("maybe"))
            .map_err(|e| e.to_string())
            .and_then(|meta| tables(Some(&netplan), &meta));
        let err = err.unwrap_err();
        assert!(err.contains("fw_input_default"), "{err}");
    }

    #[test]
    fn metadata_of_no_known_kind_is_refused() {
        let meta =
            crate::metadata::parse(r#"{"instance-id": "i-1", "local-hostname": "x"}"#).unwrap();
        let err = tables(None, &meta).unwrap_err();
        assert!(err.contains("neither a kawaii nor a konvey"), "{err}");
    }
}
