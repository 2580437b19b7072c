//! The changes a plan is made of, and the netlink message each one sends.
//!
//! An [`Op`] names its objects by interface name; indexes are resolved when the op
//! runs, because links created earlier in the same apply only get theirs then.
//! Each op is equivalent to one `ip` command, given in its doc comment.

use std::fmt;
use std::net::IpAddr;

use kowabunga_model::network::{BondMode, MacAddr, Prefix, RouteKey};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{BondMode as NlBondMode, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{
    AddressMessageBuilder, LinkBond, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth,
    LinkVlan, LinkWireguard, LinkXfrm, RouteMessageBuilder,
};

/// A link the plan creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewLink {
    /// `mac`: the MAC the document declares, else the one the bridge had when the
    /// agent last deleted it (see [`crate::ledger`]); `None`: the kernel picks one.
    Bridge {
        vlan_filtering: Option<bool>,
        mac: Option<MacAddr>,
    },
    Bond {
        mode: BondMode,
    },
    Veth {
        peer: String,
    },
    Vlan {
        parent: String,
        id: u16,
    },
    Xfrm {
        parent: String,
        if_id: u32,
    },
    /// Keys and peers are set by the wireguard reconciler (`kowabunga-wireguard`).
    Wireguard,
}

impl NewLink {
    /// The kernel's name of the kind (`IFLA_INFO_KIND`).
    pub fn kind(&self) -> &'static str {
        match self {
            NewLink::Bridge { .. } => "bridge",
            NewLink::Bond { .. } => "bond",
            NewLink::Veth { .. } => "veth",
            NewLink::Vlan { .. } => "vlan",
            NewLink::Xfrm { .. } => "xfrm",
            NewLink::Wireguard => "wireguard",
        }
    }
}

/// Why a link is set down before another change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownFor {
    /// The kernel renames only links that are down.
    Rename,
    /// Bond members must be down to be enslaved.
    Enslave,
}

/// One change. The plan lists them in the order apply runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `ip route del DST table T metric M`
    DelRoute { key: RouteKey },
    /// `ip addr del ADDR dev LINK`
    DelAddress { link: String, addr: Prefix },
    /// `ip link set LINK nomaster`
    Release { link: String },
    /// `ip link del NAME`; `mac`: a bridge's MAC as observed, remembered in the ledger
    /// before deleting it so that re-creating the bridge (a revert) gives it back.
    DelLink {
        name: String,
        kind: &'static str,
        mac: Option<MacAddr>,
    },
    /// `ip link set LINK down`
    Down { link: String, why: DownFor },
    /// `ip link set FROM name TO`
    Rename { from: String, to: String },
    /// `ip link add NAME type ...`
    Create { name: String, spec: NewLink },
    /// `ip link set LINK mtu MTU`
    SetMtu { link: String, mtu: u32 },
    /// `ip link set LINK address MAC` (a bridge declared with `mac`)
    SetMac { link: String, mac: MacAddr },
    /// `ip link set LINK type bridge vlan_filtering 0|1`
    SetVlanFiltering { link: String, on: bool },
    /// `ip link set LINK master MASTER`
    SetMaster { link: String, master: String },
    /// `sysctl -w KEY=VALUE` (a per-link key when `link` is set)
    Sysctl {
        key: String,
        value: String,
        link: Option<String>,
    },
    /// `ip addr replace ADDR dev LINK`
    AddAddress { link: String, addr: Prefix },
    /// `ip link set LINK up|down`
    SetUp { link: String, up: bool },
    /// `ip route replace DST [via GW] [dev LINK] table T metric M proto static`
    AddRoute {
        key: RouteKey,
        via: Option<IpAddr>,
        dev: Option<String>,
    },
}

impl Op {
    /// Apply runs ops stage by stage; ops of one stage are independent of each other
    /// and may be in flight together. Removals come first (so names and addresses
    /// are free for what replaces them), then creation, link settings, addresses,
    /// links up, routes (which need their link up), and global switches last.
    pub fn stage(&self) -> u8 {
        match self {
            Op::DelRoute { .. } => 0,
            Op::DelAddress { .. } => 1,
            Op::Release { .. } => 2,
            Op::DelLink { .. } => 3,
            Op::Down {
                why: DownFor::Rename,
                ..
            } => 4,
            Op::Rename { .. } => 5,
            Op::Create {
                spec: NewLink::Vlan { .. } | NewLink::Xfrm { .. },
                ..
            } => 7,
            Op::Create { .. } => 6,
            Op::Down {
                why: DownFor::Enslave,
                ..
            }
            | Op::SetMtu { .. }
            | Op::SetMac { .. } => 8,
            Op::SetVlanFiltering { .. } => 8,
            Op::SetMaster { .. } => 9,
            Op::Sysctl { link: Some(_), .. } => 10,
            Op::AddAddress { .. } => 11,
            Op::SetUp { .. } => 12,
            Op::AddRoute { .. } => 13,
            Op::Sysctl { link: None, .. } => 14,
        }
    }

    /// Whether the op adds, removes or renames a link (indexes must be re-read).
    pub fn changes_names(&self) -> bool {
        matches!(
            self,
            Op::DelLink { .. } | Op::Rename { .. } | Op::Create { .. }
        )
    }

    /// Interface names whose index the op needs.
    pub fn needs(&self) -> Vec<&str> {
        match self {
            Op::DelAddress { link, .. }
            | Op::Release { link }
            | Op::Down { link, .. }
            | Op::SetMtu { link, .. }
            | Op::SetMac { link, .. }
            | Op::SetVlanFiltering { link, .. }
            | Op::AddAddress { link, .. }
            | Op::SetUp { link, .. } => vec![link],
            Op::DelLink { name, .. } => vec![name],
            Op::Rename { from, .. } => vec![from],
            Op::SetMaster { link, master } => vec![link, master],
            Op::Create {
                spec: NewLink::Vlan { parent, .. } | NewLink::Xfrm { parent, .. },
                ..
            } => vec![parent],
            Op::AddRoute { dev: Some(dev), .. } => vec![dev],
            Op::Create { .. }
            | Op::DelRoute { .. }
            | Op::AddRoute { dev: None, .. }
            | Op::Sysctl { .. } => vec![],
        }
    }

    /// The object the op is about, for error messages.
    pub fn object(&self) -> String {
        match self {
            Op::DelRoute { key } | Op::AddRoute { key, .. } => format!("route {key}"),
            Op::DelAddress { link, addr } | Op::AddAddress { link, addr } => {
                format!("{link}: address {addr}")
            }
            Op::Release { link }
            | Op::Down { link, .. }
            | Op::SetMtu { link, .. }
            | Op::SetMac { link, .. }
            | Op::SetVlanFiltering { link, .. }
            | Op::SetMaster { link, .. }
            | Op::SetUp { link, .. } => link.clone(),
            Op::DelLink { name, .. } | Op::Create { name, .. } => name.clone(),
            Op::Rename { from, .. } => from.clone(),
            Op::Sysctl { key, .. } => key.replace('/', "."),
        }
    }

    /// The netlink request for this op, `None` for sysctl writes. `index` resolves
    /// interface names at the time the op runs.
    pub fn message(
        &self,
        index: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<Option<NetlinkMessage<RouteNetlinkMessage>>, String> {
        let idx = |name: &str| index(name).ok_or_else(|| format!("{name}: does not exist"));
        let set = |m: LinkMessage| nl(RouteNetlinkMessage::SetLink(m), NLM_F_REQUEST | NLM_F_ACK);
        let msg = match self {
            Op::Sysctl { .. } => return Ok(None),
            Op::DelRoute { key } => {
                let mut m = route_base(*key);
                // Match any protocol, scope and type: whoever added it, it is ours now.
                m.header.protocol = RouteProtocol::Unspec;
                m.header.scope = RouteScope::NoWhere;
                m.header.kind = RouteType::Unspec;
                nl(RouteNetlinkMessage::DelRoute(m), NLM_F_REQUEST | NLM_F_ACK)
            }
            Op::AddRoute { key, via, dev } => {
                let mut m = route_base(*key);
                if let Some(gw) = via {
                    m.attributes
                        .push(RouteAttribute::Gateway(RouteAddress::from(*gw)));
                } else {
                    m.header.scope = RouteScope::Link;
                }
                if let Some(dev) = dev {
                    m.attributes.push(RouteAttribute::Oif(idx(dev)?));
                }
                nl(
                    RouteNetlinkMessage::NewRoute(m),
                    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                )
            }
            Op::DelAddress { link, addr } => nl(
                RouteNetlinkMessage::DelAddress(address(idx(link)?, *addr)),
                NLM_F_REQUEST | NLM_F_ACK,
            ),
            Op::AddAddress { link, addr } => nl(
                RouteNetlinkMessage::NewAddress(address(idx(link)?, *addr)),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            ),
            Op::Release { link } => set(LinkUnspec::new_with_index(idx(link)?)
                .nocontroller()
                .build()),
            Op::DelLink { name, .. } => {
                let mut m = LinkMessage::default();
                m.header.index = idx(name)?;
                nl(RouteNetlinkMessage::DelLink(m), NLM_F_REQUEST | NLM_F_ACK)
            }
            Op::Down { link, .. } | Op::SetUp { link, up: false } => {
                set(LinkUnspec::new_with_index(idx(link)?).down().build())
            }
            Op::SetUp { link, up: true } => {
                set(LinkUnspec::new_with_index(idx(link)?).up().build())
            }
            Op::Rename { from, to } => set(LinkUnspec::new_with_index(idx(from)?)
                .name(to.clone())
                .build()),
            Op::SetMtu { link, mtu } => {
                set(LinkUnspec::new_with_index(idx(link)?).mtu(*mtu).build())
            }
            Op::SetMac { link, mac } => set(LinkUnspec::new_with_index(idx(link)?)
                .address(mac.0.to_vec())
                .build()),
            Op::SetMaster { link, master } => set(LinkUnspec::new_with_index(idx(link)?)
                .controller(idx(master)?)
                .build()),
            Op::SetVlanFiltering { link, on } => nl(
                RouteNetlinkMessage::NewLink(
                    LinkMessageBuilder::<LinkBridge>::new(link)
                        .index(idx(link)?)
                        .vlan_filtering(*on)
                        .build(),
                ),
                NLM_F_REQUEST | NLM_F_ACK,
            ),
            Op::Create { name, spec } => {
                let m = match spec {
                    NewLink::Bridge {
                        vlan_filtering,
                        mac,
                    } => {
                        let mut b = LinkMessageBuilder::<LinkBridge>::new(name);
                        if let Some(mac) = mac {
                            b = b.address(mac.0.to_vec());
                        }
                        match vlan_filtering {
                            Some(on) => b.vlan_filtering(*on).build(),
                            None => b.build(),
                        }
                    }
                    NewLink::Bond { mode } => LinkBond::new(name).mode(bond_mode(*mode)).build(),
                    NewLink::Veth { peer } => LinkVeth::new(name, peer).build(),
                    NewLink::Vlan { parent, id } => LinkVlan::new(name, idx(parent)?, *id).build(),
                    NewLink::Xfrm { parent, if_id } => {
                        LinkXfrm::new(name, idx(parent)?, *if_id).build()
                    }
                    NewLink::Wireguard => LinkWireguard::new(name).build(),
                };
                nl(
                    RouteNetlinkMessage::NewLink(m),
                    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                )
            }
        };
        Ok(Some(msg))
    }
}

fn nl(payload: RouteNetlinkMessage, flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut m = NetlinkMessage::from(payload);
    m.header.flags = flags;
    m
}

fn address(index: u32, addr: Prefix) -> AddressMessage {
    match addr.addr {
        IpAddr::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
            .index(index)
            .address(a, addr.len)
            .build(),
        IpAddr::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
            .index(index)
            .address(a, addr.len)
            .build(),
    }
}

/// Destination, table and metric: what identifies the route.
fn route_base(key: RouteKey) -> RouteMessage {
    let mut m = RouteMessageBuilder::<IpAddr>::new().build();
    m.header.address_family = match key.dst.addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.destination_prefix_length = key.dst.len;
    if key.dst.len > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                key.dst.addr,
            )));
    }
    match u8::try_from(key.table) {
        Ok(t) => m.header.table = t,
        Err(_) => {
            m.header.table = RouteHeader::RT_TABLE_UNSPEC;
            m.attributes.push(RouteAttribute::Table(key.table));
        }
    }
    m.attributes.push(RouteAttribute::Priority(key.metric));
    m
}

pub(crate) fn bond_mode(mode: BondMode) -> NlBondMode {
    match mode {
        BondMode::BalanceRr => NlBondMode::BalanceRr,
        BondMode::ActiveBackup => NlBondMode::ActiveBackup,
        BondMode::BalanceXor => NlBondMode::BalanceXor,
        BondMode::Broadcast => NlBondMode::Broadcast,
        BondMode::Ieee8023ad => NlBondMode::Ieee8023Ad,
        BondMode::BalanceTlb => NlBondMode::BalanceTlb,
        BondMode::BalanceAlb => NlBondMode::BalanceAlb,
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::DelRoute { key } => write!(f, "delete route {key}"),
            Op::DelAddress { link, addr } => write!(f, "delete address {addr} from {link}"),
            Op::Release { link } => write!(f, "detach {link} from its master"),
            Op::DelLink { name, kind, .. } => write!(f, "delete {kind} {name}"),
            Op::Down {
                link,
                why: DownFor::Rename,
            } => write!(f, "set {link} down (to rename it)"),
            Op::Down {
                link,
                why: DownFor::Enslave,
            } => {
                write!(f, "set {link} down (to enslave it)")
            }
            Op::Rename { from, to } => write!(f, "rename {from} to {to}"),
            Op::Create { name, spec } => match spec {
                NewLink::Bridge {
                    vlan_filtering,
                    mac,
                } => {
                    write!(f, "create bridge {name}")?;
                    let mut options = Vec::new();
                    if *vlan_filtering == Some(true) {
                        options.push("vlan_filtering on".to_string());
                    }
                    if let Some(mac) = mac {
                        options.push(format!("mac {mac}"));
                    }
                    if !options.is_empty() {
                        write!(f, " ({})", options.join(", "))?;
                    }
                    Ok(())
                }
                NewLink::Bond { mode } => write!(f, "create bond {name} (mode {})", mode.as_str()),
                NewLink::Veth { peer } => write!(f, "create veth pair {name} <-> {peer}"),
                NewLink::Vlan { parent, id } => {
                    write!(f, "create vlan {name} (id {id} on {parent})")
                }
                NewLink::Xfrm { parent, if_id } => {
                    write!(f, "create xfrm {name} (if_id {if_id} on {parent})")
                }
                NewLink::Wireguard => write!(f, "create wireguard {name}"),
            },
            Op::SetMtu { link, mtu } => write!(f, "set mtu of {link} to {mtu}"),
            Op::SetMac { link, mac } => write!(f, "set mac of {link} to {mac}"),
            Op::SetVlanFiltering { link, on } => {
                write!(
                    f,
                    "set vlan_filtering of {link} {}",
                    if *on { "on" } else { "off" }
                )
            }
            Op::SetMaster { link, master } => write!(f, "attach {link} to {master}"),
            Op::Sysctl { key, value, .. } => write!(f, "set {} = {value}", key.replace('/', ".")),
            Op::AddAddress { link, addr } => write!(f, "add address {addr} to {link}"),
            Op::SetUp { link, up } => write!(f, "set {link} {}", if *up { "up" } else { "down" }),
            Op::AddRoute { key, via, dev } => {
                write!(f, "set route {key}")?;
                if let Some(via) = via {
                    write!(f, " via {via}")?;
                }
                if let Some(dev) = dev {
                    write!(f, " dev {dev}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::link::{
        InfoBond, InfoBridge, InfoData, InfoKind, InfoVlan, LinkAttribute, LinkInfo,
    };

    fn index(name: &str) -> Option<u32> {
        match name {
            "eth0" => Some(2),
            "bond0" => Some(5),
            "br0" => Some(7),
            _ => None,
        }
    }

    fn link_msg(op: &Op) -> (LinkMessage, u16) {
        let m = op.message(&index).unwrap().unwrap();
        let flags = m.header.flags;
        match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l))
            | NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(l)) => (l, flags),
            other => panic!("not a link message: {other:?}"),
        }
    }

    fn info(l: &LinkMessage) -> (Option<InfoKind>, Option<InfoData>) {
        let mut kind = None;
        let mut data = None;
        for a in &l.attributes {
            if let LinkAttribute::LinkInfo(infos) = a {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => kind = Some(k.clone()),
                        LinkInfo::Data(d) => data = Some(d.clone()),
                        _ => {}
                    }
                }
            }
        }
        (kind, data)
    }

    #[test]
    fn vlan_message_names_parent_and_id() {
        let op = Op::Create {
            name: "vlan101".into(),
            spec: NewLink::Vlan {
                parent: "bond0".into(),
                id: 101,
            },
        };
        let (l, flags) = link_msg(&op);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        assert!(
            l.attributes
                .contains(&LinkAttribute::IfName("vlan101".into()))
        );
        assert!(l.attributes.contains(&LinkAttribute::Link(5)));
        let (kind, data) = info(&l);
        assert_eq!(kind, Some(InfoKind::Vlan));
        assert_eq!(data, Some(InfoData::Vlan(vec![InfoVlan::Id(101)])));
        let missing = Op::Create {
            name: "vlan101".into(),
            spec: NewLink::Vlan {
                parent: "eth9".into(),
                id: 101,
            },
        };
        assert_eq!(missing.message(&index).unwrap_err(), "eth9: does not exist");
        assert_eq!(op.to_string(), "create vlan vlan101 (id 101 on bond0)");
    }

    #[test]
    fn bond_and_bridge_messages() {
        let (l, _) = link_msg(&Op::Create {
            name: "bond1".into(),
            spec: NewLink::Bond {
                mode: BondMode::Ieee8023ad,
            },
        });
        assert_eq!(
            info(&l),
            (
                Some(InfoKind::Bond),
                Some(InfoData::Bond(vec![InfoBond::Mode(NlBondMode::Ieee8023Ad)]))
            )
        );
        let (l, _) = link_msg(&Op::Create {
            name: "br1".into(),
            spec: NewLink::Bridge {
                vlan_filtering: Some(true),
                mac: None,
            },
        });
        assert_eq!(
            info(&l),
            (
                Some(InfoKind::Bridge),
                Some(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)]))
            )
        );
        // Created down: `up` is a separate op (LinkBridge::new would set IFF_UP).
        assert_eq!(l.header.change_mask.bits(), 0);
        assert!(
            !l.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Address(_)))
        );
        let mac: MacAddr = "02:00:00:00:00:07".parse().unwrap();
        let with_mac = Op::Create {
            name: "br1".into(),
            spec: NewLink::Bridge {
                vlan_filtering: None,
                mac: Some(mac),
            },
        };
        let (l, _) = link_msg(&with_mac);
        assert!(
            l.attributes
                .contains(&LinkAttribute::Address(mac.0.to_vec()))
        );
        assert_eq!(
            with_mac.to_string(),
            "create bridge br1 (mac 02:00:00:00:00:07)"
        );
        let (l, _) = link_msg(&Op::SetMac {
            link: "br0".into(),
            mac,
        });
        assert_eq!(
            (l.header.index, l.attributes.clone()),
            (7, vec![LinkAttribute::Address(mac.0.to_vec())])
        );
        let (l, flags) = link_msg(&Op::SetVlanFiltering {
            link: "br0".into(),
            on: false,
        });
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(l.header.index, 7);
        assert_eq!(
            info(&l).1,
            Some(InfoData::Bridge(vec![InfoBridge::VlanFiltering(false)]))
        );
        let (l, _) = link_msg(&Op::SetMaster {
            link: "eth0".into(),
            master: "bond0".into(),
        });
        assert_eq!(
            (l.header.index, l.attributes.clone()),
            (2, vec![LinkAttribute::Controller(5)])
        );
    }

    #[test]
    fn route_messages() {
        let key = RouteKey {
            table: 1000,
            dst: "10.9.0.0/16".parse().unwrap(),
            metric: 5,
        };
        let op = Op::AddRoute {
            key,
            via: Some("10.0.0.1".parse().unwrap()),
            dev: Some("eth0".into()),
        };
        let m = op.message(&index).unwrap().unwrap();
        assert_eq!(
            m.header.flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        );
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) = m.payload else {
            panic!()
        };
        assert_eq!(r.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert_eq!(r.header.protocol, RouteProtocol::Static);
        assert!(r.attributes.contains(&RouteAttribute::Table(1000)));
        assert!(r.attributes.contains(&RouteAttribute::Priority(5)));
        assert!(r.attributes.contains(&RouteAttribute::Oif(2)));
        assert_eq!(
            op.to_string(),
            "set route 10.9.0.0/16 table 1000 metric 5 via 10.0.0.1 dev eth0"
        );
        let del = Op::DelRoute {
            key: RouteKey {
                table: 254,
                dst: "::/0".parse().unwrap(),
                metric: 1024,
            },
        };
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(r)) =
            del.message(&index).unwrap().unwrap().payload
        else {
            panic!()
        };
        assert_eq!(
            (r.header.table, r.header.destination_prefix_length),
            (254, 0)
        );
        assert_eq!(r.header.address_family, AddressFamily::Inet6);
        assert_eq!(del.to_string(), "delete route default (IPv6)");
    }

    #[test]
    fn stages_order_removals_before_creations() {
        let ops = [
            Op::AddRoute {
                key: RouteKey {
                    table: 254,
                    dst: Prefix::unspecified_v4(),
                    metric: 0,
                },
                via: None,
                dev: None,
            },
            Op::Create {
                name: "v".into(),
                spec: NewLink::Vlan {
                    parent: "eth0".into(),
                    id: 2,
                },
            },
            Op::Create {
                name: "b".into(),
                spec: NewLink::Bridge {
                    vlan_filtering: None,
                    mac: None,
                },
            },
            Op::DelLink {
                name: "x".into(),
                kind: "bridge",
                mac: None,
            },
            Op::DelRoute {
                key: RouteKey {
                    table: 254,
                    dst: Prefix::unspecified_v4(),
                    metric: 0,
                },
            },
        ];
        let stages: Vec<u8> = ops.iter().map(Op::stage).collect();
        assert_eq!(stages, [13, 7, 6, 3, 0]);
    }
}
