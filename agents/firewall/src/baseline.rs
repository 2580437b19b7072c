//! The baseline: what the agent's tables hold when the document has no `[firewall]`
//! section, for roles that are closed until their document opens them (Kiwi).
//!
//! - input: policy drop; accepted: loopback, established/related (invalid dropped),
//!   ICMP and ICMPv6 (error reporting, path MTU, IPv6 neighbour discovery, echo), DHCP
//!   client replies (UDP 67 -> 68, and 547 -> 546 for DHCPv6), and the role's services
//!   (Kiwi: DNS, 53 UDP and TCP) on the node's internal links only;
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
use kowabunga_model::network::{Destination, Network};

/// A service the node runs, opened on its internal links by the baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// For rule comments (`dns`).
    pub name: &'static str,
    pub proto: Proto,
    pub port: u16,
}

/// The services a role opens on its internal links when its document has no
/// `[firewall]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    pub services: Vec<Service>,
}

impl Baseline {
    /// Kiwi's: DNS (53, UDP and TCP).
    pub fn kiwi() -> Self {
        Self {
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

    /// The baseline ruleset for a node whose links are `net`.
    pub fn firewall(&self, net: &Network) -> Firewall {
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
