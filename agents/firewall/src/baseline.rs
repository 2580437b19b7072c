//! The baseline: what the agent's tables hold when the document has no `[firewall]`
//! section, for roles that are closed until their document opens them (Kiwi).
//!
//! - input: policy drop; accepted: loopback, established/related (invalid dropped),
//!   ICMP and ICMPv6 (error reporting, path MTU, IPv6 neighbour discovery, echo), DHCP
//!   client replies (UDP 67 -> 68, and 547 -> 546 for DHCPv6), the role's services
//!   (Kiwi: DNS, 53 UDP and TCP) on the node's internal links only, and the role's
//!   services that another section places on named links, on exactly those links
//!   (Kiwi: its DHCP server, UDP 68 -> 67, broadcast or unicast, on the links `[dhcp]`
//!   serves; VRRP adverts, IP protocol 112, on the links `[vrrp]` runs on; conntrackd's
//!   sync, UDP 3780, on the link `[vrrp.conntrack_sync]` names);
//! - forward: policy drop (no traffic between links until the document opens it);
//! - output: policy accept (the management path to Kahuna is outbound).
//!
//! **Internal links.** The document has no per-link mark of its own, so the baseline
//! derives one from `[network]`: the *uplinks* are the links a default route leaves
//! by (its `dev`, or the link whose subnet holds its gateway); every other declared
//! link is internal. A document that declares no default route has no uplink: all its
//! links are internal. A link that is not declared is never internal.
//!
//! The baseline is an ordinary [`Firewall`] value, rendered, digest-marked and
//! swapped in atomically like any generation's ruleset; a document with its own
//! `[firewall]` section replaces it wholesale.

use std::collections::BTreeSet;

use kowabunga_model::firewall::{Chain, Firewall, Nat, Policy, Ports, Proto, Rule, Verdict};
use kowabunga_model::network::{self, Destination, Network};
use kowabunga_model::{Document, Origin, ReconcileError};

/// A service the node runs, opened on its internal links by the baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// For rule comments (`dns`).
    pub name: &'static str,
    pub proto: Proto,
    pub port: u16,
}

/// The links of a document a [`LinkService`] is opened on. For a document whose
/// section does not validate it may return anything: that section's own reconciler
/// refuses the document, with its own error, before anything is applied.
pub type ServedLinks = fn(&Document) -> Vec<String>;

/// Kiwi's netboot server: its ports, and the links it serves nodes on (TFTP's
/// transfers answer from other ports: the baseline's established-flow rule takes the
/// clients' acknowledgements).
#[derive(Debug, Clone, Copy)]
pub struct NetbootPorts {
    pub http: u16,
    pub tftp: u16,
    pub links: ServedLinks,
}

/// A service the node runs on the links a section of its document names (Kiwi's DHCP
/// server, on the links `[dhcp]` serves), opened by the baseline on exactly those
/// links, internal or not.
#[derive(Debug, Clone)]
pub struct LinkService {
    /// For rule comments (`dhcp server`).
    pub name: &'static str,
    pub proto: Proto,
    /// The clients' source port, when they always use one (DHCP: 68).
    pub sport: Option<u16>,
    /// The service's port (DHCP: 67); none for a protocol without ports (VRRP).
    pub dport: Option<u16>,
    /// Which links, read from the document.
    pub links: ServedLinks,
}

/// The services a role opens when its document has no `[firewall]` section: on its
/// internal links, and on the links its document serves them on.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    pub services: Vec<Service>,
    pub link_services: Vec<LinkService>,
}

impl Baseline {
    /// Kiwi's: DNS (53, UDP and TCP) on internal links, its DHCP server (UDP
    /// 68 -> 67) on the links `dhcp_links` reads from the document (the links `[dhcp]`
    /// serves: `kowabunga_dhcp::model::served_links`), and VRRP adverts on the links
    /// `vrrp_links` reads (`kowabunga_vrrp::model::vrrp_links`), and conntrackd's sync
    /// (UDP 3780) on the links `sync_links` reads
    /// (`kowabunga_vrrp::model::conntrack_sync_links`), and the netboot server's HTTP
    /// and TFTP ports on the links `netboot.links` reads
    /// (`kowabunga_netboot::model::netboot_links`); given by the role, since the
    /// firewall knows none of these sections.
    pub fn kiwi(
        dhcp_links: ServedLinks,
        vrrp_links: ServedLinks,
        sync_links: ServedLinks,
        netboot: NetbootPorts,
    ) -> Self {
        Self {
            link_services: vec![
                LinkService {
                    name: "dhcp server",
                    proto: Proto::Udp,
                    sport: Some(68),
                    dport: Some(67),
                    links: dhcp_links,
                },
                LinkService {
                    name: "vrrp",
                    proto: Proto::Vrrp,
                    sport: None,
                    dport: None,
                    links: vrrp_links,
                },
                LinkService {
                    name: "conntrack sync",
                    proto: Proto::Udp,
                    sport: None,
                    dport: Some(3780),
                    links: sync_links,
                },
                LinkService {
                    name: "netboot http",
                    proto: Proto::Tcp,
                    sport: None,
                    dport: Some(netboot.http),
                    links: netboot.links,
                },
                LinkService {
                    name: "netboot tftp",
                    proto: Proto::Udp,
                    sport: None,
                    dport: Some(netboot.tftp),
                    links: netboot.links,
                },
            ],
            services: vec![
                Service {
                    name: "dns",
                    proto: Proto::Udp,
                    port: 53,
                },
                Service {
                    name: "dns",
                    proto: Proto::Tcp,
                    port: 53,
                },
            ],
        }
    }

    /// The baseline ruleset for `doc`: its `[network]` (read from `origin`) says which
    /// links are internal, and each link service's reader which links it is served on.
    pub fn for_document(&self, doc: &Document, origin: Origin) -> Result<Firewall, ReconcileError> {
        let net = doc
            .read::<Network>(origin, network::SECTION)?
            .unwrap_or_default();
        let served: Vec<Vec<String>> = self
            .link_services
            .iter()
            .map(|service| (service.links)(doc))
            .collect();
        Ok(self.firewall(&net, &served))
    }

    /// The baseline ruleset for a node whose links are `net`, with
    /// `self.link_services[i]` opened on the links `served[i]` (declared in `net`:
    /// others are skipped).
    pub fn firewall(&self, net: &Network, served: &[Vec<String>]) -> Firewall {
        let rule = |proto: Proto, sport: Option<u16>, dport: Option<u16>, comment: &str| Rule {
            chain: Chain::Input,
            iif: None,
            oif: None,
            saddr: None,
            daddr: None,
            proto: Some(proto),
            sport: sport.map(one_port),
            dport: dport.map(one_port),
            action: Verdict::Accept,
            comment: Some(format!("baseline: {comment}")),
        };
        let mut rules = vec![
            rule(Proto::Icmp, None, None, "icmp"),
            rule(Proto::Icmpv6, None, None, "icmpv6"),
            rule(Proto::Udp, Some(67), Some(68), "dhcp client"),
            rule(Proto::Udp, Some(547), Some(546), "dhcpv6 client"),
        ];
        for link in internal_links(net) {
            for service in &self.services {
                rules.push(Rule {
                    iif: Some(link.to_owned()),
                    ..rule(
                        service.proto,
                        None,
                        Some(service.port),
                        &format!("{} on internal link {link}", service.name),
                    )
                });
            }
        }
        for (service, links) in self.link_services.iter().zip(served) {
            for link in links
                .iter()
                .filter(|l| net.links.iter().any(|d| d.name == **l))
            {
                rules.push(Rule {
                    iif: Some(link.clone()),
                    ..rule(
                        service.proto,
                        service.sport,
                        service.dport,
                        &format!("{} on served link {link}", service.name),
                    )
                });
            }
        }
        Firewall {
            input: Policy::Drop,
            forward: Policy::Drop,
            output: Policy::Accept,
            accept_established: true,
            accept_loopback: true,
            rules,
            nat: Nat::default(),
        }
    }
}

fn one_port(port: u16) -> Ports {
    Ports {
        first: port,
        last: port,
    }
}

/// The links a default route leaves by: its `dev`, or the links whose subnets hold
/// its gateway.
pub fn uplinks(net: &Network) -> BTreeSet<&str> {
    let mut up = BTreeSet::new();
    for route in net
        .routes
        .iter()
        .filter(|r| matches!(r.to, Destination::Default))
    {
        if let Some(dev) = &route.dev {
            up.insert(dev.as_str());
        } else if let Some(via) = route.via {
            for link in &net.links {
                if link.addresses.iter().any(|a| a.contains(via)) {
                    up.insert(link.name.as_str());
                }
            }
        }
    }
    up
}

/// The declared links that are not uplinks, in declaration order.
pub fn internal_links(net: &Network) -> Vec<&str> {
    let up = uplinks(net);
    net.links
        .iter()
        .map(|l| l.name.as_str())
        .filter(|name| !up.contains(name))
        .collect()
}
