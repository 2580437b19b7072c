//! DHCPv4 on the wire, by `dhcproto`: a datagram to an engine [`Request`] (or nothing,
//! for anything we do not serve), an engine [`Reply`] to a datagram and where to send
//! it (RFC 2131 4.1).

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{self, DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use kowabunga_model::network::MacAddr;

use crate::engine::{ClientId, Kind, Reply, Request};
use crate::model::LinkConfig;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// The smallest message a client must accept (RFC 2131 2: 576-byte datagrams).
const MIN_MESSAGE: usize = 300;
/// BOOTP's fixed header, before the magic cookie.
const FIXED_HEADER: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Why a datagram is not served (for the debug log and the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not a DHCP message, or one `dhcproto` cannot decode.
    Malformed,
    /// A reply, a non-Ethernet client, BOOTP (no message type), a relayed message.
    NotServed,
}

/// A decoded client message: what the engine needs, and the message to answer.
pub struct Incoming {
    pub request: Request,
    pub message: Message,
    /// Set when the client is booting from the network.
    pub boot_client: Option<BootClient>,
}

/// A network-boot client, as its message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootClient {
    /// iPXE (user class `iPXE`): it fetches its boot file over HTTP.
    Ipxe,
    /// A firmware PXE ROM (vendor class `PXEClient...`, RFC 4578), with its
    /// architecture type (option 93: 0 BIOS, 7 and 9 x86-64 UEFI, 11 arm64 UEFI).
    Pxe { arch: u16 },
}

/// The boot file a network-boot client is given, and where from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    /// `file` of the reply (and option 67): a URL for iPXE, a TFTP path for PXE ROMs.
    pub file: String,
}

fn boot_client(message: &Message) -> Option<BootClient> {
    let opts = message.opts();
    if let Some(DhcpOption::UserClass(class)) = opts.get(OptionCode::UserClass)
        && class.windows(4).any(|w| w == b"iPXE")
    {
        return Some(BootClient::Ipxe);
    }
    match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(class)) if class.starts_with(b"PXEClient") => {
            let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
                Some(DhcpOption::ClientSystemArchitecture(arch)) => u16::from(*arch),
                _ => 0,
            };
            Some(BootClient::Pxe { arch })
        }
        _ => None,
    }
}

/// Decode one datagram received on a served link.
pub fn decode(bytes: &[u8]) -> Result<Incoming, Dropped> {
    // dhcproto 0.15 checks a few option lengths with `debug_assert!` (rapid commit 80,
    // client FQDN 81, client network interface 94, the bulk lease query times): a
    // panic in debug builds, nothing in release ones. Either way the datagram is
    // dropped, not the serving thread.
    std::panic::catch_unwind(|| decode_checked(bytes)).unwrap_or(Err(Dropped::Malformed))
}

fn decode_checked(bytes: &[u8]) -> Result<Incoming, Dropped> {
    if bytes.len() < FIXED_HEADER + MAGIC.len() || bytes[FIXED_HEADER..FIXED_HEADER + 4] != MAGIC {
        return Err(Dropped::Malformed);
    }
    // dhcproto's message decoder stops at the first option it cannot read and keeps
    // the ones before: walk the options with its option decoder first, and drop the
    // message unless every option decodes up to an End option.
    let mut options = Decoder::new(&bytes[FIXED_HEADER + MAGIC.len()..]);
    loop {
        match DhcpOption::decode(&mut options) {
            Ok(DhcpOption::End) => break,
            // Options continued in `sname`/`file` (RFC 2132 9.3): not served.
            Ok(DhcpOption::OptionOverload(_)) => return Err(Dropped::NotServed),
            Ok(_) => {}
            Err(_) => return Err(Dropped::Malformed),
        }
    }
    let message = Message::from_bytes(bytes).map_err(|_| Dropped::Malformed)?;
    if message.opcode() != Opcode::BootRequest
        || message.htype() != HType::Eth
        || message.hlen() != 6
        || !message.giaddr().is_unspecified()
    {
        return Err(Dropped::NotServed);
    }
    let kind = match message.opts().msg_type() {
        Some(MessageType::Discover) => Kind::Discover,
        Some(MessageType::Request) => Kind::Request,
        Some(MessageType::Decline) => Kind::Decline,
        Some(MessageType::Release) => Kind::Release,
        Some(MessageType::Inform) => Kind::Inform,
        _ => return Err(Dropped::NotServed),
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(message.chaddr());
    let mac = MacAddr(mac);
    let client = match message.opts().get(OptionCode::ClientIdentifier) {
        Some(DhcpOption::ClientIdentifier(id)) if !id.is_empty() => ClientId(id.clone()),
        _ => ClientId::from_mac(&mac),
    };
    let requested = match message.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match message.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    Ok(Incoming {
        boot_client: boot_client(&message),
        request: Request {
            kind,
            client,
            mac,
            ciaddr: message.ciaddr(),
            requested,
            server_id,
        },
        message,
    })
}

/// The datagram answering `incoming` with `reply` (and, to a network-boot client, its
/// `boot` file), and where it goes; `None` when the reply is silence.
pub fn encode(
    cfg: &LinkConfig,
    incoming: &Incoming,
    reply: &Reply,
    boot: Option<&BootFile>,
) -> Option<(Vec<u8>, SocketAddrV4)> {
    let req = &incoming.message;
    let (kind, yiaddr, lease) = match reply {
        Reply::Offer(g) => (MessageType::Offer, g.address, Some(g.lease_time)),
        Reply::Ack(g) => (MessageType::Ack, g.address, Some(g.lease_time)),
        Reply::InformAck => (MessageType::Ack, Ipv4Addr::UNSPECIFIED, None),
        Reply::Nak(_) => (MessageType::Nak, Ipv4Addr::UNSPECIFIED, None),
        Reply::Silent(_) | Reply::Probe(_) => return None,
    };
    let ciaddr = match reply {
        Reply::InformAck | Reply::Ack(_) => req.ciaddr(),
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let mut out = Message::new_with_id(
        req.xid(),
        ciaddr,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &incoming.request.mac.0,
    );
    out.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(req.flags());
    let boot = boot.filter(|_| matches!(reply, Reply::Offer(_) | Reply::Ack(_)));
    if let Some(boot) = boot {
        // The next server (`siaddr`) is this Kiwi: TFTP for PXE ROMs; iPXE's URL names
        // its server itself.
        out.set_siaddr(cfg.server).set_fname_str(&boot.file);
    }
    let opts = out.opts_mut();
    if let Some(boot) = boot {
        opts.insert(DhcpOption::BootfileName(boot.file.clone().into_bytes()));
        // PXE ROMs take only offers that say they are PXE offers (PXE 2.1, 2.2.1).
        if matches!(incoming.boot_client, Some(BootClient::Pxe { .. })) {
            opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        }
    }
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(cfg.server));
    if let Reply::Nak(reason) = reply {
        opts.insert(DhcpOption::Message(reason.clone()));
    } else {
        if let Some(lease) = lease {
            opts.insert(DhcpOption::AddressLeaseTime(lease));
            opts.insert(DhcpOption::Renewal(lease / 2));
            opts.insert(DhcpOption::Rebinding(lease / 8 * 7));
        }
        opts.insert(DhcpOption::SubnetMask(cfg.subnet.netmask()));
        if cfg.subnet.prefix_len() < 31 {
            opts.insert(DhcpOption::BroadcastAddr(cfg.subnet.broadcast()));
        }
        if let Some(router) = cfg.router {
            opts.insert(DhcpOption::Router(vec![router]));
        }
        if !cfg.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(cfg.dns.clone()));
        }
        if let Some(domain) = &cfg.domain {
            opts.insert(DhcpOption::DomainName(domain.clone()));
        }
        if !cfg.ntp.is_empty() {
            opts.insert(DhcpOption::NtpServers(cfg.ntp.clone()));
        }
        if let Some(mtu) = cfg.mtu {
            opts.insert(DhcpOption::InterfaceMtu(mtu));
        }
        // RFC 3442: only to clients that ask for it.
        if !cfg.routes.is_empty() && requested(req, OptionCode::ClasslessStaticRoute) {
            opts.insert(DhcpOption::ClasslessStaticRoute(cfg.routes.clone()));
        }
    }
    let mut bytes = out.to_vec().ok()?;
    if bytes.len() < MIN_MESSAGE {
        // Some clients drop replies shorter than a BOOTP message.
        bytes.resize(MIN_MESSAGE, 0);
    }
    // RFC 2131 4.1: NAKs and replies to clients without an address are broadcast (we do
    // not write ARP entries for unicast to an unconfigured client); renewals and
    // INFORMs go to the client's address.
    let to = if matches!(reply, Reply::Nak(_)) || req.ciaddr().is_unspecified() {
        Ipv4Addr::BROADCAST
    } else {
        req.ciaddr()
    };
    Some((bytes, SocketAddrV4::new(to, CLIENT_PORT)))
}

fn requested(req: &Message, code: OptionCode) -> bool {
    matches!(
        req.opts().get(OptionCode::ParameterRequestList),
        Some(DhcpOption::ParameterRequestList(list)) if list.contains(&code)
    )
}

/// A client's message built with `dhcproto`, for tests.
pub fn client_message(
    kind: MessageType,
    xid: u32,
    mac: &MacAddr,
    ciaddr: Ipv4Addr,
    options: Vec<DhcpOption>,
) -> Vec<u8> {
    let mut m = Message::new_with_id(
        xid,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    m.set_flags(v4::Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in options {
        m.opts_mut().insert(o);
    }
    m.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::engine::Grant;
    use crate::model::{self, DhcpSection};
    use kowabunga_model::network::Network;

    fn cfg() -> LinkConfig {
        let net: Network =
            toml::from_str("[[links]]\nname = \"eth1\"\naddresses = [\"10.0.0.1/24\"]\n").unwrap();
        let section: DhcpSection = toml::from_str(
            "domain = \"acme.local\"\nntp = [\"10.0.0.3\"]\n[links.eth1]\nmtu = 1400\npools = [{ first = \"10.0.0.10\", last = \"10.0.0.20\" }]\nroutes = [{ to = \"10.8.0.0/16\", via = \"10.0.0.254\" }]\n",
        )
        .unwrap();
        model::compile(&section, &net).unwrap().links["eth1"].clone()
    }

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

    fn discover(options: Vec<DhcpOption>) -> Vec<u8> {
        client_message(
            MessageType::Discover,
            0x1234,
            &MAC,
            Ipv4Addr::UNSPECIFIED,
            options,
        )
    }

    #[test]
    fn decodes_what_the_engine_needs() {
        let bytes = client_message(
            MessageType::Request,
            7,
            &MAC,
            Ipv4Addr::UNSPECIFIED,
            vec![
                DhcpOption::RequestedIpAddress([10, 0, 0, 12].into()),
                DhcpOption::ServerIdentifier([10, 0, 0, 1].into()),
                DhcpOption::ClientIdentifier(vec![0xff, 1, 2]),
            ],
        );
        let inc = decode(&bytes).unwrap();
        assert_eq!(inc.request.kind, Kind::Request);
        assert_eq!(inc.request.mac, MAC);
        assert_eq!(inc.request.client, ClientId(vec![0xff, 1, 2]));
        assert_eq!(inc.request.requested, Some([10, 0, 0, 12].into()));
        assert_eq!(inc.request.server_id, Some([10, 0, 0, 1].into()));
        // No client identifier: the MAC with hardware type 1.
        let inc = decode(&discover(vec![])).unwrap();
        assert_eq!(inc.request.client, ClientId::from_mac(&MAC));
    }

    #[test]
    fn malformed_and_unserved_datagrams_are_dropped() {
        let good = discover(vec![]);
        // Truncated anywhere: dropped, never a panic.
        for len in 0..good.len() - 1 {
            let _ = decode(&good[..len]);
        }
        assert_eq!(decode(&good[..100]).err(), Some(Dropped::Malformed));
        // Bad magic cookie.
        let mut bad = good.clone();
        bad[FIXED_HEADER] = 0;
        assert_eq!(decode(&bad).err(), Some(Dropped::Malformed));
        // An option whose length runs past the end.
        let mut overflow = good[..FIXED_HEADER + 4].to_vec();
        overflow.extend_from_slice(&[53, 1, 1, 50, 200, 10, 0]);
        assert_eq!(decode(&overflow).err(), Some(Dropped::Malformed));
        // A message type option of the wrong length.
        let mut badopt = good[..FIXED_HEADER + 4].to_vec();
        badopt.extend_from_slice(&[53, 0, 255]);
        assert!(decode(&badopt).is_err());
        // A reply, a relayed message, a hardware length of 16, BOOTP: not served.
        let mut reply = good.clone();
        reply[0] = 2;
        assert_eq!(decode(&reply).err(), Some(Dropped::NotServed));
        let mut relayed = good.clone();
        relayed[24..28].copy_from_slice(&[10, 9, 9, 9]);
        assert_eq!(decode(&relayed).err(), Some(Dropped::NotServed));
        let mut long_hw = good.clone();
        long_hw[2] = 16;
        assert_eq!(decode(&long_hw).err(), Some(Dropped::NotServed));
        let mut huge_hw = good.clone();
        huge_hw[2] = 200;
        assert_eq!(decode(&huge_hw).err(), Some(Dropped::NotServed));
        let mut overload = good[..FIXED_HEADER + 4].to_vec();
        overload.extend_from_slice(&[53, 1, 1, 52, 1, 3, 255]);
        assert_eq!(decode(&overload).err(), Some(Dropped::NotServed));
        // No End option: truncated.
        let mut no_end = good[..FIXED_HEADER + 4].to_vec();
        no_end.extend_from_slice(&[53, 1, 1]);
        assert_eq!(decode(&no_end).err(), Some(Dropped::Malformed));
        // A bad option after good ones: the whole message goes.
        let mut late = good[..FIXED_HEADER + 4].to_vec();
        late.extend_from_slice(&[53, 1, 1, 50, 3, 10, 0, 0, 255]);
        assert_eq!(decode(&late).err(), Some(Dropped::Malformed));
        let mut bootp = good[..FIXED_HEADER + 4].to_vec();
        bootp.push(255);
        assert_eq!(decode(&bootp).err(), Some(Dropped::NotServed));
        // Pseudo-random bytes behind a valid header: no panic.
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            let mut junk = good[..FIXED_HEADER + 4].to_vec();
            for _ in 0..(seed % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                junk.push(seed as u8);
            }
            let _ = decode(&junk);
        }
    }

    #[test]
    fn offer_carries_the_options() {
        let cfg = cfg();
        let inc = decode(&discover(vec![DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::ClasslessStaticRoute,
        ])]))
        .unwrap();
        let grant = Grant {
            address: [10, 0, 0, 10].into(),
            lease_time: 600,
        };
        let (bytes, to) = encode(&cfg, &inc, &Reply::Offer(grant), None).unwrap();
        assert_eq!(to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
        assert!(bytes.len() >= MIN_MESSAGE);
        let m = Message::from_bytes(&bytes).unwrap();
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.xid(), 0x1234);
        assert_eq!(m.yiaddr(), grant.address);
        assert_eq!(m.chaddr(), &MAC.0);
        let o = m.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Offer));
        let get = |c| o.get(c).cloned();
        assert_eq!(
            get(OptionCode::ServerIdentifier),
            Some(DhcpOption::ServerIdentifier([10, 0, 0, 1].into()))
        );
        assert_eq!(
            get(OptionCode::AddressLeaseTime),
            Some(DhcpOption::AddressLeaseTime(600))
        );
        assert_eq!(get(OptionCode::Renewal), Some(DhcpOption::Renewal(300)));
        assert_eq!(get(OptionCode::Rebinding), Some(DhcpOption::Rebinding(525)));
        assert_eq!(
            get(OptionCode::SubnetMask),
            Some(DhcpOption::SubnetMask([255, 255, 255, 0].into()))
        );
        assert_eq!(
            get(OptionCode::Router),
            Some(DhcpOption::Router(vec![[10, 0, 0, 1].into()]))
        );
        assert_eq!(
            get(OptionCode::DomainNameServer),
            Some(DhcpOption::DomainNameServer(vec![[10, 0, 0, 1].into()]))
        );
        assert_eq!(
            get(OptionCode::DomainName),
            Some(DhcpOption::DomainName("acme.local".into()))
        );
        assert_eq!(
            get(OptionCode::NtpServers),
            Some(DhcpOption::NtpServers(vec![[10, 0, 0, 3].into()]))
        );
        assert_eq!(
            get(OptionCode::InterfaceMtu),
            Some(DhcpOption::InterfaceMtu(1400))
        );
        assert_eq!(
            get(OptionCode::ClasslessStaticRoute),
            Some(DhcpOption::ClasslessStaticRoute(vec![
                ("10.8.0.0/16".parse().unwrap(), [10, 0, 0, 254].into()),
                ("0.0.0.0/0".parse().unwrap(), [10, 0, 0, 1].into()),
            ]))
        );
        // Not asked for: no option 121.
        let inc = decode(&discover(vec![])).unwrap();
        let (bytes, _) = encode(&cfg, &inc, &Reply::Offer(grant), None).unwrap();
        let m = Message::from_bytes(&bytes).unwrap();
        assert!(!m.opts().contains(OptionCode::ClasslessStaticRoute));
    }

    #[test]
    fn nak_and_unicast_and_silence() {
        let cfg = cfg();
        let renew = client_message(MessageType::Request, 9, &MAC, [10, 0, 0, 10].into(), vec![]);
        let inc = decode(&renew).unwrap();
        let grant = Grant {
            address: [10, 0, 0, 10].into(),
            lease_time: 600,
        };
        let (_, to) = encode(&cfg, &inc, &Reply::Ack(grant), None).unwrap();
        assert_eq!(to, SocketAddrV4::new([10, 0, 0, 10].into(), 68));
        let (bytes, to) = encode(&cfg, &inc, &Reply::Nak("no".into()), None).unwrap();
        assert_eq!(to.ip(), &Ipv4Addr::BROADCAST);
        let m = Message::from_bytes(&bytes).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(!m.opts().contains(OptionCode::AddressLeaseTime));
        assert!(encode(&cfg, &inc, &Reply::Silent("x"), None).is_none());
        let (bytes, _) = encode(&cfg, &inc, &Reply::InformAck, None).unwrap();
        let m = Message::from_bytes(&bytes).unwrap();
        assert!(!m.opts().contains(OptionCode::AddressLeaseTime));
        assert!(m.opts().contains(OptionCode::Router));
    }

    #[test]
    fn network_boot_clients_are_recognised_and_given_their_boot_file() {
        let cfg = cfg();
        let grant = Grant {
            address: [10, 0, 0, 10].into(),
            lease_time: 600,
        };
        let ipxe = decode(&discover(vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::UserClass(b"iPXE".to_vec()),
        ]))
        .unwrap();
        assert_eq!(ipxe.boot_client, Some(BootClient::Ipxe));
        let rom = decode(&discover(vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003016".to_vec()),
            DhcpOption::ClientSystemArchitecture(v4::Architecture::from(7)),
        ]))
        .unwrap();
        assert_eq!(rom.boot_client, Some(BootClient::Pxe { arch: 7 }));
        assert_eq!(decode(&discover(vec![])).unwrap().boot_client, None);

        let file = BootFile {
            file: "http://10.0.0.1:9724/netboot/52-54-00-00-00-01.ipxe".into(),
        };
        let (bytes, _) = encode(&cfg, &ipxe, &Reply::Offer(grant), Some(&file)).unwrap();
        let m = Message::from_bytes(&bytes).unwrap();
        // `file` is a C string in a 128-byte field.
        assert_eq!(
            m.fname_str().unwrap().unwrap().trim_end_matches('\0'),
            file.file
        );
        assert_eq!(m.siaddr(), Ipv4Addr::from([10, 0, 0, 1]));
        assert_eq!(
            m.opts().get(OptionCode::BootfileName),
            Some(&DhcpOption::BootfileName(file.file.clone().into_bytes()))
        );
        // iPXE needs no PXE vendor class; a PXE ROM takes only an offer that has one.
        assert!(!m.opts().contains(OptionCode::ClassIdentifier));
        let (bytes, _) = encode(&cfg, &rom, &Reply::Ack(grant), Some(&file)).unwrap();
        let m = Message::from_bytes(&bytes).unwrap();
        assert_eq!(
            m.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        // Never on a NAK.
        let (bytes, _) = encode(&cfg, &rom, &Reply::Nak("no".into()), Some(&file)).unwrap();
        let m = Message::from_bytes(&bytes).unwrap();
        assert!(m.fname().is_none_or(|f| f.iter().all(|b| *b == 0)));
        assert!(!m.opts().contains(OptionCode::BootfileName));
    }
}
