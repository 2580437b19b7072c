//! strongSwan's `swanctl.conf` for site-to-site tunnels (IKEv2, pre-shared key, tunnel
//! mode, SAs bound to an XFRM interface by `if_id`), from connections the role has
//! checked, and the value checks both roles make (names, durations, action words,
//! proposals).

use std::fmt::Write as _;
use std::net::IpAddr;

use kernel_cmdline::Secret;
use kowabunga_model::network::Prefix;

/// strongSwan's `dpd_action` values.
pub const DPD_ACTIONS: &[&str] = &["clear", "restart", "trap", "none"];
/// strongSwan's `start_action` values.
pub const START_ACTIONS: &[&str] = &["none", "start", "trap"];

/// One checked connection, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Its name in swanctl.conf (letters, digits, `_`, `-`; [`check_name`]).
    pub name: String,
    /// The address IKE and ESP leave from, and this side's IKE identity.
    pub local_addr: IpAddr,
    /// The peer's address, and its IKE identity.
    pub remote_addr: IpAddr,
    /// The XFRM interface id the SAs carry (`if_id_in`, `if_id_out`).
    pub if_id: u32,
    /// Traffic selectors: the networks on each side.
    pub local_ts: Vec<Prefix>,
    pub remote_ts: Vec<Prefix>,
    /// The pre-shared key (written in hex; never in a log: `Debug` hides it).
    pub psk: Secret,
    /// IKE and ESP proposals (`aes256-sha256-modp2048`, comma-separated, or
    /// `default`).
    pub ike_proposals: String,
    pub esp_proposals: String,
    /// strongSwan's defaults where empty.
    pub options: Options,
}

/// Optional settings; an empty one is left to strongSwan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub dpd_timeout: String,
    pub rekey_time: String,
    pub reauth_time: String,
    pub child_life_time: String,
    pub dpd_action: String,
    pub start_action: String,
}

/// A connection name: letters, digits, `_` and `-`, at most 32.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a connection name (letters, digits, _ -, at most 32)"
        ))
    }
}

/// `240s`, `2h`, `1d`, `3600`; empty = strongSwan's default.
pub fn check_duration(value: &str) -> Result<(), String> {
    let digits = value.strip_suffix(['s', 'm', 'h', 'd']).unwrap_or(value);
    if value.is_empty() || (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())) {
        Ok(())
    } else {
        Err(format!("`{value}` is not a duration (e.g. 240s, 2h)"))
    }
}

/// One of `allowed`; empty = strongSwan's default.
pub fn check_word(value: &str, allowed: &[&str]) -> Result<(), String> {
    if value.is_empty() || allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!("unknown value `{value}` ({})", allowed.join(", ")))
    }
}

/// An algorithm's name as strongSwan spells it: `aes256`, `sha256`, `modp2048`.
pub fn is_algorithm(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Proposals: `default`, or algorithms joined by `-`, proposals by `,`
/// (`aes256gcm16-prfsha256-ecp256,aes256-sha256-modp2048`).
pub fn check_proposals(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value
            .split(',')
            .all(|p| p == "default" || p.split('-').all(is_algorithm));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a proposal list (algorithms joined by -, proposals by ,; e.g. aes256-sha256-modp2048)"
        ))
    }
}

fn selectors(ts: &[Prefix]) -> String {
    let nets: Vec<String> = ts
        .iter()
        .map(|p| format!("{}/{}", p.network(), p.len))
        .collect();
    nets.join(", ")
}

/// The text of swanctl.conf: the connections, then their secrets.
pub fn render(conns: &[Connection]) -> String {
    let mut out = String::from("connections {\n");
    for c in conns {
        let o = &c.options;
        let opt = |key: &str, value: &str, indent: &str| {
            if value.is_empty() {
                String::new()
            } else {
                format!("{indent}{key} = {value}\n")
            }
        };
        let _ = write!(
            out,
            "    {n} {{\n        version = 2\n        local_addrs = {ip}\n        remote_addrs = {peer}\n        proposals = {ike}\n        dpd_delay = 5s\n{dpd}{rekey}{reauth}        if_id_in = {id}\n        if_id_out = {id}\n        local {{\n            auth = psk\n            id = {ip}\n        }}\n        remote {{\n            auth = psk\n            id = {peer}\n        }}\n        children {{\n            {n}-phase2 {{\n                local_ts = {local}\n                remote_ts = {remote}\n                esp_proposals = {esp}\n{crekey}{life}{dpda}{start}                mode = tunnel\n            }}\n        }}\n    }}\n",
            n = c.name,
            ip = c.local_addr,
            peer = c.remote_addr,
            ike = c.ike_proposals,
            esp = c.esp_proposals,
            id = c.if_id,
            local = selectors(&c.local_ts),
            remote = selectors(&c.remote_ts),
            dpd = opt("dpd_timeout", &o.dpd_timeout, "        "),
            rekey = opt("rekey_time", &o.rekey_time, "        "),
            reauth = opt("reauth_time", &o.reauth_time, "        "),
            crekey = opt("rekey_time", &o.rekey_time, "                "),
            life = opt("life_time", &o.child_life_time, "                "),
            dpda = opt("dpd_action", &o.dpd_action, "                "),
            start = opt("start_action", &o.start_action, "                "),
        );
    }
    out.push_str("}\n\nsecrets {\n");
    for c in conns {
        // Hex: no quoting or escaping question, whatever the key holds.
        let hex: String = c.psk.expose().bytes().map(|b| format!("{b:02x}")).collect();
        let _ = write!(
            out,
            "    ike-{n} {{\n        id-1 = {ip}\n        id-2 = {peer}\n        secret = 0x{hex}\n    }}\n",
            n = c.name,
            ip = c.local_addr,
            peer = c.remote_addr,
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn prefix(s: &str) -> Prefix {
        let (addr, len) = s.split_once('/').unwrap();
        Prefix {
            addr: addr.parse().unwrap(),
            len: len.parse().unwrap(),
        }
    }

    #[test]
    fn durations_words_names_and_proposals() {
        for ok in ["", "240s", "2h", "1d", "3600", "15m"] {
            check_duration(ok).unwrap();
        }
        for bad in ["h", "2 h", "-1s", "2w", "1.5h"] {
            assert!(check_duration(bad).is_err(), "{bad}");
        }
        check_word("restart", DPD_ACTIONS).unwrap();
        assert_eq!(
            check_word("Restart", DPD_ACTIONS).unwrap_err(),
            "unknown value `Restart` (clear, restart, trap, none)"
        );
        check_name("site-b_2").unwrap();
        for bad in ["", "a b", "a{", &"x".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for ok in [
            "default",
            "aes256-sha256-modp2048",
            "aes256gcm16-prfsha256-ecp256,default",
        ] {
            check_proposals(ok).unwrap();
        }
        for bad in [
            "",
            "aes256--sha256",
            "AES256-sha256",
            "aes256-sha256,",
            "aes 256",
        ] {
            assert!(check_proposals(bad).is_err(), "{bad}");
        }
    }

    /// Selectors are written as networks (host bits cleared), several joined; the key
    /// only in hex, in the secrets section.
    #[test]
    fn renders_connections_then_secrets() {
        let c = Connection {
            name: "hq".into(),
            local_addr: "203.0.113.1".parse().unwrap(),
            remote_addr: "198.51.100.7".parse().unwrap(),
            if_id: 3,
            local_ts: vec![prefix("10.71.0.1/24"), prefix("10.73.0.0/24")],
            remote_ts: vec![prefix("10.72.0.0/24")],
            psk: Secret::new("correct horse battery"),
            ike_proposals: "aes256-sha256-modp2048".into(),
            esp_proposals: "default".into(),
            options: Options {
                start_action: "start".into(),
                ..Options::default()
            },
        };
        let text = render(std::slice::from_ref(&c));
        for line in [
            "    hq {",
            "        local_addrs = 203.0.113.1",
            "        remote_addrs = 198.51.100.7",
            "        proposals = aes256-sha256-modp2048",
            "        if_id_in = 3",
            "        if_id_out = 3",
            "                local_ts = 10.71.0.0/24, 10.73.0.0/24",
            "                remote_ts = 10.72.0.0/24",
            "                esp_proposals = default",
            "                start_action = start",
            "        secret = 0x636f727265637420686f7273652062617474657279",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(!text.contains("dpd_action"), "{text}");
        assert!(!text.contains("correct horse"), "{text}");
        assert!(!format!("{c:?}").contains("horse"));
        assert!(text.find("connections {") < text.find("secrets {"));
    }
}
