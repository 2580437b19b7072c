//! The lease engine: what the server answers to each client message (RFC 2131), and the
//! leases it holds. Pure: no sockets, no files, no clock (every call is given `now`, in
//! seconds since the Unix epoch), so every path is unit-tested.
//!
//! Choices (`docs/dhcp.md`):
//! - OFFER: the client's static lease, else the address it had (bound, released or
//!   expired, while no one else took it), else the address it asks for if free, else
//!   the lowest address never leased, else the one whose lease expired longest ago.
//!   No free address: no answer (the client retries; another server may answer).
//! - An offer is held for [`OFFER_HOLD`] seconds and not persisted: a REQUEST for it
//!   after a restart is granted if the address is still free.
//! - REQUEST: SELECTING (server identifier present) is ACKed when the address is the
//!   client's to take, NAKed otherwise, ignored when it names another server;
//!   INIT-REBOOT and RENEWING/REBINDING are ACKed when our record says the address is
//!   the client's, NAKed when it says otherwise (or the address is off the link), and
//!   ignored when we have no record (RFC 2131 4.3.2: the peer of a split pool may
//!   hold it).
//! - DECLINE: the address is quarantined for [`QUARANTINE`] seconds; RELEASE ends the
//!   lease now but keeps the record, so the client gets the same address back.
//! - With `ping_check`, an address the client never had is first probed: the engine
//!   answers [`Reply::Probe`] (the server sends an ICMP echo, the client gets nothing),
//!   and the client's next DISCOVER, [`PROBE_WAIT`] or more later, gets the offer
//!   unless an echo reply came ([`Engine::conflict`]: quarantined, like a decline).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use kowabunga_model::network::MacAddr;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{DhcpConfig, LinkConfig};

/// How long an offered address is kept for the client that was offered it.
pub const OFFER_HOLD: u64 = 60;
/// How long a declined address is not offered again.
pub const QUARANTINE: u64 = 3600;
/// With `ping_check`: how long an ICMP echo sent to a new address waits for an answer
/// before the address may be offered (to the client's next DISCOVER).
pub const PROBE_WAIT: u64 = 1;

/// Who a lease belongs to: the client identifier (option 61) when the client sends one,
/// else hardware type 1 followed by its MAC (RFC 2132 9.14's usual form).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub Vec<u8>);

impl ClientId {
    pub fn from_mac(mac: &MacAddr) -> Self {
        let mut id = vec![1];
        id.extend_from_slice(&mac.0);
        ClientId(id)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for ClientId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(ClientId(Vec::new()));
        }
        text.split(':')
            .map(|b| u8::from_str_radix(b, 16))
            .collect::<Result<Vec<u8>, _>>()
            .map(ClientId)
            .map_err(|_| serde::de::Error::custom(format!("client id {text:?} is not hex pairs")))
    }
}

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Offered, not yet requested (never persisted).
    Offered,
    /// ACKed.
    Bound,
    /// Released by the client: free, but remembered as its address.
    Released,
}

/// One address and who has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub client: ClientId,
    pub mac: MacAddr,
    pub state: LeaseState,
    /// Seconds since the Unix epoch.
    pub expires: u64,
}

impl Lease {
    /// Whether the address is still the client's alone at `now`.
    pub fn active(&self, now: u64) -> bool {
        self.state != LeaseState::Released && self.expires > now
    }
}

/// The leases and quarantined addresses of one link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkLeases {
    /// By address.
    #[serde(default, with = "as_list")]
    pub leases: BTreeMap<Ipv4Addr, Lease>,
    /// Declined address -> end of its quarantine.
    #[serde(default)]
    pub declined: BTreeMap<Ipv4Addr, u64>,
    /// Address probed by an ICMP echo -> for which client, when (not persisted).
    #[serde(skip)]
    pub probes: BTreeMap<Ipv4Addr, (ClientId, u64)>,
}

mod as_list {
    use super::*;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<Ipv4Addr, Lease>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values().filter(|l| l.state != LeaseState::Offered))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Ipv4Addr, Lease>, D::Error> {
        let list = Vec::<Lease>::deserialize(d)?;
        Ok(list.into_iter().map(|l| (l.address, l)).collect())
    }
}

/// Every link's leases: what the store persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leases {
    #[serde(default)]
    pub links: BTreeMap<String, LinkLeases>,
}

/// The kind of client message, from option 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discover,
    Request,
    Decline,
    Release,
    Inform,
}

/// A client message, as the engine needs it (decoded by the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    pub client: ClientId,
    pub mac: MacAddr,
    /// `ciaddr`.
    pub ciaddr: Ipv4Addr,
    /// Option 50.
    pub requested: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
}

/// An address given, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub address: Ipv4Addr,
    pub lease_time: u32,
}

/// What to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Grant),
    Ack(Grant),
    /// DHCPACK to a DHCPINFORM: options only, no address, no lease time.
    InformAck,
    /// DHCPNAK, with the reason (sent as option 56).
    Nak(String),
    /// No answer yet: send an ICMP echo to this address (ping check).
    Probe(Ipv4Addr),
    /// No answer, and why (for the debug log).
    Silent(&'static str),
}

/// What one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub reply: Reply,
    /// Whether a persisted lease changed: the store must be written before replying.
    pub changed: bool,
}

impl Outcome {
    fn silent(why: &'static str) -> Self {
        Outcome {
            reply: Reply::Silent(why),
            changed: false,
        }
    }

    fn nak(why: impl Into<String>) -> Self {
        Outcome {
            reply: Reply::Nak(why.into()),
            changed: false,
        }
    }
}

/// The leases of every served link under the configuration in force.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    config: DhcpConfig,
    leases: Leases,
}

impl Engine {
    /// An engine serving `config`, starting from the `leases` a store kept (those that
    /// no longer fit are dropped, see [`reconfigure`](Self::reconfigure)).
    pub fn new(config: DhcpConfig, leases: Leases) -> Self {
        let mut engine = Engine {
            config: DhcpConfig::default(),
            leases,
        };
        engine.reconfigure(config);
        engine
    }

    pub fn config(&self) -> &DhcpConfig {
        &self.config
    }

    /// The address bound to `mac` at `now`, on any link.
    pub fn bound_address(&self, mac: &MacAddr, now: u64) -> Option<Ipv4Addr> {
        self.leases
            .links
            .values()
            .flat_map(|link| link.leases.values())
            .find(|l| l.mac == *mac && l.state == LeaseState::Bound && l.active(now))
            .map(|l| l.address)
    }

    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Serve `config` from now on. Leases that still fit are kept: their link is still
    /// served, their address is still in its pools or is the static lease of their
    /// MAC. Returns how many were dropped.
    pub fn reconfigure(&mut self, config: DhcpConfig) -> usize {
        let mut dropped = 0;
        let mut kept = BTreeMap::new();
        for (name, mut link) in std::mem::take(&mut self.leases.links) {
            let Some(cfg) = config.links.get(&name) else {
                dropped += link.leases.len();
                continue;
            };
            let before = link.leases.len();
            link.leases.retain(|ip, lease| fits(cfg, *ip, &lease.mac));
            link.declined.retain(|ip, _| cfg.serves(*ip));
            dropped += before - link.leases.len();
            kept.insert(name, link);
        }
        for name in config.links.keys() {
            kept.entry(name.clone()).or_default();
        }
        self.leases.links = kept;
        self.config = config;
        dropped
    }

    /// Forget quarantines that ended and offers no longer held. Returns whether a
    /// persisted record changed.
    pub fn expire(&mut self, now: u64) -> bool {
        let mut changed = false;
        for link in self.leases.links.values_mut() {
            let before = link.declined.len();
            link.declined.retain(|_, until| *until > now);
            changed |= link.declined.len() != before;
            link.leases
                .retain(|_, l| l.state != LeaseState::Offered || l.expires > now);
            link.probes.retain(|_, (_, sent)| *sent + OFFER_HOLD > now);
        }
        changed
    }

    /// An ICMP echo reply came from `ip` on `link`: if we probed it lately and it is
    /// not bound, someone uses it: quarantine it (and drop our offer of it). Returns
    /// whether a persisted record changed.
    pub fn conflict(&mut self, link: &str, ip: Ipv4Addr, now: u64) -> bool {
        let Some(leases) = self.leases.links.get_mut(link) else {
            return false;
        };
        match leases.probes.remove(&ip) {
            Some((_, sent)) if sent + OFFER_HOLD > now => {}
            _ => return false,
        }
        if leases
            .leases
            .get(&ip)
            .is_some_and(|l| l.state == LeaseState::Bound && l.active(now))
        {
            return false;
        }
        leases.leases.remove(&ip);
        leases.declined.insert(ip, now + QUARANTINE);
        true
    }

    /// Answer one message received on `link`.
    pub fn handle(&mut self, link: &str, req: &Request, now: u64) -> Outcome {
        let Some(cfg) = self.config.links.get(link) else {
            return Outcome::silent("link not served");
        };
        let leases = self.leases.links.entry(link.to_owned()).or_default();
        match req.kind {
            Kind::Discover => discover(cfg, leases, req, now),
            Kind::Request => request(cfg, leases, req, now),
            Kind::Decline => decline(cfg, leases, req, now),
            Kind::Release => release(cfg, leases, req, now),
            Kind::Inform => Outcome {
                reply: Reply::InformAck,
                changed: false,
            },
        }
    }
}

/// Whether a lease of `mac` on `ip` is still valid under `cfg`.
fn fits(cfg: &LinkConfig, ip: Ipv4Addr, mac: &MacAddr) -> bool {
    match cfg.reserved_for(ip) {
        Some(owner) => owner == *mac,
        None => cfg.in_pool(ip),
    }
}

/// Whether `ip` may be given to `client` at `now` (it is on the link's pools or its
/// static lease, not quarantined, and no one else holds it).
fn available(cfg: &LinkConfig, leases: &LinkLeases, ip: Ipv4Addr, req: &Request, now: u64) -> bool {
    if !fits(cfg, ip, &req.mac) {
        return false;
    }
    // A client with a static lease gets that address and no other.
    if cfg.host(&req.mac).is_some_and(|own| own != ip) {
        return false;
    }
    if leases.declined.get(&ip).is_some_and(|until| *until > now) {
        return false;
    }
    if probed_for_another(leases, ip, req, now) {
        return false;
    }
    match leases.leases.get(&ip) {
        None => true,
        Some(l) => l.client == req.client || !l.active(now),
    }
}

/// Whether `ip` is being probed for another client.
fn probed_for_another(leases: &LinkLeases, ip: Ipv4Addr, req: &Request, now: u64) -> bool {
    leases
        .probes
        .get(&ip)
        .is_some_and(|(client, sent)| *client != req.client && *sent + OFFER_HOLD > now)
}

/// The address recorded for `client`, if any.
fn address_of(leases: &LinkLeases, client: &ClientId) -> Option<Ipv4Addr> {
    leases
        .leases
        .values()
        .find(|l| l.client == *client)
        .map(|l| l.address)
}

fn discover(cfg: &LinkConfig, leases: &mut LinkLeases, req: &Request, now: u64) -> Outcome {
    // The client's own address (static or known) is offered at once.
    let known = cfg.host(&req.mac).or_else(|| {
        address_of(leases, &req.client).filter(|ip| available(cfg, leases, *ip, req, now))
    });
    let choice = known
        .or_else(|| {
            req.requested
                .filter(|ip| cfg.in_pool(*ip) && available(cfg, leases, *ip, req, now))
        })
        .or_else(|| lowest_free(cfg, leases, req, now));
    let Some(address) = choice else {
        return Outcome::silent("no free address in the pools");
    };
    if cfg.ping_check && known.is_none() {
        match leases.probes.get(&address) {
            Some((client, sent)) if *client == req.client && *sent + OFFER_HOLD > now => {
                if now < *sent + PROBE_WAIT {
                    return Outcome::silent("ping check under way");
                }
                // No one answered: offer it.
            }
            _ => {
                leases.probes.insert(address, (req.client.clone(), now));
                return Outcome {
                    reply: Reply::Probe(address),
                    changed: false,
                };
            }
        }
    }
    // The client's record moves to the offered address (one record per client).
    let existing = leases.leases.get(&address).cloned();
    let mut changed = drop_other_records(leases, &req.client, address);
    match existing {
        // Its own bound lease: offering it again changes nothing.
        Some(l) if l.client == req.client && l.active(now) => {}
        _ => {
            changed |= existing.is_some_and(|l| l.state != LeaseState::Offered);
            leases.leases.insert(
                address,
                Lease {
                    address,
                    client: req.client.clone(),
                    mac: req.mac,
                    state: LeaseState::Offered,
                    expires: now + OFFER_HOLD,
                },
            );
        }
    }
    Outcome {
        reply: Reply::Offer(Grant {
            address,
            lease_time: cfg.lease_time,
        }),
        changed,
    }
}

/// Remove `client`'s records other than the one on `keep`; whether a persisted one went.
fn drop_other_records(leases: &mut LinkLeases, client: &ClientId, keep: Ipv4Addr) -> bool {
    let mut changed = false;
    leases.leases.retain(|ip, l| {
        let drop = l.client == *client && *ip != keep;
        changed |= drop && l.state != LeaseState::Offered;
        !drop
    });
    changed
}

/// The lowest pool address never leased, else the one whose lease ended first.
fn lowest_free(cfg: &LinkConfig, leases: &LinkLeases, req: &Request, now: u64) -> Option<Ipv4Addr> {
    let mut oldest: Option<(u64, Ipv4Addr)> = None;
    for pool in &cfg.pools {
        for ip in pool.iter() {
            if leases.declined.get(&ip).is_some_and(|until| *until > now)
                || probed_for_another(leases, ip, req, now)
            {
                continue;
            }
            match leases.leases.get(&ip) {
                None => return Some(ip),
                Some(l) if !l.active(now) && l.client != req.client => {
                    let ended = if l.state == LeaseState::Released {
                        0
                    } else {
                        l.expires
                    };
                    if oldest.is_none_or(|(t, _)| ended < t) {
                        oldest = Some((ended, ip));
                    }
                }
                Some(_) => {}
            }
        }
    }
    oldest.map(|(_, ip)| ip)
}

fn bind(
    cfg: &LinkConfig,
    leases: &mut LinkLeases,
    req: &Request,
    ip: Ipv4Addr,
    now: u64,
) -> Outcome {
    drop_other_records(leases, &req.client, ip);
    leases.leases.insert(
        ip,
        Lease {
            address: ip,
            client: req.client.clone(),
            mac: req.mac,
            state: LeaseState::Bound,
            expires: now + u64::from(cfg.lease_time),
        },
    );
    Outcome {
        reply: Reply::Ack(Grant {
            address: ip,
            lease_time: cfg.lease_time,
        }),
        changed: true,
    }
}

fn request(cfg: &LinkConfig, leases: &mut LinkLeases, req: &Request, now: u64) -> Outcome {
    if let Some(server_id) = req.server_id {
        // SELECTING.
        if server_id != cfg.server {
            // The client took another server's offer: free ours.
            leases
                .leases
                .retain(|_, l| !(l.client == req.client && l.state == LeaseState::Offered));
            return Outcome::silent("the client chose another server");
        }
        let Some(ip) = req.requested else {
            return Outcome::silent("SELECTING without a requested address");
        };
        if available(cfg, leases, ip, req, now) {
            return bind(cfg, leases, req, ip, now);
        }
        return Outcome::nak(format!("{ip} is not available"));
    }
    // INIT-REBOOT (requested address, no ciaddr) or RENEWING/REBINDING (ciaddr).
    let (ip, reboot) = match (req.requested, req.ciaddr) {
        (Some(ip), c) if c.is_unspecified() => (ip, true),
        (_, c) if !c.is_unspecified() => (c, false),
        _ => return Outcome::silent("REQUEST without an address"),
    };
    if !cfg.subnet.contains(&ip) {
        if reboot {
            return Outcome::nak(format!("{ip} is not on this network"));
        }
        return Outcome::silent("renewal of an address off this link");
    }
    if let Some(stat) = cfg.host(&req.mac) {
        return if stat == ip {
            bind(cfg, leases, req, ip, now)
        } else {
            Outcome::nak(format!("{ip} is not this client's address"))
        };
    }
    match leases.leases.get(&ip) {
        Some(l) if l.client == req.client => {
            if fits(cfg, ip, &req.mac) && available(cfg, leases, ip, req, now) {
                bind(cfg, leases, req, ip, now)
            } else {
                Outcome::nak(format!("{ip} is no longer served"))
            }
        }
        Some(l) if l.active(now) => Outcome::nak(format!("{ip} is leased to another client")),
        _ => match address_of(leases, &req.client) {
            // We know the client under another address.
            Some(other) if other != ip => {
                Outcome::nak(format!("{ip} is not this client's address"))
            }
            _ => Outcome::silent("no record of this client"),
        },
    }
}

fn decline(cfg: &LinkConfig, leases: &mut LinkLeases, req: &Request, now: u64) -> Outcome {
    if req.server_id.is_some_and(|id| id != cfg.server) {
        return Outcome::silent("DECLINE for another server");
    }
    let Some(ip) = req.requested else {
        return Outcome::silent("DECLINE without an address");
    };
    match leases.leases.get(&ip) {
        Some(l) if l.client == req.client => {
            leases.leases.remove(&ip);
            leases.declined.insert(ip, now + QUARANTINE);
            Outcome {
                reply: Reply::Silent("address declined, quarantined"),
                changed: true,
            }
        }
        _ => Outcome::silent("DECLINE of an address not leased to this client"),
    }
}

fn release(cfg: &LinkConfig, leases: &mut LinkLeases, req: &Request, now: u64) -> Outcome {
    if req.server_id.is_some_and(|id| id != cfg.server) {
        return Outcome::silent("RELEASE for another server");
    }
    match leases.leases.get_mut(&req.ciaddr) {
        Some(l) if l.client == req.client && l.state == LeaseState::Bound => {
            l.state = LeaseState::Released;
            l.expires = now;
            Outcome {
                reply: Reply::Silent("released"),
                changed: true,
            }
        }
        _ => Outcome::silent("RELEASE of an address not leased to this client"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::{self, DhcpSection};
    use kowabunga_model::network::Network;

    const T0: u64 = 1_800_000_000;

    fn config(pool: (&str, &str), hosts: &str) -> DhcpConfig {
        let net: Network =
            toml::from_str("[[links]]\nname = \"eth1\"\naddresses = [\"10.0.0.1/24\"]\n").unwrap();
        let section: DhcpSection = toml::from_str(&format!(
            "ping_check = false\n[links.eth1]\nlease_time = 600\npools = [{{ first = \"{}\", last = \"{}\" }}]\nhosts = [{hosts}]\n",
            pool.0, pool.1
        ))
        .unwrap();
        model::compile(&section, &net).unwrap()
    }

    fn engine() -> Engine {
        Engine::new(
            config(
                ("10.0.0.10", "10.0.0.12"),
                "{ mac = \"52:54:00:00:00:99\", address = \"10.0.0.99\" }",
            ),
            Leases::default(),
        )
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn msg(kind: Kind, n: u8) -> Request {
        Request {
            kind,
            client: ClientId::from_mac(&mac(n)),
            mac: mac(n),
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: None,
            server_id: None,
        }
    }

    fn discover(n: u8) -> Request {
        msg(Kind::Discover, n)
    }

    fn select(n: u8, address: &str) -> Request {
        Request {
            requested: Some(ip(address)),
            server_id: Some(ip("10.0.0.1")),
            ..msg(Kind::Request, n)
        }
    }

    fn renew(n: u8, address: &str) -> Request {
        Request {
            ciaddr: ip(address),
            ..msg(Kind::Request, n)
        }
    }

    fn reboot(n: u8, address: &str) -> Request {
        Request {
            requested: Some(ip(address)),
            ..msg(Kind::Request, n)
        }
    }

    fn offered(o: &Outcome) -> Ipv4Addr {
        match o.reply {
            Reply::Offer(g) => g.address,
            ref other => panic!("not an offer: {other:?}"),
        }
    }

    fn acked(o: &Outcome) -> Ipv4Addr {
        match o.reply {
            Reply::Ack(g) => {
                assert_eq!(g.lease_time, 600);
                assert!(o.changed);
                g.address
            }
            ref other => panic!("not an ACK: {other:?}"),
        }
    }

    fn is_nak(o: &Outcome) -> bool {
        matches!(o.reply, Reply::Nak(_))
    }

    fn is_silent(o: &Outcome) -> bool {
        matches!(o.reply, Reply::Silent(_))
    }

    /// DISCOVER, then REQUEST of the offer: the bound address.
    fn lease(e: &mut Engine, n: u8, now: u64) -> Ipv4Addr {
        let a = offered(&e.handle("eth1", &discover(n), now));
        acked(&e.handle("eth1", &select(n, &a.to_string()), now))
    }

    #[test]
    fn offer_then_request_binds_lowest_first() {
        let mut e = engine();
        let o = e.handle("eth1", &discover(1), T0);
        assert_eq!(offered(&o), ip("10.0.0.10"));
        assert!(!o.changed, "an offer is not persisted");
        // A second client during the hold gets the next address.
        assert_eq!(
            offered(&e.handle("eth1", &discover(2), T0)),
            ip("10.0.0.11")
        );
        assert_eq!(
            acked(&e.handle("eth1", &select(1, "10.0.0.10"), T0)),
            ip("10.0.0.10")
        );
        let l = &e.leases().links["eth1"].leases[&ip("10.0.0.10")];
        assert_eq!(l.state, LeaseState::Bound);
        assert_eq!(l.expires, T0 + 600);
        // Discovering again while bound offers the same address.
        assert_eq!(
            offered(&e.handle("eth1", &discover(1), T0 + 5)),
            ip("10.0.0.10")
        );
        assert_eq!(
            e.leases().links["eth1"].leases[&ip("10.0.0.10")].state,
            LeaseState::Bound
        );
    }

    #[test]
    fn unknown_link_is_silent() {
        let mut e = engine();
        assert!(is_silent(&e.handle("eth9", &discover(1), T0)));
    }

    #[test]
    fn exhaustion_is_answered_by_silence_until_a_lease_ends() {
        let mut e = engine();
        for n in 1..=3 {
            lease(&mut e, n, T0);
        }
        let o = e.handle("eth1", &discover(4), T0 + 1);
        assert_eq!(o.reply, Reply::Silent("no free address in the pools"));
        // Offers expire: a held but unrequested offer frees its address.
        let mut e = engine();
        for n in 1..=3 {
            offered(&e.handle("eth1", &discover(n), T0));
        }
        assert!(is_silent(&e.handle("eth1", &discover(4), T0 + 1)));
        assert_eq!(
            offered(&e.handle("eth1", &discover(4), T0 + OFFER_HOLD)),
            ip("10.0.0.10")
        );
        // An expired lease is reused, the oldest first.
        let mut e = engine();
        lease(&mut e, 1, T0);
        lease(&mut e, 2, T0 - 10);
        lease(&mut e, 3, T0);
        assert_eq!(
            offered(&e.handle("eth1", &discover(4), T0 + 600)),
            ip("10.0.0.11")
        );
    }

    #[test]
    fn a_client_gets_its_address_back() {
        let mut e = engine();
        lease(&mut e, 1, T0);
        let a2 = lease(&mut e, 2, T0);
        // Released, then back: the same address.
        let rel = Request {
            ciaddr: a2,
            server_id: Some(ip("10.0.0.1")),
            ..msg(Kind::Release, 2)
        };
        let o = e.handle("eth1", &rel, T0 + 10);
        assert!(o.changed && is_silent(&o));
        assert_eq!(
            e.leases().links["eth1"].leases[&a2].state,
            LeaseState::Released
        );
        assert_eq!(offered(&e.handle("eth1", &discover(2), T0 + 20)), a2);
        // Expired long ago, not taken by anyone: the same address too.
        assert_eq!(lease(&mut e, 2, T0 + 20), a2);
        assert_eq!(offered(&e.handle("eth1", &discover(2), T0 + 100_000)), a2);
        // A released address goes to another client only once never-used ones are gone.
        let mut e = engine();
        let a1 = lease(&mut e, 1, T0);
        let rel = Request {
            ciaddr: a1,
            ..msg(Kind::Release, 1)
        };
        e.handle("eth1", &rel, T0 + 1);
        assert_eq!(
            offered(&e.handle("eth1", &discover(2), T0 + 2)),
            ip("10.0.0.11")
        );
    }

    #[test]
    fn requested_address_is_offered_when_free() {
        let mut e = engine();
        let d = Request {
            requested: Some(ip("10.0.0.12")),
            ..discover(1)
        };
        assert_eq!(offered(&e.handle("eth1", &d, T0)), ip("10.0.0.12"));
        // Outside the pool: ignored, lowest free instead.
        let d = Request {
            requested: Some(ip("10.0.0.50")),
            ..discover(2)
        };
        assert_eq!(offered(&e.handle("eth1", &d, T0)), ip("10.0.0.10"));
    }

    #[test]
    fn static_lease_first_and_only() {
        let mut e = engine();
        assert_eq!(
            offered(&e.handle("eth1", &discover(0x99), T0)),
            ip("10.0.0.99")
        );
        assert_eq!(
            acked(&e.handle("eth1", &select(0x99, "10.0.0.99"), T0)),
            ip("10.0.0.99")
        );
        // Another client cannot take it, and the owner cannot take a pool address.
        assert!(is_nak(&e.handle("eth1", &select(1, "10.0.0.99"), T0)));
        assert!(is_nak(&e.handle("eth1", &select(0x99, "10.0.0.10"), T0)));
        assert!(is_nak(&e.handle("eth1", &reboot(0x99, "10.0.0.10"), T0)));
        assert_eq!(
            acked(&e.handle("eth1", &reboot(0x99, "10.0.0.99"), T0)),
            ip("10.0.0.99")
        );
    }

    #[test]
    fn selecting_another_server_frees_our_offer() {
        let mut e = engine();
        offered(&e.handle("eth1", &discover(1), T0));
        let other = Request {
            server_id: Some(ip("10.0.0.2")),
            ..select(1, "10.0.0.200")
        };
        assert!(is_silent(&e.handle("eth1", &other, T0)));
        assert!(e.leases().links["eth1"].leases.is_empty());
        // Selecting an address someone else holds: NAK.
        lease(&mut e, 2, T0);
        assert!(is_nak(&e.handle("eth1", &select(3, "10.0.0.10"), T0)));
        // No requested address: malformed, ignored.
        let bad = Request {
            requested: None,
            ..select(3, "10.0.0.10")
        };
        assert!(is_silent(&e.handle("eth1", &bad, T0)));
    }

    #[test]
    fn selecting_after_a_restart_without_the_offer() {
        // Offers are not persisted: a REQUEST for a free address is granted anyway.
        let mut e = engine();
        assert_eq!(
            acked(&e.handle("eth1", &select(5, "10.0.0.11"), T0)),
            ip("10.0.0.11")
        );
    }

    #[test]
    fn renewing_and_rebinding() {
        let mut e = engine();
        let a = lease(&mut e, 1, T0);
        let o = e.handle("eth1", &renew(1, &a.to_string()), T0 + 300);
        assert_eq!(acked(&o), a);
        assert_eq!(e.leases().links["eth1"].leases[&a].expires, T0 + 300 + 600);
        // Another client claiming it: NAK.
        assert!(is_nak(&e.handle(
            "eth1",
            &renew(2, &a.to_string()),
            T0 + 300
        )));
        // An address we have no record of (the peer's pool): silence.
        assert!(is_silent(&e.handle("eth1", &renew(3, "10.0.0.150"), T0)));
        // Off the link: silence (a renewal is unicast; the client is elsewhere).
        assert!(is_silent(&e.handle("eth1", &renew(3, "192.168.1.5"), T0)));
        // After expiry, while no one took it: renewed.
        assert_eq!(
            acked(&e.handle("eth1", &renew(1, &a.to_string()), T0 + 5000)),
            a
        );
    }

    #[test]
    fn init_reboot() {
        let mut e = engine();
        let a = lease(&mut e, 1, T0);
        assert_eq!(
            acked(&e.handle("eth1", &reboot(1, &a.to_string()), T0 + 9)),
            a
        );
        // Wrong network: NAK.
        assert!(is_nak(&e.handle("eth1", &reboot(1, "192.168.1.5"), T0)));
        // We know the client under another address: NAK.
        assert!(is_nak(&e.handle("eth1", &reboot(1, "10.0.0.12"), T0)));
        // No record: silence.
        assert!(is_silent(&e.handle("eth1", &reboot(7, "10.0.0.12"), T0)));
        // Someone else's: NAK.
        assert!(is_nak(&e.handle("eth1", &reboot(7, &a.to_string()), T0)));
        // Neither ciaddr nor requested: ignored.
        assert!(is_silent(&e.handle("eth1", &msg(Kind::Request, 7), T0)));
    }

    #[test]
    fn decline_quarantines_the_address() {
        let mut e = engine();
        let a = lease(&mut e, 1, T0);
        let d = Request {
            requested: Some(a),
            server_id: Some(ip("10.0.0.1")),
            ..msg(Kind::Decline, 1)
        };
        let o = e.handle("eth1", &d, T0 + 1);
        assert!(o.changed && is_silent(&o));
        assert!(!e.leases().links["eth1"].leases.contains_key(&a));
        // The client and others get other addresses during the quarantine.
        assert_eq!(
            offered(&e.handle("eth1", &discover(1), T0 + 2)),
            ip("10.0.0.11")
        );
        assert_eq!(
            offered(&e.handle("eth1", &discover(2), T0 + 2)),
            ip("10.0.0.12")
        );
        assert!(is_silent(&e.handle("eth1", &discover(3), T0 + 2)));
        assert!(is_nak(&e.handle(
            "eth1",
            &select(3, &a.to_string()),
            T0 + 2
        )));
        // After it: offered again, and the record of the quarantine is gone.
        assert!(e.expire(T0 + 1 + QUARANTINE));
        assert!(e.leases().links["eth1"].declined.is_empty());
        assert_eq!(
            offered(&e.handle("eth1", &discover(3), T0 + 2 + QUARANTINE)),
            a
        );
        // A decline of an address not ours to give, or for another server: ignored.
        let stray = Request {
            requested: Some(ip("10.0.0.12")),
            ..msg(Kind::Decline, 9)
        };
        assert!(!e.handle("eth1", &stray, T0).changed);
        let elsewhere = Request {
            server_id: Some(ip("10.0.0.2")),
            ..d
        };
        assert!(!e.handle("eth1", &elsewhere, T0).changed);
    }

    #[test]
    fn release_of_someone_elses_lease_is_ignored() {
        let mut e = engine();
        let a = lease(&mut e, 1, T0);
        let rel = Request {
            ciaddr: a,
            ..msg(Kind::Release, 2)
        };
        assert!(!e.handle("eth1", &rel, T0).changed);
        assert!(e.leases().links["eth1"].leases[&a].active(T0));
    }

    #[test]
    fn inform_gets_options_only() {
        let mut e = engine();
        let o = e.handle("eth1", &msg(Kind::Inform, 1), T0);
        assert_eq!(o.reply, Reply::InformAck);
        assert!(!o.changed);
    }

    #[test]
    fn new_generation_keeps_leases_that_still_fit() {
        let mut e = engine();
        lease(&mut e, 1, T0); // .10
        lease(&mut e, 2, T0); // .11
        lease(&mut e, 0x99, T0); // .99 static
        // The pool shrinks to .11-.20 and the static lease moves to another MAC.
        let dropped = e.reconfigure(config(
            ("10.0.0.11", "10.0.0.20"),
            "{ mac = \"52:54:00:00:00:98\", address = \"10.0.0.99\" }",
        ));
        assert_eq!(dropped, 2);
        let kept: Vec<Ipv4Addr> = e.leases().links["eth1"].leases.keys().copied().collect();
        assert_eq!(kept, [ip("10.0.0.11")]);
        // Through the store's form and back: the same.
        let text = serde_json::to_string(e.leases()).unwrap();
        let back: Leases = serde_json::from_str(&text).unwrap();
        let again = Engine::new(e.config().clone(), back);
        assert_eq!(again.leases(), e.leases());
        // A link no longer served loses its leases.
        assert_eq!(e.reconfigure(DhcpConfig::default()), 1);
        assert!(e.leases().links.is_empty());
    }

    #[test]
    fn ping_check_probes_a_new_address_before_offering_it() {
        let mut cfg = engine().config().clone();
        for link in cfg.links.values_mut() {
            link.ping_check = true;
        }
        let mut e = Engine::new(cfg, Leases::default());
        // A new client: probe first, no answer to the client.
        let o = e.handle("eth1", &discover(1), T0);
        assert_eq!(o.reply, Reply::Probe(ip("10.0.0.10")));
        // Its retransmission in the same second: still waiting.
        assert!(is_silent(&e.handle("eth1", &discover(1), T0)));
        // Another client meanwhile: its own probe, of another address.
        assert_eq!(
            e.handle("eth1", &discover(2), T0).reply,
            Reply::Probe(ip("10.0.0.11"))
        );
        // No echo reply: the next DISCOVER gets the offer, and binds.
        assert_eq!(
            offered(&e.handle("eth1", &discover(1), T0 + PROBE_WAIT)),
            ip("10.0.0.10")
        );
        assert_eq!(
            acked(&e.handle("eth1", &select(1, "10.0.0.10"), T0 + 2)),
            ip("10.0.0.10")
        );
        // An echo reply for a bound address: the client has it; ignored.
        assert!(!e.conflict("eth1", ip("10.0.0.10"), T0 + 2));
        // Its own address later: no probe.
        assert_eq!(
            offered(&e.handle("eth1", &discover(1), T0 + 5000)),
            ip("10.0.0.10")
        );
        // A static lease: no probe.
        assert_eq!(
            offered(&e.handle("eth1", &discover(0x99), T0)),
            ip("10.0.0.99")
        );
        // An echo reply for client 2's address: quarantined, client 2 probes the next.
        assert!(e.conflict("eth1", ip("10.0.0.11"), T0 + 1));
        assert!(
            e.leases().links["eth1"]
                .declined
                .contains_key(&ip("10.0.0.11"))
        );
        assert_eq!(
            e.handle("eth1", &discover(2), T0 + 2).reply,
            Reply::Probe(ip("10.0.0.12"))
        );
        // A reply nobody asked for: ignored.
        assert!(!e.conflict("eth1", ip("10.0.0.20"), T0 + 2));
        assert!(!e.conflict("eth9", ip("10.0.0.12"), T0 + 2));
        // Probes are forgotten after the offer hold.
        e.expire(T0 + 2 + OFFER_HOLD);
        assert!(e.leases().links["eth1"].probes.is_empty());
    }

    #[test]
    fn offers_are_not_persisted() {
        let mut e = engine();
        lease(&mut e, 1, T0);
        offered(&e.handle("eth1", &discover(2), T0));
        let text = serde_json::to_string(e.leases()).unwrap();
        assert!(
            text.contains("10.0.0.10") && !text.contains("10.0.0.11"),
            "{text}"
        );
        assert!(
            text.contains("\"client\":\"01:52:54:00:00:00:01\""),
            "{text}"
        );
    }
}
