//! Kiwi's `[ipsec]` section and its checks against `[network]`.
//!
//! A tunnel's traffic is routed through a `[network]` link of kind `xfrm` (its `if_id`
//! marks the tunnel's SAs, its `parent` is the link IKE and ESP leave by; routes into
//! it are `[network.routes]`); this section gives the peer, the networks on both sides
//! and the pre-shared key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use kernel_cmdline::Secret;
use kowabunga_model::Document;
use kowabunga_model::network::{self, LinkKind, Network, Prefix};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use crate::swanctl::{self, Connection, Options};

/// The section's name in the document.
pub const SECTION: &str = "ipsec";

/// The shortest pre-shared key accepted: one captured IKEv2 exchange lets an attacker
/// try keys offline, so a short one is refused rather than written.
pub const MIN_PSK_LEN: usize = 16;

/// `[ipsec.<name>]`, one table per site-to-site tunnel.
///
/// ```toml
/// [ipsec.hq]
/// link = "ipsec0"                  # [network] link of kind xfrm (if_id, parent)
/// local_address = "203.0.113.1"
/// remote_address = "198.51.100.7"
/// local_subnets = ["10.71.0.0/24"]
/// remote_subnets = ["172.16.0.0/16"]
/// pre_shared_key = "at least sixteen characters"
/// ```
pub type IpsecSection = BTreeMap<String, Tunnel>;

/// One IKEv2 tunnel authenticated by a pre-shared key. `Debug` hides the key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tunnel {
    /// The `[network]` link of kind `xfrm` this tunnel's traffic is routed through.
    pub link: String,
    /// This side's address (IKE identity too): a link's address or a VIP, in the
    /// subnet of a `[network]` link address.
    pub local_address: IpAddr,
    /// The peer's address (its IKE identity); one tunnel per peer.
    pub remote_address: IpAddr,
    /// The networks behind this side (traffic selectors).
    #[schemars(length(min = 1))]
    pub local_subnets: Vec<Prefix>,
    /// The networks behind the peer.
    #[schemars(length(min = 1))]
    pub remote_subnets: Vec<Prefix>,
    /// Shared with the peer; at least 16 characters. Never logged or reported.
    #[serde(deserialize_with = "secret")]
    #[schemars(with = "String", length(min = 16))]
    pub pre_shared_key: Secret,
    /// IKE proposals as strongSwan spells them; `default`: strongSwan's own list.
    #[serde(default = "default_proposals")]
    pub ike_proposals: String,
    /// ESP proposals (no DH group: no PFS on rekeying).
    #[serde(default = "default_proposals")]
    pub esp_proposals: String,
    /// `start` (the default: this side initiates at once), `trap` (on first traffic)
    /// or `none` (waits for the peer).
    #[serde(default = "default_start")]
    pub start_action: String,
    /// On a dead peer: `restart` (the default), `clear`, `trap` or `none`.
    #[serde(default = "default_dpd")]
    pub dpd_action: String,
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

fn default_proposals() -> String {
    "default".into()
}

fn default_start() -> String {
    "start".into()
}

fn default_dpd() -> String {
    "restart".into()
}

/// An `[ipsec]` section that does not fit the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsecError(pub String);

impl fmt::Display for IpsecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IpsecError {}

/// The document's tunnels, checked, sorted by name; `None` without `[ipsec]`.
pub fn effective(doc: &Document) -> Result<Option<Vec<Connection>>, IpsecError> {
    let Some(section) = doc
        .section::<IpsecSection>(SECTION)
        .map_err(|e| IpsecError(e.to_string()))?
    else {
        return Ok(None);
    };
    let net = doc
        .section::<Network>(network::SECTION)
        .map_err(|e| IpsecError(format!("cannot read [network]: {e}")))?
        .unwrap_or_default();
    let conns = compile(&section, &net)?;
    Ok((!conns.is_empty()).then_some(conns))
}

/// Check every tunnel against `net`.
pub fn compile(section: &IpsecSection, net: &Network) -> Result<Vec<Connection>, IpsecError> {
    let mut peers: BTreeMap<IpAddr, &str> = BTreeMap::new();
    let mut conns = Vec::new();
    for (name, t) in section {
        let at = format!("{SECTION}.{name}");
        let bad = |key: &str, why: String| IpsecError(format!("{at}.{key}: {why}"));
        swanctl::check_name(name).map_err(|why| IpsecError(format!("{at}: {why}")))?;
        let link = net
            .link(&t.link)
            .filter(|l| l.kind == LinkKind::Xfrm)
            .ok_or_else(|| {
                bad(
                    "link",
                    format!("`{}` is not a [network] link of kind xfrm", t.link),
                )
            })?;
        let if_id = link
            .if_id
            .ok_or_else(|| bad("link", format!("`{}` has no if_id", t.link)))?;
        if !net.addresses_of(None).any(|p| p.contains(t.local_address)) {
            return Err(bad(
                "local_address",
                format!(
                    "{} is in the subnet of no [network] link address",
                    t.local_address
                ),
            ));
        }
        if t.remote_address.is_ipv4() != t.local_address.is_ipv4() {
            return Err(bad(
                "remote_address",
                format!(
                    "{} and local_address {} are of different families",
                    t.remote_address, t.local_address
                ),
            ));
        }
        if t.remote_address == t.local_address || t.remote_address.is_unspecified() {
            return Err(bad(
                "remote_address",
                format!("{} cannot be the peer", t.remote_address),
            ));
        }
        if let Some(other) = peers.insert(t.remote_address, name) {
            return Err(bad(
                "remote_address",
                format!(
                    "{} is also ipsec.{other}'s peer (one tunnel per peer: list its networks in one)",
                    t.remote_address
                ),
            ));
        }
        for (key, list) in [
            ("local_subnets", &t.local_subnets),
            ("remote_subnets", &t.remote_subnets),
        ] {
            if list.is_empty() {
                return Err(bad(key, "empty: name the networks the tunnel joins".into()));
            }
        }
        if t.pre_shared_key.expose().chars().count() < MIN_PSK_LEN {
            return Err(bad(
                "pre_shared_key",
                format!("shorter than {MIN_PSK_LEN} characters"),
            ));
        }
        for (key, value) in [
            ("ike_proposals", &t.ike_proposals),
            ("esp_proposals", &t.esp_proposals),
        ] {
            swanctl::check_proposals(value).map_err(|why| bad(key, why))?;
        }
        let must = |key: &str, value: &str, allowed: &[&str]| {
            if value.is_empty() {
                return Err(bad(key, format!("empty ({})", allowed.join(", "))));
            }
            swanctl::check_word(value, allowed).map_err(|why| bad(key, why))
        };
        must("start_action", &t.start_action, swanctl::START_ACTIONS)?;
        must("dpd_action", &t.dpd_action, swanctl::DPD_ACTIONS)?;
        conns.push(Connection {
            name: name.clone(),
            local_addr: t.local_address,
            remote_addr: t.remote_address,
            if_id,
            local_ts: t.local_subnets.clone(),
            remote_ts: t.remote_subnets.clone(),
            psk: t.pre_shared_key.clone(),
            ike_proposals: t.ike_proposals.clone(),
            esp_proposals: t.esp_proposals.clone(),
            options: Options {
                dpd_action: t.dpd_action.clone(),
                start_action: t.start_action.clone(),
                ..Options::default()
            },
        });
    }
    Ok(conns)
}

/// The peers `doc` runs tunnels with: none when its `[ipsec]` does not validate.
pub fn peers(doc: &Document) -> Vec<IpAddr> {
    effective(doc)
        .ok()
        .flatten()
        .map(|conns| conns.into_iter().map(|c| c.remote_addr).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_model::Format;

    const NET: &str = r#"
[[network.links]]
name = "wan"
addresses = ["203.0.113.2/24"]
[[network.links]]
name = "lan"
addresses = ["10.71.0.1/24"]
[[network.links]]
name = "ipsec0"
kind = "xfrm"
parent = "wan"
if_id = 7
"#;

    const HQ: &str = r#"
[ipsec.hq]
link = "ipsec0"
local_address = "203.0.113.1"
remote_address = "198.51.100.7"
local_subnets = ["10.71.0.0/24"]
remote_subnets = ["172.16.0.0/16"]
pre_shared_key = "sixteen chars ok"
"#;

    fn doc(body: &str) -> Document {
        Document::parse(
            format!(
                "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n{NET}{body}"
            )
            .as_bytes(),
            Format::Toml,
        )
        .unwrap()
    }

    fn refused(body: &str) -> String {
        effective(&doc(body)).unwrap_err().0
    }

    /// The defaults, the link's if_id, and a local address that is a VIP (in a link's
    /// subnet, not one of its addresses).
    #[test]
    fn a_tunnel_takes_its_if_id_from_the_link_and_strongswan_defaults() {
        assert_eq!(effective(&doc("")).unwrap(), None);
        let conns = effective(&doc(HQ)).unwrap().unwrap();
        assert_eq!(conns.len(), 1);
        let c = &conns[0];
        assert_eq!(c.if_id, 7);
        assert_eq!(c.ike_proposals, "default");
        assert_eq!(c.options.start_action, "start");
        assert_eq!(c.options.dpd_action, "restart");
        assert_eq!(
            peers(&doc(HQ)),
            vec!["198.51.100.7".parse::<IpAddr>().unwrap()]
        );
        assert!(!format!("{:?}", doc(HQ).section::<IpsecSection>(SECTION)).contains("sixteen"));
    }

    #[test]
    fn refuses_what_cannot_work_naming_the_key() {
        let cases = [
            (
                HQ.replace("\"ipsec0\"", "\"lan\""),
                "ipsec.hq.link: `lan` is not a [network] link of kind xfrm",
            ),
            (
                HQ.replace("203.0.113.1", "192.0.2.1"),
                "ipsec.hq.local_address: 192.0.2.1 is in the subnet of no [network] link address",
            ),
            (
                HQ.replace("198.51.100.7", "2001:db8::7"),
                "ipsec.hq.remote_address: 2001:db8::7 and local_address 203.0.113.1 are of different families",
            ),
            (
                HQ.replace("sixteen chars ok", "short"),
                "ipsec.hq.pre_shared_key: shorter than 16 characters",
            ),
            (
                HQ.replace(
                    "remote_subnets = [\"172.16.0.0/16\"]",
                    "remote_subnets = []",
                ),
                "ipsec.hq.remote_subnets: empty: name the networks the tunnel joins",
            ),
            (
                format!("{HQ}ike_proposals = \"aes256--sha256\"\n"),
                "ipsec.hq.ike_proposals: `aes256--sha256` is not a proposal list",
            ),
            (
                format!("{HQ}start_action = \"later\"\n"),
                "ipsec.hq.start_action: unknown value `later` (none, start, trap)",
            ),
            (
                format!("{HQ}{}", HQ.replace("[ipsec.hq]", "[ipsec.branch]")),
                "ipsec.hq.remote_address: 198.51.100.7 is also ipsec.branch's peer",
            ),
            (
                HQ.replace("[ipsec.hq]", "[ipsec.\"h q\"]"),
                "ipsec.h q: `h q` is not a connection name",
            ),
        ];
        for (body, want) in cases {
            let got = refused(&body);
            assert!(got.starts_with(want), "got `{got}`, want `{want}`");
            assert!(!got.contains("sixteen"), "{got}");
        }
        let unknown = effective(&doc(&format!("{HQ}psk = \"x\"\n")))
            .unwrap_err()
            .0;
        assert!(unknown.contains("psk"), "{unknown}");
    }
}
