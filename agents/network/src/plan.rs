//! Desired + in force + observed -> the list of changes (pure).
//!
//! Ownership: the objects this agent may change or delete are those declared by the
//! desired document or by the one in force (the generation last applied), and those
//! the [`Ledger`] says the agent created (left behind by a failed generation whose
//! revert could not remove them). Links, addresses and routes nobody declared nor
//! created (libvirt's `vnet*`, `docker0`, addresses from DHCP, the kernel's connected
//! and link-local routes) are never touched.
//!
//! Compared per object, and nothing else:
//! - link: existence, kind and the attributes fixed at creation (VLAN parent and id,
//!   bond mode, veth peer; a mismatch means re-creation), MTU (if declared), bridge
//!   VLAN filtering (if declared), master, administrative state;
//! - address: presence of `address/len` on the link;
//! - route, keyed by (table, destination, metric): gateway and, when declared, link;
//! - sysctls: the value, when declared; when a key was declared by the generation in
//!   force and is no longer, it returns to the kernel's default.

use std::collections::{BTreeMap, BTreeSet};

use kowabunga_model::network::{
    Link, LinkKind, MacAddr, Network, Prefix, RouteKey, gateway_reachable,
};

use crate::ledger::Ledger;
use crate::observe::{LinkState, Observed};
use crate::ops::{DownFor, NewLink, Op};

/// `/proc/sys`-relative keys, and the kernel's defaults for the ones without a
/// `default` twin.
pub const IPV4_FORWARD: &str = "net/ipv4/ip_forward";
pub const IPV6_FORWARD: &str = "net/ipv6/conf/all/forwarding";

pub fn rp_filter_key(link: &str) -> String {
    format!("net/ipv4/conf/{link}/rp_filter")
}
pub fn accept_ra_key(link: &str) -> String {
    format!("net/ipv6/conf/{link}/accept_ra")
}

/// Compute the changes that bring `obs` to `desired`. `read` returns the current
/// value of a sysctl (relative key), `None` when it does not exist. Errors are
/// problems with the desired state that only the system reveals (a physical link
/// that is not there, a gateway no address can reach...), one line each. `ledger`:
/// what the agent created and still owns, and the MACs of bridges it deleted.
pub fn diff(
    desired: &Network,
    in_force: &Network,
    obs: &Observed,
    read: &dyn Fn(&str) -> Option<String>,
    ledger: &Ledger,
) -> Result<Vec<Op>, Vec<String>> {
    let mut p = Planner {
        desired,
        in_force,
        ledger,
        obs,
        read,
        ops: Vec::new(),
        errs: Vec::new(),
        view: obs.links.iter().map(|l| (l.name.clone(), l)).collect(),
        name_of: obs
            .links
            .iter()
            .map(|l| (l.index, l.name.clone()))
            .collect(),
        fresh: BTreeSet::new(),
        gone: BTreeSet::new(),
        renamed: BTreeSet::new(),
    };
    p.renames();
    // Links that others stack on first, so that a VLAN knows whether its parent is
    // re-created under it.
    let (vlans, others): (Vec<&Link>, Vec<&Link>) = desired
        .links
        .iter()
        .partition(|l| matches!(l.kind, LinkKind::Vlan | LinkKind::Xfrm));
    for l in others.into_iter().chain(vlans) {
        p.link_existence(l);
    }
    p.removed_links();
    p.ledger_links();
    for l in &desired.links {
        p.link_settings(l);
    }
    p.ledger_addresses();
    p.routes();
    p.forwarding();
    if !p.errs.is_empty() {
        return Err(p.errs);
    }
    let mut ops = p.ops;
    ops.sort_by_key(Op::stage); // stable: keeps the order within a stage
    Ok(ops)
}

struct Planner<'a> {
    desired: &'a Network,
    in_force: &'a Network,
    ledger: &'a Ledger,
    obs: &'a Observed,
    read: &'a dyn Fn(&str) -> Option<String>,
    ops: Vec<Op>,
    errs: Vec<String>,
    /// Observed links by the name they will have once renames are done.
    view: BTreeMap<String, &'a LinkState>,
    /// Index -> name once renames are done.
    name_of: BTreeMap<u32, String>,
    /// Links created (or re-created) by this plan: no current state.
    fresh: BTreeSet<String>,
    /// Links deleted by this plan and not re-created.
    gone: BTreeSet<String>,
    renamed: BTreeSet<String>,
}

impl<'a> Planner<'a> {
    fn owned(&self, name: &str) -> bool {
        self.desired.interface_names().contains(name)
            || self.in_force.interface_names().contains(name)
            || self.ledger.links.contains_key(name)
    }

    /// Whether `addr` on `link` is the agent's to remove when no longer desired.
    fn address_was_ours(&self, link: &str, addr: &Prefix) -> bool {
        self.in_force
            .link(link)
            .is_some_and(|l| l.addresses.contains(addr))
            || self.ledger.addresses.contains(&(link.to_string(), *addr))
    }

    /// Current state of a link that survives this plan (not created, not deleted).
    fn current(&self, name: &str) -> Option<&'a LinkState> {
        if self.fresh.contains(name) || self.gone.contains(name) {
            None
        } else {
            self.view.get(name).copied()
        }
    }

    fn index_name(&self, index: u32) -> Option<&str> {
        self.name_of.get(&index).map(String::as_str)
    }

    /// Physical links declared with a MAC: find them, rename them to their name.
    fn renames(&mut self) {
        for d in self
            .desired
            .links
            .iter()
            .filter(|l| l.kind == LinkKind::Physical)
        {
            let Some(mac) = d.mac else { continue };
            let found: Vec<&LinkState> =
                self.obs.links.iter().filter(|l| owns_mac(l, mac)).collect();
            let l = match found.as_slice() {
                [] => {
                    self.errs.push(format!("{}: no link has MAC {mac}", d.name));
                    continue;
                }
                [l] => *l,
                many => {
                    let names: Vec<&str> = many.iter().map(|l| l.name.as_str()).collect();
                    self.errs.push(format!(
                        "{}: MAC {mac} is on several links: {}",
                        d.name,
                        names.join(", ")
                    ));
                    continue;
                }
            };
            if l.name == d.name {
                continue;
            }
            if self.view.contains_key(&d.name) {
                self.errs.push(format!(
                    "{}: cannot rename {} (MAC {mac}) to {}: the name is taken",
                    d.name, l.name, d.name
                ));
                continue;
            }
            if l.up {
                self.ops.push(Op::Down {
                    link: l.name.clone(),
                    why: DownFor::Rename,
                });
            }
            self.ops.push(Op::Rename {
                from: l.name.clone(),
                to: d.name.clone(),
            });
            self.view.remove(&l.name);
            self.view.insert(d.name.clone(), l);
            self.name_of.insert(l.index, d.name.clone());
            self.renamed.insert(d.name.clone());
        }
    }

    /// Create what is missing, re-create what has the wrong kind or fixed attributes.
    fn link_existence(&mut self, d: &Link) {
        let name = d.name.as_str();
        if self.fresh.contains(name) {
            return; // the far end of a veth pair created just before
        }
        let observed = self.view.get(name).copied();
        let spec = match d.kind {
            LinkKind::Physical => {
                if observed.is_none()
                    && !self
                        .errs
                        .iter()
                        .any(|e| e.starts_with(&format!("{name}: ")))
                {
                    self.errs.push(format!(
                        "{name}: does not exist (a physical link is never created; check its name or MAC)"
                    ));
                }
                return;
            }
            // A bridge gets the MAC the document declares, else the one it had when the
            // agent last deleted it (a revert re-creates it as it was under the
            // generation restored), else whatever the kernel picks.
            LinkKind::Bridge => NewLink::Bridge {
                vlan_filtering: d.vlan_filtering,
                mac: d.mac.or_else(|| self.ledger.macs.get(name).copied()),
            },
            LinkKind::Bond => match d.mode {
                Some(mode) => NewLink::Bond { mode },
                None => return, // refused by validation
            },
            LinkKind::Veth => match &d.peer {
                Some(peer) => NewLink::Veth { peer: peer.clone() },
                None => return,
            },
            LinkKind::Vlan => match (&d.parent, d.id.and_then(|i| u16::try_from(i).ok())) {
                (Some(parent), Some(id)) => NewLink::Vlan {
                    parent: parent.clone(),
                    id,
                },
                _ => return,
            },
            LinkKind::Xfrm => match (&d.parent, d.if_id) {
                (Some(parent), Some(if_id)) => NewLink::Xfrm {
                    parent: parent.clone(),
                    if_id,
                },
                _ => return,
            },
            LinkKind::Wireguard => NewLink::Wireguard,
        };
        let kind = d.kind.kernel_kind().unwrap_or("link");
        let create = match observed {
            None => true,
            Some(o) => {
                let same = o.kind.as_deref() == Some(kind)
                    && match &spec {
                        NewLink::Bridge { .. } | NewLink::Wireguard => true,
                        NewLink::Bond { mode } => o.bond_mode == Some(*mode),
                        NewLink::Veth { peer } => {
                            !o.link_elsewhere
                                && o.link.and_then(|i| self.index_name(i)) == Some(peer.as_str())
                        }
                        NewLink::Vlan { parent, id } => {
                            o.vlan_id == Some(*id)
                                && o.link.and_then(|i| self.index_name(i)) == Some(parent.as_str())
                                // The kernel deletes a VLAN with its parent.
                                && !self.fresh.contains(parent.as_str())
                        }
                        NewLink::Xfrm { parent, if_id } => {
                            o.xfrm_if_id == Some(*if_id)
                                && o.xfrm_link.and_then(|i| self.index_name(i))
                                    == Some(parent.as_str())
                                // A re-created parent has a new index.
                                && !self.fresh.contains(parent.as_str())
                        }
                    };
                if same {
                    false
                } else if o.kind.is_none() {
                    self.errs.push(format!(
                        "{name}: exists as a hardware link, cannot become a {kind}"
                    ));
                    return;
                } else {
                    let parent_recreated = matches!(&spec, NewLink::Vlan { parent, .. } if self.fresh.contains(parent.as_str()))
                        && o.kind.as_deref() == Some("vlan");
                    if !parent_recreated {
                        let old = o.kind.clone().unwrap_or_default();
                        self.ops.push(Op::DelLink {
                            name: name.to_string(),
                            kind: leak_kind(&old),
                            mac: bridge_mac(o),
                        });
                    }
                    true
                }
            }
        };
        if !create {
            return;
        }
        if let NewLink::Veth { peer } = &spec {
            if let Some(p) = self.view.get(peer.as_str())
                && !self.owned(peer)
            {
                self.errs.push(format!(
                    "{name}: cannot create veth pair: {peer} exists and is not ours ({})",
                    p.kind.as_deref().unwrap_or("hardware")
                ));
                return;
            }
            self.fresh.insert(peer.clone());
            // An undeclared far end is ours too (created with the pair): up, so that
            // the declared end gets a carrier. Declare it to manage it further.
            if self.desired.link(peer).is_none() {
                self.ops.push(Op::SetUp {
                    link: peer.clone(),
                    up: true,
                });
            }
        }
        self.fresh.insert(name.to_string());
        self.ops.push(Op::Create {
            name: name.to_string(),
            spec,
        });
    }

    /// Virtual links the generation in force created and the desired one drops are
    /// deleted; physical ones lose what was configured on them.
    fn removed_links(&mut self) {
        let wanted = self.desired.interface_names();
        for f in &self.in_force.links {
            let name = f.name.as_str();
            if wanted.contains(name) {
                continue;
            }
            let Some(o) = self.current(name) else {
                continue;
            };
            if f.kind.is_virtual() {
                // Someone replaced it with another kind: then it is not what we made.
                if o.kind.as_deref() == f.kind.kernel_kind() {
                    self.ops.push(Op::DelLink {
                        name: name.to_string(),
                        kind: leak_kind(f.kind.kernel_kind().unwrap_or("link")),
                        mac: bridge_mac(o),
                    });
                    self.gone.insert(name.to_string());
                    if let Some(peer) = &f.peer {
                        self.gone.insert(peer.clone());
                    }
                }
                continue;
            }
            for a in self.obs.addrs.iter().filter(|a| a.index == o.index) {
                if self.address_was_ours(name, &a.addr) {
                    self.ops.push(Op::DelAddress {
                        link: name.to_string(),
                        addr: a.addr,
                    });
                }
            }
            if let Some(m) = o.master.and_then(|i| self.index_name(i))
                && self.owned(m)
            {
                self.ops.push(Op::Release {
                    link: name.to_string(),
                });
            }
            self.reset_sysctls(name, f, None);
        }
    }

    /// Links the agent created that no document declares (a failed generation's,
    /// which its revert could not remove): deleted, if they still are what was made.
    fn ledger_links(&mut self) {
        let wanted = self.desired.interface_names();
        let declared_before = self.in_force.interface_names();
        for (name, kind) in &self.ledger.links {
            let name = name.as_str();
            if wanted.contains(name) || declared_before.contains(name) {
                continue;
            }
            let Some(o) = self.current(name) else {
                continue;
            };
            if o.kind.as_deref() != Some(kind.as_str()) {
                continue; // someone else's now
            }
            self.ops.push(Op::DelLink {
                name: name.to_string(),
                kind: leak_kind(kind),
                mac: bridge_mac(o),
            });
            self.gone.insert(name.to_string());
            // The far end of a veth pair goes with it.
            if kind == "veth"
                && !o.link_elsewhere
                && let Some(peer) = o.link.and_then(|i| self.index_name(i))
            {
                let peer = peer.to_string();
                self.gone.insert(peer);
            }
        }
    }

    /// Addresses the agent added on links that no document declares any more.
    fn ledger_addresses(&mut self) {
        for (link, addr) in &self.ledger.addresses {
            if self.desired.link(link).is_some() || self.in_force.link(link).is_some() {
                continue; // handled with the link
            }
            let Some(o) = self.current(link) else {
                continue;
            };
            if self
                .obs
                .addrs
                .iter()
                .any(|a| a.index == o.index && a.addr == *addr)
            {
                self.ops.push(Op::DelAddress {
                    link: link.clone(),
                    addr: *addr,
                });
            }
        }
    }

    fn link_settings(&mut self, d: &Link) {
        let name = d.name.as_str();
        let fresh = self.fresh.contains(name);
        let cur = self.current(name);
        if cur.is_none() && !fresh {
            return; // a missing physical link: already an error
        }
        if let Some(mtu) = d.mtu
            && cur.and_then(|c| c.mtu) != Some(mtu)
        {
            self.ops.push(Op::SetMtu {
                link: name.to_string(),
                mtu,
            });
        }
        if d.kind == LinkKind::Bridge
            && let (Some(mac), Some(c)) = (d.mac, cur)
            && c.mac != Some(mac)
        {
            self.ops.push(Op::SetMac {
                link: name.to_string(),
                mac,
            });
        }
        if let (Some(on), Some(c)) = (d.vlan_filtering, cur)
            && c.vlan_filtering != Some(on)
        {
            self.ops.push(Op::SetVlanFiltering {
                link: name.to_string(),
                on,
            });
        }
        // Master.
        let masters = self.desired.masters();
        let want = masters.get(name).copied();
        let have = cur
            .and_then(|c| c.master)
            .and_then(|i| self.index_name(i))
            .filter(|m| !self.fresh.contains(*m) && !self.gone.contains(*m));
        let mut forced_down = false;
        match (want, have) {
            (Some(w), h) if h != Some(w) => {
                if self
                    .desired
                    .link(w)
                    .is_some_and(|m| m.kind == LinkKind::Bond)
                    && cur.is_none_or(|c| c.up)
                {
                    self.ops.push(Op::Down {
                        link: name.to_string(),
                        why: DownFor::Enslave,
                    });
                    forced_down = true;
                }
                self.ops.push(Op::SetMaster {
                    link: name.to_string(),
                    master: w.to_string(),
                });
            }
            (None, Some(h)) if self.owned(h) => self.ops.push(Op::Release {
                link: name.to_string(),
            }),
            _ => {}
        }
        // Sysctls: a link created or renamed in this plan has no file yet to compare.
        let must_write = fresh || self.renamed.contains(name);
        let want_sysctl = |key: String, value: String, ops: &mut Vec<Op>| {
            if must_write || (self.read)(&key).as_deref() != Some(value.as_str()) {
                ops.push(Op::Sysctl {
                    key,
                    value,
                    link: Some(name.to_string()),
                });
            }
        };
        if let Some(rp) = d.rp_filter {
            want_sysctl(rp_filter_key(name), rp.value().to_string(), &mut self.ops);
        }
        if let Some(ra) = d.accept_ra {
            want_sysctl(accept_ra_key(name), u8::from(ra).to_string(), &mut self.ops);
        }
        if let Some(f) = self.in_force.link(name) {
            let f = f.clone();
            self.reset_sysctls(name, &f, Some(d));
        }
        // Addresses.
        let have: Vec<Prefix> = match cur {
            Some(c) => self
                .obs
                .addrs
                .iter()
                .filter(|a| a.index == c.index)
                .map(|a| a.addr)
                .collect(),
            None => Vec::new(),
        };
        for a in &have {
            if !d.addresses.contains(a) && self.address_was_ours(name, a) {
                self.ops.push(Op::DelAddress {
                    link: name.to_string(),
                    addr: *a,
                });
            }
        }
        for a in &d.addresses {
            if !have.contains(a) {
                self.ops.push(Op::AddAddress {
                    link: name.to_string(),
                    addr: *a,
                });
            }
        }
        // Administrative state: created links start down.
        let is_up = match cur {
            Some(c) => c.up && !forced_down && !self.renamed.contains(name),
            None => false,
        };
        if is_up != d.up {
            self.ops.push(Op::SetUp {
                link: name.to_string(),
                up: d.up,
            });
        }
    }

    /// Per-link sysctls the generation in force declared and `now` does not: back to
    /// the kernel's default for new links (`net/*/conf/default/*`).
    fn reset_sysctls(&mut self, name: &str, before: &Link, now: Option<&Link>) {
        let reset = |key: String, default_key: &str, ops: &mut Vec<Op>| {
            let (Some(value), Some(current)) = ((self.read)(default_key), (self.read)(&key)) else {
                return;
            };
            if value != current {
                ops.push(Op::Sysctl {
                    key,
                    value,
                    link: Some(name.to_string()),
                });
            }
        };
        if before.rp_filter.is_some() && now.is_none_or(|n| n.rp_filter.is_none()) {
            reset(
                rp_filter_key(name),
                "net/ipv4/conf/default/rp_filter",
                &mut self.ops,
            );
        }
        if before.accept_ra.is_some() && now.is_none_or(|n| n.accept_ra.is_none()) {
            reset(
                accept_ra_key(name),
                "net/ipv6/conf/default/accept_ra",
                &mut self.ops,
            );
        }
    }

    /// The subnets a gateway may be in: the addresses `dev` (or any link) will have
    /// once the plan is applied.
    fn subnets(&self, dev: Option<&str>) -> Vec<Prefix> {
        let mut out: Vec<Prefix> = self.desired.addresses_of(dev).collect();
        for a in &self.obs.addrs {
            let Some(name) = self.index_name(a.index) else {
                continue;
            };
            if dev.is_some_and(|d| d != name)
                || self.fresh.contains(name)
                || self.gone.contains(name)
            {
                continue;
            }
            let dropped = self
                .in_force
                .link(name)
                .is_some_and(|l| l.addresses.contains(&a.addr))
                && !self
                    .desired
                    .link(name)
                    .is_some_and(|l| l.addresses.contains(&a.addr));
            if !dropped {
                out.push(a.addr);
            }
        }
        out
    }

    fn routes(&mut self) {
        let observed: BTreeMap<RouteKey, _> = self.obs.routes.iter().map(|r| (r.key, r)).collect();
        let mut keys = BTreeSet::new();
        for r in &self.desired.routes {
            let key = r.key();
            keys.insert(key);
            if !gateway_reachable(r, self.subnets(r.dev.as_deref())) {
                let via = r.via.map(|v| v.to_string()).unwrap_or_default();
                let scope = match &r.dev {
                    Some(d) => format!("{d}'s addresses"),
                    None => "any link's addresses".into(),
                };
                self.errs.push(format!(
                    "route {key}: gateway {via} is unreachable (not in a subnet of {scope})"
                ));
                continue;
            }
            let in_sync = observed.get(&key).is_some_and(|o| {
                let oif = o.oif.and_then(|i| self.index_name(i));
                o.gateway == r.via
                    && oif.is_none_or(|n| !self.fresh.contains(n) && !self.gone.contains(n))
                    && r.dev.as_deref().is_none_or(|d| oif == Some(d))
            });
            if !in_sync {
                self.ops.push(Op::AddRoute {
                    key,
                    via: r.via,
                    dev: r.dev.clone(),
                });
            }
        }
        let before = self.in_force.routes.iter().map(|r| r.key());
        let created: Vec<RouteKey> = before.chain(self.ledger.routes.iter().copied()).collect();
        for key in created {
            if !keys.insert(key) {
                continue;
            }
            if let Some(o) = observed.get(&key) {
                let oif = o.oif.and_then(|i| self.index_name(i));
                if oif.is_none_or(|n| !self.gone.contains(n)) {
                    self.ops.push(Op::DelRoute { key });
                }
            }
        }
    }

    fn forwarding(&mut self) {
        let want = match (self.desired.ip_forward, self.in_force.ip_forward) {
            (Some(v), _) => u8::from(v),
            (None, Some(_)) => 0, // the kernel's default
            (None, None) => return,
        };
        for key in [IPV4_FORWARD, IPV6_FORWARD] {
            match (self.read)(key) {
                Some(v) if v == want.to_string() => {}
                None if key == IPV6_FORWARD => {} // IPv6 disabled
                _ => self.ops.push(Op::Sysctl {
                    key: key.into(),
                    value: want.to_string(),
                    link: None,
                }),
            }
        }
    }
}

/// The MAC of a bridge about to be deleted, remembered so that re-creating it gives it
/// back (`None` for other kinds: VLANs and bonds inherit theirs, veths are random).
fn bridge_mac(o: &LinkState) -> Option<MacAddr> {
    o.mac.filter(|_| o.kind.as_deref() == Some("bridge"))
}

/// A link is found by its hardware MAC (`IFLA_PERM_ADDRESS`) when the kernel reports
/// one, else by the MAC it uses: a bond sets its members' MAC to its own, so after
/// enslaving a NIC only the permanent address still names it (and several members
/// then share one current MAC). Links that inherit a MAC (VLANs, bridges, bonds take
/// their parent's or a port's) do not count.
fn owns_mac(l: &LinkState, mac: MacAddr) -> bool {
    l.perm_mac.or(l.mac) == Some(mac)
        && !matches!(
            l.kind.as_deref(),
            Some("vlan" | "bridge" | "bond" | "macvlan")
        )
}

fn leak_kind(kind: &str) -> &'static str {
    match kind {
        "bridge" => "bridge",
        "bond" => "bond",
        "veth" => "veth",
        "vlan" => "vlan",
        "xfrm" => "xfrm",
        "wireguard" => "wireguard",
        _ => "link",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{AddrState, RouteState};
    use std::collections::HashMap;

    fn net(text: &str) -> Network {
        let n: Network = toml::from_str(text).unwrap();
        n.validate().unwrap();
        n
    }

    fn link(index: u32, name: &str, kind: Option<&str>, up: bool) -> LinkState {
        LinkState {
            index,
            name: name.into(),
            kind: kind.map(Into::into),
            up,
            mtu: Some(1500),
            ..LinkState::default()
        }
    }

    fn plan(desired: &str, in_force: &str, obs: &Observed) -> Result<Vec<String>, Vec<String>> {
        let sysctls: HashMap<&str, &str> = [
            ("net/ipv4/ip_forward", "0"),
            ("net/ipv6/conf/all/forwarding", "0"),
            ("net/ipv4/conf/default/rp_filter", "0"),
            ("net/ipv4/conf/eth0/rp_filter", "0"),
        ]
        .into();
        let read = |k: &str| sysctls.get(k).map(|v| v.to_string());
        diff(
            &net(desired),
            &net(in_force),
            obs,
            &read,
            &Ledger::default(),
        )
        .map(|ops| ops.iter().map(ToString::to_string).collect())
    }

    fn base() -> Observed {
        Observed {
            links: vec![
                link(1, "lo", None, true),
                link(2, "eth0", None, true),
                link(3, "vnet0", Some("tun"), true),
            ],
            addrs: vec![AddrState {
                index: 2,
                addr: "192.168.1.10/24".parse().unwrap(),
            }],
            routes: vec![RouteState {
                key: RouteKey {
                    table: 254,
                    dst: Prefix::unspecified_v4(),
                    metric: 0,
                },
                gateway: Some("192.168.1.1".parse().unwrap()),
                oif: Some(2),
            }],
        }
    }

    const VLAN: &str = "ip_forward = true\n[[links]]\nname = \"eth0\"\nrp_filter = \"loose\"\n[[links]]\nname = \"vlan101\"\nkind = \"vlan\"\nparent = \"eth0\"\nid = 101\naddresses = [\"10.0.101.1/24\"]\n[[routes]]\nto = \"10.9.0.0/16\"\nvia = \"10.0.101.254\"\n";

    #[test]
    fn creates_in_dependency_order() {
        let got = plan(VLAN, "", &base()).unwrap();
        assert_eq!(
            got,
            [
                "create vlan vlan101 (id 101 on eth0)",
                "set net.ipv4.conf.eth0.rp_filter = 2",
                "add address 10.0.101.1/24 to vlan101",
                "set vlan101 up",
                "set route 10.9.0.0/16 via 10.0.101.254",
                "set net.ipv4.ip_forward = 1",
                "set net.ipv6.conf.all.forwarding = 1",
            ]
        );
    }

    #[test]
    fn converged_state_plans_nothing_and_foreign_objects_are_ignored() {
        let mut obs = base();
        obs.links.push(LinkState {
            link: Some(2),
            vlan_id: Some(101),
            ..link(10, "vlan101", Some("vlan"), true)
        });
        obs.addrs.push(AddrState {
            index: 10,
            addr: "10.0.101.1/24".parse().unwrap(),
        });
        obs.routes.push(RouteState {
            key: RouteKey {
                table: 254,
                dst: "10.9.0.0/16".parse().unwrap(),
                metric: 0,
            },
            gateway: Some("10.0.101.254".parse().unwrap()),
            oif: Some(10),
        });
        let read = |k: &str| {
            Some(
                if k.contains("rp_filter") && k.contains("eth0") {
                    "2"
                } else {
                    "1"
                }
                .to_string(),
            )
        };
        let ops = diff(&net(VLAN), &net(VLAN), &obs, &read, &Ledger::default()).unwrap();
        assert!(ops.is_empty(), "{ops:?}");
    }

    #[test]
    fn removal_touches_only_what_the_previous_generation_declared() {
        let mut obs = base();
        obs.links.push(LinkState {
            link: Some(2),
            vlan_id: Some(101),
            ..link(10, "vlan101", Some("vlan"), true)
        });
        obs.addrs.push(AddrState {
            index: 2,
            addr: "10.5.0.1/24".parse().unwrap(),
        });
        obs.routes.push(RouteState {
            key: RouteKey {
                table: 254,
                dst: "10.9.0.0/16".parse().unwrap(),
                metric: 0,
            },
            gateway: Some("10.0.101.254".parse().unwrap()),
            oif: Some(10),
        });
        let before = format!("{VLAN}[[links]]\nname = \"br-old\"\nkind = \"bridge\"\n");
        obs.links.push(link(11, "br-old", Some("bridge"), true));
        // eth0 keeps 192.168.1.10 and 10.5.0.1 (not ours); vlan101 goes away, and
        // the kernel takes its route with it; the foreign vnet0 stays; ip_forward
        // returns to the default 0 (it is 0 already).
        let now = "[[links]]\nname = \"eth0\"\n";
        let got = plan(now, &before, &obs).unwrap();
        assert_eq!(got, ["delete vlan vlan101", "delete bridge br-old"]);
        // Same, but the route goes through a link that stays: it is deleted.
        obs.routes[1].oif = Some(2);
        let got = plan(now, &before, &obs).unwrap();
        assert_eq!(got[0], "delete route 10.9.0.0/16");
    }

    #[test]
    fn wrong_fixed_attributes_mean_recreation() {
        let mut obs = base();
        obs.links.push(LinkState {
            link: Some(2),
            vlan_id: Some(7),
            ..link(10, "vlan101", Some("vlan"), true)
        });
        let got = plan(VLAN, VLAN, &obs).unwrap();
        assert_eq!(
            &got[..2],
            [
                "delete vlan vlan101",
                "create vlan vlan101 (id 101 on eth0)"
            ]
        );
    }

    const XFRM: &str = "[[links]]\nname = \"eth0\"\n[[links]]\nname = \"xfrm-1\"\nkind = \"xfrm\"\nparent = \"eth0\"\nif_id = 1\nmtu = 1300\n[[routes]]\nto = \"172.16.0.0/16\"\ndev = \"xfrm-1\"\n";

    const WG: &str = "[[links]]\nname = \"eth0\"\n[[links]]\nname = \"wg0\"\nkind = \"wireguard\"\naddresses = [\"10.200.0.1/30\"]\n";

    /// A WireGuard link is made bare (its key and peers are the wireguard
    /// reconciler's), kept as the kernel shows it, deleted when the document drops it.
    #[test]
    fn wireguard_links_are_created_kept_and_deleted() {
        let got = plan(WG, "", &base()).unwrap();
        assert_eq!(
            got,
            [
                "create wireguard wg0",
                "add address 10.200.0.1/30 to wg0",
                "set wg0 up",
            ]
        );
        let mut obs = base();
        obs.links.push(link(11, "wg0", Some("wireguard"), true));
        obs.addrs.push(AddrState {
            index: 11,
            addr: "10.200.0.1/30".parse().unwrap(),
        });
        assert_eq!(plan(WG, WG, &obs).unwrap(), Vec::<String>::new());
        let none = "[[links]]\nname = \"eth0\"\n";
        assert_eq!(plan(none, WG, &obs).unwrap(), ["delete wireguard wg0"]);
    }

    #[test]
    fn xfrm_interfaces_are_created_on_their_parent_and_kept_or_recreated() {
        let got = plan(XFRM, "", &base()).unwrap();
        assert_eq!(
            got,
            [
                "create xfrm xfrm-1 (if_id 1 on eth0)",
                "set mtu of xfrm-1 to 1300",
                "set xfrm-1 up",
                "set route 172.16.0.0/16 dev xfrm-1",
            ]
        );
        // As the kernel shows it once made: nothing to do.
        let mut obs = base();
        let made = LinkState {
            xfrm_if_id: Some(1),
            xfrm_link: Some(2),
            mtu: Some(1300),
            ..link(11, "xfrm-1", Some("xfrm"), true)
        };
        obs.links.push(made.clone());
        obs.routes.push(RouteState {
            key: RouteKey {
                table: 254,
                dst: "172.16.0.0/16".parse().unwrap(),
                metric: 0,
            },
            gateway: None,
            oif: Some(11),
        });
        assert_eq!(plan(XFRM, XFRM, &obs).unwrap(), Vec::<String>::new());
        // Another if_id: the SAs would not match it: re-created.
        obs.links.pop();
        obs.links.push(LinkState {
            xfrm_if_id: Some(7),
            ..made
        });
        let got = plan(XFRM, XFRM, &obs).unwrap();
        assert_eq!(
            &got[..2],
            ["delete xfrm xfrm-1", "create xfrm xfrm-1 (if_id 1 on eth0)"]
        );
    }

    #[test]
    fn bond_members_go_down_before_enslaving() {
        let text = "[[links]]\nname = \"eth0\"\n[[links]]\nname = \"bond0\"\nkind = \"bond\"\nmode = \"active-backup\"\nmembers = [\"eth0\"]\n";
        let got = plan(text, "", &base()).unwrap();
        assert_eq!(
            got,
            [
                "create bond bond0 (mode active-backup)",
                "set eth0 down (to enslave it)",
                "attach eth0 to bond0",
                "set eth0 up",
                "set bond0 up",
            ]
        );
    }

    #[test]
    fn system_dependent_errors() {
        let e = plan("[[links]]\nname = \"eth9\"\n", "", &base()).unwrap_err();
        assert_eq!(
            e,
            ["eth9: does not exist (a physical link is never created; check its name or MAC)"]
        );
        let e = plan("[[links]]\nname = \"eth0\"\n[[routes]]\nto = \"default\"\nvia = \"10.7.7.7\"\ndev = \"eth0\"\n", "", &base()).unwrap_err();
        assert_eq!(
            e,
            [
                "route default: gateway 10.7.7.7 is unreachable (not in a subnet of eth0's addresses)"
            ]
        );
        // A gateway reachable through an address someone else configured is fine.
        assert!(plan("[[links]]\nname = \"eth0\"\n[[routes]]\nto = \"10.8.0.0/16\"\nvia = \"192.168.1.7\"\n", "", &base()).is_ok());
        let e = plan(
            "[[links]]\nname = \"vnet0\"\nkind = \"bridge\"\n",
            "",
            &base(),
        );
        assert_eq!(
            e.unwrap(),
            ["delete link vnet0", "create bridge vnet0", "set vnet0 up"]
        );
        let e = plan(
            "[[links]]\nname = \"eth0\"\nkind = \"bridge\"\n",
            "",
            &base(),
        )
        .unwrap_err();
        assert_eq!(
            e,
            ["eth0: exists as a hardware link, cannot become a bridge"]
        );
    }

    #[test]
    fn undeclared_veth_peer_is_brought_up() {
        let got = plan(
            "[[links]]\nname = \"ve0\"\nkind = \"veth\"\npeer = \"ve1\"\n",
            "",
            &base(),
        )
        .unwrap();
        assert_eq!(
            got,
            ["create veth pair ve0 <-> ve1", "set ve1 up", "set ve0 up"]
        );
    }

    #[test]
    fn renames_by_mac() {
        let mut obs = base();
        obs.links[1].mac = Some("52:54:00:00:00:01".parse().unwrap());
        let got = plan(
            "[[links]]\nname = \"wan\"\nmac = \"52:54:00:00:00:01\"\n",
            "",
            &obs,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "set eth0 down (to rename it)",
                "rename eth0 to wan",
                "set wan up"
            ]
        );
        let e = plan(
            "[[links]]\nname = \"wan\"\nmac = \"52:54:00:00:00:09\"\n",
            "",
            &obs,
        )
        .unwrap_err();
        assert_eq!(e, ["wan: no link has MAC 52:54:00:00:00:09"]);
    }

    fn plan_with(
        desired: &str,
        in_force: &str,
        obs: &Observed,
        ledger: &Ledger,
    ) -> Result<Vec<String>, Vec<String>> {
        let read = |_: &str| None;
        diff(&net(desired), &net(in_force), obs, &read, ledger)
            .map(|ops| ops.iter().map(ToString::to_string).collect())
    }

    /// What the ledger says the agent created is removed when no document declares
    /// it; the same objects unrecorded are foreign and stay.
    #[test]
    fn ledger_objects_are_owned() {
        let mut obs = base();
        obs.links.push(link(10, "brx", Some("bridge"), true));
        obs.links.push(LinkState {
            link: Some(12),
            ..link(11, "vx0", Some("veth"), true)
        });
        obs.links.push(LinkState {
            link: Some(11),
            ..link(12, "vx1", Some("veth"), true)
        });
        obs.addrs.push(AddrState {
            index: 2,
            addr: "10.5.0.1/24".parse().unwrap(),
        });
        let key = RouteKey {
            table: 254,
            dst: "10.9.0.0/16".parse().unwrap(),
            metric: 0,
        };
        obs.routes.push(RouteState {
            key,
            gateway: Some("192.168.1.1".parse().unwrap()),
            oif: Some(2),
        });
        let mut ledger = Ledger::default();
        assert_eq!(
            plan_with("", "", &obs, &ledger).unwrap(),
            Vec::<String>::new()
        );
        ledger.links.insert("brx".into(), "bridge".into());
        ledger.links.insert("vx0".into(), "veth".into());
        ledger.links.insert("vx1".into(), "veth".into());
        ledger
            .addresses
            .insert(("eth0".into(), "10.5.0.1/24".parse().unwrap()));
        ledger.routes.insert(key);
        assert_eq!(
            plan_with("", "", &obs, &ledger).unwrap(),
            [
                "delete route 10.9.0.0/16",
                "delete address 10.5.0.1/24 from eth0",
                "delete bridge brx",
                "delete veth vx0",
            ]
        );
        // Declared physical eth0: its recorded address goes too, the others stay.
        let got = plan_with("[[links]]\nname = \"eth0\"\n", "", &obs, &ledger).unwrap();
        assert!(
            got.contains(&"delete address 10.5.0.1/24 from eth0".to_string()),
            "{got:?}"
        );
        // A recorded name now held by a link of another kind is not ours.
        ledger.links.insert("brx".into(), "vlan".into());
        let got = plan_with("", "", &obs, &ledger).unwrap();
        assert!(!got.contains(&"delete bridge brx".to_string()), "{got:?}");
        let stale = ledger.stale(&obs);
        assert_eq!(stale.links, ["brx"]);
        obs.routes.clear();
        assert_eq!(ledger.stale(&obs).routes, [key]);
    }

    /// A bridge is re-created with the MAC it had when it was deleted, or the one the
    /// document declares; a declared MAC is kept.
    #[test]
    fn bridges_get_their_mac_back() {
        let old: MacAddr = "02:aa:00:00:00:01".parse().unwrap();
        let mut obs = base();
        let mut br = link(10, "br0", Some("bridge"), true);
        br.mac = Some(old);
        obs.links.push(br);
        let bridge = "[[links]]\nname = \"br0\"\nkind = \"bridge\"\n";
        let veth = "[[links]]\nname = \"br0\"\nkind = \"veth\"\npeer = \"br0p\"\n";
        // Deleting a bridge carries its MAC to the ledger.
        let read = |_: &str| None;
        let ops = diff(&net(veth), &net(bridge), &obs, &read, &Ledger::default()).unwrap();
        assert!(ops.contains(&Op::DelLink {
            name: "br0".into(),
            kind: "bridge",
            mac: Some(old),
        }));
        let mut ledger = Ledger::default();
        ledger.record(&ops);
        assert_eq!(ledger.macs.get("br0"), Some(&old));
        // Re-created (here: it is a veth now): with that MAC.
        let mut obs = base();
        obs.links.push(LinkState {
            link: Some(11),
            ..link(10, "br0", Some("veth"), true)
        });
        obs.links.push(LinkState {
            link: Some(10),
            ..link(11, "br0p", Some("veth"), true)
        });
        let got = plan_with(bridge, veth, &obs, &ledger).unwrap();
        assert_eq!(
            &got[..2],
            [
                "delete veth br0",
                "create bridge br0 (mac 02:aa:00:00:00:01)"
            ]
        );
        // Declared: the document's MAC wins, and is set on an existing bridge.
        let declared = format!("{bridge}mac = \"02:bb:00:00:00:02\"\n");
        let got = plan_with(&declared, veth, &obs, &ledger).unwrap();
        assert_eq!(got[1], "create bridge br0 (mac 02:bb:00:00:00:02)");
        let mut obs = base();
        let mut br = link(10, "br0", Some("bridge"), true);
        br.mac = Some(old);
        obs.links.push(br);
        assert_eq!(
            plan_with(&declared, bridge, &obs, &ledger).unwrap(),
            ["set mac of br0 to 02:bb:00:00:00:02"]
        );
        assert_eq!(
            plan_with(bridge, bridge, &obs, &ledger).unwrap(),
            Vec::<String>::new()
        );
    }

    /// Bond members carry the bond's MAC: each is still found by its own (permanent)
    /// one, and a shared current MAC is not "on several links".
    #[test]
    fn finds_bond_members_by_their_permanent_mac() {
        let a: MacAddr = "52:54:00:00:00:0a".parse().unwrap();
        let b: MacAddr = "52:54:00:00:00:0b".parse().unwrap();
        let mut obs = base();
        obs.links[1].mac = Some(a);
        obs.links[1].perm_mac = Some(a);
        let mut eth1 = link(4, "eth1", None, true);
        eth1.mac = Some(a);
        eth1.perm_mac = Some(b);
        eth1.master = Some(5);
        obs.links[1].master = Some(5);
        let mut bond = link(5, "bond0", Some("bond"), true);
        bond.mac = Some(a);
        obs.links.push(eth1);
        obs.links.push(bond);
        let got = plan(
            "[[links]]\nname = \"uplink2\"\nmac = \"52:54:00:00:00:0b\"\n",
            "",
            &obs,
        )
        .unwrap();
        assert!(
            got.contains(&"rename eth1 to uplink2".to_string()),
            "{got:?}"
        );
        let got = plan(
            "[[links]]\nname = \"uplink1\"\nmac = \"52:54:00:00:00:0a\"\n",
            "",
            &obs,
        )
        .unwrap();
        assert!(
            got.contains(&"rename eth0 to uplink1".to_string()),
            "{got:?}"
        );
    }
}
