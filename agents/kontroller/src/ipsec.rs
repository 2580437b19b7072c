//! Kawaii's site-to-site IPsec: checking the `ipsec_connections` and rendering
//! strongSwan's `swanctl.conf` (IKEv2, PSK, XFRM interfaces by `if_id`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

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

const DPD_ACTIONS: &[&str] = &["clear", "restart", "trap", "none"];
const START_ACTIONS: &[&str] = &["none", "start", "trap"];

/// Check every connection; return them sorted by name.
pub(crate) fn check(k: &Kawaii, private_net: Prefix) -> Result<Connections<'_>, Refused> {
    let mut checked = Vec::new();
    let mut names = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for (i, c) in k.ipsec_connections.iter().enumerate() {
        let at = format!("kawaii.ipsec_connections[{i}]");
        let ok = !c.name.is_empty()
            && c.name.len() <= 32
            && c.name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-'));
        if !ok {
            return Err(Refused::new(
                format!("{at}.name"),
                format!(
                    "`{}` is not a connection name (letters, digits, _ -, at most 32)",
                    c.name
                ),
            ));
        }
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
            check_duration(&format!("{at}.{key}"), value)?;
        }
        check_word(&format!("{at}.dpd_action"), &c.dpd_action, DPD_ACTIONS)?;
        check_word(
            &format!("{at}.start_action"),
            &c.start_action,
            START_ACTIONS,
        )?;
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

/// `240s`, `2h`, `1d`, `3600`; empty = strongSwan's default.
fn check_duration(at: &str, value: &str) -> Result<(), Refused> {
    let digits = value.strip_suffix(['s', 'm', 'h', 'd']).unwrap_or(value);
    if value.is_empty() || (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())) {
        Ok(())
    } else {
        Err(Refused::new(
            at,
            format!("`{value}` is not a duration (e.g. 240s, 2h)"),
        ))
    }
}

fn check_word(at: &str, value: &str, allowed: &[&str]) -> Result<(), Refused> {
    if value.is_empty() || allowed.contains(&value) {
        Ok(())
    } else {
        Err(Refused::new(
            at,
            format!("unknown value `{value}` ({})", allowed.join(", ")),
        ))
    }
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
        if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Refused::new(
                path,
                format!("`{value}` is not an algorithm name"),
            ));
        }
        parts.push(v);
    }
    Ok(parts.join("-"))
}

/// The text of swanctl.conf (connections, then secrets).
pub(crate) fn swanctl(conns: &Connections, local_ts: Prefix) -> String {
    let mut out = String::from("connections {\n");
    for Checked {
        conn: c, ike, esp, ..
    } in conns
    {
        let n = &c.name;
        let opt = |key: &str, value: &str, indent: &str| {
            if value.is_empty() {
                String::new()
            } else {
                format!("{indent}{key} = {value}\n")
            }
        };
        let _ = write!(
            out,
            "    {n} {{\n        version = 2\n        local_addrs = {ip}\n        remote_addrs = {peer}\n        proposals = {ike}\n        dpd_delay = 5s\n{dpd}{rekey}{reauth}        if_id_in = {id}\n        if_id_out = {id}\n        local {{\n            auth = psk\n            id = {ip}\n        }}\n        remote {{\n            auth = psk\n            id = {peer}\n        }}\n        children {{\n            {n}-phase2 {{\n                local_ts = {local_ts}\n                remote_ts = {remote}\n                esp_proposals = {esp}\n{crekey}{life}{dpda}{start}                mode = tunnel\n            }}\n        }}\n    }}\n",
            ip = c.ip,
            peer = c.remote_peer,
            id = c.xfrm_id,
            remote = network_of(c.remote_subnet),
            dpd = opt("dpd_timeout", &c.dpd_timeout, "        "),
            rekey = opt("rekey_time", &c.rekey, "        "),
            reauth = opt("reauth_time", &c.phase1_lifetime, "        "),
            crekey = opt("rekey_time", &c.rekey, "                "),
            life = opt("life_time", &c.phase2_lifetime, "                "),
            dpda = opt("dpd_action", &c.dpd_action, "                "),
            start = opt("start_action", &c.start_action, "                "),
        );
    }
    out.push_str("}\n\nsecrets {\n");
    for Checked { conn: c, .. } in conns {
        // Hex: no quoting or escaping question, whatever the key holds.
        let hex: String = c
            .pre_shared_key
            .expose()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        let _ = write!(
            out,
            "    ike-{n} {{\n        id-1 = {ip}\n        id-2 = {peer}\n        secret = 0x{hex}\n    }}\n",
            n = c.name,
            ip = c.ip,
            peer = c.remote_peer,
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_words_and_proposals() {
        for ok in ["", "240s", "2h", "1d", "3600", "15m"] {
            check_duration("x", ok).unwrap();
        }
        for bad in ["h", "2 h", "-1s", "2w", "1.5h"] {
            assert!(check_duration("x", bad).is_err(), "{bad}");
        }
        check_word("x", "restart", DPD_ACTIONS).unwrap();
        assert!(check_word("x", "Restart", DPD_ACTIONS).is_err());
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
