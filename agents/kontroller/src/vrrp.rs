//! keepalived VRRP instances for the virtual IPs of a service (shared by Kawaii and
//! Konvey): one `vrrp_instance` per VRRP id holding all the VIPs of that id, sorted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use kowabunga_model::network::Prefix;

use crate::metadata::VirtualIp;
use crate::refused::Refused;

/// What the VRRP part of a keepalived.conf is made from.
pub(crate) struct VrrpSpec<'a> {
    /// Key path of the VIP list (`kawaii.virtual_ips`).
    pub path: &'a str,
    pub vips: &'a [VirtualIp],
    /// Interface the adverts go out of, and its key path.
    pub control: (&'a str, &'a str),
    /// Unicast source; needed when there are peers.
    pub local_ip: Option<IpAddr>,
    /// The other members; empty = multicast adverts.
    pub peers: &'a [IpAddr],
    /// Each interface's addresses (from network-config).
    pub subnets: &'a BTreeMap<String, Vec<Prefix>>,
    /// Kawaii: the default route (gateway, interface) a master of public VIPs installs.
    pub public_route: Option<(IpAddr, &'a str)>,
}

/// The VIPs of one VRRP id.
struct Group<'a> {
    priority: u8,
    /// Index of its first VIP, for messages.
    first: usize,
    /// (address, prefix length, interface, public)
    vips: Vec<(IpAddr, u8, &'a str, bool)>,
}

/// Refuse an interface network-config does not declare.
pub(crate) fn check_interface(
    path: &str,
    name: &str,
    subnets: &BTreeMap<String, Vec<Prefix>>,
) -> Result<(), Refused> {
    if subnets.contains_key(name) {
        Ok(())
    } else {
        Err(Refused::new(
            path,
            format!(
                "interface `{name}` is not in network-config (known: {})",
                subnets.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ))
    }
}

/// `global_defs` and the `vrrp_instance` blocks.
pub(crate) fn render(spec: &VrrpSpec) -> Result<String, Refused> {
    check_interface(spec.control.1, spec.control.0, spec.subnets)?;
    let mut groups: BTreeMap<u8, Group> = BTreeMap::new();
    let mut seen: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (i, v) in spec.vips.iter().enumerate() {
        let at = format!("{}[{i}]", spec.path);
        if v.vrrp_id == 0 {
            return Err(Refused::new(
                format!("{at}.vrrp_id"),
                "0 is not a VRRP id (1 to 255)",
            ));
        }
        if v.priority == 0 {
            return Err(Refused::new(
                format!("{at}.priority"),
                "0 is not a VRRP priority (1 to 255)",
            ));
        }
        if v.mask > Prefix::max_len(v.vip) {
            return Err(Refused::new(
                format!("{at}.mask"),
                format!("{} is not a prefix length for {}", v.mask, v.vip),
            ));
        }
        check_interface(&format!("{at}.interface"), &v.interface, spec.subnets)?;
        if !spec.subnets.values().flatten().any(|p| p.contains(v.vip)) {
            return Err(Refused::new(
                format!("{at}.vip"),
                format!("{} is outside every interface's subnet", v.vip),
            ));
        }
        if let Some(first) = seen.insert(v.vip, i) {
            return Err(Refused::new(
                format!("{at}.vip"),
                format!("{} is also {}[{first}]", v.vip, spec.path),
            ));
        }
        let group = groups.entry(v.vrrp_id).or_insert(Group {
            priority: v.priority,
            first: i,
            vips: Vec::new(),
        });
        if group.priority != v.priority {
            return Err(Refused::new(
                format!("{at}.priority"),
                format!(
                    "{} differs from {} at {}[{}], same vrrp_id {}",
                    v.priority, group.priority, spec.path, group.first, v.vrrp_id
                ),
            ));
        }
        if let Some((other, ..)) = group.vips.first()
            && other.is_ipv4() != v.vip.is_ipv4()
        {
            return Err(Refused::new(
                format!("{at}.vip"),
                format!(
                    "{} mixes address families in vrrp_id {} ({other})",
                    v.vip, v.vrrp_id
                ),
            ));
        }
        group
            .vips
            .push((v.vip, v.mask, v.interface.as_str(), v.public));
    }
    let peers: Vec<IpAddr> = {
        let mut p: Vec<IpAddr> = spec
            .peers
            .iter()
            .copied()
            .filter(|p| Some(*p) != spec.local_ip)
            .collect();
        p.sort();
        p.dedup();
        p
    };
    if !peers.is_empty() && spec.local_ip.is_none() {
        return Err(Refused::new(
            "local-ipv4",
            "missing: VRRP to the peers is unicast and needs the instance's own address",
        ));
    }
    let mut out = String::from("global_defs {\n    vrrp_garp_master_refresh 1\n}\n");
    for (n, (id, group)) in groups.into_iter().enumerate() {
        let Group {
            priority, mut vips, ..
        } = group;
        vips.sort();
        let _ = write!(
            out,
            "\nvrrp_instance VI_{id} {{\n    state BACKUP\n    interface {}\n    virtual_router_id {id}\n    priority {priority}\n    advert_int 1\n",
            spec.control.0
        );
        if let (Some(local), false) = (spec.local_ip, peers.is_empty()) {
            let _ = writeln!(out, "    unicast_src_ip {local}\n    unicast_peer {{");
            for p in &peers {
                let _ = writeln!(out, "        {p}");
            }
            out.push_str("    }\n");
        }
        out.push_str("    virtual_ipaddress {\n");
        for (vip, mask, dev, _) in &vips {
            let _ = writeln!(out, "        {vip}/{mask} dev {dev}");
        }
        out.push_str("    }\n");
        if vips.iter().any(|v| v.3) {
            let Some((gw, dev)) = spec.public_route else {
                return Err(Refused::new(
                    "kawaii.public_gw_address",
                    format!("missing: public VIPs (vrrp_id {id}) need the public gateway"),
                ));
            };
            let default = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            let _ = writeln!(
                out,
                "    virtual_routes {{\n        {default} via {gw} dev {dev} metric {}\n    }}",
                15 + 10 * n
            );
        }
        out.push_str("}\n");
    }
    Ok(out)
}
