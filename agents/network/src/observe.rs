//! Kernel -> observed state. Re-listed in full on every pass; nothing is cached.
//!
//! Only the fields the reconciler manages are kept. What is ignored, and why:
//! - link flags other than `IFF_UP` (`LOWER_UP`, `RUNNING`... are the kernel's to set),
//!   MACs of created links (random), queue lengths, statistics;
//! - address flags and lifetimes (a static address is permanent; DAD state is the
//!   kernel's), labels, broadcast addresses (derived from the prefix);
//! - routes that are not unicast (local, broadcast, multicast: the kernel's), and of
//!   unicast routes everything but destination, table, metric, gateway and link.

use std::net::IpAddr;

use futures_util::StreamExt;
use kowabunga_model::network::{BondMode, MacAddr, Prefix, RouteKey};
use rtnetlink::Handle;
use rtnetlink::packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    BondMode as NlBondMode, InfoBond, InfoBridge, InfoData, InfoKind, InfoVlan, InfoXfrm,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia,
};

/// A link as the kernel has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`bridge`, `vlan`, `veth`...), `None` for hardware.
    pub kind: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
    /// Index of the bridge or bond it is enslaved to.
    pub master: Option<u32>,
    /// `IFLA_LINK`: a VLAN's parent, a veth's peer.
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID` present: `link` is an index in another namespace.
    pub link_elsewhere: bool,
    /// `IFLA_ADDRESS`: the MAC in use now (a bond sets its members' to its own).
    pub mac: Option<MacAddr>,
    /// `IFLA_PERM_ADDRESS`: the hardware's own MAC, whatever the link uses now;
    /// absent for virtual links.
    pub perm_mac: Option<MacAddr>,
    pub vlan_id: Option<u16>,
    pub bond_mode: Option<BondMode>,
    pub vlan_filtering: Option<bool>,
    /// An XFRM interface's `if_id` and the link its packets leave by
    /// (`IFLA_XFRM_IF_ID`, `IFLA_XFRM_LINK`).
    pub xfrm_if_id: Option<u32>,
    pub xfrm_link: Option<u32>,
}

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrState {
    pub index: u32,
    pub addr: Prefix,
}

/// A unicast route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteState {
    pub key: RouteKey,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// Everything observed in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: Vec<LinkState>,
    pub addrs: Vec<AddrState>,
    pub routes: Vec<RouteState>,
}

impl Observed {
    pub fn link(&self, name: &str) -> Option<&LinkState> {
        self.links.iter().find(|l| l.name == name)
    }
    pub fn link_by_index(&self, index: u32) -> Option<&LinkState> {
        self.links.iter().find(|l| l.index == index)
    }
}

/// Why observing failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot list {what}: {detail}")]
pub struct ObserveError {
    pub what: &'static str,
    pub detail: String,
}

pub fn link_state(m: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        ..LinkState::default()
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Mtu(v) => s.mtu = Some(*v),
            LinkAttribute::Controller(i) if *i != 0 => s.master = Some(*i),
            LinkAttribute::Link(i) if *i != 0 => s.link = Some(*i),
            LinkAttribute::LinkNetNsId(_) => s.link_elsewhere = true,
            LinkAttribute::Address(b) => {
                if let Ok(b6) = <[u8; 6]>::try_from(b.as_slice()) {
                    s.mac = Some(MacAddr(b6));
                }
            }
            LinkAttribute::PermAddress(b) => {
                if let Ok(b6) = <[u8; 6]>::try_from(b.as_slice()) {
                    s.perm_mac = Some(MacAddr(b6)).filter(|m| m.0 != [0; 6]);
                }
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => s.kind = Some(kind_name(k)),
                        LinkInfo::Data(InfoData::Vlan(v)) => {
                            for x in v {
                                if let InfoVlan::Id(id) = x {
                                    s.vlan_id = Some(*id);
                                }
                            }
                        }
                        LinkInfo::Data(InfoData::Xfrm(v)) => {
                            for x in v {
                                match x {
                                    InfoXfrm::IfId(id) => s.xfrm_if_id = Some(*id),
                                    InfoXfrm::Link(i) if *i != 0 => s.xfrm_link = Some(*i),
                                    _ => {}
                                }
                            }
                        }
                        LinkInfo::Data(InfoData::Bond(v)) => {
                            for x in v {
                                if let InfoBond::Mode(mode) = x {
                                    s.bond_mode = model_bond_mode(*mode);
                                }
                            }
                        }
                        LinkInfo::Data(InfoData::Bridge(v)) => {
                            for x in v {
                                if let InfoBridge::VlanFiltering(on) = x {
                                    s.vlan_filtering = Some(*on);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    s
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Vlan => "vlan".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Bond => "bond".into(),
        InfoKind::Xfrm => "xfrm".into(),
        other => other.to_string(),
    }
}

fn model_bond_mode(m: NlBondMode) -> Option<BondMode> {
    Some(match m {
        NlBondMode::BalanceRr => BondMode::BalanceRr,
        NlBondMode::ActiveBackup => BondMode::ActiveBackup,
        NlBondMode::BalanceXor => BondMode::BalanceXor,
        NlBondMode::Broadcast => BondMode::Broadcast,
        NlBondMode::Ieee8023Ad => BondMode::Ieee8023ad,
        NlBondMode::BalanceTlb => BondMode::BalanceTlb,
        NlBondMode::BalanceAlb => BondMode::BalanceAlb,
        _ => return None,
    })
}

pub fn addr_state(m: &AddressMessage) -> Option<AddrState> {
    let mut address = None;
    let mut local = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Local(ip) => local = Some(*ip),
            _ => {}
        }
    }
    // IPv4: IFA_LOCAL is the interface's address (IFA_ADDRESS is the peer on
    // point-to-point links). IPv6: only IFA_ADDRESS.
    let ip = local.or(address)?;
    Some(AddrState {
        index: m.header.index,
        addr: Prefix {
            addr: ip,
            len: m.header.prefix_len,
        },
    })
}

pub fn route_state(m: &RouteMessage) -> Option<RouteState> {
    if m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = ip_of(d),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::Via(RouteVia::Inet6(v)) => gateway = Some(IpAddr::V6(*v)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            _ => {}
        }
    }
    let unspecified = match m.header.address_family {
        rtnetlink::packet_route::AddressFamily::Inet => Prefix::unspecified_v4().addr,
        rtnetlink::packet_route::AddressFamily::Inet6 => Prefix::unspecified_v6().addr,
        _ => return None,
    };
    let dst = Prefix {
        addr: dst.unwrap_or(unspecified),
        len: m.header.destination_prefix_length,
    };
    Some(RouteState {
        // IPv4 routes added without a metric carry no RTA_PRIORITY: that is metric 0.
        key: RouteKey {
            table,
            dst,
            metric: metric.unwrap_or(0),
        },
        gateway,
        oif,
    })
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

async fn dump(
    handle: &mut Handle,
    what: &'static str,
    req: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>, ObserveError> {
    let mut msg = NetlinkMessage::from(req);
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut stream = handle.request(msg).map_err(|e| ObserveError {
        what,
        detail: e.to_string(),
    })?;
    let mut out = Vec::new();
    while let Some(m) = stream.next().await {
        match m.payload {
            NetlinkPayload::InnerMessage(inner) => out.push(inner),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(ObserveError {
                    what,
                    detail: e.to_io().to_string(),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `ip link show`
pub async fn links(handle: &mut Handle) -> Result<Vec<LinkState>, ObserveError> {
    let msgs = dump(
        handle,
        "links",
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
    )
    .await?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(link_state(l)),
            _ => None,
        })
        .collect())
}

/// `ip link show`, `ip addr show`, `ip route show table all` (both families).
pub async fn observe(handle: &mut Handle) -> Result<Observed, ObserveError> {
    let links = links(handle).await?;
    let addrs = dump(
        handle,
        "addresses",
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
    )
    .await?
    .iter()
    .filter_map(|m| match m {
        RouteNetlinkMessage::NewAddress(a) => addr_state(a),
        _ => None,
    })
    .collect();
    let routes = dump(
        handle,
        "routes",
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
    )
    .await?
    .iter()
    .filter_map(|m| match m {
        RouteNetlinkMessage::NewRoute(r) => route_state(r),
        _ => None,
    })
    .collect();
    Ok(Observed {
        links,
        addrs,
        routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::AddressFamily;

    #[test]
    fn vlan_link_is_read() {
        let mut m = LinkMessage::default();
        m.header.index = 9;
        m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        m.attributes = vec![
            LinkAttribute::IfName("vlan101".into()),
            LinkAttribute::Mtu(1500),
            LinkAttribute::Link(2),
            LinkAttribute::Address(vec![0x52, 0x54, 0, 1, 2, 3]),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(101)])),
            ]),
        ];
        let s = link_state(&m);
        assert_eq!(s.name, "vlan101");
        assert_eq!(s.kind.as_deref(), Some("vlan"));
        assert_eq!(
            (s.index, s.link, s.vlan_id, s.up),
            (9, Some(2), Some(101), true)
        );
        assert_eq!(s.mac.unwrap().to_string(), "52:54:00:01:02:03");
    }

    #[test]
    fn xfrm_link_is_read() {
        let mut m = LinkMessage::default();
        m.header.index = 11;
        m.attributes = vec![
            LinkAttribute::IfName("xfrm-1".into()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Xfrm),
                LinkInfo::Data(InfoData::Xfrm(vec![InfoXfrm::Link(2), InfoXfrm::IfId(1)])),
            ]),
        ];
        let s = link_state(&m);
        assert_eq!(s.kind.as_deref(), Some("xfrm"));
        assert_eq!((s.xfrm_if_id, s.xfrm_link), (Some(1), Some(2)));
    }

    #[test]
    fn routes_are_keyed_like_the_model() {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet6;
        m.header.kind = RouteType::Unicast;
        m.header.table = 254;
        m.attributes = vec![RouteAttribute::Priority(1024), RouteAttribute::Oif(3)];
        let r = route_state(&m).unwrap();
        assert_eq!(r.key.to_string(), "default (IPv6)");
        m.header.kind = RouteType::Local;
        assert!(route_state(&m).is_none());
    }
}
