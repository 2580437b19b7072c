//! Konvey (L4 load balancer) metadata -> keepalived configuration: VRRP instances for
//! the VIPs and one IPVS `virtual_server` per VIP and endpoint (TCP or UDP, round
//! robin, NAT), each backend a `real_server` with a TCP or UDP health check. One daemon
//! holds the VIPs, balances and checks (see docs/kontroller.md for the choice).
//!
//! IPVS in NAT mode needs the replies of the backends to come back through the
//! balancer; Kowabunga instances route through Kawaii, not Konvey. So Konvey also
//! masquerades what it forwards to the backends (as upstream's proxy did implicitly:
//! backends see Konvey's address). The masquerade reaches IPVS connections only with
//! `net.ipv4.vs.conntrack = 1`: the kontroller image loads `ip_vs` and sets it at boot
//! (`overlays/kontroller/usr/lib/{modules-load.d,sysctl.d}/kowabunga-ipvs.conf`), so
//! no generation has to order a sysctl after a module keepalived loads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use kowabunga_model::firewall::{Firewall, Masquerade, Nat, Policy};
use kowabunga_model::network::Prefix;

use crate::metadata::{Backend, InstanceMetadata};
use crate::refused::Refused;
use crate::vrrp::{self, VrrpSpec, check_interface};

/// What a Konvey instance applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KonveyConfig {
    /// `/etc/keepalived/keepalived.conf`.
    pub keepalived_conf: String,
    /// Masquerade towards the backends; filter policies accept (as upstream).
    pub firewall: Firewall,
    /// IPVS NAT forwards: always true.
    pub ip_forward: bool,
}

/// Backend addresses and ports, sorted.
type Backends = Vec<(IpAddr, u16)>;

/// A transport protocol of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Protocol {
    Tcp,
    Udp,
}

/// Build a Konvey's configuration from its metadata. `subnets` as for
/// [`crate::kawaii::render`].
pub fn render(
    meta: &InstanceMetadata,
    subnets: &BTreeMap<String, Vec<Prefix>>,
) -> Result<KonveyConfig, Refused> {
    let k = meta
        .konvey
        .as_ref()
        .ok_or_else(|| Refused::new("konvey", "missing: this instance has no konvey metadata"))?;
    check_interface("konvey.private_interface", &k.private_interface, subnets)?;
    let vips = meta.konvey_vips(k);
    let mut out = vrrp::render(&VrrpSpec {
        path: if k.virtual_ips.is_empty() {
            "virtual_ips"
        } else {
            "konvey.virtual_ips"
        },
        vips,
        control: (&k.vrrp_control_interface, "konvey.vrrp_control_interface"),
        local_ip: meta.local_ipv4,
        peers: &meta.peers,
        subnets,
        public_route: None,
    })?;
    if vips.is_empty() && !k.endpoints.is_empty() {
        return Err(Refused::new(
            "konvey.virtual_ips",
            "empty: the endpoints need a virtual IP to be served on",
        ));
    }
    // (port, protocol) -> (endpoint index, name, backends)
    let mut endpoints: BTreeMap<(u16, Protocol), (usize, &str, Backends)> = BTreeMap::new();
    for (i, e) in k.endpoints.iter().enumerate() {
        let at = format!("konvey.endpoints[{i}]");
        if e.port == 0 {
            return Err(Refused::new(
                format!("{at}.port"),
                "0 is not a port (1 to 65535)",
            ));
        }
        let proto = match e.protocol.trim().to_ascii_lowercase().as_str() {
            "" | "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => {
                return Err(Refused::new(
                    format!("{at}.protocol"),
                    format!("unknown protocol `{}` (tcp or udp)", e.protocol),
                ));
            }
        };
        let backends = check_backends(&at, &e.backends, vips.iter().map(|v| v.vip))?;
        if let Some((other, ..)) = endpoints.get(&(e.port, proto)) {
            return Err(Refused::new(
                format!("{at}.port"),
                format!(
                    "{}/{} is also the port of konvey.endpoints[{other}]",
                    e.port,
                    proto_name(proto)
                ),
            ));
        }
        endpoints.insert((e.port, proto), (i, e.name.as_str(), backends));
    }
    let mut vip_addrs: Vec<IpAddr> = vips.iter().map(|v| v.vip).collect();
    vip_addrs.sort();
    for vip in vip_addrs {
        for ((port, proto), (_, name, backends)) in &endpoints {
            virtual_server(&mut out, vip, *port, *proto, name, backends);
        }
    }
    Ok(KonveyConfig {
        keepalived_conf: out,
        firewall: Firewall {
            input: Policy::Accept,
            forward: Policy::Accept,
            output: Policy::Accept,
            accept_established: true,
            accept_loopback: true,
            rules: Vec::new(),
            nat: Nat {
                masquerade: vec![Masquerade {
                    oif: k.private_interface.clone(),
                    saddr: None,
                }],
                dnat: Vec::new(),
                snat: Vec::new(),
            },
        },
        ip_forward: true,
    })
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Addresses and ports, sorted; refuse names, port 0, repeats and a family the VIPs
/// do not have (IPVS NAT does not translate between IPv4 and IPv6).
fn check_backends(
    at: &str,
    backends: &[Backend],
    vips: impl Iterator<Item = IpAddr> + Clone,
) -> Result<Vec<(IpAddr, u16)>, Refused> {
    let mut out: Vec<(IpAddr, u16)> = Vec::new();
    for (j, b) in backends.iter().enumerate() {
        let bat = format!("{at}.backends[{j}]");
        let ip: IpAddr = b.host.trim().parse().map_err(|_| {
            Refused::new(
                format!("{bat}.host"),
                format!(
                    "`{}` is not an IP address (keepalived real servers are addresses)",
                    b.host
                ),
            )
        })?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return Err(Refused::new(
                format!("{bat}.host"),
                format!("{ip} is not a backend address"),
            ));
        }
        if vips.clone().any(|v| v.is_ipv4() != ip.is_ipv4()) {
            return Err(Refused::new(
                format!("{bat}.host"),
                format!("{ip} is not of the virtual IPs' family"),
            ));
        }
        if b.port == 0 {
            return Err(Refused::new(
                format!("{bat}.port"),
                "0 is not a port (1 to 65535)",
            ));
        }
        if out.contains(&(ip, b.port)) {
            return Err(Refused::new(
                bat,
                format!("{ip} port {} is listed twice", b.port),
            ));
        }
        out.push((ip, b.port));
    }
    out.sort();
    Ok(out)
}

/// One IPVS virtual server. The endpoint name goes in a comment, reduced to safe
/// characters.
fn virtual_server(
    out: &mut String,
    vip: IpAddr,
    port: u16,
    proto: Protocol,
    name: &str,
    backends: &[(IpAddr, u16)],
) {
    let label: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let (protocol, check) = match proto {
        Protocol::Tcp => ("TCP", "TCP_CHECK"),
        Protocol::Udp => ("UDP", "UDP_CHECK"),
    };
    let _ = write!(
        out,
        "\n# endpoint {label}\nvirtual_server {vip} {port} {{\n    delay_loop 5\n    lb_algo rr\n    lb_kind NAT\n    protocol {protocol}\n"
    );
    for (ip, bport) in backends {
        let _ = write!(
            out,
            "\n    real_server {ip} {bport} {{\n        weight 1\n        {check} {{\n            connect_timeout 3\n            retry 2\n            delay_before_retry 2\n        }}\n    }}\n"
        );
    }
    out.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{self, tests::KONVEY};

    fn subnets() -> BTreeMap<String, Vec<Prefix>> {
        [("ens4".to_owned(), vec!["10.0.0.30/24".parse().unwrap()])].into()
    }

    fn render_text(json: &str) -> Result<KonveyConfig, String> {
        let meta = metadata::parse(json).map_err(|e| e.to_string())?;
        render(&meta, &subnets()).map_err(|e| e.to_string())
    }

    #[test]
    fn keepalived_golden() {
        let c = render_text(KONVEY).unwrap();
        assert_eq!(
            c.keepalived_conf,
            "global_defs {
    vrrp_garp_master_refresh 1
}

vrrp_instance VI_7 {
    state BACKUP
    interface ens4
    virtual_router_id 7
    priority 150
    advert_int 1
    virtual_ipaddress {
        10.0.0.100/24 dev ens4
    }
}

# endpoint dns-tcp
virtual_server 10.0.0.100 53 {
    delay_loop 5
    lb_algo rr
    lb_kind NAT
    protocol TCP

    real_server 10.0.0.21 53 {
        weight 1
        TCP_CHECK {
            connect_timeout 3
            retry 2
            delay_before_retry 2
        }
    }
}

# endpoint dns
virtual_server 10.0.0.100 53 {
    delay_loop 5
    lb_algo rr
    lb_kind NAT
    protocol UDP

    real_server 10.0.0.21 53 {
        weight 1
        UDP_CHECK {
            connect_timeout 3
            retry 2
            delay_before_retry 2
        }
    }
}

# endpoint https
virtual_server 10.0.0.100 443 {
    delay_loop 5
    lb_algo rr
    lb_kind NAT
    protocol TCP

    real_server 10.0.0.11 8443 {
        weight 1
        TCP_CHECK {
            connect_timeout 3
            retry 2
            delay_before_retry 2
        }
    }

    real_server 10.0.0.12 8443 {
        weight 1
        TCP_CHECK {
            connect_timeout 3
            retry 2
            delay_before_retry 2
        }
    }
}
"
        );
        assert!(c.ip_forward);
        assert_eq!(c.firewall.nat.masquerade.len(), 1);
        assert_eq!(c.firewall.nat.masquerade[0].oif, "ens4");
        assert!(c.firewall.rules.is_empty());
        let known = ["ens4"].into_iter().collect();
        c.firewall.validate(&known).unwrap();
        assert_eq!(render_text(KONVEY).unwrap(), c);
    }

    #[test]
    fn unicast_with_peers_and_no_endpoints() {
        let json = r#"{"instance-id": "i", "local-ipv4": "10.0.0.30", "peers": ["10.0.0.31", "10.0.0.30"],
            "konvey": {"private_interface": "ens4", "vrrp_control_interface": "ens4",
              "virtual_ips": [{"vrrp_id": 9, "interface": "ens4", "vip": "10.0.0.101", "priority": 100, "mask": 24}],
              "endpoints": []}}"#;
        let c = render_text(json).unwrap();
        assert!(
            c.keepalived_conf.contains(
                "    unicast_src_ip 10.0.0.30\n    unicast_peer {\n        10.0.0.31\n    }\n"
            ),
            "{}",
            c.keepalived_conf
        );
        assert!(!c.keepalived_conf.contains("virtual_server"));
    }

    #[test]
    fn refusals_name_the_key() {
        let swap = |from: &str, to: &str| {
            assert!(KONVEY.contains(from), "{from}");
            KONVEY.replacen(from, to, 1)
        };
        let cases = [
            (
                swap("\"port\": 443", "\"port\": 0"),
                "konvey.endpoints[0].port: 0 is not a port",
            ),
            (
                swap(
                    "\"name\": \"dns-tcp\", \"port\": 53, \"protocol\": \"tcp\"",
                    "\"name\": \"dns-tcp\", \"port\": 53, \"protocol\": \"udp\"",
                ),
                "konvey.endpoints[2].port: 53/udp is also the port of konvey.endpoints[1]",
            ),
            (
                swap(
                    "\"host\": \"10.0.0.11\"",
                    "\"host\": \"web-1.acme.internal\"",
                ),
                "konvey.endpoints[0].backends[1].host: `web-1.acme.internal` is not an IP address",
            ),
            (
                swap("\"host\": \"10.0.0.11\"", "\"host\": \"fd00::11\""),
                "konvey.endpoints[0].backends[1].host: fd00::11 is not of the virtual IPs' family",
            ),
            (
                swap("\"host\": \"10.0.0.11\"", "\"host\": \"0.0.0.0\""),
                "is not a backend address",
            ),
            (
                swap(
                    "{\"host\": \"10.0.0.11\", \"port\": 8443}",
                    "{\"host\": \"10.0.0.11\", \"port\": 0}",
                ),
                "konvey.endpoints[0].backends[1].port: 0 is not a port",
            ),
            (
                swap(
                    "{\"host\": \"10.0.0.11\", \"port\": 8443}",
                    "{\"host\": \"10.0.0.12\", \"port\": 8443}",
                ),
                "konvey.endpoints[0].backends[1]: 10.0.0.12 port 8443 is listed twice",
            ),
            (
                swap("\"protocol\": \"udp\"", "\"protocol\": \"sctp\""),
                "konvey.endpoints[1].protocol: unknown protocol `sctp`",
            ),
            (
                swap("\"vip\": \"10.0.0.100\"", "\"vip\": \"10.7.0.100\""),
                "konvey.virtual_ips[0].vip: 10.7.0.100 is outside every interface's subnet",
            ),
            (
                swap(
                    "\"private_interface\": \"ens4\"",
                    "\"private_interface\": \"eth1\"",
                ),
                "konvey.private_interface: interface `eth1` is not in network-config",
            ),
            (
                swap(
                    "\"vrrp_control_interface\": \"ens4\"",
                    "\"vrrp_control_interface\": \"eth1\"",
                ),
                "konvey.vrrp_control_interface: interface `eth1`",
            ),
            (
                swap("\"priority\": 150", "\"priority\": 0"),
                "konvey.virtual_ips[0].priority: 0 is not a VRRP priority",
            ),
        ];
        for (text, want) in cases {
            let e = render_text(&text).unwrap_err();
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
        let no_vip = KONVEY.replacen(
            "{\"vrrp_id\": 7, \"interface\": \"ens4\", \"vip\": \"10.0.0.100\", \"priority\": 150, \"mask\": 24, \"public\": false}",
            "",
            1,
        );
        let e = render_text(&no_vip).unwrap_err();
        assert!(e.contains("konvey.virtual_ips: empty"), "{e}");
        let meta = metadata::parse(metadata::tests::KAWAII).unwrap();
        assert!(
            render(&meta, &subnets())
                .unwrap_err()
                .to_string()
                .starts_with("konvey: missing")
        );
    }
}
