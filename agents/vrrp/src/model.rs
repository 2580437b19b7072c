//! The `[vrrp]` section and its checks against `[network]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use kowabunga_model::Document;
use kowabunga_model::network::{self, Network, Prefix};
use schemars::JsonSchema;
use serde::Deserialize;

/// The section's name in the document.
pub const SECTION: &str = "vrrp";

/// `[vrrp]`: this node's part in the VRRP groups of its links.
///
/// ```toml
/// [vrrp]
/// priority = 150            # this node's; the other Kiwi of the pair has another
/// [[vrrp.instance]]
/// link = "vlan102"
/// vrid = 102
/// vips = ["10.102.0.1/24"]
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VrrpSection {
    /// This node's priority in every instance that sets none, 1 to 254 (the highest
    /// live node holds the VIPs; 255 is reserved for a VIP's address owner).
    #[schemars(range(min = 1, max = 254))]
    pub priority: u8,
    /// A node coming back with a higher priority takes the VIPs back (default). Off:
    /// the VIPs stay where they are until their holder fails.
    #[serde(default = "yes")]
    pub preempt: bool,
    /// Seconds between adverts (default 1): whole seconds 1 to 255 (VRRPv2, as
    /// upstream's keepalived), or a sub-second interval in hundredths, 0.01 to 40.95
    /// (VRRPv3, RFC 5798). A backup takes over after three missed adverts plus a skew
    /// below one interval: about 3.6 s at 1 s, 1.8 s at 0.5.
    #[serde(default = "one")]
    #[schemars(range(min = 0.01, max = 255))]
    pub advert_interval: f64,
    /// Connection tracking kept across a failover (`conntrackd`): established flows,
    /// NAT ones included, survive the move of the VIPs.
    #[serde(default)]
    pub conntrack_sync: Option<ConntrackSync>,
    #[serde(default, rename = "instance")]
    pub instances: Vec<Instance>,
}

/// `[vrrp.conntrack_sync]`: where this Kiwi and the other of its pair exchange their
/// connection tracking tables (conntrackd, FT-FW mode, UDP unicast).
///
/// ```toml
/// [vrrp.conntrack_sync]
/// link = "eth2"             # a link of [network] with an address (a dedicated one is best)
/// peer = "10.0.0.3"         # the other Kiwi's address on it
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConntrackSync {
    /// A link of `[network]` with an address in the peer's subnet.
    pub link: String,
    /// The other Kiwi's address on that link.
    pub peer: IpAddr,
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

/// One VRRP router: a link, its router id, the addresses it holds.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// A link of `[network]`: adverts go out on it and the VIPs are added to it.
    pub link: String,
    /// The VRRP router id, 1 to 255, unique on its link.
    #[schemars(range(min = 1, max = 255))]
    pub vrid: u8,
    /// The virtual addresses, `ip/len`, each inside a subnet of the link's own
    /// addresses, all of one family.
    #[schemars(length(min = 1))]
    pub vips: Vec<Prefix>,
    /// This node's priority here, instead of the section's.
    #[serde(default)]
    #[schemars(range(min = 1, max = 254))]
    pub priority: Option<u8>,
    /// The other nodes' addresses, for unicast adverts (where multicast does not
    /// pass); empty: multicast (224.0.0.18, ff02::12).
    #[serde(default)]
    pub unicast_peers: Vec<IpAddr>,
}

/// A `[vrrp]` section that does not fit the document's `[network]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpError(pub String);

impl fmt::Display for VrrpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VrrpError {}

/// One instance, checked, with its effective priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpInstance {
    pub link: String,
    pub vrid: u8,
    pub priority: u8,
    pub vips: Vec<Prefix>,
    pub unicast_peers: Vec<IpAddr>,
}

/// The checked `[vrrp.conntrack_sync]`: what conntrackd is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    pub link: String,
    /// This node's address on the link, of the peer's family, in its subnet.
    pub local: IpAddr,
    pub peer: IpAddr,
    /// Flows from or to these are the node's own, not synced: every address of every
    /// link of `[network]`.
    pub own_addresses: Vec<IpAddr>,
}

/// The interval between adverts, in hundredths of a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Centiseconds(pub u16);

impl Centiseconds {
    /// VRRPv3 (RFC 5798) carries intervals in hundredths; whole seconds stay on
    /// VRRPv2, which upstream's keepalived speaks (a pair being updated one node at a
    /// time keeps hearing each other).
    pub fn needs_vrrp3(self) -> bool {
        !self.0.is_multiple_of(100)
    }
}

impl fmt::Display for Centiseconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, hundredths) = (self.0 / 100, self.0 % 100);
        if hundredths == 0 {
            write!(f, "{whole}")
        } else if hundredths % 10 == 0 {
            write!(f, "{whole}.{}", hundredths / 10)
        } else {
            write!(f, "{whole}.{hundredths:02}")
        }
    }
}

/// The checked configuration: what keepalived (and conntrackd) are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpConfig {
    pub preempt: bool,
    pub advert_interval: Centiseconds,
    pub conntrack_sync: Option<SyncConfig>,
    pub instances: Vec<VrrpInstance>,
}

/// The configuration `doc` asks for: its `[vrrp]` section checked against its
/// `[network]`. No section, or no instance: none (keepalived is stopped).
pub fn effective(doc: &Document) -> Result<Option<VrrpConfig>, VrrpError> {
    let section = doc
        .section::<VrrpSection>(SECTION)
        .map_err(|e| VrrpError(e.to_string()))?;
    let Some(section) = section else {
        return Ok(None);
    };
    let net = doc
        .section::<Network>(network::SECTION)
        .map_err(|e| VrrpError(format!("cannot read [network]: {e}")))?
        .unwrap_or_default();
    let config = compile(&section, &net)?;
    Ok((!config.instances.is_empty()).then_some(config))
}

/// The link `doc` syncs connection tracking on (what Kiwi's baseline firewall opens
/// conntrackd's port on): none without `[vrrp.conntrack_sync]`, or when `[vrrp]` does
/// not validate.
pub fn conntrack_sync_links(doc: &Document) -> Vec<String> {
    effective(doc)
        .ok()
        .flatten()
        .and_then(|c| c.conntrack_sync)
        .map(|s| vec![s.link])
        .unwrap_or_default()
}

/// The links `doc` runs VRRP on (what Kiwi's baseline firewall opens VRRP on): none
/// when its `[vrrp]` does not validate (the vrrp reconciler refuses it).
pub fn vrrp_links(doc: &Document) -> Vec<String> {
    let links: BTreeSet<String> = effective(doc)
        .ok()
        .flatten()
        .map(|c| c.instances.into_iter().map(|i| i.link).collect())
        .unwrap_or_default();
    links.into_iter().collect()
}

fn check_priority(at: &str, priority: u8) -> Result<(), VrrpError> {
    match priority {
        0 => Err(VrrpError(format!("{at}: 0 is not a priority (1 to 254)"))),
        255 => Err(VrrpError(format!(
            "{at}: 255 is reserved for the owner of the virtual addresses (use 1 to 254)"
        ))),
        _ => Ok(()),
    }
}

/// Check `section` against `net`.
pub fn compile(section: &VrrpSection, net: &Network) -> Result<VrrpConfig, VrrpError> {
    let err = |msg: String| Err(VrrpError(msg));
    check_priority("vrrp.priority", section.priority)?;
    let advert_interval = advert_interval(section.advert_interval)?;
    let mut ids: BTreeMap<(&str, u8), usize> = BTreeMap::new();
    let mut vips_seen: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut instances = Vec::with_capacity(section.instances.len());
    for (i, inst) in section.instances.iter().enumerate() {
        let at = format!("vrrp.instance[{i}]");
        let Some(link) = net.link(&inst.link) else {
            let known: Vec<&str> = net.links.iter().map(|l| l.name.as_str()).collect();
            return err(format!(
                "{at}.link: `{}` is not a link of [network] (declared: {})",
                inst.link,
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ));
        };
        if inst.vrid == 0 {
            return err(format!("{at}.vrid: 0 is not a VRRP router id (1 to 255)"));
        }
        if let Some(first) = ids.insert((inst.link.as_str(), inst.vrid), i) {
            return err(format!(
                "{at}.vrid: {} is already used on link {} by vrrp.instance[{first}] (one router id per link)",
                inst.vrid, inst.link
            ));
        }
        let priority = inst.priority.unwrap_or(section.priority);
        check_priority(&format!("{at}.priority"), priority)?;
        if inst.vips.is_empty() {
            return err(format!(
                "{at}.vips: empty (an instance holds at least one address)"
            ));
        }
        let v4 = inst.vips[0].addr.is_ipv4();
        for (j, vip) in inst.vips.iter().enumerate() {
            let at = format!("{at}.vips[{j}]");
            if vip.addr.is_ipv4() != v4 {
                return err(format!(
                    "{at}: {vip} mixes address families with {} (one family per instance)",
                    inst.vips[0]
                ));
            }
            if vip.len > Prefix::max_len(vip.addr) {
                return err(format!(
                    "{at}: /{} is not a prefix length for {}",
                    vip.len, vip.addr
                ));
            }
            if link.addresses.iter().any(|a| a.addr == vip.addr) {
                return err(format!(
                    "{at}: {} is link {}'s own address, not a virtual one",
                    vip.addr, inst.link
                ));
            }
            if !link.addresses.iter().any(|a| a.contains(vip.addr)) {
                let own: Vec<String> = link.addresses.iter().map(ToString::to_string).collect();
                return err(format!(
                    "{at}: {} is outside every subnet of link {} ({})",
                    vip.addr,
                    inst.link,
                    if own.is_empty() {
                        "it has no address".into()
                    } else {
                        own.join(", ")
                    }
                ));
            }
            if let Some(other) = vips_seen.insert(vip.addr, at.clone()) {
                return err(format!("{at}: {} is also {other}", vip.addr));
            }
        }
        for (j, peer) in inst.unicast_peers.iter().enumerate() {
            if peer.is_ipv4() != v4 {
                return err(format!(
                    "{at}.unicast_peers[{j}]: {peer} is not of the family of the instance's addresses"
                ));
            }
            if link.addresses.iter().any(|a| a.addr == *peer) {
                return err(format!(
                    "{at}.unicast_peers[{j}]: {peer} is this node's own address on {}",
                    inst.link
                ));
            }
        }
        let mut vips = inst.vips.clone();
        vips.sort();
        let mut unicast_peers = inst.unicast_peers.clone();
        unicast_peers.sort();
        unicast_peers.dedup();
        instances.push(VrrpInstance {
            link: inst.link.clone(),
            vrid: inst.vrid,
            priority,
            vips,
            unicast_peers,
        });
    }
    let conntrack_sync = match &section.conntrack_sync {
        None => None,
        Some(_) if instances.is_empty() => {
            return err(
                "vrrp.conntrack_sync: no vrrp.instance (flows are synced between the nodes of a VRRP pair)"
                    .into(),
            );
        }
        Some(sync) => Some(sync_config(sync, net)?),
    };
    Ok(VrrpConfig {
        preempt: section.preempt,
        advert_interval,
        conntrack_sync,
        instances,
    })
}

fn advert_interval(seconds: f64) -> Result<Centiseconds, VrrpError> {
    let refused = |why: &str| {
        Err(VrrpError(format!(
            "vrrp.advert_interval: {seconds} {why} (whole seconds 1 to 255, or 0.01 to 40.95 in hundredths)"
        )))
    };
    let hundredths = (seconds * 100.0).round();
    if !seconds.is_finite() || (seconds * 100.0 - hundredths).abs() > 1e-6 {
        return refused("is not a whole number of hundredths of a second");
    }
    if !(1.0..=25_500.0).contains(&hundredths) {
        return refused("is out of range");
    }
    // In range: the conversion is exact.
    let interval = Centiseconds(hundredths as u16);
    if interval.needs_vrrp3() && interval.0 > 4095 {
        return refused("is above VRRPv3's 40.95 s and not whole seconds");
    }
    Ok(interval)
}

fn sync_config(sync: &ConntrackSync, net: &Network) -> Result<SyncConfig, VrrpError> {
    let at = "vrrp.conntrack_sync";
    let Some(link) = net.link(&sync.link) else {
        return Err(VrrpError(format!(
            "{at}.link: `{}` is not a link of [network]",
            sync.link
        )));
    };
    if link.addresses.iter().any(|a| a.addr == sync.peer) {
        return Err(VrrpError(format!(
            "{at}.peer: {} is this node's own address on {}",
            sync.peer, sync.link
        )));
    }
    let Some(local) = link.addresses.iter().find(|a| a.contains(sync.peer)) else {
        return Err(VrrpError(format!(
            "{at}.peer: {} is outside every subnet of link {} (the nodes sync over one subnet)",
            sync.peer, sync.link
        )));
    };
    let mut own_addresses: Vec<IpAddr> = net
        .links
        .iter()
        .flat_map(|l| l.addresses.iter().map(|a| a.addr))
        .collect();
    own_addresses.sort();
    own_addresses.dedup();
    Ok(SyncConfig {
        link: sync.link.clone(),
        local: local.addr,
        peer: sync.peer,
        own_addresses,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kowabunga_model::Format;

    pub(crate) const HEAD: &str = "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n[[network.links]]\nname = \"eth1\"\naddresses = [\"10.0.0.2/24\", \"fd00::2/64\"]\n[[network.links]]\nname = \"vlan102\"\nkind = \"vlan\"\nparent = \"eth1\"\nid = 102\naddresses = [\"10.102.0.2/24\"]\n";

    fn doc(vrrp: &str) -> Document {
        Document::parse(format!("{HEAD}{vrrp}").as_bytes(), Format::Toml).unwrap()
    }

    fn refused(vrrp: &str) -> String {
        effective(&doc(vrrp)).unwrap_err().0
    }

    #[test]
    fn instances_get_the_sections_priority_and_sorted_addresses() {
        let config = effective(&doc(
            "[vrrp]\npriority = 150\n[[vrrp.instance]]\nlink = \"vlan102\"\nvrid = 102\nvips = [\"10.102.0.3/24\", \"10.102.0.1/24\"]\n\
             [[vrrp.instance]]\nlink = \"eth1\"\nvrid = 1\nvips = [\"fd00::1/64\"]\npriority = 90\nunicast_peers = [\"fd00::3\"]\n",
        ))
        .unwrap()
        .unwrap();
        assert!(config.preempt);
        assert_eq!(config.advert_interval, Centiseconds(100));
        assert_eq!(config.conntrack_sync, None);
        assert_eq!(config.instances[0].priority, 150);
        assert_eq!(
            config.instances[0]
                .vips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.102.0.1/24", "10.102.0.3/24"]
        );
        assert_eq!(config.instances[1].priority, 90);
        assert_eq!(
            vrrp_links(&doc(
                "[vrrp]\npriority = 1\n[[vrrp.instance]]\nlink = \"vlan102\"\nvrid = 7\nvips = [\"10.102.0.1/24\"]\n"
            )),
            ["vlan102"]
        );
    }

    #[test]
    fn sub_second_adverts_and_conntrack_sync() {
        let config = effective(&doc(
            "[vrrp]\npriority = 150\nadvert_interval = 0.5\n[vrrp.conntrack_sync]\nlink = \"eth1\"\npeer = \"fd00::3\"\n\
             [[vrrp.instance]]\nlink = \"vlan102\"\nvrid = 102\nvips = [\"10.102.0.1/24\"]\n",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(config.advert_interval, Centiseconds(50));
        assert!(config.advert_interval.needs_vrrp3());
        assert_eq!(config.advert_interval.to_string(), "0.5");
        assert_eq!(Centiseconds(5).to_string(), "0.05");
        assert_eq!(Centiseconds(300).to_string(), "3");
        assert!(!Centiseconds(300).needs_vrrp3());
        let sync = config.conntrack_sync.unwrap();
        assert_eq!(sync.link, "eth1");
        assert_eq!(sync.local, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(sync.peer, "fd00::3".parse::<IpAddr>().unwrap());
        assert_eq!(
            sync.own_addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.0.0.2", "10.102.0.2", "fd00::2"]
        );
        let with_sync = doc(
            "[vrrp]\npriority = 1\n[vrrp.conntrack_sync]\nlink = \"eth1\"\npeer = \"10.0.0.3\"\n\
             [[vrrp.instance]]\nlink = \"vlan102\"\nvrid = 7\nvips = [\"10.102.0.1/24\"]\n",
        );
        assert_eq!(conntrack_sync_links(&with_sync), ["eth1"]);
        assert!(conntrack_sync_links(&doc("")).is_empty());
    }

    #[test]
    fn no_section_or_no_instance_means_no_keepalived() {
        assert_eq!(effective(&doc("")).unwrap(), None);
        assert_eq!(effective(&doc("[vrrp]\npriority = 100\n")).unwrap(), None);
        assert!(vrrp_links(&doc("")).is_empty());
    }

    #[test]
    fn bad_sections_are_refused_naming_the_key() {
        let one = |extra: &str| {
            format!(
                "[vrrp]\npriority = 100\n[[vrrp.instance]]\nlink = \"vlan102\"\nvrid = 102\nvips = [\"10.102.0.1/24\"]\n{extra}"
            )
        };
        let cases = [
            (
                one("[[vrrp.instance]]\nlink = \"vlan102\"\nvrid = 102\nvips = [\"10.102.0.5/24\"]\n"),
                "vrrp.instance[1].vrid: 102 is already used on link vlan102 by vrrp.instance[0]",
            ),
            (
                "[vrrp]\npriority = 100\n[[vrrp.instance]]\nlink = \"vlan102\"\nvrid = 9\nvips = [\"10.9.0.1/24\"]\n".into(),
                "vrrp.instance[0].vips[0]: 10.9.0.1 is outside every subnet of link vlan102 (10.102.0.2/24)",
            ),
            (
                "[vrrp]\npriority = 100\n[[vrrp.instance]]\nlink = \"vlan103\"\nvrid = 9\nvips = [\"10.9.0.1/24\"]\n".into(),
                "vrrp.instance[0].link: `vlan103` is not a link of [network] (declared: eth1, vlan102)",
            ),
            (
                "[vrrp]\npriority = 255\n".into(),
                "vrrp.priority: 255 is reserved",
            ),
            (
                "[vrrp]\npriority = 0\n".into(),
                "vrrp.priority: 0 is not a priority",
            ),
            (
                "[vrrp]\npriority = 10\n[[vrrp.instance]]\nlink = \"eth1\"\nvrid = 0\nvips = [\"10.0.0.1/24\"]\n".into(),
                "vrrp.instance[0].vrid: 0 is not a VRRP router id",
            ),
            (
                "[vrrp]\npriority = 10\n[[vrrp.instance]]\nlink = \"eth1\"\nvrid = 1\nvips = [\"10.0.0.1/24\", \"fd00::1/64\"]\n".into(),
                "vrrp.instance[0].vips[1]: fd00::1/64 mixes address families",
            ),
            (
                "[vrrp]\npriority = 10\n[[vrrp.instance]]\nlink = \"eth1\"\nvrid = 1\nvips = [\"10.0.0.2/24\"]\n".into(),
                "vrrp.instance[0].vips[0]: 10.0.0.2 is link eth1's own address",
            ),
            (
                one("[[vrrp.instance]]\nlink = \"eth1\"\nvrid = 102\nvips = [\"10.102.0.1/24\"]\n"),
                "vrrp.instance[1].vips[0]: 10.102.0.1 is outside every subnet of link eth1",
            ),
            (
                "[vrrp]\npriority = 10\n[[vrrp.instance]]\nlink = \"eth1\"\nvrid = 1\nvips = []\n".into(),
                "vrrp.instance[0].vips: empty",
            ),
            (
                "[vrrp]\npriority = 10\n[[vrrp.instance]]\nlink = \"eth1\"\nvrid = 1\nvips = [\"10.0.0.1/24\"]\nunicast_peers = [\"fd00::3\"]\n".into(),
                "vrrp.instance[0].unicast_peers[0]: fd00::3 is not of the family",
            ),
            (
                "[vrrp]\npriority = 10\nno_such_key = 1\n".into(),
                "no_such_key",
            ),
            (
                "[vrrp]\npriority = 10\nadvert_interval = 0\n".into(),
                "vrrp.advert_interval: 0 is out of range",
            ),
            (
                "[vrrp]\npriority = 10\nadvert_interval = 0.125\n".into(),
                "vrrp.advert_interval: 0.125 is not a whole number of hundredths",
            ),
            (
                "[vrrp]\npriority = 10\nadvert_interval = 41.5\n".into(),
                "vrrp.advert_interval: 41.5 is above VRRPv3's 40.95 s",
            ),
            (
                "[vrrp]\npriority = 10\nadvert_interval = 256\n".into(),
                "vrrp.advert_interval: 256 is out of range",
            ),
            (
                "[vrrp]\npriority = 10\n[vrrp.conntrack_sync]\nlink = \"eth1\"\npeer = \"10.0.0.3\"\n".into(),
                "vrrp.conntrack_sync: no vrrp.instance",
            ),
            (
                one("[vrrp.conntrack_sync]\nlink = \"eth9\"\npeer = \"10.0.0.3\"\n"),
                "vrrp.conntrack_sync.link: `eth9` is not a link of [network]",
            ),
            (
                one("[vrrp.conntrack_sync]\nlink = \"eth1\"\npeer = \"10.9.0.3\"\n"),
                "vrrp.conntrack_sync.peer: 10.9.0.3 is outside every subnet of link eth1",
            ),
            (
                one("[vrrp.conntrack_sync]\nlink = \"eth1\"\npeer = \"10.0.0.2\"\n"),
                "vrrp.conntrack_sync.peer: 10.0.0.2 is this node's own address on eth1",
            ),
        ];
        for (vrrp, want) in cases {
            let got = refused(&vrrp);
            assert!(got.contains(want), "{vrrp}\n  got: {got}\n want: {want}");
        }
        // The same VIP on two instances of two links (vlan102's subnet on both).
        let dup = "[vrrp]\npriority = 10\n[[vrrp.instance]]\nlink = \"vlan102\"\nvrid = 1\nvips = [\"10.102.0.1/24\"]\n\
                   [[vrrp.instance]]\nlink = \"vlan102\"\nvrid = 2\nvips = [\"10.102.0.1/24\"]\n";
        assert!(
            refused(dup)
                .contains("vrrp.instance[1].vips[0]: 10.102.0.1 is also vrrp.instance[0].vips[0]"),
            "{}",
            refused(dup)
        );
    }
}
