//! Forwarding to the recursors: each in turn, with a timeout, over the client's
//! transport. The query gets a fresh random id and source port; only a reply with that
//! id and the same question is accepted.
//!
//! DNS cookies (RFC 7873) are between a client and the server it talks to: the
//! client's COOKIE option is not passed to the recursor (whose server cookie would be
//! bound to our address, not the client's), and a COOKIE in the recursor's reply is
//! not passed back. Other EDNS options and flags (DO, client subnet...) go through.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::opt::EdnsCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// How the client reached us, and so how we reach the recursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The recursor's reply to `request`, re-addressed to the client's id; `None` when
/// every recursor failed or timed out.
pub async fn forward(
    request: &Message,
    recursors: &[SocketAddr],
    per_try: Duration,
    transport: Transport,
) -> Option<Message> {
    let mut query = request.clone();
    if let Some(edns) = query.edns.as_mut() {
        edns.options_mut().remove(EdnsCode::Cookie);
    }
    for recursor in recursors {
        query.metadata.id = fastrand::u16(..);
        let Ok(bytes) = query.to_vec() else {
            return None;
        };
        let attempt = match transport {
            Transport::Udp => timeout(per_try, over_udp(&bytes, *recursor, &query)).await,
            Transport::Tcp => timeout(per_try, over_tcp(&bytes, *recursor, &query)).await,
        };
        match attempt {
            Ok(Ok(mut reply)) => {
                reply.metadata.id = request.metadata.id;
                if let Some(edns) = reply.edns.as_mut() {
                    edns.options_mut().remove(EdnsCode::Cookie);
                }
                return Some(reply);
            }
            Ok(Err(err)) => tracing::debug!(%recursor, "dns: forward failed: {err}"),
            Err(_) => tracing::debug!(%recursor, "dns: forward timed out after {per_try:?}"),
        }
    }
    None
}

fn matches(reply: &Message, query: &Message) -> bool {
    reply.metadata.id == query.metadata.id && reply.queries == query.queries
}

async fn over_udp(bytes: &[u8], recursor: SocketAddr, query: &Message) -> std::io::Result<Message> {
    let local: SocketAddr = if recursor.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(recursor).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything that is not the reply to this query is ignored (spoofing, strays).
        if let Ok(reply) = Message::from_vec(&buf[..n])
            && matches(&reply, query)
        {
            return Ok(reply);
        }
    }
}

async fn over_tcp(bytes: &[u8], recursor: SocketAddr, query: &Message) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect(recursor).await?;
    let len = u16::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("query longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let n = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).await?;
    let reply = Message::from_vec(&buf).map_err(std::io::Error::other)?;
    if !matches(&reply, query) {
        return Err(std::io::Error::other("reply does not match the query"));
    }
    Ok(reply)
}
