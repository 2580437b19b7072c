//! The record set the server answers from, compiled from a [`DnsConfig`] for fast
//! lookups, and the authoritative answering logic. Pure: no sockets.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use kowabunga_model::dns::DnsConfig;

/// UDP payload we advertise and honour at most (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Managed zones and their names, ready to answer.
#[derive(Debug, Default)]
pub struct Zones {
    /// Zone apex -> its synthesised SOA record.
    zones: HashMap<Name, Record>,
    /// Owner name -> addresses (as ready-made records).
    names: HashMap<Name, Records>,
    /// Names that own nothing but have names below them (`eu.acme.local` when only
    /// `db.eu.acme.local` exists): they exist, with no data (NODATA, not NXDOMAIN).
    empty_non_terminals: HashSet<Name>,
    /// Longest zone, in labels: bounds the suffix search.
    max_labels: u8,
}

#[derive(Debug, Default)]
struct Records {
    a: Vec<Record>,
    aaaa: Vec<Record>,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Answer {
    /// Reply with this message (authoritative data or an error).
    Reply(Message),
    /// Not ours: forward to the recursors.
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
            let apex = fqdn(zone)?;
            out.max_labels = out.max_labels.max(apex.num_labels());
            let serial = serial_of(zone, records);
            let soa = SOA::new(
                apex.clone(),
                fqdn(&format!("hostmaster.{zone}"))?,
                serial,
                3600,
                600,
                86400,
                config.ttl,
            );
            out.zones.insert(
                apex.clone(),
                Record::from_rdata(apex.clone(), config.ttl, RData::SOA(soa)),
            );
            for (name, addresses) in records {
                let owner = fqdn(&DnsConfig::fqdn(zone, name))?;
                let entry = out.names.entry(owner.clone()).or_default();
                for address in addresses {
                    match address {
                        IpAddr::V4(v4) => entry.a.push(Record::from_rdata(
                            owner.clone(),
                            config.ttl,
                            RData::A(A(*v4)),
                        )),
                        IpAddr::V6(v6) => entry.aaaa.push(Record::from_rdata(
                            owner.clone(),
                            config.ttl,
                            RData::AAAA(AAAA(*v6)),
                        )),
                    }
                }
                // Every ancestor up to the apex exists.
                let mut up = owner.base_name();
                while up.num_labels() > apex.num_labels() {
                    out.empty_non_terminals.insert(up.clone());
                    up = up.base_name();
                }
            }
        }
        Ok(out)
    }

    /// Number of names with records.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The zone `name` falls in, if any (longest match).
    fn zone_of(&self, name: &Name) -> Option<&Record> {
        let labels = name.num_labels().min(self.max_labels);
        (1..=labels)
            .rev()
            .find_map(|n| self.zones.get(&name.trim_to(n as usize)))
    }

    /// Answer `request` from the managed zones, or say it must be forwarded.
    pub fn answer(&self, request: &Message) -> Answer {
        if request.metadata.message_type != MessageType::Query {
            return Answer::Drop;
        }
        let mut response = reply_to(request);
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return Answer::Reply(response);
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return Answer::Reply(response);
        };
        if query.query_class() != DNSClass::IN {
            return Answer::Forward;
        }
        let name = query.name();
        let Some(soa) = self.zone_of(name) else {
            return Answer::Forward;
        };
        response.metadata.authoritative = true;
        let qtype = query.query_type();
        if let Some(records) = self.names.get(name) {
            let answers: Vec<Record> = match qtype {
                RecordType::A => records.a.clone(),
                RecordType::AAAA => records.aaaa.clone(),
                RecordType::ANY => records.a.iter().chain(&records.aaaa).cloned().collect(),
                _ => Vec::new(),
            };
            response.answers = answers;
        }
        if qtype == RecordType::SOA && soa.name == *name {
            response.answers.push(soa.clone());
        }
        if response.answers.is_empty() {
            let exists = self.names.contains_key(name)
                || self.empty_non_terminals.contains(name)
                || soa.name == *name;
            if !exists {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            // Negative answers carry the SOA, for negative caching (RFC 2308).
            response.authorities.push(soa.clone());
        }
        Answer::Reply(response)
    }
}

/// A response skeleton for `request`: same id, opcode, question, RD; RA set (we
/// forward for clients); EDNS echoed when the client used it.
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

/// A serial that changes when the zone's content does (FNV-1a of its listing).
fn serial_of(zone: &str, records: &kowabunga_model::dns::ZoneRecords) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(zone.as_bytes());
    for (name, addresses) in records {
        feed(name.as_bytes());
        for a in addresses {
            feed(a.to_string().as_bytes());
        }
    }
    hash.max(1)
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
        let soa = |z: &Zones| match &z.zones[&Name::from_ascii("acme.local.").unwrap()].data {
            RData::SOA(s) => s.serial,
            _ => unreachable!(),
        };
        assert_eq!(soa(&z1), soa(&z2));
        assert_ne!(soa(&z1), soa(&z3));
    }
}
