//! The record set the server answers from, compiled from a [`DnsConfig`] for fast
//! lookups, and the answering logic (authoritative data, and what is refused or not
//! implemented, RFC 8906). Pure: no sockets.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::model::{DnsConfig, ZoneRecords};

/// UDP payload we advertise and honour at most (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Managed zones (declared and derived reverse ones) and their names, ready to answer.
#[derive(Debug, Default)]
pub struct Zones {
    /// Zone apex -> its synthesised SOA and NS.
    zones: HashMap<Name, Apex>,
    /// Owner name -> its records.
    names: HashMap<Name, Records>,
    /// Names that own nothing but have names below them (`eu.acme.local` when only
    /// `db.eu.acme.local` exists): they exist, with no data (NODATA, not NXDOMAIN).
    empty_non_terminals: HashSet<Name>,
    /// The distinct sizes of the zones, in labels, longest first: the suffixes of a
    /// name worth looking up (a forward zone and the derived reverse ones differ in
    /// size, so trying every suffix length would hash names that cannot match).
    zone_sizes: Vec<u8>,
}

#[derive(Debug)]
struct Apex {
    soa: Record,
    ns: Record,
    /// The name the NS record points to (its addresses go in the additional section).
    nameserver: Name,
}

#[derive(Debug, Default)]
struct Records {
    a: Vec<Record>,
    aaaa: Vec<Record>,
    ptr: Vec<Record>,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Answer {
    /// Reply with this message (authoritative data or an error).
    Reply(Message),
    /// Not ours: forward to the recursors (if the client may recurse).
    Forward,
    /// Not a query (a response, or garbage without a header): say nothing.
    Drop,
}

impl Zones {
    /// Compile `config`. Names were validated by the model, so conversion errors are
    /// reported, not expected.
    pub fn compile(config: &DnsConfig) -> Result<Self, String> {
        let mut out = Zones::default();
        for (zone, records) in &config.zones {
            let apex = out.add_zone(config, zone, serial_of(zone, records))?;
            for (name, addresses) in records {
                let owner = fqdn(&DnsConfig::fqdn(zone, name))?;
                out.add_addresses(&owner, addresses, config.ttl);
                out.add_ancestors(&owner, &apex);
            }
        }
        for (zone, owners) in config.reverse() {
            let mut hash = Fnv::new();
            for (owner, targets) in &owners {
                hash.feed(owner.as_bytes());
                targets.iter().for_each(|t| hash.feed(t.as_bytes()));
            }
            let apex = out.add_zone(config, &zone, hash.serial())?;
            for (owner, targets) in owners {
                let owner = fqdn(&owner)?;
                let entry = out.names.entry(owner.clone()).or_default();
                for target in targets {
                    entry.ptr.push(Record::from_rdata(
                        owner.clone(),
                        config.ttl,
                        RData::PTR(PTR(fqdn(&target)?)),
                    ));
                }
                out.add_ancestors(&owner, &apex);
            }
        }
        out.add_glue(config);
        Ok(out)
    }

    fn add_zone(&mut self, config: &DnsConfig, zone: &str, serial: u32) -> Result<Name, String> {
        let apex = fqdn(zone)?;
        let size = apex.num_labels();
        if let Err(at) = self.zone_sizes.binary_search_by(|s| size.cmp(s)) {
            self.zone_sizes.insert(at, size);
        }
        let nameserver = fqdn(&config.nameserver_of(zone))?;
        let soa = SOA::new(
            nameserver.clone(),
            fqdn(&format!("hostmaster.{zone}"))?,
            serial,
            3600,
            600,
            86400,
            config.ttl,
        );
        let apex_records = Apex {
            soa: Record::from_rdata(apex.clone(), config.ttl, RData::SOA(soa)),
            ns: Record::from_rdata(apex.clone(), config.ttl, RData::NS(NS(nameserver.clone()))),
            nameserver,
        };
        self.zones.insert(apex.clone(), apex_records);
        Ok(apex)
    }

    fn add_addresses(&mut self, owner: &Name, addresses: &[IpAddr], ttl: u32) {
        let entry = self.names.entry(owner.clone()).or_default();
        for address in addresses {
            match address {
                IpAddr::V4(v4) => {
                    entry
                        .a
                        .push(Record::from_rdata(owner.clone(), ttl, RData::A(A(*v4))))
                }
                IpAddr::V6(v6) => entry.aaaa.push(Record::from_rdata(
                    owner.clone(),
                    ttl,
                    RData::AAAA(AAAA(*v6)),
                )),
            }
        }
    }

    /// Every ancestor of `owner` up to `apex` exists.
    fn add_ancestors(&mut self, owner: &Name, apex: &Name) {
        let mut up = owner.base_name();
        while up.num_labels() > apex.num_labels() {
            self.empty_non_terminals.insert(up.clone());
            up = up.base_name();
        }
    }

    /// The nameserver's addresses, where its name lies in a managed zone that does not
    /// define it: so that the NS of every zone resolves, and comes with glue.
    fn add_glue(&mut self, config: &DnsConfig) {
        if config.nameserver_addresses.is_empty() {
            return;
        }
        let targets: HashSet<Name> = self.zones.values().map(|a| a.nameserver.clone()).collect();
        for target in targets {
            if self.names.contains_key(&target) {
                continue;
            }
            let Some(apex) = self.zone_of(&target).map(|a| a.soa.name.clone()) else {
                continue;
            };
            self.add_addresses(&target, &config.nameserver_addresses, config.ttl);
            self.add_ancestors(&target, &apex);
        }
    }

    /// Number of names with records.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The zone `name` falls in, if any (longest match).
    fn zone_of(&self, name: &Name) -> Option<&Apex> {
        let labels = name.num_labels();
        self.zone_sizes
            .iter()
            .filter(|size| **size <= labels)
            .find_map(|size| self.zones.get(&name.trim_to(usize::from(*size))))
    }

    /// Answer `request` from the managed zones, refuse it, or say it must be forwarded.
    pub fn answer(&self, request: &Message) -> Answer {
        if request.metadata.message_type != MessageType::Query {
            return Answer::Drop;
        }
        let mut response = reply_to(request);
        // RFC 6891 6.1.3: a version we do not implement is BADVERS, with our OPT
        // (version 0) so the client can fall back.
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            response.metadata.response_code = ResponseCode::BADVERS;
            return Answer::Reply(response);
        }
        // NOTIFY, UPDATE, IQUERY, STATUS...: not implemented (RFC 8906 3.1.4).
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return Answer::Reply(response);
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return Answer::Reply(response);
        };
        // Only class IN is served: CHAOS (`version.bind`, `hostname.bind`), HS, ANY...
        // are refused here, never forwarded.
        if query.query_class() != DNSClass::IN {
            response.metadata.response_code = ResponseCode::Refused;
            return Answer::Reply(response);
        }
        let qtype = query.query_type();
        // Zone transfers are not offered, for managed zones or any other.
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            response.metadata.response_code = ResponseCode::Refused;
            return Answer::Reply(response);
        }
        let name = query.name();
        let Some(apex) = self.zone_of(name) else {
            return Answer::Forward;
        };
        response.metadata.authoritative = true;
        let at_apex = apex.soa.name == *name;
        if let Some(records) = self.names.get(name) {
            response.answers = match qtype {
                RecordType::A => records.a.clone(),
                RecordType::AAAA => records.aaaa.clone(),
                RecordType::PTR => records.ptr.clone(),
                RecordType::ANY => records
                    .a
                    .iter()
                    .chain(&records.aaaa)
                    .chain(&records.ptr)
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
        }
        if at_apex && qtype == RecordType::SOA {
            response.answers.push(apex.soa.clone());
        }
        if at_apex && qtype == RecordType::NS {
            response.answers.push(apex.ns.clone());
            if let Some(glue) = self.names.get(&apex.nameserver) {
                response.additionals = glue.a.iter().chain(&glue.aaaa).cloned().collect();
            }
        }
        if response.answers.is_empty() {
            let exists =
                self.names.contains_key(name) || self.empty_non_terminals.contains(name) || at_apex;
            if !exists {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            // Negative answers carry the SOA, for negative caching (RFC 2308).
            response.authorities.push(apex.soa.clone());
        }
        Answer::Reply(response)
    }
}

/// A response skeleton for `request`: same id, opcode, question, RD; RA set (we
/// forward for allowed clients); CD copied. When the client used EDNS, our own OPT
/// (version 0, our payload size, no options, no flags): unknown options and flags are
/// ignored and never echoed, and DO is left clear as we serve no DNSSEC data (RFC 3225
/// lets a server without DNSSEC do so). Over UDP and TCP alike.
pub fn reply_to(request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.set_edns(edns);
    }
    response
}

/// Largest UDP response the client accepts: 512 without EDNS, else its advertised
/// size within [512, EDNS_PAYLOAD].
pub fn udp_limit(request: &Message) -> usize {
    request
        .edns
        .as_ref()
        .map_or(512, |e| e.max_payload().clamp(512, EDNS_PAYLOAD)) as usize
}

fn fqdn(name: &str) -> Result<Name, String> {
    Name::from_ascii(format!("{name}.")).map_err(|e| format!("{name}: not a valid DNS name: {e}"))
}

/// FNV-1a: a serial that changes when a zone's content does.
struct Fnv(u32);

impl Fnv {
    fn new() -> Self {
        Self(0x811c_9dc5)
    }

    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }

    fn serial(&self) -> u32 {
        self.0.max(1)
    }
}

/// The serial of a declared zone, from its listing.
fn serial_of(zone: &str, records: &ZoneRecords) -> u32 {
    let mut hash = Fnv::new();
    hash.feed(zone.as_bytes());
    for (name, addresses) in records {
        hash.feed(name.as_bytes());
        for a in addresses {
            hash.feed(a.to_string().as_bytes());
        }
    }
    hash.serial()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use std::collections::BTreeMap;

    fn config() -> DnsConfig {
        let mut zones = BTreeMap::new();
        let mut acme = BTreeMap::new();
        acme.insert(
            "www".to_owned(),
            vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        );
        acme.insert("db.eu".to_owned(), vec!["10.0.0.2".parse().unwrap()]);
        acme.insert("@".to_owned(), vec!["10.0.0.3".parse().unwrap()]);
        zones.insert("acme.local".to_owned(), acme);
        let mut sub = BTreeMap::new();
        sub.insert("api".to_owned(), vec!["10.1.0.1".parse().unwrap()]);
        zones.insert("sub.acme.local".to_owned(), sub);
        DnsConfig {
            listen: vec![],
            recursors: vec![],
            forward_timeout_ms: 1000,
            ttl: 60,
            nameserver: None,
            nameserver_addresses: vec!["10.0.0.53".parse().unwrap()],
            reverse_zones: true,
            recursion_clients: vec![],
            zones,
        }
    }

    fn ask(zones: &Zones, name: &str, qtype: RecordType) -> Answer {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        zones.answer(&m)
    }

    fn reply(answer: Answer) -> Message {
        match answer {
            Answer::Reply(m) => m,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn authoritative_a_and_aaaa() {
        let z = Zones::compile(&config()).unwrap();
        let m = reply(ask(&z, "WWW.Acme.Local.", RecordType::A));
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A(A("10.0.0.1".parse().unwrap())));
        let m = reply(ask(&z, "www.acme.local.", RecordType::AAAA));
        assert_eq!(
            m.answers[0].data,
            RData::AAAA(AAAA("fd00::1".parse().unwrap()))
        );
        let m = reply(ask(&z, "acme.local.", RecordType::A));
        assert_eq!(m.answers.len(), 1);
        let m = reply(ask(&z, "api.sub.acme.local.", RecordType::A));
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn negative_answers() {
        let z = Zones::compile(&config()).unwrap();
        let m = reply(ask(&z, "nope.acme.local.", RecordType::A));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(matches!(m.authorities[0].data, RData::SOA(_)));
        // Name exists, no data of that type; empty non-terminal; apex MX.
        for (name, t) in [
            ("db.eu.acme.local.", RecordType::AAAA),
            ("eu.acme.local.", RecordType::A),
            ("acme.local.", RecordType::MX),
            ("www.acme.local.", RecordType::TXT),
        ] {
            let m = reply(ask(&z, name, t));
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(m.answers.is_empty(), "{name}");
            assert_eq!(m.authorities.len(), 1, "{name}");
        }
        // Longest zone wins: sub.acme.local's SOA for its own NXDOMAIN.
        let m = reply(ask(&z, "x.sub.acme.local.", RecordType::A));
        assert_eq!(
            m.authorities[0].name,
            Name::from_ascii("sub.acme.local.").unwrap()
        );
        let m = reply(ask(&z, "acme.local.", RecordType::SOA));
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn outside_zones_is_forwarded_and_odd_requests_are_handled() {
        let z = Zones::compile(&config()).unwrap();
        assert!(matches!(
            ask(&z, "example.com.", RecordType::A),
            Answer::Forward
        ));
        assert!(matches!(ask(&z, "local.", RecordType::A), Answer::Forward));
        assert!(matches!(
            ask(&z, "xacme.local.", RecordType::A),
            Answer::Forward
        ));
        let mut m = Message::query();
        let r = reply(z.answer(&m));
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        m.metadata.op_code = OpCode::Status;
        let r = reply(z.answer(&m));
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        m.metadata.message_type = MessageType::Response;
        assert!(matches!(z.answer(&m), Answer::Drop));
    }

    #[test]
    fn serial_follows_content() {
        let a = config();
        let mut b = config();
        let z1 = Zones::compile(&a).unwrap();
        let z2 = Zones::compile(&a).unwrap();
        b.zones
            .get_mut("acme.local")
            .unwrap()
            .insert("new".into(), vec!["10.9.9.9".parse().unwrap()]);
        let z3 = Zones::compile(&b).unwrap();
        let soa = |z: &Zones| match &z.zones[&Name::from_ascii("acme.local.").unwrap()].soa.data {
            RData::SOA(s) => s.serial,
            _ => unreachable!(),
        };
        assert_eq!(soa(&z1), soa(&z2));
        assert_ne!(soa(&z1), soa(&z3));
    }

    fn ask_class(zones: &Zones, name: &str, qtype: RecordType, class: DNSClass) -> Message {
        let mut m = Message::query();
        let mut q = Query::query(Name::from_ascii(name).unwrap(), qtype);
        q.set_query_class(class);
        m.add_query(q);
        reply(zones.answer(&m))
    }

    #[test]
    fn apex_has_soa_and_ns_with_glue_inside_the_zone() {
        let z = Zones::compile(&config()).unwrap();
        let m = reply(ask(&z, "acme.local.", RecordType::NS));
        assert!(m.metadata.authoritative);
        assert_eq!(
            m.answers[0].data,
            RData::NS(NS(Name::from_ascii("ns.acme.local.").unwrap()))
        );
        assert_eq!(
            m.additionals[0].data,
            RData::A(A("10.0.0.53".parse().unwrap()))
        );
        let m = reply(ask(&z, "ns.acme.local.", RecordType::A));
        assert_eq!(m.answers.len(), 1);
        let m = reply(ask(&z, "acme.local.", RecordType::SOA));
        match &m.answers[0].data {
            RData::SOA(soa) => {
                assert_eq!(soa.mname, Name::from_ascii("ns.acme.local.").unwrap())
            }
            other => panic!("{other:?}"),
        }
        // NS below the apex: NODATA.
        let m = reply(ask(&z, "www.acme.local.", RecordType::NS));
        assert!(m.answers.is_empty());
        // A record named like the nameserver wins over the synthesised glue.
        let mut c = config();
        c.zones
            .get_mut("acme.local")
            .unwrap()
            .insert("ns".into(), vec!["10.0.0.99".parse().unwrap()]);
        let z = Zones::compile(&c).unwrap();
        let m = reply(ask(&z, "acme.local.", RecordType::NS));
        assert_eq!(
            m.additionals[0].data,
            RData::A(A("10.0.0.99".parse().unwrap()))
        );
        // A nameserver outside every managed zone: NS without glue.
        c.nameserver = Some("dns.example.net".into());
        let z = Zones::compile(&c).unwrap();
        let m = reply(ask(&z, "acme.local.", RecordType::NS));
        assert!(m.additionals.is_empty());
    }

    #[test]
    fn ptr_from_derived_reverse_zones_and_the_switch() {
        let z = Zones::compile(&config()).unwrap();
        let m = reply(ask(&z, "1.0.0.10.in-addr.arpa.", RecordType::PTR));
        assert!(m.metadata.authoritative);
        assert_eq!(
            m.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("www.acme.local.").unwrap()))
        );
        let m = reply(ask(
            &z,
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            RecordType::PTR,
        ));
        assert_eq!(m.answers.len(), 1);
        // Another address of the /24: NXDOMAIN; the reverse apex has SOA and NS.
        let m = reply(ask(&z, "77.0.0.10.in-addr.arpa.", RecordType::PTR));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = reply(ask(&z, "0.0.10.in-addr.arpa.", RecordType::NS));
        assert_eq!(m.answers.len(), 1);
        // Outside the derived zones: forwarded.
        assert!(matches!(
            ask(&z, "1.0.2.10.in-addr.arpa.", RecordType::PTR),
            Answer::Forward
        ));
        let mut c = config();
        c.reverse_zones = false;
        let z = Zones::compile(&c).unwrap();
        assert!(matches!(
            ask(&z, "1.0.0.10.in-addr.arpa.", RecordType::PTR),
            Answer::Forward
        ));
    }

    #[test]
    fn other_classes_and_zone_transfers_are_refused_never_forwarded() {
        let z = Zones::compile(&config()).unwrap();
        for (name, class) in [
            ("version.bind.", DNSClass::CH),
            ("hostname.bind.", DNSClass::CH),
            ("example.com.", DNSClass::HS),
            ("www.acme.local.", DNSClass::ANY),
        ] {
            let m = ask_class(&z, name, RecordType::TXT, class);
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        }
        for name in ["acme.local.", "example.com."] {
            for t in [RecordType::AXFR, RecordType::IXFR] {
                let m = reply(ask(&z, name, t));
                assert_eq!(m.metadata.response_code, ResponseCode::Refused);
                assert!(m.answers.is_empty() && m.authorities.is_empty());
            }
        }
    }

    #[test]
    fn edns_versions_above_zero_get_badvers_with_version_zero() {
        let z = Zones::compile(&config()).unwrap();
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("www.acme.local.").unwrap(),
            RecordType::A,
        ));
        let mut edns = Edns::new();
        edns.set_version(1);
        edns.flags_mut().z = 0x4000;
        edns.options_mut()
            .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                65001,
                vec![1, 2],
            ));
        m.set_edns(edns);
        let r = reply(z.answer(&m));
        assert_eq!(r.metadata.response_code, ResponseCode::BADVERS);
        let opt = r.edns.as_ref().unwrap();
        assert_eq!(opt.version(), 0);
        assert!(opt.options().as_ref().is_empty());
        assert_eq!(opt.flags().z, 0);
        assert!(r.answers.is_empty());
        // On the wire the extended rcode travels in the OPT.
        // (16 decodes as BADSIG, which shares BADVERS' code.)
        let back = Message::from_vec(&r.to_vec().unwrap()).unwrap();
        assert_eq!(u16::from(back.metadata.response_code), 16);
    }
}
