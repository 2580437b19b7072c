//! Kawaii's site-to-site IPsec: checking the `ipsec_connections` (upstream's metadata)
//! and mapping them to the connections `kowabunga-ipsec` renders for strongSwan
//! (IKEv2, PSK, XFRM interfaces by `if_id`).

use std::collections::BTreeMap;

use kowabunga_ipsec::swanctl::{self, Connection, DPD_ACTIONS, Options, START_ACTIONS};
use kowabunga_model::network::Prefix;

use crate::kawaii::network_of;
use crate::metadata::{IpsecConnection, Kawaii};
use crate::refused::Refused;

/// A checked IPsec connection: its index in the metadata, and its proposals.
pub(crate) struct Checked<'a> {
    pub index: usize,
    pub conn: &'a IpsecConnection,
    /// IKE (phase 1) proposal, `aes256-sha256-modp2048`.
    pub ike: String,
    /// ESP (phase 2) proposal.
    pub esp: String,
}

/// IPsec connections sorted by name.
pub(crate) type Connections<'a> = Vec<Checked<'a>>;

/// Check every connection; return them sorted by name.
pub(crate) fn check(k: &Kawaii, private_net: Prefix) -> Result<Connections<'_>, Refused> {
    let mut checked = Vec::new();
    let mut names = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for (i, c) in k.ipsec_connections.iter().enumerate() {
        let at = format!("kawaii.ipsec_connections[{i}]");
        swanctl::check_name(&c.name).map_err(|why| Refused::new(format!("{at}.name"), why))?;
        if let Some(other) = names.insert(c.name.as_str(), i) {
            return Err(Refused::new(
                format!("{at}.name"),
                format!("`{}` is also ipsec_connections[{other}]", c.name),
            ));
        }
        if c.xfrm_id == 0 {
            return Err(Refused::new(
                format!("{at}.xfrm_id"),
                "0 is not an XFRM interface id (1 to 255)",
            ));
        }
        if let Some(other) = ids.insert(c.xfrm_id, i) {
            return Err(Refused::new(
                format!("{at}.xfrm_id"),
                format!("{} is also ipsec_connections[{other}]", c.xfrm_id),
            ));
        }
        if c.pre_shared_key.expose().trim().is_empty() {
            return Err(Refused::new(
                format!("{at}.pre_shared_key"),
                "missing: the connections authenticate with a pre-shared key",
            ));
        }
        if c.ip.is_ipv4() != c.remote_peer.is_ipv4() {
            return Err(Refused::new(
                format!("{at}.remote_peer"),
                format!(
                    "{} and ip {} are of different families",
                    c.remote_peer, c.ip
                ),
            ));
        }
        if c.remote_subnet.addr.is_ipv4() != private_net.addr.is_ipv4() {
            return Err(Refused::new(
                format!("{at}.remote_subnet"),
                format!(
                    "{} and subnet_cidr {private_net} are of different families",
                    c.remote_subnet
                ),
            ));
        }
        for (key, value) in [
            ("dpd_timeout", &c.dpd_timeout),
            ("rekey", &c.rekey),
            ("phase1_lifetime", &c.phase1_lifetime),
            ("phase2_lifetime", &c.phase2_lifetime),
        ] {
            swanctl::check_duration(value)
                .map_err(|why| Refused::new(format!("{at}.{key}"), why))?;
        }
        swanctl::check_word(&c.dpd_action, DPD_ACTIONS)
            .map_err(|why| Refused::new(format!("{at}.dpd_action"), why))?;
        swanctl::check_word(&c.start_action, START_ACTIONS)
            .map_err(|why| Refused::new(format!("{at}.start_action"), why))?;
        let ike = proposal(
            &at,
            "phase1",
            &c.phase1_encryption_algorithm,
            &c.phase1_integrity_algorithm,
            &c.phase1_df_group,
            true,
        )?;
        let esp = proposal(
            &at,
            "phase2",
            &c.phase2_encryption_algorithm,
            &c.phase2_integrity_algorithm,
            &c.phase2_df_group,
            false,
        )?;
        checked.push(Checked {
            index: i,
            conn: c,
            ike,
            esp,
        });
    }
    checked.sort_by(|a, b| a.conn.name.cmp(&b.conn.name));
    Ok(checked)
}

/// `aes256-sha256-modp2048`: encryption, integrity, DH group (phase 2 without a group:
/// no PFS).
fn proposal(
    at: &str,
    phase: &str,
    enc: &str,
    integ: &str,
    dh: &str,
    dh_required: bool,
) -> Result<String, Refused> {
    let mut parts = Vec::new();
    for (key, value, required) in [
        ("encryption_algorithm", enc, true),
        ("integrity_algorithm", integ, true),
        ("df_group", dh, dh_required),
    ] {
        let v = value.trim().to_ascii_lowercase();
        let path = format!("{at}.{phase}_{key}");
        if v.is_empty() {
            if required {
                return Err(Refused::new(path, "missing"));
            }
            continue;
        }
        if !swanctl::is_algorithm(&v) {
            return Err(Refused::new(
                path,
                format!("`{value}` is not an algorithm name"),
            ));
        }
        parts.push(v);
    }
    Ok(parts.join("-"))
}

/// The text of swanctl.conf: each connection joins `local_ts` (the gateway's private
/// network) and its remote subnet through XFRM interface `xfrm_id`.
pub(crate) fn swanctl(conns: &Connections, local_ts: Prefix) -> String {
    let conns: Vec<Connection> = conns
        .iter()
        .map(
            |Checked {
                 conn: c, ike, esp, ..
             }| Connection {
                name: c.name.clone(),
                local_addr: c.ip,
                remote_addr: c.remote_peer,
                if_id: u32::from(c.xfrm_id),
                local_ts: vec![local_ts],
                remote_ts: vec![network_of(c.remote_subnet)],
                psk: c.pre_shared_key.clone(),
                ike_proposals: ike.clone(),
                esp_proposals: esp.clone(),
                options: Options {
                    dpd_timeout: c.dpd_timeout.clone(),
                    rekey_time: c.rekey.clone(),
                    reauth_time: c.phase1_lifetime.clone(),
                    child_life_time: c.phase2_lifetime.clone(),
                    dpd_action: c.dpd_action.clone(),
                    start_action: c.start_action.clone(),
                },
            },
        )
        .collect();
    swanctl::render(&conns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_from_upstreams_algorithm_fields() {
        assert_eq!(
            proposal("c", "phase1", "AES256", "SHA256", "modp2048", true).unwrap(),
            "aes256-sha256-modp2048"
        );
        assert_eq!(
            proposal("c", "phase2", "aes128gcm16", "prfsha256", "", false).unwrap(),
            "aes128gcm16-prfsha256"
        );
        let e = proposal("c", "phase1", "aes256", "sha256", "", true).unwrap_err();
        assert_eq!(e.to_string(), "c.phase1_df_group: missing");
        let e = proposal("c", "phase2", "aes-256", "sha256", "", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.phase2_encryption_algorithm: `aes-256` is not an algorithm name"
        );
    }
}
