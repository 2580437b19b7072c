//! The `[wireguard]` section and its checks against `[network]`.
//!
//! A tunnel is a `[network]` link of kind `wireguard` (its addresses, MTU and routes
//! are `[network]`'s); this section gives it a listen port and its peers. The node's
//! own key is not in the document: it is made on the node and kept on `/var`
//! ([`crate::keys`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

use base64::Engine as _;
use kowabunga_model::Document;
use kowabunga_model::network::{self, LinkKind, Network, Prefix};
use schemars::JsonSchema;
use serde::Deserialize;

/// The section's name in the document.
pub const SECTION: &str = "wireguard";

/// `[wireguard.<link>]`, one table per wireguard link of `[network]`.
///
/// ```toml
/// [wireguard.wg0]
/// listen_port = 51820
/// [[wireguard.wg0.peer]]
/// public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
/// endpoint = "203.0.113.3:51820"
/// allowed_ips = ["10.62.0.0/24", "10.200.0.2/32"]
/// persistent_keepalive = 25
/// ```
pub type WireguardSection = BTreeMap<String, Tunnel>;

/// One tunnel: where it listens, whom it talks to.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tunnel {
    /// UDP port (1 to 65535); none: the kernel picks one (enough for a node that
    /// only dials out).
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535))]
    pub listen_port: Option<u16>,
    /// Its peers, each by its public key.
    #[serde(default, rename = "peer")]
    pub peers: Vec<Peer>,
}

/// One peer of a tunnel.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Its public key: 32 bytes, base64 (44 characters, as `wg pubkey` prints it).
    #[schemars(length(min = 44, max = 44))]
    pub public_key: String,
    /// Where to reach it (`ip:port`); none: it dials in.
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
    /// The addresses routed to it and accepted from it; one address belongs to one
    /// peer of a tunnel.
    #[serde(default)]
    pub allowed_ips: Vec<Prefix>,
    /// Seconds between keepalives through NAT (1 to 65535); none: off.
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535))]
    pub persistent_keepalive: Option<u16>,
}

/// A `[wireguard]` section that does not fit the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireguardError(pub String);

impl fmt::Display for WireguardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireguardError {}

/// One peer, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
    /// Sorted, each with its host bits cleared (as the kernel keeps them).
    pub allowed_ips: Vec<Prefix>,
    pub persistent_keepalive: Option<u16>,
}

/// One tunnel, checked: what `wg setconf` is given (with the node's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    pub link: String,
    pub listen_port: Option<u16>,
    /// Sorted by public key.
    pub peers: Vec<PeerConfig>,
}

/// The tunnels `doc` asks for: one per wireguard link of its `[network]`, configured
/// by its `[wireguard]` table (none: no peers yet).
pub fn effective(doc: &Document) -> Result<Vec<TunnelConfig>, WireguardError> {
    let section = doc
        .section::<WireguardSection>(SECTION)
        .map_err(|e| WireguardError(e.to_string()))?
        .unwrap_or_default();
    let net = doc
        .section::<Network>(network::SECTION)
        .map_err(|e| WireguardError(format!("cannot read [network]: {e}")))?
        .unwrap_or_default();
    compile(&section, &net)
}

/// Check `section` against `net`.
pub fn compile(
    section: &WireguardSection,
    net: &Network,
) -> Result<Vec<TunnelConfig>, WireguardError> {
    let err = |msg: String| Err(WireguardError(msg));
    for name in section.keys() {
        match net.link(name) {
            Some(l) if l.kind == LinkKind::Wireguard => {}
            Some(l) => {
                return err(format!(
                    "wireguard.{name}: link {name} of [network] is a {} link, not a wireguard one",
                    l.kind
                ));
            }
            None => {
                return err(format!(
                    "wireguard.{name}: no link {name} in [network] (declare it with kind = \"wireguard\")"
                ));
            }
        }
    }
    let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
    let mut tunnels = Vec::new();
    let empty = Tunnel {
        listen_port: None,
        peers: Vec::new(),
    };
    for link in net.links.iter().filter(|l| l.kind == LinkKind::Wireguard) {
        let name = link.name.as_str();
        let tunnel = section.get(name).unwrap_or(&empty);
        let at = format!("wireguard.{name}");
        if let Some(port) = tunnel.listen_port {
            if port == 0 {
                return err(format!("{at}.listen_port: 0 is not a port (1 to 65535)"));
            }
            if let Some(other) = ports.insert(port, name) {
                return err(format!(
                    "{at}.listen_port: {port} is also wireguard.{other}'s"
                ));
            }
        }
        let mut keys: BTreeMap<&str, usize> = BTreeMap::new();
        let mut owned: Vec<(Prefix, usize)> = Vec::new();
        let mut peers = Vec::with_capacity(tunnel.peers.len());
        for (i, peer) in tunnel.peers.iter().enumerate() {
            let at = format!("{at}.peer[{i}]");
            check_key(&format!("{at}.public_key"), &peer.public_key)?;
            if let Some(first) = keys.insert(peer.public_key.as_str(), i) {
                return err(format!(
                    "{at}.public_key: the same peer as peer[{first}] (one entry per peer)"
                ));
            }
            if peer.persistent_keepalive == Some(0) {
                return err(format!(
                    "{at}.persistent_keepalive: 0 (leave it out to turn keepalives off)"
                ));
            }
            let mut allowed: BTreeSet<Prefix> = BTreeSet::new();
            for (j, prefix) in peer.allowed_ips.iter().enumerate() {
                if prefix.len > Prefix::max_len(prefix.addr) {
                    return err(format!(
                        "{at}.allowed_ips[{j}]: /{} is not a prefix length for {}",
                        prefix.len, prefix.addr
                    ));
                }
                let net = Prefix {
                    addr: prefix.network(),
                    len: prefix.len,
                };
                if let Some((other, k)) = owned
                    .iter()
                    .find(|(o, k)| *k != i && (o.contains(net.addr) || net.contains(o.addr)))
                {
                    return err(format!(
                        "{at}.allowed_ips[{j}]: {prefix} overlaps peer[{k}]'s {other} (an address is routed to one peer of a tunnel)"
                    ));
                }
                allowed.insert(net);
            }
            owned.extend(allowed.iter().map(|p| (*p, i)));
            peers.push(PeerConfig {
                public_key: peer.public_key.clone(),
                endpoint: peer.endpoint,
                allowed_ips: allowed.into_iter().collect(),
                persistent_keepalive: peer.persistent_keepalive,
            });
        }
        peers.sort_by(|a, b| a.public_key.cmp(&b.public_key));
        tunnels.push(TunnelConfig {
            link: name.to_owned(),
            listen_port: tunnel.listen_port,
            peers,
        });
    }
    Ok(tunnels)
}

/// A WireGuard key as `wg` prints it: 32 bytes in standard base64.
pub fn check_key(at: &str, key: &str) -> Result<(), WireguardError> {
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        Ok(bytes) => Err(WireguardError(format!(
            "{at}: {} bytes, a WireGuard key is 32 (44 characters of base64)",
            bytes.len()
        ))),
        Err(e) => Err(WireguardError(format!(
            "{at}: not base64 ({e}); a WireGuard key is 32 bytes, 44 characters of base64"
        ))),
    }
}

/// The network of the crate's tests: an uplink and two wireguard links.
#[cfg(test)]
pub(crate) fn tests_head() -> &'static str {
    tests::HEAD
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_model::Format;

    const KEY_A: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const KEY_B: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

    pub(crate) const HEAD: &str = "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n\
        [[network.links]]\nname = \"eth0\"\naddresses = [\"203.0.113.2/24\"]\n\
        [[network.links]]\nname = \"wg0\"\nkind = \"wireguard\"\naddresses = [\"10.200.0.1/30\"]\n\
        [[network.links]]\nname = \"wg1\"\nkind = \"wireguard\"\n";

    fn doc(body: &str) -> Document {
        Document::parse(format!("{HEAD}{body}").as_bytes(), Format::Toml).unwrap()
    }

    fn refused(body: &str) -> String {
        effective(&doc(body)).unwrap_err().0
    }

    #[test]
    fn every_wireguard_link_is_a_tunnel_and_peers_are_sorted_and_normalized() {
        let tunnels = effective(&doc(&format!(
            "[wireguard.wg0]\nlisten_port = 51820\n\
             [[wireguard.wg0.peer]]\npublic_key = \"{KEY_B}\"\nallowed_ips = [\"10.62.0.7/24\", \"10.200.0.2/32\"]\n\
             [[wireguard.wg0.peer]]\npublic_key = \"{KEY_A}\"\nendpoint = \"203.0.113.3:51820\"\npersistent_keepalive = 25\nallowed_ips = [\"10.63.0.0/24\"]\n"
        )))
        .unwrap();
        assert_eq!(tunnels.len(), 2);
        let wg0 = &tunnels[0];
        assert_eq!(wg0.link, "wg0");
        assert_eq!(wg0.listen_port, Some(51820));
        assert_eq!(wg0.peers[0].public_key, KEY_B);
        assert_eq!(
            wg0.peers[0]
                .allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.62.0.0/24", "10.200.0.2/32"]
        );
        assert_eq!(wg0.peers[1].persistent_keepalive, Some(25));
        // wg1 has no table: a tunnel with no peer yet (its key is made all the same).
        assert_eq!(
            tunnels[1],
            TunnelConfig {
                link: "wg1".into(),
                listen_port: None,
                peers: vec![]
            }
        );
        assert!(
            effective(&doc(""))
                .unwrap()
                .iter()
                .all(|t| t.peers.is_empty())
        );
    }

    #[test]
    fn bad_sections_are_refused_naming_the_key() {
        let peer = |key: &str, ips: &str| {
            format!("[[wireguard.wg0.peer]]\npublic_key = \"{key}\"\nallowed_ips = [{ips}]\n")
        };
        let cases = [
            (
                "[wireguard.eth0]\n".to_owned(),
                "wireguard.eth0: link eth0 of [network] is a physical link, not a wireguard one",
            ),
            (
                "[wireguard.wg9]\n".to_owned(),
                "wireguard.wg9: no link wg9 in [network]",
            ),
            (
                peer("c2hvcnQ=", ""),
                "wireguard.wg0.peer[0].public_key: 5 bytes, a WireGuard key is 32",
            ),
            (
                peer("not base64 at all!", ""),
                "wireguard.wg0.peer[0].public_key: not base64",
            ),
            (
                format!("{}{}", peer(KEY_A, ""), peer(KEY_A, "")),
                "wireguard.wg0.peer[1].public_key: the same peer as peer[0]",
            ),
            (
                format!(
                    "{}{}",
                    peer(KEY_A, "\"10.62.0.0/16\""),
                    peer(KEY_B, "\"10.62.1.0/24\"")
                ),
                "wireguard.wg0.peer[1].allowed_ips[0]: 10.62.1.0/24 overlaps peer[0]'s 10.62.0.0/16",
            ),
            (
                "[wireguard.wg0]\nlisten_port = 51820\n[wireguard.wg1]\nlisten_port = 51820\n"
                    .into(),
                "wireguard.wg1.listen_port: 51820 is also wireguard.wg0's",
            ),
            (
                "[wireguard.wg0]\nlisten_port = 0\n".into(),
                "wireguard.wg0.listen_port: 0 is not a port",
            ),
            (
                format!(
                    "[[wireguard.wg0.peer]]\npublic_key = \"{KEY_A}\"\npersistent_keepalive = 0\n"
                ),
                "wireguard.wg0.peer[0].persistent_keepalive: 0",
            ),
            (
                format!(
                    "[[wireguard.wg0.peer]]\npublic_key = \"{KEY_A}\"\nprivate_key = \"{KEY_B}\"\n"
                ),
                "private_key",
            ),
        ];
        for (body, want) in cases {
            let got = refused(&body);
            assert!(got.contains(want), "{body}\n  got: {got}\n want: {want}");
        }
    }
}
