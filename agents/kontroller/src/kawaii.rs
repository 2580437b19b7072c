//! Kawaii (internet gateway) metadata -> desired state: the firewall and NAT (as the
//! shared [`Firewall`] model, applied by the firewall reconciler), keepalived's VRRP
//! configuration for the VIPs, strongSwan's `swanctl.conf` for the IPsec connections,
//! and the XFRM interfaces those connections use.
//!
//! Everything is checked before anything is produced: one bad value refuses the whole
//! document ([`Refused`], with the key path). Output is deterministic: VIPs by VRRP id,
//! IPsec connections by name; filter rules keep the metadata's order (it is the order
//! they are evaluated in).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kernel_cmdline::Secret;
use kowabunga_model::firewall::{
    Chain, Dnat, Firewall, Masquerade, Nat, NatTarget, Policy, Ports, Proto, Rule, Verdict,
};
use kowabunga_model::network::{Prefix, check_ifname};

use crate::ipsec::{self, Checked, Connections};
use crate::metadata::{DefaultPolicy, FirewallRule, InstanceMetadata, Kawaii};
use crate::refused::Refused;
use crate::vrrp::{self, VrrpSpec, check_interface};

/// MTU of the XFRM interfaces (upstream's value: room for ESP and UDP encapsulation).
pub const XFRM_MTU: u32 = 1300;

/// What a Kawaii instance applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KawaiiConfig {
    /// Filter rules and NAT, valid against network-config's links plus
    /// [`KawaiiConfig::xfrm_interfaces`].
    pub firewall: Firewall,
    /// A gateway forwards: always true.
    pub ip_forward: bool,
    /// `/etc/keepalived/keepalived.conf`.
    pub keepalived_conf: String,
    /// `/etc/swanctl/swanctl.conf`. It holds the pre-shared keys, so it is a
    /// [`Secret`]: `Debug` does not show it.
    pub swanctl_conf: Secret,
    /// One per IPsec connection, sorted by id.
    pub xfrm_interfaces: Vec<XfrmInterface>,
}

/// An XFRM interface (`ip link add xfrm-1 type xfrm dev ens3 if_id 1`), and the route
/// into it (strongSwan is told `if_id_in/out` and installs no route itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfrmInterface {
    pub name: String,
    pub if_id: u8,
    /// The public interface the tunnel's packets leave by.
    pub dev: String,
    pub mtu: u32,
    /// The connection's `remote_subnet`, routed through this interface.
    pub route: Prefix,
}

/// Build a Kawaii's state from its metadata. `subnets` are network-config's addresses
/// by interface ([`crate::netplan::NetplanConfig::subnets`]): metadata interfaces must
/// be among them, and every VIP must lie in one of them.
pub fn render(
    meta: &InstanceMetadata,
    subnets: &BTreeMap<String, Vec<Prefix>>,
) -> Result<KawaiiConfig, Refused> {
    let k = meta
        .kawaii
        .as_ref()
        .ok_or_else(|| Refused::new("kawaii", "missing: this instance has no kawaii metadata"))?;
    check_interface("kawaii.public_interface", &k.public_interface, subnets)?;
    check_interface("kawaii.private_interface", &k.private_interface, subnets)?;
    for (i, p) in k.peering_interfaces.iter().enumerate() {
        check_interface(&format!("kawaii.peering_interfaces[{i}]"), p, subnets)?;
    }
    if k.vrrp_control_interface != k.private_interface {
        // The private interface accepts everything, VRRP included; the firewall model
        // cannot accept VRRP (IP protocol 112) alone on another interface.
        return Err(Refused::new(
            "kawaii.vrrp_control_interface",
            format!(
                "`{}` differs from private_interface `{}`: only VRRP on the private interface is supported",
                k.vrrp_control_interface, k.private_interface
            ),
        ));
    }
    let private_net = meta.subnet_cidr.map(network_of).ok_or_else(|| {
        Refused::new(
            "subnet_cidr",
            "missing: the gateway masquerades this subnet",
        )
    })?;
    let ipsec = ipsec::check(k, private_net)?;
    let keepalived_conf = vrrp::render(&VrrpSpec {
        path: if k.virtual_ips.is_empty() {
            "virtual_ips"
        } else {
            "kawaii.virtual_ips"
        },
        vips: meta.kawaii_vips(k),
        control: (&k.vrrp_control_interface, "kawaii.vrrp_control_interface"),
        local_ip: meta.local_ipv4,
        peers: &meta.peers,
        subnets,
        public_route: k
            .public_gw_address
            .map(|gw| (gw, k.public_interface.as_str())),
    })?;
    let mut xfrm_interfaces: Vec<XfrmInterface> = ipsec
        .iter()
        .map(|Checked { conn: c, .. }| XfrmInterface {
            name: xfrm_name(c.xfrm_id),
            if_id: c.xfrm_id,
            dev: k.public_interface.clone(),
            mtu: XFRM_MTU,
            route: network_of(c.remote_subnet),
        })
        .collect();
    xfrm_interfaces.sort_by_key(|x| x.if_id);
    let firewall = firewall(k, private_net, &ipsec)?;
    let mut known: BTreeSet<&str> = subnets.keys().map(String::as_str).collect();
    known.extend(xfrm_interfaces.iter().map(|x| x.name.as_str()));
    firewall.validate(&known).map_err(|e| {
        Refused::new(
            "kawaii",
            format!("the firewall built from it is not valid: {e}"),
        )
    })?;
    Ok(KawaiiConfig {
        firewall,
        ip_forward: true,
        keepalived_conf,
        swanctl_conf: Secret::new(ipsec::swanctl(&ipsec, private_net)),
        xfrm_interfaces,
    })
}

/// `p` without host bits (`172.16.0.5/16` -> `172.16.0.0/16`).
pub(crate) fn network_of(p: Prefix) -> Prefix {
    Prefix {
        addr: p.network(),
        len: p.len,
    }
}

fn xfrm_name(id: u8) -> String {
    format!("xfrm-{id}")
}

fn policy(p: DefaultPolicy) -> Policy {
    match p {
        DefaultPolicy::Accept => Policy::Accept,
        DefaultPolicy::Drop => Policy::Drop,
    }
}

fn firewall(k: &Kawaii, private_net: Prefix, ipsec: &Connections) -> Result<Firewall, Refused> {
    let (public, private) = (&k.public_interface, &k.private_interface);
    let mut rules = Vec::new();
    let fixed = |chain, iif: Option<&str>, oif: Option<&str>, comment: &str| Rule {
        chain,
        iif: iif.map(str::to_owned),
        oif: oif.map(str::to_owned),
        saddr: None,
        daddr: None,
        proto: None,
        sport: None,
        dport: None,
        action: Verdict::Accept,
        comment: Some(comment.to_owned()),
    };
    // Input: the private side (VRRP adverts included), IPsec peers, SSH from the
    // extra networks, then the operator's rules.
    rules.push(fixed(Chain::Input, Some(private), None, "private network"));
    for Checked { conn: c, .. } in ipsec {
        rules.push(Rule {
            saddr: Some(host(c.remote_peer)),
            ..fixed(
                Chain::Input,
                Some(public),
                None,
                &format!("ipsec {}: IKE and ESP from the peer", c.name),
            )
        });
    }
    for (i, net) in k.fw_input_extra_networks.iter().enumerate() {
        let at = format!("kawaii.fw_input_extra_networks[{i}]");
        let saddr = parse_net(&at, net)?;
        rules.push(Rule {
            saddr,
            proto: Some(Proto::Tcp),
            dport: Some(Ports {
                first: 22,
                last: 22,
            }),
            ..fixed(Chain::Input, None, None, &format!("{at}: ssh"))
        });
    }
    for (i, r) in k.fw_input_rules.iter().enumerate() {
        convert_rule(
            &format!("kawaii.fw_input_rules[{i}]"),
            Chain::Input,
            r,
            None,
            &mut rules,
        )?;
    }
    // Forward: the operator's rules (VPC peerings), then the gateway's own paths.
    for (i, r) in k.fw_forward_rules.iter().enumerate() {
        convert_rule(
            &format!("kawaii.fw_forward_rules[{i}]"),
            Chain::Forward,
            r,
            None,
            &mut rules,
        )?;
    }
    rules.push(fixed(
        Chain::Forward,
        Some(private),
        Some(public),
        "private to internet",
    ));
    rules.push(fixed(
        Chain::Forward,
        Some(private),
        Some(private),
        "private to private",
    ));
    for p in &k.peering_interfaces {
        rules.push(fixed(
            Chain::Forward,
            Some(p),
            Some(private),
            &format!("peering {p} to private"),
        ));
        rules.push(fixed(
            Chain::Forward,
            Some(private),
            Some(p),
            &format!("private to peering {p}"),
        ));
    }
    let mut nat = Nat {
        masquerade: Vec::new(),
        dnat: Vec::new(),
        snat: Vec::new(),
    };
    for (i, n) in k.fw_nat_rules.iter().enumerate() {
        let at = format!("kawaii.fw_nat_rules[{i}]");
        let proto = match parse_proto(&format!("{at}.protocol"), &n.protocol)? {
            None => Proto::Tcp,
            Some(p) if p.has_ports() => p,
            Some(p) => {
                return Err(Refused::new(
                    format!("{at}.protocol"),
                    format!("`{}` cannot be port-forwarded (tcp or udp)", p.as_str()),
                ));
            }
        };
        let ports = parse_ports(&format!("{at}.ports"), &n.ports)?;
        if ports.is_empty() {
            return Err(Refused::new(
                format!("{at}.ports"),
                "empty: a port forward needs ports",
            ));
        }
        let daddr = host(IpAddr::V4(n.private_ip));
        for p in ports {
            nat.dnat.push(Dnat {
                iif: Some(public.clone()),
                daddr: Some(host(IpAddr::V4(n.public_ip))),
                proto,
                dport: p,
                to: NatTarget {
                    addr: n.private_ip,
                    port: None,
                },
            });
            // Only forwarded connections, not everything from the internet.
            rules.push(Rule {
                daddr: Some(daddr),
                proto: Some(proto),
                dport: Some(p),
                ..fixed(
                    Chain::Forward,
                    Some(public),
                    Some(private),
                    &format!("{at}: port forward"),
                )
            });
        }
    }
    for Checked {
        index: ci, conn: c, ..
    } in ipsec
    {
        let x = xfrm_name(c.xfrm_id);
        if c.ingress_rules.is_empty() {
            rules.push(fixed(
                Chain::Forward,
                Some(&x),
                None,
                &format!("ipsec {}: from the tunnel", c.name),
            ));
        } else {
            for (i, r) in c.ingress_rules.iter().enumerate() {
                let at = format!("kawaii.ipsec_connections[{ci}].ingress_rules[{i}]");
                convert_rule(&at, Chain::Forward, r, Some(&x), &mut rules)?;
            }
        }
        rules.push(fixed(
            Chain::Forward,
            None,
            Some(&x),
            &format!("ipsec {}: into the tunnel", c.name),
        ));
    }
    for (i, r) in k.fw_output_rules.iter().enumerate() {
        convert_rule(
            &format!("kawaii.fw_output_rules[{i}]"),
            Chain::Output,
            r,
            None,
            &mut rules,
        )?;
    }
    nat.masquerade.push(Masquerade {
        oif: public.clone(),
        saddr: Some(private_net),
    });
    for p in &k.peering_interfaces {
        nat.masquerade.push(Masquerade {
            oif: p.clone(),
            saddr: Some(private_net),
        });
    }
    Ok(Firewall {
        input: policy(k.fw_input_default),
        forward: policy(k.fw_forward_default),
        output: policy(k.fw_output_default),
        accept_established: true,
        accept_loopback: true,
        rules,
        nat,
    })
}

fn host(ip: IpAddr) -> Prefix {
    Prefix {
        addr: ip,
        len: Prefix::max_len(ip),
    }
}

/// A metadata rule as model rules: one per port item (`"80,443"` gives two).
/// `force_iif` (the XFRM interface of an IPsec ingress rule) replaces `iifname`, and
/// such a rule's ports are destination ports whatever its direction.
/// In the input chain `oifname` is ignored, in the output chain `iifname` (Kahuna fills
/// both with the VIP's interface; neither can match there).
fn convert_rule(
    at: &str,
    chain: Chain,
    r: &FirewallRule,
    force_iif: Option<&str>,
    out: &mut Vec<Rule>,
) -> Result<(), Refused> {
    let action = match r.action.trim().to_ascii_lowercase().as_str() {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "reject" => Verdict::Reject,
        _ => {
            return Err(Refused::new(
                format!("{at}.action"),
                format!("unknown action `{}` (accept, drop or reject)", r.action),
            ));
        }
    };
    let proto = parse_proto(&format!("{at}.protocol"), &r.protocol)?;
    let ports = parse_ports(&format!("{at}.ports"), &r.ports)?;
    if !ports.is_empty() && !proto.is_some_and(Proto::has_ports) {
        return Err(Refused::new(
            format!("{at}.ports"),
            format!("`{}` needs protocol tcp or udp", r.ports),
        ));
    }
    // Upstream matches `in` rules on the source port; IPsec ingress rules (which Kahuna
    // marks `in`) always on the destination port.
    let source_port = match r.direction.trim() {
        "" | "out" => false,
        "in" => force_iif.is_none(),
        other => {
            return Err(Refused::new(
                format!("{at}.direction"),
                format!("unknown direction `{other}` (in, out or empty)"),
            ));
        }
    };
    let iface = |key: &str, name: &str| -> Result<Option<String>, Refused> {
        let name = name.trim();
        if name.is_empty() {
            return Ok(None);
        }
        check_ifname(name).map_err(|e| Refused::new(format!("{at}.{key}"), e))?;
        Ok(Some(name.to_owned()))
    };
    let iif = match force_iif {
        Some(x) => Some(x.to_owned()),
        None if chain == Chain::Output => None,
        None => iface("iifname", &r.iifname)?,
    };
    let oif = match chain {
        Chain::Input => None,
        _ => iface("oifname", &r.oifname)?,
    };
    let base = Rule {
        chain,
        iif,
        oif,
        saddr: parse_net(&format!("{at}.source_ip"), &r.source_ip)?,
        daddr: parse_net(&format!("{at}.destination_ip"), &r.destination_ip)?,
        proto,
        sport: None,
        dport: None,
        action,
        comment: Some(at.to_owned()),
    };
    if ports.is_empty() {
        out.push(base);
        return Ok(());
    }
    for p in ports {
        let (sport, dport) = if source_port {
            (Some(p), None)
        } else {
            (None, Some(p))
        };
        out.push(Rule {
            sport,
            dport,
            ..base.clone()
        });
    }
    Ok(())
}

fn parse_proto(at: &str, text: &str) -> Result<Option<Proto>, Refused> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "tcp" => Ok(Some(Proto::Tcp)),
        "udp" => Ok(Some(Proto::Udp)),
        "icmp" => Ok(Some(Proto::Icmp)),
        "icmpv6" => Ok(Some(Proto::Icmpv6)),
        _ => Err(Refused::new(
            at,
            format!("unknown protocol `{text}` (tcp, udp, icmp or icmpv6)"),
        )),
    }
}

/// `"22"`, `"22,80,443"`, `"80,443,3000-3005"`; empty = any port.
pub(crate) fn parse_ports(at: &str, text: &str) -> Result<Vec<Ports>, Refused> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim) {
        if item.is_empty() {
            if text.trim().is_empty() {
                continue;
            }
            return Err(Refused::new(at, format!("`{text}` has an empty item")));
        }
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        let port = |s: &str| -> Result<u16, Refused> {
            match s.trim().parse::<u16>() {
                Ok(p) if p != 0 => Ok(p),
                _ => Err(Refused::new(
                    at,
                    format!("`{item}` is not a port or a port range (1 to 65535, e.g. 8000-8100)"),
                )),
            }
        };
        let (first, last) = (port(a)?, port(b)?);
        if first > last {
            return Err(Refused::new(
                at,
                format!("port range {item} is reversed (first port above last)"),
            ));
        }
        out.push(Ports { first, last });
    }
    Ok(out)
}

/// A CIDR or a bare address (a host); empty and `0.0.0.0/0` / `::/0` match anything.
fn parse_net(at: &str, text: &str) -> Result<Option<Prefix>, Refused> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let p = if t.contains('/') {
        t.parse::<Prefix>().map_err(|e| Refused::new(at, e))?
    } else {
        host(
            t.parse::<IpAddr>()
                .map_err(|_| Refused::new(at, format!("`{t}` is not an address or a CIDR")))?,
        )
    };
    Ok((p.len != 0).then_some(p))
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::metadata::{self, tests::KAWAII};

    fn subnets() -> BTreeMap<String, Vec<Prefix>> {
        [
            ("ens3", "192.0.2.10/24"),
            ("ens4", "10.0.0.2/24"),
            ("ens5", "10.1.0.2/24"),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_owned(), vec![p.parse().unwrap()]))
        .collect()
    }

    fn render_text(json: &str) -> Result<KawaiiConfig, String> {
        let meta = metadata::parse(json).map_err(|e| e.to_string())?;
        render(&meta, &subnets()).map_err(|e| e.to_string())
    }

    fn rule_lines(fw: &Firewall) -> Vec<String> {
        fw.rules
            .iter()
            .map(|r| {
                let mut s = r.chain.as_str().to_owned();
                for (k, v) in [
                    ("iif", r.iif.clone()),
                    ("oif", r.oif.clone()),
                    ("saddr", r.saddr.map(|p| p.to_string())),
                    ("daddr", r.daddr.map(|p| p.to_string())),
                    ("proto", r.proto.map(|p| p.as_str().to_owned())),
                    ("sport", r.sport.map(|p| p.to_string())),
                    ("dport", r.dport.map(|p| p.to_string())),
                ] {
                    if let Some(v) = v {
                        let _ = write!(s, " {k} {v}");
                    }
                }
                let _ = write!(
                    s,
                    " {} # {}",
                    r.action.as_str(),
                    r.comment.as_deref().unwrap_or("")
                );
                s
            })
            .collect()
    }

    #[test]
    fn firewall_golden() {
        let c = render_text(KAWAII).unwrap();
        let fw = &c.firewall;
        assert_eq!(
            (fw.input, fw.forward, fw.output),
            (Policy::Drop, Policy::Drop, Policy::Accept)
        );
        assert!(fw.accept_established && fw.accept_loopback && c.ip_forward);
        let want = [
            "input iif ens4 accept # private network",
            "input iif ens3 saddr 203.0.113.7/32 accept # ipsec hq: IKE and ESP from the peer",
            "input saddr 10.99.0.0/16 proto tcp dport 22 accept # kawaii.fw_input_extra_networks[0]: ssh",
            "input iif ens3 daddr 192.0.2.100/32 proto tcp dport 80 accept # kawaii.fw_input_rules[0]",
            "input iif ens3 daddr 192.0.2.100/32 proto tcp dport 443 accept # kawaii.fw_input_rules[0]",
            "input iif ens3 saddr 198.51.100.0/24 daddr 192.0.2.101/32 proto udp dport 51820 accept # kawaii.fw_input_rules[1]",
            "forward iif ens4 oif ens5 saddr 10.0.0.0/24 daddr 10.1.0.0/24 proto tcp dport 3300 accept # kawaii.fw_forward_rules[0]",
            "forward iif ens4 oif ens5 saddr 10.0.0.0/24 daddr 10.1.0.0/24 proto tcp dport 6789 accept # kawaii.fw_forward_rules[0]",
            "forward iif ens4 oif ens5 saddr 10.0.0.0/24 daddr 10.1.0.0/24 proto tcp dport 6800-7300 accept # kawaii.fw_forward_rules[0]",
            "forward iif ens5 oif ens4 saddr 10.1.0.0/24 daddr 10.0.0.0/24 proto tcp sport 5432 accept # kawaii.fw_forward_rules[1]",
            "forward iif ens4 oif ens3 accept # private to internet",
            "forward iif ens4 oif ens4 accept # private to private",
            "forward iif ens5 oif ens4 accept # peering ens5 to private",
            "forward iif ens4 oif ens5 accept # private to peering ens5",
            "forward iif ens3 oif ens4 daddr 10.0.0.20/32 proto tcp dport 8080 accept # kawaii.fw_nat_rules[0]: port forward",
            "forward iif ens3 oif ens4 daddr 10.0.0.20/32 proto tcp dport 9000-9010 accept # kawaii.fw_nat_rules[0]: port forward",
            "forward iif xfrm-1 saddr 172.16.5.0/24 proto tcp dport 22 accept # kawaii.ipsec_connections[0].ingress_rules[0]",
            "forward iif xfrm-1 saddr 172.16.5.0/24 proto tcp dport 443 accept # kawaii.ipsec_connections[0].ingress_rules[0]",
            "forward oif xfrm-1 accept # ipsec hq: into the tunnel",
            "output oif ens3 daddr 203.0.113.0/24 proto tcp dport 25 drop # kawaii.fw_output_rules[0]",
        ];
        assert_eq!(rule_lines(fw), want);
        let dnat: Vec<String> = fw
            .nat
            .dnat
            .iter()
            .map(|d| {
                format!(
                    "{:?} {:?} {} {} -> {}",
                    d.iif,
                    d.daddr.map(|p| p.to_string()),
                    d.proto.as_str(),
                    d.dport,
                    d.to
                )
            })
            .collect();
        assert_eq!(
            dnat,
            [
                "Some(\"ens3\") Some(\"192.0.2.100/32\") tcp 8080 -> 10.0.0.20",
                "Some(\"ens3\") Some(\"192.0.2.100/32\") tcp 9000-9010 -> 10.0.0.20",
            ]
        );
        let masq: Vec<String> = fw
            .nat
            .masquerade
            .iter()
            .map(|m| format!("{} {:?}", m.oif, m.saddr.map(|p| p.to_string())))
            .collect();
        assert_eq!(
            masq,
            ["ens3 Some(\"10.0.0.0/24\")", "ens5 Some(\"10.0.0.0/24\")"]
        );
        assert_eq!(
            c.xfrm_interfaces,
            [XfrmInterface {
                name: "xfrm-1".into(),
                if_id: 1,
                dev: "ens3".into(),
                mtu: 1300,
                route: "172.16.0.0/16".parse().unwrap(),
            }]
        );
    }

    #[test]
    fn keepalived_golden() {
        let c = render_text(KAWAII).unwrap();
        assert_eq!(
            c.keepalived_conf,
            "global_defs {
    vrrp_garp_master_refresh 1
}

vrrp_instance VI_1 {
    state BACKUP
    interface ens4
    virtual_router_id 1
    priority 150
    advert_int 1
    unicast_src_ip 10.0.0.2
    unicast_peer {
        10.0.0.3
    }
    virtual_ipaddress {
        192.0.2.100/24 dev ens3
    }
    virtual_routes {
        0.0.0.0/0 via 192.0.2.1 dev ens3 metric 15
    }
}

vrrp_instance VI_2 {
    state BACKUP
    interface ens4
    virtual_router_id 2
    priority 100
    advert_int 1
    unicast_src_ip 10.0.0.2
    unicast_peer {
        10.0.0.3
    }
    virtual_ipaddress {
        192.0.2.101/24 dev ens3
    }
    virtual_routes {
        0.0.0.0/0 via 192.0.2.1 dev ens3 metric 25
    }
}

vrrp_instance VI_3 {
    state BACKUP
    interface ens4
    virtual_router_id 3
    priority 150
    advert_int 1
    unicast_src_ip 10.0.0.2
    unicast_peer {
        10.0.0.3
    }
    virtual_ipaddress {
        10.0.0.1/24 dev ens4
    }
}
"
        );
        // Without peers: multicast adverts.
        let single = KAWAII.replace("\"peers\": [\"10.0.0.3\"]", "\"peers\": null");
        let c = render_text(&single).unwrap();
        assert!(
            !c.keepalived_conf.contains("unicast"),
            "{}",
            c.keepalived_conf
        );
    }

    #[test]
    fn swanctl_golden() {
        let c = render_text(KAWAII).unwrap();
        assert_eq!(format!("{:?}", c.swanctl_conf), "***");
        assert!(!format!("{c:?}").contains("horse"));
        assert_eq!(
            c.swanctl_conf.expose(),
            "connections {
    hq {
        version = 2
        local_addrs = 192.0.2.100
        remote_addrs = 203.0.113.7
        proposals = aes256-sha256-modp2048
        dpd_delay = 5s
        dpd_timeout = 240s
        rekey_time = 2h
        reauth_time = 1h
        if_id_in = 1
        if_id_out = 1
        local {
            auth = psk
            id = 192.0.2.100
        }
        remote {
            auth = psk
            id = 203.0.113.7
        }
        children {
            hq-phase2 {
                local_ts = 10.0.0.0/24
                remote_ts = 172.16.0.0/16
                esp_proposals = aes128-sha256-ecp256
                rekey_time = 2h
                life_time = 1h
                dpd_action = restart
                start_action = start
                mode = tunnel
            }
        }
    }
}

secrets {
    ike-hq {
        id-1 = 192.0.2.100
        id-2 = 203.0.113.7
        secret = 0x636f727265637420686f727365206261747465727920737461706c65
    }
}
"
        );
    }

    #[test]
    fn minimal_gateway_and_sorted_ipsec() {
        // No rules, no NAT, two IPsec connections given out of order, one without
        // ingress rules and without PFS.
        let json = r#"{"instance-id": "i", "local-ipv4": "10.0.0.2", "subnet_cidr": "10.0.0.5/24",
          "kawaii": {"public_interface": "ens3", "private_interface": "ens4", "vrrp_control_interface": "ens4",
            "public_gw_address": "192.0.2.1",
            "virtual_ips": [{"vrrp_id": 1, "interface": "ens4", "vip": "10.0.0.1", "priority": 100, "mask": 24}],
            "fw_input_default": "accept", "fw_output_default": "accept", "fw_forward_default": "accept",
            "ipsec_connections": [
              {"name": "zeta", "ip": "192.0.2.100", "xfrm_id": 2, "remote_peer": "203.0.113.9", "remote_subnet": "172.17.0.0/16",
               "pre_shared_key": "k2", "phase1_df_group": "ecp384", "phase1_integrity_algorithm": "sha384",
               "phase1_encryption_algorithm": "aes256", "phase2_integrity_algorithm": "sha384",
               "phase2_encryption_algorithm": "aes256", "phase2_df_group": ""},
              {"name": "alpha", "ip": "192.0.2.100", "xfrm_id": 1, "remote_peer": "203.0.113.8", "remote_subnet": "172.16.0.0/16",
               "pre_shared_key": "k1", "phase1_df_group": "modp2048", "phase1_integrity_algorithm": "SHA256",
               "phase1_encryption_algorithm": "AES128", "phase2_integrity_algorithm": "SHA256",
               "phase2_encryption_algorithm": "AES128", "phase2_df_group": "modp2048"}
            ]}}"#;
        let c = render_text(json).unwrap();
        let text = c.swanctl_conf.expose();
        let alpha = text.find("    alpha {").unwrap();
        let zeta = text.find("    zeta {").unwrap();
        assert!(alpha < zeta, "{text}");
        assert!(text.contains("esp_proposals = aes256-sha384\n"), "{text}");
        assert!(!text.contains("dpd_action"), "{text}");
        assert_eq!(
            c.xfrm_interfaces
                .iter()
                .map(|x| x.if_id)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        let lines = rule_lines(&c.firewall);
        assert!(
            lines.contains(&"forward iif xfrm-2 accept # ipsec zeta: from the tunnel".to_owned()),
            "{lines:?}"
        );
        assert_eq!(
            c.firewall.nat.masquerade[0].saddr.unwrap().to_string(),
            "10.0.0.0/24"
        );
        // The same input always gives the same output.
        assert_eq!(render_text(json).unwrap(), c);
    }

    #[test]
    fn refusals_produce_nothing_and_name_the_key() {
        let swap = |from: &str, to: &str| {
            assert!(KAWAII.contains(from), "{from}");
            KAWAII.replacen(from, to, 1)
        };
        let cases = [
            (
                swap("\"action\": \"accept\"", "\"action\": \"allow\""),
                "kawaii.fw_input_rules[0].action: unknown action `allow`",
            ),
            (
                swap("\"ports\": \"80,443\"", "\"ports\": \"200-100\""),
                "kawaii.fw_input_rules[0].ports: port range 200-100 is reversed",
            ),
            (
                swap("\"ports\": \"80,443\"", "\"ports\": \"80,,443\""),
                "kawaii.fw_input_rules[0].ports: `80,,443` has an empty item",
            ),
            (
                swap("\"ports\": \"80,443\"", "\"ports\": \"0\""),
                "kawaii.fw_input_rules[0].ports: `0` is not a port",
            ),
            (
                swap("\"ports\": \"8080,9000-9010\"", "\"ports\": \"9010-9000\""),
                "kawaii.fw_nat_rules[0].ports: port range 9010-9000 is reversed",
            ),
            (
                swap(
                    "\"source_ip\": \"198.51.100.0/24\"",
                    "\"source_ip\": \"198.51.100.0/33\"",
                ),
                "kawaii.fw_input_rules[1].source_ip: `198.51.100.0/33`: prefix length 33 exceeds 32",
            ),
            (
                swap(
                    "\"destination_ip\": \"203.0.113.0/24\"",
                    "\"destination_ip\": \"somewhere\"",
                ),
                "kawaii.fw_output_rules[0].destination_ip: `somewhere` is not an address or a CIDR",
            ),
            (
                swap("\"10.99.0.0/16\"", "\"10.99.0.0/99\""),
                "kawaii.fw_input_extra_networks[0]: ",
            ),
            (
                swap("\"protocol\": \"udp\"", "\"protocol\": \"sctp\""),
                "kawaii.fw_input_rules[1].protocol: unknown protocol `sctp`",
            ),
            (
                swap("\"direction\": \"out\"", "\"direction\": \"sideways\""),
                "kawaii.fw_forward_rules[0].direction: unknown direction `sideways`",
            ),
            (
                swap("\"vip\": \"10.0.0.1\"", "\"vip\": \"10.9.0.1\""),
                "kawaii.virtual_ips[0].vip: 10.9.0.1 is outside every interface's subnet",
            ),
            (
                swap("\"vip\": \"192.0.2.101\"", "\"vip\": \"192.0.2.100\""),
                "kawaii.virtual_ips[2].vip: 192.0.2.100 is also kawaii.virtual_ips[1]",
            ),
            (
                swap("\"vrrp_id\": 2", "\"vrrp_id\": 1"),
                "kawaii.virtual_ips[2].priority: 100 differs from 150",
            ),
            (
                swap("\"vrrp_id\": 3", "\"vrrp_id\": 0"),
                "kawaii.virtual_ips[0].vrrp_id: 0 is not a VRRP id",
            ),
            (
                swap(
                    "\"mask\": 24, \"public\": false",
                    "\"mask\": 40, \"public\": false",
                ),
                "kawaii.virtual_ips[0].mask: 40 is not a prefix length",
            ),
            (
                swap(
                    "\"interface\": \"ens4\", \"vip\"",
                    "\"interface\": \"ens9\", \"vip\"",
                ),
                "kawaii.virtual_ips[0].interface: interface `ens9` is not in network-config",
            ),
            (
                swap(
                    "\"public_gw_address\": \"192.0.2.1\"",
                    "\"public_gw_address\": \"\"",
                ),
                "kawaii.public_gw_address: missing",
            ),
            (
                swap(
                    "\"pre_shared_key\": \"correct horse battery staple\"",
                    "\"pre_shared_key\": \"\"",
                ),
                "kawaii.ipsec_connections[0].pre_shared_key: missing",
            ),
            (
                swap("\"name\": \"hq\"", "\"name\": \"hq office\""),
                "kawaii.ipsec_connections[0].name: `hq office` is not a connection name",
            ),
            (
                swap("\"xfrm_id\": 1", "\"xfrm_id\": 0"),
                "kawaii.ipsec_connections[0].xfrm_id: 0 is not an XFRM interface id",
            ),
            (
                swap("\"dpd_action\": \"restart\"", "\"dpd_action\": \"reboot\""),
                "kawaii.ipsec_connections[0].dpd_action: unknown value `reboot`",
            ),
            (
                swap("\"rekey\": \"2h\"", "\"rekey\": \"two hours\""),
                "kawaii.ipsec_connections[0].rekey: `two hours` is not a duration",
            ),
            (
                swap(
                    "\"phase1_df_group\": \"modp2048\"",
                    "\"phase1_df_group\": \"\"",
                ),
                "kawaii.ipsec_connections[0].phase1_df_group: missing",
            ),
            (
                swap(
                    "\"phase1_encryption_algorithm\": \"AES256\"",
                    "\"phase1_encryption_algorithm\": \"aes 256\"",
                ),
                "kawaii.ipsec_connections[0].phase1_encryption_algorithm: `aes 256` is not an algorithm name",
            ),
            (
                swap(
                    "\"vrrp_control_interface\": \"ens4\"",
                    "\"vrrp_control_interface\": \"ens5\"",
                ),
                "kawaii.vrrp_control_interface: `ens5` differs from private_interface",
            ),
            (
                swap(
                    "\"peering_interfaces\": [\"ens5\"]",
                    "\"peering_interfaces\": [\"ens6\"]",
                ),
                "kawaii.peering_interfaces[0]: interface `ens6` is not in network-config",
            ),
            (
                swap("\"subnet_cidr\": \"10.0.0.0/24\",", ""),
                "subnet_cidr: missing",
            ),
            (
                swap("\"iifname\": \"ens5\"", "\"iifname\": \"ens7\""),
                "unknown interface ens7",
            ),
            (
                swap("\"iifname\": \"ens5\"", "\"iifname\": \"ens 5\""),
                "kawaii.fw_forward_rules[1].iifname: interface name `ens 5` contains ' '",
            ),
            (
                swap(
                    "\"protocol\": \"tcp\", \"ports\": \"25\"",
                    "\"protocol\": \"icmp\", \"ports\": \"25\"",
                ),
                "kawaii.fw_output_rules[0].ports: `25` needs protocol tcp or udp",
            ),
            (
                swap("\"local-ipv4\": \"10.0.0.2\",", ""),
                "local-ipv4: missing: VRRP to the peers is unicast",
            ),
        ];
        for (text, want) in cases {
            let e = render_text(&text).unwrap_err();
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
        let meta = metadata::parse(metadata::tests::KONVEY).unwrap();
        assert_eq!(
            render(&meta, &subnets()).unwrap_err().to_string(),
            "kawaii: missing: this instance has no kawaii metadata"
        );
    }

    /// A single-zone gateway (no peers, no peering, no NAT, no IPsec) whose VIP comes
    /// from the top-level list.
    #[test]
    fn single_gateway_golden() {
        let json = r#"{"instance-id": "i", "local-ipv4": "10.0.0.2", "subnet_cidr": "10.0.0.0/24", "peers": null,
          "virtual_ips": [{"vrrp_id": 5, "interface": "ens4", "vip": "10.0.0.1", "priority": 150, "mask": 24, "public": false}],
          "kawaii": {"public_interface": "ens3", "private_interface": "ens4", "peering_interfaces": null,
            "vrrp_control_interface": "ens4", "public_vip_addresses": null, "public_gw_address": "",
            "virtual_ips": null, "fw_input_default": "drop", "fw_output_default": "accept", "fw_forward_default": "drop",
            "fw_input_extra_networks": [], "fw_input_rules": [], "fw_output_rules": [], "fw_forward_rules": [],
            "fw_nat_rules": [], "ipsec_connections": []}}"#;
        let c = render_text(json).unwrap();
        assert_eq!(
            rule_lines(&c.firewall),
            [
                "input iif ens4 accept # private network",
                "forward iif ens4 oif ens3 accept # private to internet",
                "forward iif ens4 oif ens4 accept # private to private",
            ]
        );
        assert!(c.firewall.nat.dnat.is_empty());
        assert_eq!(c.firewall.nat.masquerade.len(), 1);
        assert!(c.xfrm_interfaces.is_empty());
        assert_eq!(
            c.swanctl_conf.expose(),
            "connections {\n}\n\nsecrets {\n}\n"
        );
        assert_eq!(
            c.keepalived_conf,
            "global_defs {\n    vrrp_garp_master_refresh 1\n}\n\nvrrp_instance VI_5 {\n    state BACKUP\n    interface ens4\n    virtual_router_id 5\n    priority 150\n    advert_int 1\n    virtual_ipaddress {\n        10.0.0.1/24 dev ens4\n    }\n}\n"
        );
        // A bad top-level VIP is named by its top-level path.
        let bad = json.replace("\"vip\": \"10.0.0.1\"", "\"vip\": \"10.5.0.1\"");
        let e = render_text(&bad).unwrap_err();
        assert!(
            e.starts_with("virtual_ips[0].vip: 10.5.0.1 is outside"),
            "{e}"
        );
    }

    #[test]
    fn port_lists() {
        let p = parse_ports("x", " 22 , 80,3000-3005 ").unwrap();
        assert_eq!(
            p.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["22", "80", "3000-3005"]
        );
        assert!(parse_ports("x", "").unwrap().is_empty());
        assert!(parse_ports("x", "65536").is_err());
        assert!(parse_ports("x", "a-b").is_err());
    }
}
