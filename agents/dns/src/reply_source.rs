//! UDP answers sent from the address the query came to.
//!
//! A listener bound to the wildcard (`0.0.0.0:53`, the default) receives the queries
//! for every address of the node, a VRRP virtual address among them. A plain
//! `send_to` answers from the address routing picks for the client, the link's
//! primary one, and resolvers drop an answer from an address they did not ask
//! (RFC 1035 section 7.3; dig: "reply from unexpected source"). So on a wildcard
//! socket the kernel reports each datagram's destination (`IP_PKTINFO`,
//! `IPV6_RECVPKTINFO`) and the answer names it as its source, as dnsmasq and
//! unbound's `interface-automatic` do. A socket bound to one address needs neither.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage,
    recvmsg, sendmsg, setsockopt, sockopt,
};

/// Where a datagram arrived: the source its answer must carry.
#[derive(Clone, Copy)]
pub enum Arrival {
    /// The socket is bound to one address: the kernel answers from it.
    Bound,
    /// IPv4: the kernel's choice of local address for the answer (the destination
    /// of a unicast query; the link's address for a broadcast one).
    V4(libc::in_pktinfo),
    /// IPv6: the destination and the interface it arrived on.
    V6(libc::in6_pktinfo),
}

/// Asks the kernel for each datagram's destination when `socket` is bound to the
/// wildcard (otherwise nothing to do).
pub fn enable(socket: &UdpSocket) -> io::Result<()> {
    let local = socket.local_addr()?;
    if !local.ip().is_unspecified() {
        return Ok(());
    }
    let set = if local.is_ipv4() {
        setsockopt(socket, sockopt::Ipv4PacketInfo, &true)
    } else {
        setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)
    };
    set.map_err(io::Error::from)
}

/// Receive one datagram: its length, its sender, where it arrived.
pub fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Arrival)> {
    let mut space = nix::cmsg_space!(libc::in_pktinfo, libc::in6_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        std::os::fd::AsRawFd::as_raw_fd(socket),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let mut arrival = Arrival::Bound;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        match cmsg {
            ControlMessageOwned::Ipv4PacketInfo(info) => arrival = Arrival::V4(info),
            ControlMessageOwned::Ipv6PacketInfo(info) => arrival = Arrival::V6(info),
            _ => {}
        }
    }
    let peer = msg
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::other("a datagram without a sender address"))?;
    Ok((msg.bytes, peer, arrival))
}

/// Send `bytes` to `peer` from where the query arrived.
pub fn send(
    socket: &UdpSocket,
    bytes: &[u8],
    peer: SocketAddr,
    arrival: Arrival,
) -> io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
    let sent = match (arrival, peer) {
        (Arrival::V4(received), SocketAddr::V4(to)) => {
            // The source is `ipi_spec_dst`; no interface is forced (routing decides).
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: received.ipi_spec_dst,
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&SockaddrIn::from(to)),
            )
        }
        (Arrival::V6(received), SocketAddr::V6(to)) => {
            // The interface matters only for a link-local source (its scope).
            let link_local =
                std::net::Ipv6Addr::from(received.ipi6_addr.s6_addr).is_unicast_link_local();
            let info = libc::in6_pktinfo {
                ipi6_addr: received.ipi6_addr,
                ipi6_ifindex: if link_local { received.ipi6_ifindex } else { 0 },
            };
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv6PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&SockaddrIn6::from(to)),
            )
        }
        _ => return socket.send_to(bytes, peer).map(drop),
    };
    sent.map(drop).map_err(io::Error::from)
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::from((IpAddr::from(v4.ip()), v4.port())));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(std::net::SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    /// A server on 0.0.0.0 answers a client connected to 127.0.0.2 (an address of
    /// `lo` that is not the one routing picks for 127.0.0.1): with the destination
    /// as source the connected client gets the answer; a plain `send_to` would
    /// answer from 127.0.0.1, which the connected socket filters out.
    #[test]
    fn a_wildcard_listener_answers_from_the_address_asked() {
        let server = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        enable(&server).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        client.connect((Ipv4Addr::new(127, 0, 0, 2), port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send(b"query").unwrap();

        let mut buf = [0u8; 64];
        let (n, peer, arrival) = recv(&server, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"query");
        assert_eq!(peer, client.local_addr().unwrap());
        let Arrival::V4(info) = arrival else {
            panic!("no destination reported")
        };
        assert_eq!(
            Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)),
            Ipv4Addr::new(127, 0, 0, 2)
        );
        send(&server, b"answer", peer, arrival).unwrap();
        let got = client
            .recv(&mut buf)
            .expect("the answer came from 127.0.0.2");
        assert_eq!(&buf[..got], b"answer");
    }

    /// The control: answered with a plain `send_to`, the connected client never sees
    /// the answer (it comes from 127.0.0.1). This is what the test above guards.
    #[test]
    fn a_plain_send_to_answers_from_another_address() {
        let server = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        client.connect((Ipv4Addr::new(127, 0, 0, 2), port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        client.send(b"query").unwrap();
        let mut buf = [0u8; 64];
        let (_, peer) = server.recv_from(&mut buf).unwrap();
        server.send_to(b"answer", peer).unwrap();
        assert!(client.recv(&mut buf).is_err());
    }

    /// A socket bound to one address reports nothing and answers as bound.
    #[test]
    fn a_bound_listener_needs_no_destination() {
        let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        enable(&server).unwrap();
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send(b"q").unwrap();
        let mut buf = [0u8; 8];
        let (_, peer, arrival) = recv(&server, &mut buf).unwrap();
        assert!(matches!(arrival, Arrival::Bound));
        send(&server, b"a", peer, arrival).unwrap();
        assert_eq!(client.recv(&mut buf).unwrap(), 1);
    }
}
